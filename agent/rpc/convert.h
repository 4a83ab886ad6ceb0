// Conversions between the core's plain status structs and the control API's protobufs.
#pragma once

#include "agent/core/agent_status.h"
#include "nova_dt/v1/control.pb.h"

namespace novadt::rpc {

void ToProto(const core::AgentStatusSnapshot& in, nova_dt::v1::AgentStatus* out);

}  // namespace novadt::rpc
