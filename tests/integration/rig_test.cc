// The two-host rig with a real guest: the test guest boots on host a under a's own libvirtd,
// its counter reaches the observer, both agents find each other over the rig link, and the
// libvirt adapter drives the real QEMU (lookup, QMP pass-through, lifecycle events).
//
// One rig serves every test of this file (bring-up costs ~20 s on two TCG cores).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/engine/egress_gate.h"
#include "agent/engine/qmp.h"
#include "agent/libvirt/libvirt_hypervisor.h"
#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10";

class RigTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rig_ = new Rig("it2");
    Status st = rig_->Up();
    if (st.ok()) st = rig_->BootGuest("a", "dtguest", kGuestUuid);
    if (st.ok()) st = rig_->StartAgent("a");
    if (st.ok()) st = rig_->StartAgent("b");
    setup_status_ = new Status(st);
  }

  static void TearDownTestSuite() {
    Status down = rig_->Down();
    EXPECT_TRUE(down.ok()) << down;
    Status gone = rig_->VerifyGone();
    EXPECT_TRUE(gone.ok()) << gone;
    delete rig_;
    delete setup_status_;
  }

  void SetUp() override { ASSERT_TRUE(setup_status_->ok()) << *setup_status_; }

  static std::optional<nova_dt::v1::AgentStatus> AgentStatus(const std::string& host) {
    auto stub = nova_dt::v1::Control::NewStub(grpc::CreateChannel(
        rig_->AgentControlAddress(host), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
    nova_dt::v1::AgentStatus s;
    if (!stub->Status(&ctx, {}, &s).ok()) return std::nullopt;
    return s;
  }

  static Rig* rig_;
  static Status* setup_status_;
};

Rig* RigTest::rig_ = nullptr;
Status* RigTest::setup_status_ = nullptr;

TEST_F(RigTest, GuestCounterReachesTheObserverInIncreasingOrder) {
  ASSERT_TRUE(WaitFor([] { return rig_->ObserverValues().size() >= 50; }, seconds(60)))
      << "observer has " << rig_->ObserverValues().size() << " values";
  auto values = rig_->ObserverValues();
  EXPECT_TRUE(std::is_sorted(values.begin(), values.end()));
  EXPECT_EQ(std::adjacent_find(values.begin(), values.end()), values.end()) << "duplicates";
  // ~20 ms per value: no large gaps while nothing disturbs the guest.
  EXPECT_LE(values.back() - values.front() + 1, static_cast<int64_t>(values.size()) + 5);
}

TEST_F(RigTest, AgentsReportEachOtherOverTheRigLink) {
  for (const auto& [self, other, other_addr] :
       {std::tuple{"a", "rig-b", "198.18.0.2:7070"}, std::tuple{"b", "rig-a", "198.18.0.1:7070"}}) {
    std::optional<nova_dt::v1::AgentStatus> s;
    ASSERT_TRUE(WaitFor(
        [&] {
          s = AgentStatus(self);
          return s && s->peers_size() == 1 && s->peers(0).reachable();
        },
        seconds(15)))
        << "agent on " << self << (s ? " reports: " + s->DebugString() : " does not answer");
    EXPECT_EQ(s->host(), std::string("rig-") + self);
    EXPECT_EQ(s->peers(0).host(), other);
    EXPECT_EQ(s->peers(0).address(), other_addr);
    EXPECT_GT(s->peers(0).rtt_us(), 0);
    EXPECT_TRUE(s->hypervisor().connected()) << "agent on " << self << " has no libvirt";
  }
}

TEST_F(RigTest, LibvirtAdapterDrivesTheRealGuest) {
  std::mutex mu;
  std::vector<core::DomainEvent> events;
  core::HypervisorObserver obs;
  obs.on_domain_event = [&](const core::DomainEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(e);
  };
  config::LibvirtSection cfg;
  cfg.connection_uri = rig_->LibvirtUri("a");
  auto hv = libvirt::MakeLibvirtHypervisor(cfg, obs);
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(10)));

  auto info = hv->LookupDomain(kGuestUuid);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name, "dtguest");
  EXPECT_EQ(info->state, core::DomainState::kRunning);

  auto reply = hv->QemuMonitorCommand(kGuestUuid, R"({"execute":"query-status"})");
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto status = nlohmann::json::parse(*reply);
  EXPECT_EQ(status["return"]["running"], true) << *reply;
  EXPECT_EQ(status["return"]["status"], "running") << *reply;

  // A QMP error is QEMU's answer, not an adapter failure.
  reply = hv->QemuMonitorCommand(kGuestUuid, R"({"execute":"no-such-command"})");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(nlohmann::json::parse(*reply)["error"]["class"], "CommandNotFound") << *reply;

  // Pausing through QMP: libvirt notices and the adapter reports it; then the guest resumes.
  ASSERT_TRUE(hv->QemuMonitorCommand(kGuestUuid, R"({"execute":"stop"})").ok());
  auto saw = [&](core::DomainEvent::Kind k) {
    std::lock_guard<std::mutex> lock(mu);
    return std::any_of(events.begin(), events.end(),
                       [&](const auto& e) { return e.uuid == kGuestUuid && e.kind == k; });
  };
  EXPECT_TRUE(WaitFor([&] { return saw(core::DomainEvent::Kind::kSuspended); }, seconds(5)));
  EXPECT_EQ(hv->LookupDomain(kGuestUuid)->state, core::DomainState::kPaused);
  const size_t before = rig_->ObserverValues().size();
  ASSERT_TRUE(hv->QemuMonitorCommand(kGuestUuid, R"({"execute":"cont"})").ok());
  EXPECT_TRUE(WaitFor([&] { return saw(core::DomainEvent::Kind::kResumed); }, seconds(5)));
  EXPECT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > before + 10; }, seconds(20)))
      << "the guest did not continue counting after cont";
}

