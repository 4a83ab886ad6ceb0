// Agent restart recovery on the two-host rig (issue 6 item 5; ARCHITECTURE.md invariant 4): the
// agent on either side is SIGKILLed (its guest, QEMU and libvirtd keep running) and started
// again; the pair must come back to protected with no released output lost. Both agents use the
// etcd witness (in the rig's switch namespace), as a production pair would: without it a backup
// could fail over while the primary's agent is merely restarting. Each case prints a
// "fault-row:" line (case | expected | measured).
//
//   - primary agent killed: the guest keeps running, its egress stays held (by the buffers the
//     dead agent left); the restarted agent adopts them, re-seeds the backup and releases them
//     with the new stream's first commit. The observer's values stay consecutive (nothing
//     released is lost, nothing repeated) and the stall is printed and bounded.
//   - backup agent killed: the primary degrades within its bound and keeps serving; the restarted
//     backup is re-seeded and the pair is protected again.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <limits>
#include <cstdio>
#include <sstream>
#include <thread>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/etcd_server.h"
#include "tests/support/fault_report.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::EtcdServer;
using novadt::testing::FaultRow;
using novadt::testing::Ms;
using novadt::testing::MsSince;
using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr char kGuestUuid[] = "7c3e9a41-2b6d-4e8f-9a10-5d4c3b2a1f09";

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kGuestUuid);
}



