// The agent's control API as tests and benchmarks read it: real gRPC to a control address
// ("unix:/path" or "host:port"), 2 s deadline.
#pragma once

#include <optional>
#include <string>

#include "nova_dt/v1/control.pb.h"

namespace novadt::testing {

// The agent's status; std::nullopt when it does not answer in time.
std::optional<nova_dt::v1::AgentStatus> AgentStatusAt(const std::string& control_address);
// Server `instance_uuid` in that status; std::nullopt when absent or the agent does not answer.
std::optional<nova_dt::v1::ProtectedServer> ProtectedServerAt(const std::string& control_address,
                                                              const std::string& instance_uuid);

}  // namespace novadt::testing
