// Pair safety with the etcd witness on the two-host rig (issue 6; docs/witness.md): etcd runs in
// the rig's switch namespace, reachable from both hosts; both agents use it. Each case prints a
// "fault-row:" line (case | expected | measured) for the fault table in docs/witness.md.
//
//   - SIGKILL of host a's QEMU and agent: b fails over once a's claim lapsed; nothing released
//     is lost.
//   - host a cut from everything (pair and etcd): a pauses its guest (self-fence) before its
//     claim can lapse; b takes over only after that; when a is back, the stale copy is
//     destroyed and never heard from (no interleaving at the observer).
//   - pair link cut, both hosts still reach etcd: no failover; a degrades (advancing the
//     generation before it releases output), b calls its failover off; protection comes back
//     when the link heals.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <thread>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/etcd_server.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::EtcdServer;
using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr char kGuestUuid[] = "5a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kGuestUuid);
}

double MsSince(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

void FaultRow(const std::string& what, const std::string& expected, const std::string& measured) {
  std::printf("fault-row: %s | %s | %s\n", what.c_str(), expected.c_str(), measured.c_str());
  std::fflush(stdout);
}

class WitnessFaultTest : public ::testing::Test {
 protected:
  // Rig up with etcd in its switch namespace, the guest counting on a, both agents on the
  // witness (2 s lease, fence 500 ms before it can lapse), a protecting the guest to b.
  void BringUp(const std::string& rig_name) {
    rig_ = std::make_unique<Rig>(rig_name);
    ASSERT_TRUE(rig_->Up().ok());
    EtcdServer::Options eo;
    eo.exec_prefix = rig_->ExecPrefix("net");
    eo.listen_ip = Rig::kNetAddress;
    etcd_ = std::make_unique<EtcdServer>(eo);
    ASSERT_TRUE(etcd_->Start().ok()) << etcd_->LogTail();
    ASSERT_TRUE(rig_->BootGuest("a", "dtguest", kGuestUuid).ok());
    const std::vector<std::string> witness = {"witness.etcd_endpoints=" + etcd_->endpoint(),
                                              "witness.lease_ttl_ms=2000",
                                              "witness.fence_margin_ms=500",
                                              "witness.request_timeout_ms=500"};
    for (const char* host : {"a", "b"}) {
      Status started = rig_->StartAgent(host, witness);
      ASSERT_TRUE(started.ok()) << started << "\n" << Log(host);
    }
    ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > 20; }, seconds(60)));
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kGuestUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    auto control = nova_dt::v1::Control::NewStub(grpc::CreateChannel(
        rig_->AgentControlAddress("a"), grpc::InsecureChannelCredentials()));
    grpc::Status st = control->Protect(&ctx, req, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(WaitFor(
        [&] {
          auto b = Server(*rig_, "b");
          return b && b->state() == "protected" && b->last_committed_epoch() >= 10;
        },
        seconds(120)))
        << Log("a");
  }

  void TearDown() override {
    if (rig_) {
      EXPECT_TRUE(rig_->Down().ok());
      EXPECT_TRUE(rig_->VerifyGone().ok());
    }
  }

  std::string Log(const std::string& host) const {
    const std::string log = novadt::testing::ReadFile(rig_->dir() + "/" + host + "/agent/agent.log");
    return host + "'s agent log tail:\n" + log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  }
  std::string DomState(const std::string& host) const {
    std::string out;
    rig_->Exec(host, {"virsh", "domstate", "dtguest"}, &out);
    return out;
  }
  // The observer's values from `from` on: each exactly one more than the one before (one guest,
  // counting on, no second copy interleaving).
  void ExpectOneCountingGuest(size_t from, const std::string& what) const {
    auto values = rig_->ObserverValues();
    for (size_t i = std::max<size_t>(from, 1); i < values.size(); ++i) {
      if (values[i] != values[i - 1] + 1) {
        ADD_FAILURE() << what << ": value " << values[i] << " after " << values[i - 1]
                      << " at " << i;
        return;
      }
    }
  }

  std::unique_ptr<Rig> rig_;
  std::unique_ptr<EtcdServer> etcd_;
};

