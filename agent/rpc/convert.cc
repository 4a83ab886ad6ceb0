#include "agent/rpc/convert.h"

namespace novadt::rpc {
namespace {

void ToProto(const core::BusLinkView& in, nova_dt::v1::BusLinkStatus* out) {
  out->set_enabled(in.enabled);
  out->set_connected(in.connected);
  out->set_reconnects(in.reconnects);
  out->set_last_error(in.last_error);
  out->set_received(in.received);
  out->set_handled(in.handled);
  out->set_malformed(in.malformed);
  out->set_failures(in.failures);
  out->set_published(in.published);
  out->set_dropped(in.dropped);
  out->set_queued(in.queued);
}

}  // namespace

void ToProto(const core::AgentStatusSnapshot& in, nova_dt::v1::AgentStatus* out) {
  out->set_host(in.host);
  out->set_version(in.version);
  out->set_uptime_ms(in.uptime.count());
  out->set_peer_listen_address(in.peer_listen_address);
  for (const auto& w : in.security_warnings) out->add_security_warnings(w);
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
    o->set_last_checkpoint_epoch(s.last_checkpoint_epoch);
    o->set_dirty_tracking(s.dirty_tracking);
    o->set_pause_p50_us(s.pause_p50.count());
    o->set_pause_p99_us(s.pause_p99.count());
    o->set_reseeds(s.reseeds);
    o->set_seed_ms(s.seed_time.count());
    o->set_seed_bytes(s.seed_bytes);
    o->set_seed_basis_bytes(s.seed_basis_bytes);
    o->set_steady_epochs(s.steady_epochs);
    o->set_steady_pages(s.steady_pages);
    o->set_steady_bytes(s.steady_bytes);
    o->set_suspicions(s.suspicions);
    o->set_long_silences(s.long_silences);
  }
  ToProto(in.bus.rpc, out->mutable_bus()->mutable_rpc());
  ToProto(in.bus.nova_notifications, out->mutable_bus()->mutable_nova_notifications());
  ToProto(in.bus.notifier, out->mutable_bus()->mutable_notifier());
}

void ToProto(const core::StreamOpen& in, nova_dt::v1::StreamOpen* out) {
  out->set_protocol(static_cast<nova_dt::v1::ReplicationProtocol>(in.protocol));
  out->set_instance_uuid(in.instance_uuid);
  out->set_primary_host(in.primary_host);
  out->set_ram_size_bytes(in.ram_size_bytes);
  for (const auto& d : in.disks) {
    auto* o = out->add_disks();
    o->set_name(d.name);
    o->set_size_bytes(d.size_bytes);
  }
  out->set_domain_xml(in.domain_xml);
  out->set_witness_generation(in.witness_generation);
  out->set_basis_id(in.basis_id);
  for (const auto& f : in.boot_files) {
    auto* o = out->add_boot_files();
    o->set_name(f.name);
    o->set_size_bytes(f.size_bytes);
  }
}

core::StreamOpen FromProto(const nova_dt::v1::StreamOpen& in) {
  core::StreamOpen out;
  out.protocol = static_cast<uint32_t>(in.protocol());
  out.instance_uuid = in.instance_uuid();
  out.primary_host = in.primary_host();
  out.ram_size_bytes = in.ram_size_bytes();
  for (const auto& d : in.disks()) out.disks.push_back({d.name(), d.size_bytes()});
  out.domain_xml = in.domain_xml();
  out.witness_generation = in.witness_generation();
  out.basis_id = in.basis_id();
  for (const auto& f : in.boot_files()) out.boot_files.push_back({f.name(), f.size_bytes()});
  return out;
}

void ToProto(const core::StreamItem& in, nova_dt::v1::ReplicationMessage* out) {
  struct Visitor {
    nova_dt::v1::ReplicationMessage* out;
    void operator()(const core::EpochBegin& b) { out->mutable_begin()->set_epoch(b.epoch); }
    void operator()(const core::RamPages& p) {
      auto* o = out->mutable_pages();
      o->mutable_page_index()->Add(p.page_index.begin(), p.page_index.end());
      o->set_data(p.data);
    }
    void operator()(const core::DiskWrite& w) {
      auto* o = out->mutable_disk_write();
      o->set_disk(w.disk);
      o->set_offset(w.offset);
      o->set_data(w.data);
      o->set_zeroes(w.zeroes);
      o->set_length(w.length);
    }
    void operator()(const core::DeviceStateChunk& c) {
      auto* o = out->mutable_device_state();
      o->set_data(c.data);
      o->set_last(c.last);
      o->set_encoding(static_cast<uint32_t>(c.encoding));
    }
    void operator()(const core::EpochEnd& e) {
      auto* o = out->mutable_end();
      o->set_epoch(e.epoch);
      o->set_pages(e.pages);
      o->set_disk_writes(e.disk_writes);
      o->set_device_state_bytes(e.device_state_bytes);
    }
    void operator()(const core::BootFileChunk& c) {
      auto* o = out->mutable_boot_file();
      o->set_name(c.name);
      o->set_offset(c.offset);
      o->set_data(c.data);
    }
  };
  std::visit(Visitor{out}, in);
}

}  // namespace novadt::rpc
