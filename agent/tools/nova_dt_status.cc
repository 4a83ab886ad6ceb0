// nova-dt-status: prints what a local nova-dt-agent reports about itself, and drives its
// control API.
//
//   nova-dt-status [--address ADDR | --config-file PATH] [--json] [--health]
//                  [--wait-peer HOST]... [--timeout SECONDS]
//   nova-dt-status [--address ADDR | --config-file PATH] protect INSTANCE_UUID BACKUP_HOST
//   nova-dt-status [--address ADDR | --config-file PATH] unprotect INSTANCE_UUID
//   nova-dt-status [--address ADDR | --config-file PATH] switchover INSTANCE_UUID
//
// switchover moves a server protected from this host to its backup (planned switchover, or
// failback after a failover) and waits until it runs there (--timeout defaults to 90 s for it).
//
// ADDR defaults to the agent's control socket (unix:/run/nova-dt/agent.sock) or, with
// --config-file, to that file's [DEFAULT] control_address. --wait-peer polls until every named
// peer is reported reachable (or --timeout passes). Exit codes: 0 ok, 1 agent unreachable or a
// waited-for peer not reachable in time, 2 bad usage.
#include <chrono>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "agent/common/numbers.h"
#include "agent/config/config_loader.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nova_dt/v1/control.grpc.pb.h"

