// The backup's end of a replication stream: core::ReplicaSink over a ReplicaStore. One replica
// directory per server under [replication] replica_path; one stream per server at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "agent/core/replication_link.h"
#include "agent/replica/replica_store.h"

namespace novadt::replica {

// Called when a stream opened a replica, after every committed epoch and when a stream ends, for the agent's bookkeeping
// (status, failover readiness). May be empty. Runs on the stream's thread.
struct ReplicaEvents {
  std::function<void(const std::string& instance_uuid, const std::string& primary_host)> opened;
  std::function<void(const std::string& instance_uuid, uint64_t epoch)> committed;
  std::function<void(const std::string& instance_uuid, const Status& why)> closed;
};

// Makes sinks for incoming streams. A new stream (re)seeds: the server's replica is re-created
// with the stream's geometry, its epochs start at 1. (Resuming an existing replica after an
// agent restart needs the committed epoch in the stream's handshake — pair-safety work.)
// A second stream for a server whose stream is still open is refused (FailedPrecondition).
// Thread-safe: streams of different servers run concurrently.
core::ReplicaSinkFactory MakeStoreSinkFactory(std::string replica_path, ReplicaOptions options,
                                              ReplicaEvents events = {});

}  // namespace novadt::replica
