// epoch_bench: the epoch engine on the two-host rig, per guest RAM size. For each size it boots
// the test guest on host a, protects it to host b, lets it run, and prints: seeding time,
// checkpoint pause p50/p99, dirty pages and bytes per epoch, the backup agent's RSS against guest
// RAM, and the failover time after SIGKILL of the primary's QEMU and agent.
//
//   sudo build/bench/epoch_bench [SECONDS_PER_SIZE=10] [MIB...=128 256 512]
//
// Guests are idle apart from the test workload (a 50 Hz counter). Needs root (the rig).
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace {

using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kUuid[] = "5b0c7a6e-2f1d-4c11-9a57-0d7e1f00b3c4";

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kUuid);
}

// VmRSS of `pid` in KiB.
long RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

struct Row {
  int mib = 0;
  long seed_ms = 0;
  double p50 = 0, p99 = 0;
  double pages_per_epoch = 0, kib_per_epoch = 0;
  long backup_rss_mib = 0;
  double failover_ms = 0;
  std::string error;
};

Row Measure(int mib, int run_seconds) {
  Row row;
  row.mib = mib;
  Rig rig("bch");
  auto fail = [&](const std::string& what) {
    row.error = what;
    return row;
  };
  if (!rig.Up().ok()) return fail("rig up");
  if (!rig.BootGuest("a", "benchguest", kUuid, mib).ok()) return fail("boot");
  if (!rig.StartAgent("a").ok() || !rig.StartAgent("b").ok()) return fail("agents");
  if (!WaitFor([&] { return rig.ObserverValues().size() > 20; }, seconds(60))) return fail("guest");
  {
    auto stub = nova_dt::v1::Control::NewStub(
        grpc::CreateChannel(rig.AgentControlAddress("a"), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    if (!stub->Protect(&ctx, req, &reply).ok()) return fail("protect");
  }
  if (!WaitFor([&] { auto a = Server(rig, "a"); return a && a->state() == "protected"; },
               seconds(180))) {
    return fail("never protected");
  }
  auto start = Server(rig, "a");
  std::this_thread::sleep_for(seconds(run_seconds));
  auto end = Server(rig, "a");
  if (!start || !end || end->state() != "protected") return fail("not protected at the end");
  const double epochs = double(end->steady_epochs() - start->steady_epochs());
  row.seed_ms = end->seed_ms();
  row.p50 = end->pause_p50_us() / 1000.0;
  row.p99 = end->pause_p99_us() / 1000.0;
  row.pages_per_epoch = (end->steady_pages() - start->steady_pages()) / epochs;
  row.kib_per_epoch = (end->steady_bytes() - start->steady_bytes()) / epochs / 1024.0;
  const pid_t backup_agent = std::stoi(novadt::testing::ReadFile(rig.dir() + "/b/agent/pid"));
  row.backup_rss_mib = RssKiB(backup_agent) / 1024;

  const std::string qemu = novadt::testing::ReadFile(rig.dir() + "/a/run/qemu/benchguest.pid");
  const auto killed = std::chrono::steady_clock::now();
  ::kill(std::stoi(qemu), SIGKILL);
  (void)rig.StopAgent("a", /*kill=*/true);
  // Frames the primary released just before the kill may still be on their way to the
  // observer; a restore takes hundreds of ms, so anything newer than what arrived in the first
  // 100 ms after the kill comes from the backup.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const int64_t last = rig.ObserverValues().back();
  if (!WaitFor([&] { return rig.ObserverValues().back() > last; }, seconds(30))) {
    return fail("no failover");
  }
  row.failover_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed).count();
  (void)rig.Down();
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  const int run_seconds = argc > 1 ? std::atoi(argv[1]) : 10;
  std::vector<int> sizes;
  for (int i = 2; i < argc; ++i) sizes.push_back(std::atoi(argv[i]));
  if (sizes.empty()) sizes = {128, 256, 512};
  std::printf("epoch_bench: idle test guest (50 Hz counter), 100 ms epochs, TCG, %d s per size\n",
              run_seconds);
  std::printf("%-8s %9s %9s %9s %12s %12s %14s %12s\n", "RAM MiB", "seed ms", "pause p50",
              "pause p99", "pages/epoch", "KiB/epoch", "backup RSS MiB", "failover ms");
  int failures = 0;
  for (int mib : sizes) {
    const Row r = Measure(mib, run_seconds);
    if (!r.error.empty()) {
      std::printf("%-8d failed: %s\n", mib, r.error.c_str());
      ++failures;
      continue;
    }
    std::printf("%-8d %9ld %9.1f %9.1f %12.1f %12.1f %14ld %12.0f\n", r.mib, r.seed_ms, r.p50, r.p99,
                r.pages_per_epoch, r.kib_per_epoch, r.backup_rss_mib, r.failover_ms);
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}
