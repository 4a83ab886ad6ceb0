#include "tests/support/agent_control.h"

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/control.grpc.pb.h"

namespace novadt::testing {

std::optional<nova_dt::v1::AgentStatus> AgentStatusAt(const std::string& control_address) {
  auto stub = nova_dt::v1::Control::NewStub(
      grpc::CreateChannel(control_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  nova_dt::v1::AgentStatus s;
  if (!stub->Status(&ctx, {}, &s).ok()) return std::nullopt;
  return s;
}

std::optional<nova_dt::v1::ProtectedServer> ProtectedServerAt(const std::string& control_address,
                                                              const std::string& instance_uuid) {
  auto s = AgentStatusAt(control_address);
  if (!s) return std::nullopt;
  for (const auto& v : s->protected_servers()) {
    if (v.instance_uuid() == instance_uuid) return v;
  }
  return std::nullopt;
}

}  // namespace novadt::testing
