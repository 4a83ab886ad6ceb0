#include "agent/engine/qmp.h"

namespace novadt::engine {

StatusOr<nlohmann::json> QmpCall(core::Hypervisor& hv, const std::string& instance_uuid,
                                 const nlohmann::json& command) {
  const std::string name = command.value("execute", "?");
  auto reply = hv.QemuMonitorCommand(instance_uuid, command.dump());
  if (!reply.ok()) return reply.status();
  nlohmann::json j = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError("QMP " + name + ": unparsable reply: " + reply->substr(0, 200));
  }
  if (j.contains("error")) {
    const std::string cls = j["error"].value("class", "GenericError");
    const std::string msg =
        "QMP " + name + " failed: " + cls + ": " + j["error"].value("desc", "(no description)");
    return cls == "DeviceNotFound" ? absl::NotFoundError(msg) : absl::FailedPreconditionError(msg);
  }
  if (!j.contains("return")) {
    return absl::InternalError("QMP " + name + ": reply without return: " + reply->substr(0, 200));
  }
  return j["return"];
}

}  // namespace novadt::engine
