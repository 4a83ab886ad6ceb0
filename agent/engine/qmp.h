// QMP through core::Hypervisor with JSON on both sides: a command in, its "return" value out.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "agent/common/status.h"
#include "agent/core/hypervisor.h"

namespace novadt::engine {

// Sends `command` ({"execute": ..., "arguments": ...}) to the domain's QEMU. Returns QEMU's
// "return" value; a QMP error becomes a Status naming the command and QEMU's class and
// description (NotFound for DeviceNotFound, FailedPrecondition otherwise); transport errors
// come from the Hypervisor unchanged; an unparsable reply is Internal.
StatusOr<nlohmann::json> QmpCall(core::Hypervisor& hv, const std::string& instance_uuid,
                                 const nlohmann::json& command);

}  // namespace novadt::engine