class RestartFaultTest : public ::testing::Test {
 protected:
  void BringUp(const std::string& rig_name) {
    rig_ = std::make_unique<Rig>(rig_name);
    ASSERT_TRUE(rig_->Up().ok());
    EtcdServer::Options eo;
    eo.exec_prefix = rig_->ExecPrefix("net");
    eo.listen_ip = Rig::kNetAddress;
    etcd_ = std::make_unique<EtcdServer>(eo);
    ASSERT_TRUE(etcd_->Start().ok()) << etcd_->LogTail();
    ASSERT_TRUE(rig_->BootGuest("a", "dtguest", kGuestUuid).ok());
    for (const char* host : {"a", "b"}) {
      Status started = rig_->StartAgent(host, Overrides());
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
    ASSERT_TRUE(WaitForProtected(1, seconds(120))) << Log("a");
  }

  std::vector<std::string> Overrides() const {
    // A 5 s lease: the restarted primary re-claims its server long before the claim lapses.
    return {"witness.etcd_endpoints=" + etcd_->endpoint(), "witness.lease_ttl_ms=5000",
            "witness.fence_margin_ms=500", "witness.request_timeout_ms=500"};
  }

  // Both sides report protected, the backup's replica at `min_epoch` or later.
  bool WaitForProtected(uint64_t min_epoch, std::chrono::milliseconds timeout) {
    return WaitFor(
        [&] {
          auto a = Server(*rig_, "a");
          auto b = Server(*rig_, "b");
          return a && a->state() == "protected" && b && b->role() == "backup" &&
                 b->state() == "protected" && b->last_committed_epoch() >= min_epoch;
        },
        timeout);
  }

  void TearDown() override {
    if (rig_) {
      EXPECT_TRUE(rig_->Down().ok());
      EXPECT_TRUE(rig_->VerifyGone().ok());
    }
  }

  std::string Log(const std::string& host) const {
    const std::string log = novadt::testing::ReadFile(rig_->dir() + "/" + host + "/agent/agent.log");
    return host + "'s agent log tail:\n" + log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  }

  // The observer's arrivals after `since` (unix seconds): the largest gap between two, in ms.
  double LargestGapMs(double since) const {
    std::istringstream log(novadt::testing::ReadFile(rig_->dir() + "/observer.log"));
    double prev = since, gap = 0;
    for (std::string line; std::getline(log, line);) {
      if (line.find("seq=") == std::string::npos) continue;
      const double t = std::strtod(line.c_str(), nullptr);
      if (t < since) continue;
      gap = std::max(gap, (t - prev) * 1000);
      prev = t;
    }
    return gap;
  }
  static double UnixNow() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // Every value the observer saw, in arrival order, is one more than the one before: nothing
  // released lost (no gap), nothing repeated, never back before released output. From
  // `takeover_from` on, one step may skip values (the take-over): the frames of the last
  // committed epoch the dead agent had not released were never seen by anyone, and the restored
  // guest continues after them.
  void ExpectConsecutive(const std::string& what,
                         size_t takeover_from = std::numeric_limits<size_t>::max()) const {
    auto values = rig_->ObserverValues();
    bool skipped = false;
    for (size_t i = 1; i < values.size(); ++i) {
      if (i >= takeover_from && !skipped && values[i] > values[i - 1] + 1) {
        skipped = true;
        continue;
      }
      if (values[i] != values[i - 1] + 1) {
        ADD_FAILURE() << what << ": value " << values[i] << " after " << values[i - 1] << " at "
                      << i;
        return;
      }
    }
  }

  // The counter value on a's guest disk (the dtcounter header), -1 when unreadable.
  int64_t DiskValueOnA() const {
    std::string out;
    if (rig_->Exec("a", {std::string(NOVA_DT_BINARY_DIR) + "/guest/dtcounter-read",
                         "/var/lib/libvirt/images/dtguest.raw"},
                   &out) != 0) {
      return -1;
    }
    const auto at = out.find("last=");
    return at == std::string::npos ? -1 : std::atoll(out.c_str() + at + 5);
  }

  std::unique_ptr<Rig> rig_;
  std::unique_ptr<EtcdServer> etcd_;
};

TEST_F(RestartFaultTest, PrimaryAgentKilledAndRestartedReturnsToProtectedLosingNothing) {
  ASSERT_NO_FATAL_FAILURE(BringUp("rr1"));
  const auto a_before = Server(*rig_, "a");
  ASSERT_TRUE(a_before);
  const double kill_unix = UnixNow();
  const auto killed = SteadyClock::now();
  ASSERT_TRUE(rig_->StopAgent("a", /*kill=*/true).ok());
  const size_t seen_at_kill = rig_->ObserverValues().size();

  // What QEMU does without its agent: the guest keeps running; its output is held by the dead
  // agent's buffers; disk writes go on or stall depending on the orphaned block copy.
  const int64_t disk0 = DiskValueOnA();
  std::this_thread::sleep_for(milliseconds(1500));
  const int64_t disk1 = DiskValueOnA();
  std::string domstate, jobs;
  rig_->Exec("a", {"virsh", "domstate", "dtguest"}, &domstate);
  rig_->Exec("a", {"virsh", "qemu-monitor-command", "dtguest", "{\"execute\":\"query-block-jobs\"}"},
             &jobs);
  const size_t seen_while_down = rig_->ObserverValues().size();
  std::printf("primary agent down: guest %s; disk counter %lld -> %lld in 1.5 s; block jobs %s; "
              "observer got %zu values while the agent was down\n",
              domstate.substr(0, domstate.find('\n')).c_str(), static_cast<long long>(disk0),
              static_cast<long long>(disk1), jobs.c_str(), seen_while_down - seen_at_kill);
  EXPECT_NE(domstate.find("running"), std::string::npos) << "the guest must keep running";
  EXPECT_LE(seen_while_down - seen_at_kill, 1u) << "output left while no agent could commit it";

  const auto restart = SteadyClock::now();
  Status started = rig_->StartAgent("a", Overrides());
  ASSERT_TRUE(started.ok()) << started << "\n" << Log("a");
  const double kill_to_answering = MsSince(killed);
  const double restart_ms = MsSince(restart);
  const int64_t last_seen = rig_->ObserverValues().back();
  // Output flows again once the new stream's first epoch is committed.
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last_seen; }, seconds(50)))
      << Log("a") << Log("b");
  const double kill_to_output = MsSince(killed);
  ASSERT_TRUE(WaitForProtected(5, seconds(30))) << Log("a") << Log("b");
  const double kill_to_protected = MsSince(killed);
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last_seen + 30; }, seconds(20)));
  const double stall = LargestGapMs(kill_unix);
  auto a = Server(*rig_, "a");
  ASSERT_TRUE(a);
  const std::string log_a = novadt::testing::ReadFile(rig_->dir() + "/a/agent/agent.log");
  EXPECT_NE(log_a.find("adopted"), std::string::npos) << "no held output adopted\n" << Log("a");
  EXPECT_NE(log_a.find("re-claimed after the restart (generation 1)"), std::string::npos)
      << Log("a");
  EXPECT_NE(a->reason().find("recovered after an agent restart"), std::string::npos)
      << a->reason();
  std::printf("primary agent restart: agent answering %.0f ms after the kill (start %.0f ms); "
              "first new output %.0f ms; protected %.0f ms; largest observer gap %.0f ms; a: %s\n",
              kill_to_answering, restart_ms, kill_to_output, kill_to_protected, stall,
              a->reason().c_str());
  // The recovery as the restarted agent logged it (for the report).
  std::istringstream lines(log_a);
  for (std::string line; std::getline(lines, line);) {
    for (const char* key : {"protection table", "recovering", "re-claimed", "adopted", "stale",
                            "recovered after", "block job", "disk capture"}) {
      if (line.find(key) != std::string::npos) {
        std::printf("  a: %s\n", line.c_str());
        break;
      }
    }
  }
  ExpectConsecutive("across the primary agent's restart");
  const std::string obs = novadt::testing::ReadFile(rig_->dir() + "/observer.log");
  EXPECT_EQ(obs.find("MISMATCH"), std::string::npos);
  // Bounded: the restart, plus one re-seed of the backup (256 MiB under TCG), plus slack.
  EXPECT_LT(stall, kill_to_answering + 20000);
  FaultRow("SIGKILL primary agent, restart",
           "pair back to protected; 0 released values lost; stall bounded by restart + re-seed",
           "protected " + Ms(kill_to_protected) + " after the kill (agent answering at " +
               Ms(kill_to_answering) + "); output stall " + Ms(stall) +
               "; values consecutive; disk writes while down: " +
               (disk1 > disk0 ? "continued" : "stalled"));
}