// Invariant 1's mechanism on the real guest: frames of an epoch stay held until that epoch is
// released, epochs are released separately and in order, and nothing is lost or duplicated.
TEST_F(RigTest, EgressGateHoldsAndReleasesTheGuestsFramesPerEpoch) {
  config::LibvirtSection cfg;
  cfg.connection_uri = rig_->LibvirtUri("a");
  auto hv = libvirt::MakeLibvirtHypervisor(cfg, {});
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(10)));
  auto gate = engine::EgressGate::Create(*hv, kGuestUuid);
  ASSERT_TRUE(gate.ok()) << gate.status();
  ASSERT_EQ((*gate)->netdevs().size(), 1u);

  auto count = [] { return rig_->ObserverValues().size(); };
  auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(400)); };
  ASSERT_TRUE(WaitFor([&] { return count() > 20; }, seconds(30)));

  ASSERT_TRUE((*gate)->Open(1).ok());
  settle();  // frames already past the filter may still arrive
  const size_t held1 = count();
  settle();
  EXPECT_EQ(count(), held1) << "frames leaked while epoch 1 was held";
  ASSERT_TRUE((*gate)->Open(2).ok());
  settle();
  EXPECT_EQ(count(), held1) << "frames leaked while epochs 1 and 2 were held";

  ASSERT_TRUE((*gate)->Release(1).ok());
  ASSERT_TRUE(WaitFor([&] { return count() > held1 + 10; }, seconds(5)))
      << "releasing epoch 1 released nothing";
  settle();
  const size_t after1 = count();
  settle();
  EXPECT_EQ(count(), after1) << "releasing epoch 1 also released epoch 2's frames";

  ASSERT_TRUE((*gate)->Release(2).ok());
  ASSERT_TRUE(WaitFor([&] { return count() > after1 + 10; }, seconds(5)));
  EXPECT_TRUE((*gate)->held_epochs().empty());

  auto values = rig_->ObserverValues();
  EXPECT_TRUE(std::is_sorted(values.begin(), values.end()));
  EXPECT_EQ(std::adjacent_find(values.begin(), values.end()), values.end()) << "duplicates";
  EXPECT_EQ(values.back() - values.front() + 1, static_cast<int64_t>(values.size()))
      << "values lost while held";

  // A release retried after a partial failure relies on QEMU's wording for a missing object.
  auto gone = engine::QmpCall(*hv, kGuestUuid,
                              {{"execute", "object-del"}, {"arguments", {{"id", "dt-no-such"}}}});
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.status().message().find("not found"), std::string::npos) << gone.status();
}

TEST_F(RigTest, AgentsStopInOrderOnSigterm) {
  for (const char* host : {"a", "b"}) {
    auto rc = rig_->StopAgent(host);
    ASSERT_TRUE(rc.ok()) << rc.status();
    EXPECT_EQ(*rc, 0) << "agent on " << host;
  }
}

}  // namespace
}  // namespace novadt
