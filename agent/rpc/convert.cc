#include "agent/rpc/convert.h"

namespace novadt::rpc {

void ToProto(const core::AgentStatusSnapshot& in, nova_dt::v1::AgentStatus* out) {
  out->set_host(in.host);
  out->set_version(in.version);
  out->set_uptime_ms(in.uptime.count());
  out->set_peer_listen_address(in.peer_listen_address);
  auto* hv = out->mutable_hypervisor();
  hv->set_connection_uri(in.hypervisor_uri);
  hv->set_connected(in.hypervisor_connected);
  hv->set_reconnects(in.hypervisor_reconnects);
  for (const auto& p : in.peers) {
    auto* o = out->add_peers();
    o->set_host(p.host);
    o->set_address(p.address);
    o->set_reachable(p.reachable);
    o->set_configured(p.configured);
    o->set_version(p.version);
    o->set_rtt_us(p.rtt.count());
    if (p.last_seen) {
      o->set_last_seen_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   p.last_seen_wall.time_since_epoch())
                                   .count());
    }
  }
  for (const auto& s : in.protected_servers) {
    auto* o = out->add_protected_servers();
    o->set_instance_uuid(s.instance_uuid);
    o->set_role(s.role);
    o->set_state(s.state);
    o->set_reason(s.reason);
    o->set_peer_host(s.peer_host);
    o->set_last_committed_epoch(s.last_committed_epoch);
  }
}

}  // namespace novadt::rpc