namespace {

struct Options {
  std::string address = "unix:/run/nova-dt/agent.sock";
  bool json = false;
  bool health = false;
  std::vector<std::string> wait_peers;
  double timeout_s = 0;  // 0: 10 s, 90 s for a switchover
  std::vector<std::string> command;  // "protect UUID HOST" | "unprotect UUID" | "switchover UUID"
};

int Usage(const std::string& why) {
  std::fprintf(stderr,
               "nova-dt-status: %s\n"
               "usage: nova-dt-status [--address ADDR | --config-file PATH] [--json] [--health]\n"
               "                      [--wait-peer HOST]... [--timeout SECONDS]\n"
               "       nova-dt-status [...] protect INSTANCE_UUID BACKUP_HOST\n"
               "       nova-dt-status [...] unprotect INSTANCE_UUID\n"
               "       nova-dt-status [...] switchover INSTANCE_UUID\n",
               why.c_str());
  return 2;
}

std::string Ago(int64_t unix_ms) {
  if (unix_ms == 0) return "never";
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs ago", (now - unix_ms) / 1000.0);
  return buf;
}

void PrintHuman(const nova_dt::v1::AgentStatus& s) {
  std::printf("host:        %s\n", s.host().c_str());
  std::printf("version:     %s (up %.1fs)\n", s.version().c_str(), s.uptime_ms() / 1000.0);
  std::printf("peer API:    %s\n", s.peer_listen_address().c_str());
  for (const auto& w : s.security_warnings()) std::printf("WARNING:     %s\n", w.c_str());
  std::printf("hypervisor:  %s %s (reconnects: %u)\n", s.hypervisor().connection_uri().c_str(),
              s.hypervisor().connected() ? "connected" : "DISCONNECTED",
              s.hypervisor().reconnects());
  std::printf("peers:       %d\n", s.peers_size());
  for (const auto& p : s.peers()) {
    std::printf("  %-16s %-24s %-11s rtt %6.2f ms  last seen %s%s\n", p.host().c_str(),
                p.address().c_str(), p.reachable() ? "reachable" : "UNREACHABLE",
                p.rtt_us() / 1000.0, Ago(p.last_seen_unix_ms()).c_str(),
                p.configured() ? "" : "  (inbound only)");
  }
  std::printf("protected servers: %d\n", s.protected_servers_size());
  for (const auto& v : s.protected_servers()) {
    std::printf("  %s %-7s %-12s peer %s committed epoch %llu", v.instance_uuid().c_str(),
                v.role().c_str(), v.state().c_str(), v.peer_host().c_str(),
                static_cast<unsigned long long>(v.last_committed_epoch()));
    if (v.role() == "primary") {
      std::printf(" (taken %llu), pause p50 %.1f ms p99 %.1f ms, %s, seeded in %lld ms",
                  static_cast<unsigned long long>(v.last_checkpoint_epoch()),
                  v.pause_p50_us() / 1000.0, v.pause_p99_us() / 1000.0,
                  v.dirty_tracking().c_str(), static_cast<long long>(v.seed_ms()));
      if (v.seed_basis_bytes() > 0) {
        std::printf(" (sent %.1f MiB, %.1f MiB already there)", v.seed_bytes() / 1048576.0,
                    v.seed_basis_bytes() / 1048576.0);
      }
    } else if (v.role() == "backup") {
      std::printf(", primary suspected %llu times (silences over the timeout: %llu)",
                  static_cast<unsigned long long>(v.suspicions()),
                  static_cast<unsigned long long>(v.long_silences()));
    }
    std::printf("%s%s\n", v.reason().empty() ? "" : " — ", v.reason().c_str());
  }
  auto link = [](const char* name, const nova_dt::v1::BusLinkStatus& l, const char* counts) {
    if (!l.enabled()) {
      std::printf("  %-19s not configured\n", name);
      return;
    }
    std::printf("  %-19s %s (reconnects: %llu) %s%s%s\n", name,
                l.connected() ? "connected" : "NOT connected",
                static_cast<unsigned long long>(l.reconnects()), counts,
                l.last_error().empty() ? "" : " — ", l.last_error().c_str());
  };
  const auto& bus = s.bus();
  char buf[3][160];
  std::snprintf(buf[0], sizeof buf[0], "requests %llu, malformed %llu, failed %llu",
                static_cast<unsigned long long>(bus.rpc().received()),
                static_cast<unsigned long long>(bus.rpc().malformed()),
                static_cast<unsigned long long>(bus.rpc().failures()));
  std::snprintf(buf[1], sizeof buf[1], "received %llu, handled %llu, malformed %llu",
                static_cast<unsigned long long>(bus.nova_notifications().received()),
                static_cast<unsigned long long>(bus.nova_notifications().handled()),
                static_cast<unsigned long long>(bus.nova_notifications().malformed()));
  std::snprintf(buf[2], sizeof buf[2], "published %llu, queued %llu, dropped %llu",
                static_cast<unsigned long long>(bus.notifier().published()),
                static_cast<unsigned long long>(bus.notifier().queued()),
                static_cast<unsigned long long>(bus.notifier().dropped()));
  std::printf("message bus:\n");
  link("rpc server:", bus.rpc(), buf[0]);
  link("nova notifications:", bus.nova_notifications(), buf[1]);
  link("notifier:", bus.notifier(), buf[2]);
}

bool PeersReachable(const nova_dt::v1::AgentStatus& s, const std::vector<std::string>& want) {
  std::set<std::string> up;
  for (const auto& p : s.peers()) {
    if (p.reachable()) up.insert(p.host());
  }
  for (const auto& w : want) {
    if (!up.count(w)) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::vector<std::string> config_files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      opt.json = true;
    } else if (a == "--health") {
      opt.health = true;
    } else if (a == "--address" || a == "--config-file" || a == "--wait-peer" ||
               a == "--timeout") {
      const char* v = value();
      if (!v) return Usage(a + " needs a value");
      if (a == "--address") opt.address = v;
      if (a == "--config-file") config_files.push_back(v);
      if (a == "--wait-peer") opt.wait_peers.push_back(v);
      if (a == "--timeout") {
        const std::optional<double> seconds = novadt::ParseFiniteDouble(v);
        // Bounded so that the conversion to milliseconds below stays defined.
        if (!seconds || *seconds < 0 || *seconds > 1e6) {
          return Usage("--timeout needs a number of seconds (0 to 1000000)");
        }
        opt.timeout_s = *seconds;
      }
    } else if (a == "--help" || a == "-h") {
      Usage("help");
      return 0;
    } else if (a == "protect" || a == "unprotect" || a == "switchover") {
      opt.command.assign(argv + i, argv + argc);
      break;
    } else {
      return Usage("unknown argument '" + a + "'");
    }
  }
  if (!config_files.empty()) {
    auto cfg = novadt::config::LoadAgentConfig(config_files);
    if (!cfg.ok()) {
      std::fprintf(stderr, "nova-dt-status: %s\n", std::string(cfg.status().message()).c_str());
      return 2;
    }
    opt.address = cfg->defaults.control_address;
  }

