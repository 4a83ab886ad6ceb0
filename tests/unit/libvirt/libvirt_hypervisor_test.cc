// The libvirt adapter against libvirt's own in-process test driver (test:///default).
#include "agent/libvirt/libvirt_hypervisor.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

#include <mutex>
#include <vector>

#include "agent/libvirt/handles.h"
#include "tests/support/test_util.h"

namespace novadt::libvirt {
namespace {

using core::DomainEvent;
using novadt::testing::WaitFor;
using std::chrono::seconds;

// The test driver's built-in domain.
constexpr char kTestDomainUuid[] = "6695eb01-f6a4-8304-79aa-97f2502e193f";

// Collects what the adapter reports, from its event thread.
struct Recorder {
  std::mutex mu;
  std::vector<DomainEvent> events;
  std::vector<bool> connection_changes;

  core::HypervisorObserver Observer() {
    return {[this](const DomainEvent& e) {
              std::lock_guard<std::mutex> lock(mu);
              events.push_back(e);
            },
            [this](bool up) {
              std::lock_guard<std::mutex> lock(mu);
              connection_changes.push_back(up);
            }};
  }
  bool Saw(const std::string& uuid, DomainEvent::Kind kind) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& e : events) {
      if (e.uuid == uuid && e.kind == kind) return true;
    }
    return false;
  }
};

config::LibvirtSection TestDriver() {
  config::LibvirtSection c;
  c.connection_uri = "test:///default";
  return c;
}

TEST(LibvirtHypervisorTest, ConnectsAndLooksUpDomainsByUuid) {
  Recorder rec;
  auto hv = MakeLibvirtHypervisor(TestDriver(), rec.Observer());
  ASSERT_TRUE(hv->connected());
  EXPECT_EQ(hv->reconnects(), 0u);

  auto info = hv->LookupDomain(kTestDomainUuid);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name, "test");
  EXPECT_EQ(info->state, core::DomainState::kRunning);
  EXPECT_GE(info->id, 1);

  auto missing = hv->LookupDomain("00000000-0000-0000-0000-000000000001");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();

  auto all = hv->ListDomains();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].uuid, kTestDomainUuid);
}

TEST(LibvirtHypervisorTest, QmpOnADriverWithoutQemuIsAnErrorNotACrash) {
  auto hv = MakeLibvirtHypervisor(TestDriver(), {});
  auto r = hv->QemuMonitorCommand(kTestDomainUuid, R"({"execute":"query-status"})");
  EXPECT_FALSE(r.ok());
  auto missing = hv->QemuMonitorCommand("00000000-0000-0000-0000-000000000001", "{}");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
}

TEST(LibvirtHypervisorTest, LifecycleEventsArriveOnTheObserver) {
  Recorder rec;
  auto hv = MakeLibvirtHypervisor(TestDriver(), rec.Observer());
  ASSERT_TRUE(hv->connected());

  // Drive the same (process-wide) test driver through a second, plain connection.
  ConnectPtr conn(virConnectOpen("test:///default"));
  ASSERT_TRUE(conn);
  const std::string uuid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
  const std::string xml = "<domain type='test'><name>evt</name><uuid>" + uuid +
                          "</uuid><memory>65536</memory><os><type>hvm</type></os></domain>";
  DomainPtr dom(virDomainDefineXML(conn.get(), xml.c_str()));
  ASSERT_TRUE(dom);
  ASSERT_EQ(virDomainCreate(dom.get()), 0);
  ASSERT_EQ(virDomainSuspend(dom.get()), 0);
  ASSERT_EQ(virDomainResume(dom.get()), 0);
  ASSERT_EQ(virDomainDestroy(dom.get()), 0);
  ASSERT_EQ(virDomainUndefine(dom.get()), 0);

  for (auto kind : {DomainEvent::Kind::kDefined, DomainEvent::Kind::kStarted,
                    DomainEvent::Kind::kSuspended, DomainEvent::Kind::kResumed,
                    DomainEvent::Kind::kStopped, DomainEvent::Kind::kUndefined}) {
    EXPECT_TRUE(WaitFor([&] { return rec.Saw(uuid, kind); }, seconds(5)))
        << "no '" << core::DomainEventKindName(kind) << "' event";
  }
  std::lock_guard<std::mutex> lock(rec.mu);
  EXPECT_EQ(rec.events.front().name, "evt");
}

TEST(LibvirtHypervisorTest, DestroyingTheAdapterStopsEvents) {
  Recorder rec;
  auto hv = MakeLibvirtHypervisor(TestDriver(), rec.Observer());
  hv.reset();
  ConnectPtr conn(virConnectOpen("test:///default"));
  DomainPtr dom(virDomainLookupByUUIDString(conn.get(), kTestDomainUuid));
  ASSERT_EQ(virDomainSuspend(dom.get()), 0);
  ASSERT_EQ(virDomainResume(dom.get()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::lock_guard<std::mutex> lock(rec.mu);
  EXPECT_TRUE(rec.events.empty());
}

TEST(LibvirtHypervisorTest, UnreachableDaemonMeansDisconnectedNotFailure) {
  config::LibvirtSection c;
  c.connection_uri = "test+unix:///default?socket=/nonexistent/libvirt-sock";
  auto hv = MakeLibvirtHypervisor(c, {});
  EXPECT_FALSE(hv->connected());
  auto r = hv->LookupDomain(kTestDomainUuid);
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
}

}  // namespace
}  // namespace novadt::libvirt
