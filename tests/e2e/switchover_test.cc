// Planned switchover, failback and automatic re-protection on the two-host rig (issue 6 item 3),
// with the etcd witness as in production. Each case prints a "fault-row:" line.
//
//   - planned switchover a → b and failback b → a, then a killed: b runs the replica seeded
//     over its kept files: the observer's values stay strictly
//     consecutive through both moves (no output lost, none repeated, no take-over skip: the
//     final epoch is committed before the old copy's held output leaves and it never runs
//     again); after each move the new primary protects the server towards the old one by itself
//     ([replication] reprotect_hosts), over the replica files the old copy ran on if it ran on
//     one (incremental: only what differs is sent).
//   - failover, then re-protection towards the returning old primary, then failback: a's QEMU and
//     agent are SIGKILLed, b takes over (and b's agent is SIGKILLed and restarted while it waits:
//     the pending re-protection is persisted); when a's agent is back, b protects the server
//     towards a by itself, over the disk a's dead copy left; a planned failback brings it home
//     without a value lost.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/fault_report.h"
#include "tests/support/pair_rig_test.h"

namespace novadt {
namespace {

using novadt::testing::FaultRow;
using novadt::testing::Ms;
using novadt::testing::MsSince;
using novadt::testing::PairRigOptions;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr char kGuestUuid[] = "2d8f6a10-7b3c-4e59-a1d2-c3b4e5f60718";

class SwitchoverTest : public novadt::testing::PairRigTest {
 protected:
  SwitchoverTest() : PairRigTest(kGuestUuid) {}

  PairRigOptions Options(const std::string& rig_name) const {
    PairRigOptions o;
    o.rig_name = rig_name;
    o.host_settings["a"] = {"replication.reprotect_hosts=rig-b"};
    o.host_settings["b"] = {"replication.reprotect_hosts=rig-a"};
    return o;
  }

  // Switchover from `from`'s agent; on success the reply, else a test failure with both logs.
  std::optional<nova_dt::v1::SwitchoverReply> Switch(const std::string& from) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(90));
    nova_dt::v1::SwitchoverRequest req;
    req.set_instance_uuid(kGuestUuid);
    nova_dt::v1::SwitchoverReply reply;
    grpc::Status st = Control(from)->Switchover(&ctx, req, &reply);
    if (!st.ok()) {
      ADD_FAILURE() << "switchover from " << from << ": " << st.error_message() << "\n"
                    << Log("a") << "\n" << Log("b");
      return std::nullopt;
    }
    return reply;
  }

