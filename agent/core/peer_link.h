// The agent's view of the network between agents (the pair link). Implemented over gRPC in
// agent/rpc; faked in tests.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "agent/common/status.h"

namespace novadt::core {

struct HelloResult {
  std::string host;     // what the peer says its host is
  std::string version;  // its agent version
  std::chrono::microseconds rtt{0};
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
};

}  // namespace novadt::core