TEST_F(WitnessFaultTest, PrimaryKilledFailsOverOnceItsClaimLapsedAndLosesNothingReleased) {
  ASSERT_NO_FATAL_FAILURE(BringUp("wf1"));
  const std::string qemu_pid = novadt::testing::ReadFile(rig_->dir() + "/a/run/qemu/dtguest.pid");
  ASSERT_FALSE(qemu_pid.empty());
  const auto killed = SteadyClock::now();
  ::kill(std::stoi(qemu_pid), SIGKILL);
  ASSERT_TRUE(rig_->StopAgent("a", /*kill=*/true).ok());
  const auto seen_before = rig_->ObserverValues();
  const int64_t last_seen = seen_before.back();
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last_seen; }, seconds(20)))
      << Log("b");
  const double kill_to_value = MsSince(killed);
  std::optional<nova_dt::v1::ProtectedServer> b;
  ASSERT_TRUE(WaitFor(
      [&] {
        b = Server(*rig_, "b");
        return b && b->role() == "primary";
      },
      seconds(10)));
  // The take-over waited for the 2 s lease: detection + lapse + restore.
  const std::string log_b = novadt::testing::ReadFile(rig_->dir() + "/b/agent/agent.log");
  EXPECT_NE(log_b.find("witness: took the server over from rig-a (generation 1 -> 2)"),
            std::string::npos)
      << Log("b");
  std::printf("failover with the witness: kill -> first new value %.0f ms; %s\n", kill_to_value,
              b->reason().c_str());
  FaultRow("SIGKILL primary QEMU + agent (witness)",
           "failover once the claim lapsed; 0 released values lost",
           "kill -> running on b " + std::to_string(static_cast<int>(kill_to_value)) + " ms; " +
               b->reason());
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > seen_before.size() + 30; },
                      seconds(20)));
  auto values = rig_->ObserverValues();
  EXPECT_GT(values[seen_before.size()], last_seen) << "went back before released output";
  ExpectOneCountingGuest(seen_before.size(), "after the failover");
}

TEST_F(WitnessFaultTest, PrimaryCutFromPairAndWitnessFencesItselfBeforeTheBackupTakesOver) {
  ASSERT_NO_FATAL_FAILURE(BringUp("wf2"));
  std::string out;
  const auto cut = SteadyClock::now();
  ASSERT_EQ(rig_->Exec("a", {"ip", "link", "set", "eth0", "down"}, &out), 0) << out;
  const size_t seen_at_cut = rig_->ObserverValues().size();
  const int64_t last_seen = rig_->ObserverValues().back();

  // a's own control API (a unix socket) still answers: its guest is fenced, and paused.
  double fenced_ms = -1, takeover_ms = -1;
  std::string a_state_at_takeover;
  ASSERT_TRUE(WaitFor(
      [&] {
        if (fenced_ms < 0) {
          auto a = Server(*rig_, "a");
          if (a && a->reason().find("guest fenced") != std::string::npos) fenced_ms = MsSince(cut);
        }
        auto b = Server(*rig_, "b");
        if (b && b->role() == "primary") {
          takeover_ms = MsSince(cut);
          a_state_at_takeover = DomState("a");
          return true;
        }
        return false;
      },
      seconds(30)))
      << Log("a") << Log("b");
  ASSERT_GE(fenced_ms, 0) << "a never fenced its guest\n" << Log("a");
  EXPECT_LT(fenced_ms, takeover_ms);
  EXPECT_NE(a_state_at_takeover.find("paused"), std::string::npos)
      << "two running copies: a's guest was '" << a_state_at_takeover << "' when b took over";
  FaultRow("primary cut from pair and etcd",
           "primary self-fences before lease expiry; backup takes over; never two running copies",
           "fenced " + std::to_string(static_cast<int>(fenced_ms)) + " ms after the cut, b running " +
               std::to_string(static_cast<int>(takeover_ms)) + " ms after; a's guest " +
               (a_state_at_takeover.find("paused") != std::string::npos ? "paused" : "NOT paused") +
               " at the take-over");
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last_seen; }, seconds(20)));

  // a comes back: it learns that b owns the server and destroys its stale copy; the observer
  // only ever hears the guest on b.
  ASSERT_EQ(rig_->Exec("a", {"ip", "link", "set", "eth0", "up"}, &out), 0) << out;
  EXPECT_TRUE(WaitFor([&] { return DomState("a").find("running") == std::string::npos &&
                                   DomState("a").find("paused") == std::string::npos; },
                      seconds(20)))
      << "stale copy on a: " << DomState("a") << "\n" << Log("a");
  std::this_thread::sleep_for(seconds(2));
  ExpectOneCountingGuest(seen_at_cut, "after the cut");
}