TEST_F(RestartFaultTest, BackupAgentKilledAndRestartedIsReprotected) {
  ASSERT_NO_FATAL_FAILURE(BringUp("rr2"));
  const double kill_unix = UnixNow();
  const auto killed = SteadyClock::now();
  ASSERT_TRUE(rig_->StopAgent("b", /*kill=*/true).ok());
  double degraded_ms = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto a = Server(*rig_, "a");
        if (a && a->state() == "degraded") degraded_ms = MsSince(killed);
        return degraded_ms >= 0;
      },
      seconds(15)))
      << Log("a");
  // The primary keeps serving while its backup is gone.
  const int64_t at_degrade = rig_->ObserverValues().back();
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > at_degrade + 20; }, seconds(10)))
      << Log("a");
  const double stall_while_down = LargestGapMs(kill_unix);
  Status started = rig_->StartAgent("b", Overrides());
  ASSERT_TRUE(started.ok()) << started << "\n" << Log("b");
  const auto restarted = SteadyClock::now();
  ASSERT_TRUE(WaitForProtected(5, seconds(45))) << Log("a") << Log("b");
  const double reprotect_ms = MsSince(restarted);
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > at_degrade + 60; }, seconds(20)));
  ExpectConsecutive("across the backup agent's restart");
  const double stall = LargestGapMs(kill_unix);
  std::printf("backup agent restart: degraded %.0f ms after the kill; protected %.0f ms after the "
              "restart; largest observer gap %.0f ms (%.0f ms while b was down)\n",
              degraded_ms, reprotect_ms, stall, stall_while_down);
  EXPECT_LT(degraded_ms, 2000 + 1500) << "degrade_after_ms 2000 plus detection slack";
  FaultRow("SIGKILL backup agent, restart",
           "primary degraded within the bound, keeps serving; protected again after restart",
           "degraded " + Ms(degraded_ms) + " after the kill; protected " + Ms(reprotect_ms) +
               " after the restart; largest output gap " + Ms(stall) + "; values consecutive");
}

// The primary's agent stays down past its witness lease: the backup takes the server over. The
// restarted agent must learn that another host owns it and destroy its stale copy without ever
// releasing the output that copy held (the observer hears only the copy on b, counting on).
TEST_F(RestartFaultTest, PrimaryAgentBackAfterATakeOverDestroysItsCopyReleasingNothing) {
  ASSERT_NO_FATAL_FAILURE(BringUp("rr3"));
  const size_t seen_at_kill = rig_->ObserverValues().size();
  const auto killed = SteadyClock::now();
  ASSERT_TRUE(rig_->StopAgent("a", /*kill=*/true).ok());
  const int64_t last_seen = rig_->ObserverValues().back();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto b = Server(*rig_, "b");
        return b && b->role() == "primary";
      },
      seconds(30)))
      << Log("b");
  const double takeover_ms = MsSince(killed);
  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last_seen + 10; }, seconds(20)));
  const size_t seen_before_restart = rig_->ObserverValues().size();
  Status started = rig_->StartAgent("a", Overrides());
  ASSERT_TRUE(started.ok()) << started << "\n" << Log("a");
  std::string state;
  ASSERT_TRUE(WaitFor(
      [&] {
        state.clear();
        rig_->Exec("a", {"virsh", "domstate", "dtguest"}, &state);
        return state.find("running") == std::string::npos &&
               state.find("paused") == std::string::npos;
      },
      seconds(20)))
      << "stale copy on a: " << state << "\n" << Log("a");
  std::string log_a;
  EXPECT_TRUE(WaitFor(
      [&] {
        log_a = novadt::testing::ReadFile(rig_->dir() + "/a/agent/agent.log");
        return log_a.find("destroying the stale copy after the agent restart") != std::string::npos;
      },
      seconds(5)))
      << Log("a");
  EXPECT_EQ(log_a.find("adopted"), std::string::npos) << "the stale copy was protected again";
  std::this_thread::sleep_for(seconds(2));
  EXPECT_GT(rig_->ObserverValues().size(), seen_before_restart + 50);
  ExpectConsecutive("after the take-over and a's restart", seen_at_kill);
  FaultRow("SIGKILL primary agent, restart after the backup took over",
           "stale copy destroyed, its held output never released",
           "b took over " + Ms(takeover_ms) + " after the kill; a destroyed its copy on restart; "
           "no value repeated or out of order (one skip at the take-over)");
}

}  // namespace
}  // namespace novadt
