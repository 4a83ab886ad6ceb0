// The backup's end of replication streams: core::ReplicaSink over a ReplicaStore, one replica
// directory per server under [replication] replica_path, one stream per server at a time — and
// the fence that ends replication of a server for good when the backup takes it over.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/core/replication_link.h"
#include "agent/replica/replica_store.h"

namespace novadt::replica {

// Bookkeeping callbacks for the agent, called on the stream's thread. Any may be empty.
struct ReplicaEvents {
  // A stream opened (re-created) the server's replica.
  std::function<void(const core::StreamOpen& open)> opened;
  // Any message arrived from the primary (the failure detector's input).
  std::function<void(const std::string& instance_uuid)> heard;
  std::function<void(const std::string& instance_uuid, uint64_t epoch)> committed;
  std::function<void(const std::string& instance_uuid, const Status& why)> closed;
};

// A committed replica, as the failover restorer needs it.
struct FencedReplica {
  uint64_t committed_epoch = 0;
  std::string ram_path;
  std::string device_state_path;
  std::map<std::string, std::string> disk_paths;  // target dev -> image
};

// Thread-safe: streams of different servers run concurrently with each other and with Fence().
class ReplicaRegistry {
 public:
  ReplicaRegistry(std::string replica_path, ReplicaOptions options, ReplicaEvents events);

  // Makes sinks for incoming streams. A new stream (re)seeds: the server's replica is
  // re-created with the stream's geometry, its epochs start at 1 — or, for a stream naming a
  // valid basis (Basis()), reopened in place and un-seeded (FailedPrecondition for a stale one):
  // a replica is never resumed at its epoch, it is re-seeded over its basis.
  // Refused: a stream from another primary while one is open (FailedPrecondition; one from the
  // same primary replaces the open one), and any stream for a server taken over here
  // (core::TakenOverRefusal). The registry must outlive the factory's sinks.
  core::ReplicaSinkFactory Factory();

  // The basis of `instance_uuid`'s replica for its primary `primary_host`, about to re-seed it
  // (core/replica_basis.h): the files hashed as they are, whatever epoch they hold. A stream
  // still open from that primary is ended first (as a new stream from it would). The next
  // stream naming the basis (StreamOpen::basis_id) seeds in place over it; any other stream,
  // fence or discard invalidates it. NotFound when there is no usable replica (seed in full);
  // the taken-over refusal for a server taken over here; FailedPrecondition while another
  // primary's stream is open; Aborted when the replica changed while it was hashed.
  StatusOr<core::ReplicaBasis> Basis(const std::string& primary_host,
                                     const std::string& instance_uuid);

  // Ends replication of `instance_uuid` for good: an open stream's next item is refused and its
  // open epoch dropped (waiting for an item being applied right now), later streams are refused.
  // Returns the committed replica. NotFound when there is none; its own errors (DataLoss...)
  // when the replica cannot be opened consistently.
  StatusOr<FencedReplica> Fence(const std::string& instance_uuid);

  // Frees the replica of a server that is gone (deleted in Nova, or switched away from a copy
  // that ran on it): an open stream's next item is refused (FailedPrecondition, not a
  // take-over), the replica directory is removed. A later stream for the server seeds anew.
  // OK when there was nothing to free; Internal when the directory cannot be removed.
  Status Discard(const std::string& instance_uuid);

  // Planned switchover away from this host: it stops running `instance_uuid` from its replica,
  // so a stream for it (from the host it moves to, re-protecting) is accepted again instead of
  // being refused as taken over. The files stay until a stream replaces them or
  // DiscardIfUnused() frees them. No-op for a server never taken over here.
  // Returns a mark for DiscardIfUnused().
  uint64_t Relinquish(const std::string& instance_uuid);
  // A copy of `instance_uuid` that ran here is going away (another host runs the server now):
  // keeps what it leaves — its RAM file (if it still has one) and raw disk images — as a replica
  // that is not seeded (ReplicaStore::CreateBasis), the basis of a later re-protection towards
  // here. Nothing is done while a stream for the server is open or a replica exists already.
  // Returns a mark for DiscardIfUnused() (to free it if no re-protection comes).
  StatusOr<uint64_t> KeepBasis(const std::string& instance_uuid, const ReplicaGeometry& geometry,
                               const std::string& ram_file,
                               const std::map<std::string, std::string>& disk_files);
  // Frees the replica directory unless it was used since Relinquish() returned `mark`: a stream
  // opened for the server, or its basis was handed out (the new primary seeds over it: the
  // files a copy switched away from here ran on are the best basis there is).
  Status DiscardIfUnused(const std::string& instance_uuid, uint64_t mark);

 private:
  class Sink;
  struct Entry {
    std::mutex mu;               // held while a sink applies an item, and by Fence()
    bool streaming = false;      // a sink is open
    bool fenced = false;         // taken over here: every stream refused (TakenOverRefusal)
    bool discarded = false;      // freed: the open sink refuses; the next stream starts afresh
    std::string primary_host;    // of the open (or last) stream
    uint64_t stream_id = 0;      // the open sink's (registry-unique); older sinks superseded
    ReplicaStore* store = nullptr;  // the open sink's store, under mu
    uint64_t basis_id = 0;          // the last basis handed out; 0: none valid
    uint64_t basis_stream_id = 0;   // stream_id when it was hashed: valid while unchanged
  };
  // Opens the replica in `dir` for a seed over its basis: same geometry, then Unseed().
  StatusOr<std::unique_ptr<ReplicaStore>> SeedInPlace(const std::string& dir,
                                                      const ReplicaGeometry& geometry) const;
  std::shared_ptr<Entry> EntryFor(const std::string& uuid);

  const std::string replica_path_;
  const ReplicaOptions options_;
  const ReplicaEvents events_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // guarded by mu_
  // Stream ids are unique across entries (an entry erased by Discard() and made anew must not
  // reuse the ids of marks handed out before).
  std::atomic<uint64_t> stream_ids_{0};
};

}  // namespace novadt::replica
