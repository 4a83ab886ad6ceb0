// Reads the agent's oslo.config-style INI files into an AgentConfig.
#pragma once

#include <string>
#include <vector>

#include "agent/common/status.h"
#include "agent/config/config.h"

namespace novadt::config {

// Loads `files` in order (later files override earlier ones, as oslo.config's repeated
// --config-file does), applies defaults and validates every value.
//
// On failure returns InvalidArgument whose message is exactly one line naming the file, the
// section and the key, e.g.
//   "/etc/nova-dt/agent.conf: [replication] epoch_ms: expected an integer in 10..10000, got 'x'"
// A file that cannot be read is reported with its path and the OS error, a syntax error as
// "<file>: line <n>: <what is wrong>". Passwords of transport URLs never appear in messages.
// Unknown sections and keys are accepted, as oslo.config does, and logged as warnings.
StatusOr<AgentConfig> LoadAgentConfig(const std::vector<std::string>& files);

}  // namespace novadt::config