  // One planned move `from` → `to`, checked: the guest runs on `to` only, the values stay
  // consecutive, and `to` protects the server towards `from` again by itself — seeding over the
  // files the copy on `from` ran on when `incremental` (it ran there from a replica, which is
  // kept as the basis). Returns the measured line for the fault row.
  std::string MoveAndCheck(const std::string& from, const std::string& to, bool incremental) {
    const size_t seen = rig_->ObserverValues().size();
    const double before = UnixNow();
    const auto started = SteadyClock::now();
    auto reply = Switch(from);
    if (!reply) return "failed";
    const double call_ms = MsSince(started);
    EXPECT_EQ(reply->new_host(), "rig-" + to);
    // (virsh may answer empty while libvirt makes the restored domain persistent.)
    EXPECT_TRUE(WaitFor([&] { return DomState(to).find("running") != std::string::npos; },
                        seconds(5)))
        << DomState(to);
    EXPECT_EQ(DomState(from).find("running"), std::string::npos)
        << "the old copy must never run again: " << DomState(from);
    const int64_t last = rig_->ObserverValues().back();
    EXPECT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last + 25; }, seconds(20)))
        << "the guest does not count on " << to;
    ExpectOneCountingGuest("switchover " + from + " -> " + to, seen > 0 ? seen - 1 : 0);
    const double gap = LargestGapMs(before);
    const auto reprotect_start = SteadyClock::now();
    EXPECT_TRUE(WaitForProtected(to, from, 3, seconds(120)))
        << "not re-protected towards " << from << "\n" << Log(to) << "\n" << Log(from);
    const double reprotect_ms = MsSince(reprotect_start);
    const auto server = Server(to);
    const double sent_mib = server ? server->seed_bytes() / 1048576.0 : 0;
    const double basis_mib = server ? server->seed_basis_bytes() / 1048576.0 : 0;
    if (incremental) {
      EXPECT_GT(basis_mib, 0) << "the re-protection towards " << from
                              << " did not seed over the replica kept there\n" << Log(to);
    }
    std::printf("switchover %s -> %s: call %.0f ms, guest paused %lld ms, final epoch %llu, "
                "largest observer gap %.0f ms, re-protected towards %s %.0f ms later "
                "(seed sent %.1f MiB, %.1f MiB already there)\n",
                from.c_str(), to.c_str(), call_ms, static_cast<long long>(reply->paused_ms()),
                static_cast<unsigned long long>(reply->epoch()), gap, from.c_str(), reprotect_ms,
                sent_mib, basis_mib);
    char seed[96];
    std::snprintf(seed, sizeof seed, " (seed sent %.1f MiB, %.1f MiB already there)", sent_mib,
                  basis_mib);
    return from + "→" + to + ": paused " + std::to_string(reply->paused_ms()) +
           " ms, largest gap " + Ms(gap) + ", re-protected " + Ms(reprotect_ms) + " later" + seed;
  }

  // SIGKILLs `from`'s QEMU and agent and waits until the guest counts again (on the backup).
  // Returns the observer sample count before the kill (for ExpectOneCountingGuest) and the
  // time from the kill to the first new value.
  std::pair<size_t, double> KillAndFailOver(const std::string& from) {
    const std::string qemu_pid =
        novadt::testing::ReadFile(rig_->dir() + "/" + from + "/run/qemu/dtguest.pid");
    EXPECT_FALSE(qemu_pid.empty());
    if (qemu_pid.empty()) return {0, 0};
    const auto killed = SteadyClock::now();
    // The agent first: a host dies at once, while an agent outliving its QEMU by a few ms sees
    // a failed checkpoint, degrades and (with the witness) advances the generation, which then
    // rightly refuses the backup's take-over from the older replica.
    EXPECT_TRUE(rig_->StopAgent(from, /*kill=*/true).ok());
    ::kill(std::stoi(qemu_pid), SIGKILL);
    std::this_thread::sleep_for(milliseconds(100));  // frames released just before the kill
    const size_t seen = rig_->ObserverValues().size();
    const int64_t last = rig_->ObserverValues().back();
    EXPECT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last; }, seconds(30)))
        << Log("a") << "\n" << Log("b");
    return {seen, MsSince(killed)};
  }
};

TEST_F(SwitchoverTest, PlannedSwitchoverAndFailbackLoseAndRepeatNothingAndReprotect) {
  ASSERT_NO_FATAL_FAILURE(BringUp(Options("so1")));
  // Each move keeps the paused copy (its RAM and disks at the final epoch, or the replica it
  // ran on) as the basis of the re-protection towards the old host: only what changed goes.
  const std::string there = MoveAndCheck("a", "b", /*incremental=*/true);
  ASSERT_FALSE(HasFailure());
  const std::string back = MoveAndCheck("b", "a", /*incremental=*/true);
  ASSERT_FALSE(HasFailure());
  ExpectOneCountingGuest("whole run");
  // The replica seeded over the kept files must be whole: fail over to it.
  const auto [seen, failover_ms] = KillAndFailOver("a");
  ASSERT_FALSE(HasFailure());
  ExpectOneCountingGuest("failover a -> b from the incrementally seeded replica",
                         seen > 0 ? seen - 1 : 0, seen);
  FaultRow("planned switchover a→b, failback b→a",
           "no value lost or repeated; the new primary re-protects towards the old one",
           there + "; " + back + "; values consecutive throughout; then a killed: b ran the "
           "incrementally seeded replica " + Ms(failover_ms) + " after the kill");
}

