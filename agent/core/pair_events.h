// What the agent tells the rest of OpenStack about its pairs (dt.pair.* notifications), as plain
// data, and the sink it is handed to. The bus adapter (agent/bus/notifier.h) publishes them; a
// deployment without a notification driver uses a sink that drops them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace novadt::core {

struct PairEvent {
  // dt.pair.protect.start | dt.pair.protect.end | dt.pair.protect.error | dt.pair.degraded |
  // dt.pair.failover.start | dt.pair.failover.end | dt.pair.failover.error |
  // dt.pair.unprotect.end | dt.pair.suspended
  std::string event_type;
  std::string priority = "INFO";  // "ERROR" for *.error and dt.pair.degraded
  std::string instance_uuid;
  std::string host;       // the agent's host
  std::string role;       // "primary" | "backup"
  std::string state;      // seeding | protected | degraded | failing-over | unprotected | ...
  std::string reason;
  std::string peer_host;  // the other host of the pair
  uint64_t committed_epoch = 0;
  std::optional<int64_t> duration_ms;  // seeding time, failover time
  std::string new_host;   // dt.pair.failover.end: where the server runs now
};

// Receives pair events. REQUIRES: Publish() is thread-safe and never blocks.
class PairEventSink {
 public:
  virtual ~PairEventSink() = default;
  virtual void Publish(const PairEvent& event) = 0;
};

}  // namespace novadt::core
