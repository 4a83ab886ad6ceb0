// End to end on the two-host rig: nova-dt-agent on host a protects the test guest towards the
// agent on host b through its control API. Seeding, continuous epochs and output release by the
// backup's acks run for real: the guest keeps counting, the observer receives every value, and
// both agents report the pair.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "7d3b9c2a-58e1-4f0e-a6b4-0c1d2e3f4a5b";

std::unique_ptr<nova_dt::v1::Control::Stub> Control(const Rig& rig, const std::string& host) {
  return nova_dt::v1::Control::NewStub(
      grpc::CreateChannel(rig.AgentControlAddress(host), grpc::InsecureChannelCredentials()));
}

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
  nova_dt::v1::AgentStatus s;
  if (!Control(rig, host)->Status(&ctx, {}, &s).ok()) return std::nullopt;
  for (const auto& v : s.protected_servers()) {
    if (v.instance_uuid() == kGuestUuid) return v;
  }
  return std::nullopt;
}

TEST(ProtectE2eTest, GuestIsProtectedEpochAfterEpochAndLosesNoOutput) {
  Rig rig("e2e");
  ASSERT_TRUE(rig.Up().ok());
  ASSERT_TRUE(rig.BootGuest("a", "dtguest", kGuestUuid).ok());
  ASSERT_TRUE(rig.StartAgent("a").ok());
  ASSERT_TRUE(rig.StartAgent("b").ok());
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > 20; }, seconds(60)));

  {
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kGuestUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    grpc::Status st = Control(rig, "a")->Protect(&ctx, req, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n"
                         << novadt::testing::ReadFile(rig.dir() + "/a/agent/agent.log");
  }
  // A second protect of the same server is refused.
  {
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kGuestUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    EXPECT_EQ(Control(rig, "a")->Protect(&ctx, req, &reply).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }

  std::optional<nova_dt::v1::ProtectedServer> primary;
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "protected" && primary->last_committed_epoch() >= 30;
      },
      seconds(120)))
      << (primary ? primary->DebugString() : "no status") << "\n"
      << novadt::testing::ReadFile(rig.dir() + "/a/agent/agent.log");
  EXPECT_EQ(primary->role(), "primary");
  EXPECT_EQ(primary->peer_host(), "rig-b");
  EXPECT_EQ(primary->dirty_tracking(), "hash-scan");
  EXPECT_GT(primary->pause_p50_us(), 0);
  std::printf("protected: seeding %lld ms, pause p50 %.1f ms p99 %.1f ms, %llu epochs committed\n",
              static_cast<long long>(primary->seed_ms()), primary->pause_p50_us() / 1000.0,
              primary->pause_p99_us() / 1000.0,
              static_cast<unsigned long long>(primary->last_committed_epoch()));

  auto backup = Server(rig, "b");
  ASSERT_TRUE(backup);
  EXPECT_EQ(backup->role(), "backup");
  EXPECT_EQ(backup->state(), "protected");
  EXPECT_EQ(backup->peer_host(), "rig-a");
  EXPECT_GE(backup->last_committed_epoch(), 25u);

  // Output commit with real acks: every value the guest sent arrived, in order.
  const size_t before = rig.ObserverValues().size();
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > before + 50; }, seconds(20)));
  auto values = rig.ObserverValues();
  EXPECT_TRUE(std::is_sorted(values.begin(), values.end()));
  EXPECT_EQ(values.back() - values.front() + 1, static_cast<int64_t>(values.size()))
      << "values lost while protected";

  {
    grpc::ClientContext ctx;
    nova_dt::v1::UnprotectRequest req;
    req.set_instance_uuid(kGuestUuid);
    nova_dt::v1::UnprotectReply reply;
    ASSERT_TRUE(Control(rig, "a")->Unprotect(&ctx, req, &reply).ok());
  }
  EXPECT_FALSE(Server(rig, "a").has_value());
  const size_t after = rig.ObserverValues().size();
  EXPECT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > after + 20; }, seconds(10)))
      << "output stopped after unprotect";
  for (const char* host : {"a", "b"}) {
    auto rc = rig.StopAgent(host);
    ASSERT_TRUE(rc.ok());
    EXPECT_EQ(*rc, 0) << "agent on " << host;
  }
  ASSERT_TRUE(rig.Down().ok());
  EXPECT_TRUE(rig.VerifyGone().ok());
}

}  // namespace
}  // namespace novadt
