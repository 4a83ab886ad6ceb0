// The agent's gRPC endpoints: the local control API (Control + health) on [DEFAULT]
// control_address, and the peer API (Peer + health) on [peer] listen_address.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "agent/common/status.h"
#include "agent/core/agent_status.h"
#include "agent/core/peer_link.h"
#include "agent/core/replication_link.h"
#include "agent/core/replication_receiver.h"
#include "agent/rpc/peer_tls.h"

namespace novadt::rpc {

// What the services call into. Both run on gRPC's threads and may block briefly. Every
// identifier a handler receives was checked first (canonical instance UUID, host names; a peer's
// host also against the peer credentials), and an exception a handler throws ends that call
// with INTERNAL, never the agent.
struct ServiceHandlers {
  std::string host;
  std::string version;
  // Returns the agent's current status; an error is returned to the caller as UNAVAILABLE.
  std::function<StatusOr<core::AgentStatusSnapshot>()> status;
  // Another agent greeted us (its host, its own peer address, its version).
  std::function<void(const std::string& host, const std::string& address,
                     const std::string& version)>
      hello_received;
  // Control API: start / stop protecting a domain (errors go back with their codes).
  std::function<Status(const std::string& instance_uuid, const std::string& backup_host)> protect;
  std::function<Status(const std::string& instance_uuid)> unprotect;
  // Control API: planned switchover of a server protected from here (blocks until it runs on
  // the backup or fails).
  std::function<StatusOr<core::SwitchoverResult>(const std::string& instance_uuid)> switchover;
  // Peer API: the primary `primary_host` (already authenticated) hands `instance_uuid` over at
  // its final epoch `epoch`; blocks until the server runs here or the take-over failed.
  std::function<StatusOr<core::TakeOverResult>(const std::string& primary_host,
                                               const std::string& instance_uuid, uint64_t epoch)>
      take_over;
  // Makes the replica sink for an incoming replication stream. Unset: this agent keeps no
  // replicas and answers UNIMPLEMENTED.
  core::ReplicaSinkFactory open_replica;
  // Peer API: the basis of a replica kept here, for the primary `primary_host` (already
  // authenticated) about to re-seed it (core/replica_basis.h). Unset: UNIMPLEMENTED.
  std::function<StatusOr<core::ReplicaBasis>(const std::string& primary_host,
                                             const std::string& instance_uuid)>
      replica_basis;
  // Peer API: the primary `primary_host` (already authenticated) ends protection of
  // `instance_uuid` on purpose; its replica here must never be restored. Unset: UNIMPLEMENTED.
  std::function<Status(const std::string& primary_host, const std::string& instance_uuid)>
      release_replica;
  // How often the backup side of a replication stream sends a heartbeat.
  std::chrono::milliseconds replication_heartbeat{100};
  // TLS of the peer port and the identity checks of callers (by default: plaintext, and no
  // caller is accepted).
  std::shared_ptr<const PeerCredentials> peer_credentials = PeerCredentials::Insecure({});
  // What the backup side accepts from one replication stream.
  core::StreamLimits stream_limits;
};

// Thread safety: Shutdown() may be called from any thread, once.
class AgentServer {
 public:
  virtual ~AgentServer() = default;

  // Addresses actually bound (a configured port 0 resolved to the chosen port).
  virtual std::string control_address() const = 0;
  virtual std::string peer_address() const = 0;

  // Reports NOT_SERVING on the health service, then stops both servers, cancelling calls still
  // running after `grace`.
  virtual void Shutdown(std::chrono::milliseconds grace) = 0;
};

// Binds and starts both servers. `control_address` and `peer_address` take "unix:/path",
// "host:port" or "[v6]:port"; a unix socket's directory is created, a stale socket replaced.
// Fails with Unavailable naming the address when it cannot be bound.
StatusOr<std::unique_ptr<AgentServer>> StartAgentServer(const std::string& control_address,
                                                        const std::string& peer_address,
                                                        ServiceHandlers handlers);

}  // namespace novadt::rpc
