// Conversions between the core's plain status structs and the control API's protobufs.
#pragma once

#include "agent/common/status.h"
#include "agent/core/agent_status.h"
#include "agent/core/replication_link.h"
#include "nova_dt/v1/control.pb.h"
#include "nova_dt/v1/replication.pb.h"

namespace novadt::rpc {

void ToProto(const core::AgentStatusSnapshot& in, nova_dt::v1::AgentStatus* out);

void ToProto(const core::StreamOpen& in, nova_dt::v1::StreamOpen* out);
core::StreamOpen FromProto(const nova_dt::v1::StreamOpen& in);
void ToProto(const core::StreamItem& in, nova_dt::v1::ReplicationMessage* out);

}  // namespace novadt::rpc