TEST_F(WitnessFaultTest, PairLinkCutWhileBothReachTheWitnessNeverFailsOver) {
  ASSERT_NO_FATAL_FAILURE(BringUp("wf3"));
  std::string out;
  const size_t seen_at_cut = rig_->ObserverValues().size();
  for (const char* chain_rule : {"OUTPUT -d 198.18.0.2", "INPUT -s 198.18.0.2"}) {
    std::vector<std::string> argv = {"iptables", "-I"};
    std::istringstream words(chain_rule);
    for (std::string w; words >> w;) argv.push_back(w);
    argv.insert(argv.end(), {"-j", "DROP"});
    ASSERT_EQ(rig_->Exec("a", argv, &out), 0) << out;
  }
  // a degrades (the backup stops acknowledging), advances the generation, releases output.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto a = Server(*rig_, "a");
        return a && a->state() == "degraded" &&
               a->reason().find("output released (witness generation 2)") != std::string::npos;
      },
      seconds(20)))
      << Log("a");
  // b suspects a, but the witness refuses the take-over: a is alive and advanced past b's
  // replica. Wait well past any lease expiry.
  std::this_thread::sleep_for(seconds(6));
  auto b = Server(*rig_, "b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->role(), "backup") << b->reason();
  EXPECT_EQ(DomState("b").find("running"), std::string::npos) << "b started a second copy";
  EXPECT_NE(DomState("a").find("running"), std::string::npos) << "a's guest must keep running";
  const std::string log_b = novadt::testing::ReadFile(rig_->dir() + "/b/agent/agent.log");
  const bool refused = log_b.find("the witness refuses the take-over") != std::string::npos;
  FaultRow("pair link cut, both reach etcd", "no failover; degraded; protection back when healed",
           std::string("b stayed backup; a degraded and released output at generation 2; ") +
               (refused ? "b's take-over refused by the witness" : "b never tried a take-over"));

  // The link heals: a re-seeds b at the new generation.
  for (const char* chain_rule : {"OUTPUT -d 198.18.0.2", "INPUT -s 198.18.0.2"}) {
    std::vector<std::string> argv = {"iptables", "-D"};
    std::istringstream words(chain_rule);
    for (std::string w; words >> w;) argv.push_back(w);
    argv.insert(argv.end(), {"-j", "DROP"});
    ASSERT_EQ(rig_->Exec("a", argv, &out), 0) << out;
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        auto a = Server(*rig_, "a");
        auto bb = Server(*rig_, "b");
        return a && a->state() == "protected" && bb && bb->state() == "protected" &&
               bb->role() == "backup";
      },
      seconds(60)))
      << Log("a") << Log("b");
  ExpectOneCountingGuest(seen_at_cut, "through the cut");
}

}  // namespace
}  // namespace novadt
