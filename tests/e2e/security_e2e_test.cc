// Safe by default, end to end on the rig (security issue #11 item 9): without an etcd witness —
// the rig's and the demo's default — a backup must never resume a copy that output released
// since has moved past.
//   - Unprotect, let the guest run on (its output now leaves unprotected), kill the primary's
//     QEMU and agent: the backup does not fail over from the replica it kept at unprotect time,
//     and the observer never sees a value twice.
//   - Automatic failover without a witness is refused unless [witness] allow_none says so: a
//     killed primary is not failed over, and the backup says why.
// Both rigs run QEMU as libvirt-qemu and the agents on mutual TLS, as every rig does.
#include <gtest/gtest.h>

#include <signal.h>

#include <set>
#include <thread>

#include "tests/support/pair_rig_test.h"

namespace novadt {
namespace {

using novadt::testing::PairRigOptions;
using novadt::testing::PairRigTest;
using novadt::testing::ReadFile;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "5c1e8d2f-3a4b-4c6d-8e9f-a0b1c2d3e4f5";

class SecurityE2eTest : public PairRigTest {
 protected:
  SecurityE2eTest() : PairRigTest(kGuestUuid) {}

  // SIGKILL of host a's QEMU and agent: the primary host dies.
  void KillPrimary() {
    const std::string qemu_pid = ReadFile(rig_->dir() + "/a/run/qemu/dtguest.pid");
    ASSERT_FALSE(qemu_pid.empty());
    ASSERT_EQ(::kill(std::stoi(qemu_pid), SIGKILL), 0);
    ASSERT_TRUE(rig_->StopAgent("a", /*kill=*/true).ok());
  }
  // No value reached the observer twice, and none arrived after `last` (no copy runs anywhere).
  void ExpectNothingRepeatedAndNothingAfter(int64_t last) {
    const auto values = rig_->ObserverValues();
    std::set<int64_t> seen;
    for (int64_t v : values) EXPECT_TRUE(seen.insert(v).second) << "value " << v << " repeated";
    EXPECT_EQ(values.back(), last) << "a copy counts again somewhere";
  }
};

TEST_F(SecurityE2eTest, AnUnprotectedPrimaryThatDiesIsNotResumedFromTheReplicaItLeft) {
  ASSERT_NO_FATAL_FAILURE(BringUp([] {
    PairRigOptions o;
    o.rig_name = "sec1";
    o.witness = false;  // the rig-agent default allows failover without one ([witness] allow_none)
    return o;
  }()));
  grpc::ClientContext ctx;
  nova_dt::v1::UnprotectRequest req;
  req.set_instance_uuid(kGuestUuid);
  nova_dt::v1::UnprotectReply reply;
  ASSERT_TRUE(Control("a")->Unprotect(&ctx, req, &reply).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto b = Server("b");
        return b && b->state() == "unprotected";
      },
      seconds(10)))
      << Log("b");
  EXPECT_NE(Server("b")->reason().find("never failed over"), std::string::npos)
      << Server("b")->reason();

  // The guest runs on unprotected: ~250 values leave that the replica never got.
  const size_t at_unprotect = rig_->ObserverValues().size();
  std::this_thread::sleep_for(seconds(5));
  ASSERT_GT(rig_->ObserverValues().size(), at_unprotect + 50);

  ASSERT_NO_FATAL_FAILURE(KillPrimary());
  const int64_t last = rig_->ObserverValues().back();
  // Ten times the failure detector's bound: a failover would have happened by now.
  std::this_thread::sleep_for(seconds(10));
  ASSERT_NO_FATAL_FAILURE(ExpectNothingRepeatedAndNothingAfter(last));
  EXPECT_NE(DomState("b"), "running") << "b resumed the stale copy";
  auto b = Server("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state(), "unprotected") << b->reason();
  EXPECT_EQ(ReadFile(rig_->dir() + "/b/agent/agent.log").find("failing over"), std::string::npos)
      << Log("b");
}

TEST_F(SecurityE2eTest, WithoutAWitnessAutomaticFailoverNeedsAllowNoneAndTheBackupSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(BringUp([] {
    PairRigOptions o;
    o.rig_name = "sec2";
    o.witness = false;
    o.agent_settings = {"witness.allow_none=false"};
    return o;
  }()));
  ASSERT_NO_FATAL_FAILURE(KillPrimary());
  const int64_t last = rig_->ObserverValues().back();
  std::optional<nova_dt::v1::ProtectedServer> b;
  ASSERT_TRUE(WaitFor(
      [&] {
        b = Server("b");
        return b && b->reason().find("automatic failover is off") != std::string::npos;
      },
      seconds(20)))
      << Log("b");
  EXPECT_EQ(b->state(), "degraded");
  std::this_thread::sleep_for(seconds(3));
  ASSERT_NO_FATAL_FAILURE(ExpectNothingRepeatedAndNothingAfter(last));
  EXPECT_NE(DomState("b"), "running");
}

}  // namespace
}  // namespace novadt