TEST_F(SwitchoverTest, SurvivorReprotectsTowardsTheReturningOldPrimaryThenFailsBack) {
  ASSERT_NO_FATAL_FAILURE(BringUp(Options("so2")));
  const auto [seen, failover_ms] = KillAndFailOver("a");
  ASSERT_FALSE(HasFailure());
  // a is down: nowhere to re-protect to yet.
  std::this_thread::sleep_for(seconds(2));
  auto b = Server("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state(), "unprotected") << b->reason();
  EXPECT_NE(b->reason().find("waiting for a re-protection host"), std::string::npos) << b->reason();
  // b's agent crashes and restarts meanwhile: the pending re-protection is in its protection
  // table, so it still happens once a returns.
  ASSERT_TRUE(rig_->StopAgent("b", /*kill=*/true).ok());
  Status b_started = rig_->StartAgent("b", AgentSettings("b"));
  ASSERT_TRUE(b_started.ok()) << b_started << "\n" << Log("b");

  const auto restarted = SteadyClock::now();
  Status started = rig_->StartAgent("a", AgentSettings("a"));
  ASSERT_TRUE(started.ok()) << started << "\n" << Log("a");
  ASSERT_TRUE(WaitForProtected("b", "a", 3, seconds(120))) << Log("b") << "\n" << Log("a");
  const double reprotect_ms = MsSince(restarted);
  // a kept the disk its dead copy left (its RAM died with QEMU): the seed leaves out what that
  // disk and the all-zero pages already hold.
  const auto b_view = Server("b");
  ASSERT_TRUE(b_view);
  EXPECT_GT(b_view->seed_basis_bytes(), 0u) << Log("a");
  ExpectOneCountingGuest("failover a -> b", seen > 0 ? seen - 1 : 0, seen);
  std::printf("failover: kill -> running on b %.0f ms; a's agent back -> protected b -> a %.0f ms "
              "(seed sent %.1f MiB, %.1f MiB already there)\n",
              failover_ms, reprotect_ms, b_view->seed_bytes() / 1048576.0,
              b_view->seed_basis_bytes() / 1048576.0);

  const std::string back = MoveAndCheck("b", "a", /*incremental=*/true);
  ASSERT_FALSE(HasFailure());
  FaultRow("failover, then the old primary returns",
           "survivor re-protects towards it by itself; planned failback loses nothing",
           "kill → running on b " + Ms(failover_ms) + "; b's agent killed and restarted "
           "meanwhile; a's agent back → protected b→a " + Ms(reprotect_ms) + " (seed sent " +
               std::to_string(b_view->seed_bytes() >> 20) + " MiB, " +
               std::to_string(b_view->seed_basis_bytes() >> 20) + " MiB already there); failback " +
               back);
}

// The backup cannot restore (its libvirtd is gone): the take-over fails after the final epoch.
// The primary wins its witness claim back (the backup released it), resumes its paused copy and
// protects it towards the backup again — which must accept the stream (it runs nothing), or the
// primary would stand down the last running copy. Nothing is lost or repeated.
TEST_F(SwitchoverTest, FailedTakeOverResumesThePrimaryAndProtectsAgain) {
  ASSERT_NO_FATAL_FAILURE(BringUp(Options("so3")));
  const std::string pid = novadt::testing::ReadFile(rig_->dir() + "/b/libvirtd.pid");
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(::kill(std::stoi(pid), SIGKILL), 0);
  const size_t seen = rig_->ObserverValues().size();
  const double before = UnixNow();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(90));
  nova_dt::v1::SwitchoverRequest req;
  req.set_instance_uuid(kGuestUuid);
  nova_dt::v1::SwitchoverReply reply;
  const grpc::Status st = Control("a")->Switchover(&ctx, req, &reply);
  EXPECT_FALSE(st.ok()) << "the backup cannot restore, yet the switchover succeeded";
  EXPECT_NE(st.error_message().find("the guest runs here again"), std::string::npos)
      << st.error_message();
  EXPECT_TRUE(WaitFor([&] { return DomState("a").find("running") != std::string::npos; },
                      seconds(10)))
      << DomState("a") << "\n" << Log("a");
  const int64_t last = rig_->ObserverValues().back();
  EXPECT_TRUE(WaitFor([&] { return rig_->ObserverValues().back() > last + 25; }, seconds(20)))
      << "the guest does not count on a\n" << Log("a");
  EXPECT_TRUE(WaitForProtected("a", "b", 3, seconds(60)))
      << "not protected again\n" << Log("a") << "\n" << Log("b");
  ExpectOneCountingGuest("failed take-over", seen > 0 ? seen - 1 : 0);
  const double gap = LargestGapMs(before);
  const auto a = Server("a");
  std::printf("failed take-over: switchover answered '%s'; guest paused up to %.0f ms; "
              "protected again (seed sent %.1f MiB)\n",
              st.error_message().c_str(), gap, a ? a->seed_bytes() / 1048576.0 : -1.0);
  char seed[64];
  std::snprintf(seed, sizeof seed, "%.1f MiB", a ? a->seed_bytes() / 1048576.0 : -1.0);
  FaultRow("planned switchover, backup cannot restore (its libvirtd killed)",
           "the primary resumes its copy and is protected again; nothing lost or repeated",
           std::string("switchover answered \"restore failed … the guest runs here again\"; ") +
               "largest observer gap " + Ms(gap) + "; protected towards b again (seed sent " +
               seed + "); values consecutive");
}

}  // namespace
}  // namespace novadt
