// The agent's view of the network between agents (the pair link). Implemented over gRPC in
// agent/rpc; faked in tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "agent/common/status.h"

namespace novadt::core {

struct HelloResult {
  std::string host;     // what the peer says its host is
  std::string version;  // its agent version
  std::chrono::microseconds rtt{0};
};

// What the backup answered to a planned switchover's TakeOver.
struct TakeOverResult {
  uint64_t epoch = 0;  // restored from
  std::chrono::milliseconds restore{0};
};

// Thread safety: methods may be called from any thread; callbacks run on a link thread and
// must only post to the EventLoop.
class PeerLink {
 public:
  virtual ~PeerLink() = default;

  // Greets the agent at `address` (asynchronously) and calls `done` exactly once with its
  // identity, or Unavailable/DeadlineExceeded when it cannot be reached within `timeout`.
  virtual void Hello(const std::string& address, std::chrono::milliseconds timeout,
                     std::function<void(StatusOr<HelloResult>)> done) = 0;

  // Planned switchover: asks the backup at `address` to resume `instance_uuid` from its final
  // epoch `epoch` (this host paused the guest for good). Blocks on the calling thread (not a
  // link thread) until the backup answers or `timeout` passes. The backup's code comes back as
  // is (FailedPrecondition: it did not start; Internal: its restore failed); Unavailable /
  // DeadlineExceeded: no answer — the outcome is unknown.
  virtual StatusOr<TakeOverResult> TakeOver(const std::string& address,
                                            const std::string& instance_uuid, uint64_t epoch,
                                            std::chrono::milliseconds timeout) = 0;
};

}  // namespace novadt::core
