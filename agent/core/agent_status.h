// A point-in-time picture of the agent, assembled on the loop thread and handed to the
// control API (which turns it into protobuf) — plain data, no gRPC types.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/core/peer_tracker.h"

namespace novadt::core {

// The outcome of a planned switchover (control API Switchover).
struct SwitchoverResult {
  std::string new_host;
  uint64_t epoch = 0;                  // the final epoch, restored on new_host
  std::chrono::milliseconds paused{0};  // guest paused here .. running on new_host
};

struct ProtectedServerView {
  std::string instance_uuid;
  std::string role;   // "primary" | "backup"
  std::string state;  // seeding | protected | degraded | failing-over | unprotected
  std::string reason;
  std::string peer_host;
  uint64_t last_committed_epoch = 0;
  // Primary side only.
  uint64_t last_checkpoint_epoch = 0;
  std::string dirty_tracking;
  std::chrono::microseconds pause_p50{0};
  std::chrono::microseconds pause_p99{0};
  uint64_t reseeds = 0;
  std::chrono::milliseconds seed_time{0};
  uint64_t seed_bytes = 0;        // last seeding: payload sent
  uint64_t seed_basis_bytes = 0;  // left out: the backup's basis held them
  uint64_t steady_epochs = 0;
  uint64_t steady_pages = 0;
  uint64_t steady_bytes = 0;
  // Backup side only: times the failure detector started suspecting the primary, and times the
  // stream was silent longer than [replication] heartbeat_timeout_ms (what a fixed timeout
  // would have suspected), since the stream opened.
  uint64_t suspicions = 0;
  uint64_t long_silences = 0;
};

// One connection of the message bus adapter.
struct BusLinkView {
  bool enabled = false;    // configured
  bool connected = false;
  uint64_t reconnects = 0;
  std::string last_error;  // last connect/set-up failure, empty once connected
  // Per link, what applies: RPC requests / Nova notifications received, handled (given to the
  // agent), malformed (refused), failures (RPC replies carrying a failure; notifications
  // requeued); notifications published / dropped / queued.
  uint64_t received = 0;
  uint64_t handled = 0;
  uint64_t malformed = 0;
  uint64_t failures = 0;
  uint64_t published = 0;
  uint64_t dropped = 0;
  uint64_t queued = 0;
};

struct BusView {
  BusLinkView rpc;                 // oslo.messaging RPC server (topic nova_dt_agent)
  BusLinkView nova_notifications;  // Nova's versioned notifications consumed
  BusLinkView notifier;            // the agent's own dt.pair.* notifications
};

struct AgentStatusSnapshot {
  std::string host;
  std::string version;
  std::chrono::milliseconds uptime{0};
  std::string hypervisor_uri;
  bool hypervisor_connected = false;
  unsigned hypervisor_reconnects = 0;
  std::string peer_listen_address;
  std::vector<PeerView> peers;
  std::vector<ProtectedServerView> protected_servers;
  BusView bus;
  // Settings that give up a protection on purpose ([peer] allow_insecure, [witness] allow_none):
  // one sentence each, shown by nova-dt-status and logged at start.
  std::vector<std::string> security_warnings;
};

}  // namespace novadt::core
