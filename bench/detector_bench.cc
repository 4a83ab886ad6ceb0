// detector_bench: false suspicions of the backup's failure detector on an impaired rig link.
// Boots the test guest on host a, protects it to host b over a clean link, then impairs b's link
// (by default the "delay 50ms 20ms loss 5%") and lets the pair run: the primary is alive
// all along, so every suspicion is false. Prints, per hour, the accrual detector's suspicions and
// the silences a fixed timeout of the same length ([replication] heartbeat_timeout_ms, 500 ms)
// would have taken for a failure, and whether a failover happened (it must not).
//
//   sudo build/bench/detector_bench [SECONDS=300] ["NETEM ARGS"]
//
// Needs root (the rig). Bounded: one run of SECONDS (max 3600).
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace {

using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kUuid[] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kUuid);
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "detector_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int run_s = argc > 1 ? std::min(std::max(std::atoi(argv[1]), 10), 3600) : 300;
  const std::string netem = argc > 2 ? argv[2] : "delay 50ms 20ms loss 5%";
  Rig rig("fdb");
  if (auto st = rig.Up(); !st.ok()) return Fail(st.ToString());
  if (auto st = rig.BootGuest("a", "dtguest", kUuid, 128); !st.ok()) return Fail(st.ToString());
  for (const char* h : {"a", "b"}) {
    if (auto st = rig.StartAgent(h); !st.ok()) return Fail(st.ToString());
  }
  std::string out;
  if (novadt::testing::RunCommand({std::string(NOVA_DT_BINARY_DIR) + "/agent/tools/nova-dt-status",
                                   "--address", rig.AgentControlAddress("a"), "protect", kUuid,
                                   "rig-b"},
                                  &out) != 0) {
    return Fail("protect: " + out);
  }
  if (!WaitFor(
          [&] {
            auto b = Server(rig, "b");
            return b && b->state() == "protected" && b->last_committed_epoch() >= 20;
          },
          seconds(180))) {
    return Fail("the pair did not get protected");
  }
  if (auto st = rig.Netem("b", netem); !st.ok()) return Fail(st.ToString());
  const auto before = *Server(rig, "b");
  std::printf("rig link of host b impaired: %s; running %d s (primary alive throughout)\n",
              netem.c_str(), run_s);
  std::this_thread::sleep_for(seconds(run_s));
  const auto after = Server(rig, "b");
  const auto primary = Server(rig, "a");
  (void)rig.Netem("b", "clear");
  if (!after) return Fail("no status from b");
  const double hours = run_s / 3600.0;
  const uint64_t suspicions = after->suspicions() - before.suspicions();
  const uint64_t silences = after->long_silences() - before.long_silences();
  std::printf("backup on b: role %s, state %s, epochs committed %llu -> %llu\n",
              after->role().c_str(), after->state().c_str(),
              static_cast<unsigned long long>(before.last_committed_epoch()),
              static_cast<unsigned long long>(after->last_committed_epoch()));
  std::printf("primary on a: %s%s%s\n", primary ? primary->state().c_str() : "no status",
              primary && !primary->reason().empty() ? " — " : "",
              primary ? primary->reason().c_str() : "");
  std::printf("accrual detector (phi 8, min 500 ms): %llu suspicions = %.1f per hour\n",
              static_cast<unsigned long long>(suspicions), suspicions / hours);
  std::printf("fixed 500 ms timeout would have suspected: %llu = %.1f per hour\n",
              static_cast<unsigned long long>(silences), silences / hours);
  std::printf("failover started: %s\n", after->role() == "backup" ? "no" : "YES (false failover)");
  (void)rig.StopAgent("a");
  (void)rig.StopAgent("b");
  (void)rig.Down();
  return after->role() == "backup" ? 0 : 1;
}