  auto channel = grpc::CreateChannel(opt.address, grpc::InsecureChannelCredentials());
  const bool switchover = !opt.command.empty() && opt.command[0] == "switchover";
  if (opt.timeout_s <= 0) opt.timeout_s = switchover ? 90 : 10;
  const auto deadline =
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(opt.timeout_s * 1000));

  if (!opt.command.empty()) {
    const bool protect = opt.command[0] == "protect";
    if (opt.command.size() != (protect ? 3u : 2u)) {
      return Usage(protect ? "protect needs INSTANCE_UUID BACKUP_HOST"
                           : opt.command[0] + " needs INSTANCE_UUID");
    }
    auto stub = nova_dt::v1::Control::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::Status st;
    if (switchover) {
      nova_dt::v1::SwitchoverRequest req;
      req.set_instance_uuid(opt.command[1]);
      nova_dt::v1::SwitchoverReply reply;
      st = stub->Switchover(&ctx, req, &reply);
      if (st.ok()) {
        std::printf("switchover %s: running on %s from epoch %llu, guest paused %lld ms\n",
                    opt.command[1].c_str(), reply.new_host().c_str(),
                    static_cast<unsigned long long>(reply.epoch()),
                    static_cast<long long>(reply.paused_ms()));
        return 0;
      }
    } else if (protect) {
      nova_dt::v1::ProtectRequest req;
      req.set_instance_uuid(opt.command[1]);
      req.set_backup_host(opt.command[2]);
      nova_dt::v1::ProtectReply reply;
      st = stub->Protect(&ctx, req, &reply);
    } else {
      nova_dt::v1::UnprotectRequest req;
      req.set_instance_uuid(opt.command[1]);
      nova_dt::v1::UnprotectReply reply;
      st = stub->Unprotect(&ctx, req, &reply);
    }
    if (!st.ok()) {
      std::fprintf(stderr, "nova-dt-status: %s failed: %s\n", opt.command[0].c_str(),
                   st.error_message().c_str());
      return 1;
    }
    std::printf("%s %s: ok\n", opt.command[0].c_str(), opt.command[1].c_str());
    return 0;
  }

  if (opt.health) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = stub->Check(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "nova-dt-status: %s: %s\n", opt.address.c_str(),
                   st.error_message().c_str());
      return 1;
    }
    const bool serving = resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    std::printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
    return serving ? 0 : 1;
  }

  auto stub = nova_dt::v1::Control::NewStub(channel);
  nova_dt::v1::AgentStatus status;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::min(deadline, std::chrono::system_clock::now() + std::chrono::seconds(3)));
    ctx.set_wait_for_ready(!opt.wait_peers.empty());
    status.Clear();
    grpc::Status st = stub->Status(&ctx, nova_dt::v1::StatusRequest(), &status);
    const bool done = st.ok() && PeersReachable(status, opt.wait_peers);
    if (done || std::chrono::system_clock::now() >= deadline) {
      if (!st.ok()) {
        std::fprintf(stderr, "nova-dt-status: cannot reach agent at %s: %s\n",
                     opt.address.c_str(), st.error_message().c_str());
        return 1;
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  if (opt.json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions jo;
    jo.always_print_primitive_fields = true;
    jo.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(status, &out, jo);
    std::printf("%s\n", out.c_str());
  } else {
    PrintHuman(status);
  }
  if (!PeersReachable(status, opt.wait_peers)) {
    std::fprintf(stderr, "nova-dt-status: peers not reachable within %.1fs\n", opt.timeout_s);
    return 1;
  }
  return 0;
}
