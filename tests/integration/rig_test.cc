// The two-host rig with a real guest: the test guest boots on host a under a's own libvirtd,
// its counter reaches the observer, both agents find each other over the rig link, and the
// libvirt adapter drives the real QEMU (lookup, QMP pass-through, lifecycle events).
//
// One rig serves every test of this file (bring-up costs ~20 s on two TCG cores).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <fstream>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/common/file_owner.h"
#include "agent/engine/checkpointer.h"
#include "agent/engine/disk_capture.h"
#include "agent/engine/egress_gate.h"
#include "agent/engine/qmp.h"
#include "agent/libvirt/libvirt_hypervisor.h"
#include "agent/nbd/block_backend.h"
#include "agent/nbd/nbd_server.h"
#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/guest/dtcounter.h"
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

// Stage I on the real guest: libvirt's synchronous block copy sends every guest write into the
// agent's NBD endpoint before the write completes, so the replica is never behind what the guest
// told anyone: every counter value the observer saw is already on the target.
TEST_F(RigTest, DiskCaptureMirrorsEveryGuestWriteIntoTheAgentsNbdEndpoint) {
  config::LibvirtSection cfg;
  cfg.connection_uri = rig_->LibvirtUri("a");
  auto hv = libvirt::MakeLibvirtHypervisor(cfg, {});
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(10)));

  auto blocks = engine::QmpCall(*hv, kGuestUuid, {{"execute", "query-block"}});
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  uint64_t disk_size = 0;
  for (const auto& b : *blocks) {
    if (b.contains("inserted")) disk_size = b["inserted"]["image"]["virtual-size"].get<uint64_t>();
  }
  ASSERT_GT(disk_size, 0u);

  novadt::testing::ScratchDir dir("nova-dt-capture");
  const std::string target = dir.path() + "/vda.raw";
  { std::ofstream(target).close(); }
  ASSERT_EQ(truncate(target.c_str(), static_cast<off_t>(disk_size)), 0);
  auto raw = nbd::OpenRawFileBackend(target);
  ASSERT_TRUE(raw.ok()) << raw.status();
  std::mutex mu;
  std::vector<uint64_t> captured_values;  // counter values in captured header writes, in order
  auto capturing = nbd::NewCapturingBackend(*std::move(raw), [&](const nbd::CapturedWrite& w) {
    for (size_t off = 0; off + DT_SECTOR <= w.data.size(); off += DT_SECTOR) {
      if (w.offset + off != 0) continue;  // the header sector holds the latest value
      dt_rec rec;
      std::memcpy(&rec, w.data.data() + off, sizeof rec);
      if (dt_rec_check(&rec, DT_KIND_HEADER) == 1) {
        std::lock_guard<std::mutex> lock(mu);
        captured_values.push_back(rec.value);
      }
    }
    return absl::OkStatus();
  });
  // QEMU runs as libvirt-qemu: the socket goes where it can reach it, as the agent makes it.
  auto qemu = ResolveFileOwner(Rig::kQemuUser, Rig::kQemuGroup);
  ASSERT_TRUE(qemu.ok()) << qemu.status();
  const std::string socket_dir = rig_->dir() + "/capture";
  ASSERT_TRUE(MakeOwnedDir(socket_dir, ::geteuid(), qemu->gid, 0710).ok());
  const std::string socket = socket_dir + "/vda.sock";
  nbd::NbdServerOptions nbd_options{socket, "vda"};
  nbd_options.socket_owner = *qemu;
  auto server = nbd::NbdServer::Create(nbd_options, std::move(capturing));
  ASSERT_TRUE(server.ok()) << server.status();

  ASSERT_TRUE(hv->StartDiskCapture(kGuestUuid, "vda", socket, "vda").ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto ready = hv->DiskCaptureReady(kGuestUuid, "vda");
        return ready.ok() && *ready;
      },
      seconds(60)))
      << "the block copy never reached its mirroring phase";

  // Mirroring: the guest's header writes arrive one by one, in order.
  const size_t before = [&] { std::lock_guard<std::mutex> l(mu); return captured_values.size(); }();
  ASSERT_TRUE(WaitFor([&] { std::lock_guard<std::mutex> l(mu); return captured_values.size() > before + 20; },
                      seconds(10)));
  {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<uint64_t> tail(captured_values.begin() + before, captured_values.end());
    EXPECT_TRUE(std::is_sorted(tail.begin(), tail.end()));
    EXPECT_EQ(tail.back() - tail.front() + 1, tail.size()) << "a guest write bypassed the capture";
  }
  // Synchronous: whatever the guest already sent was on the target before it was sent.
  const auto seen = rig_->ObserverValues();
  dt_rec header;
  {
    std::ifstream in(target, std::ios::binary);
    in.read(reinterpret_cast<char*>(&header), sizeof header);
  }
  ASSERT_EQ(dt_rec_check(&header, DT_KIND_HEADER), 1);
  EXPECT_GE(static_cast<int64_t>(header.value), seen.back());

  ASSERT_TRUE(hv->StopDiskCapture(kGuestUuid, "vda").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(hv->DiskCaptureReady(kGuestUuid, "vda").status()));
  const size_t n = rig_->ObserverValues().size();
  EXPECT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > n + 10; }, seconds(10)))
      << "the guest stopped after the capture ended";
  (*server)->Stop();
}

// Stages II and III on the real guest: repeated checkpoint pauses, each epoch's frames released
// as if the backup had acked at once. The guest keeps counting, nothing held is lost, and the
// pause is measured (printed; BENCHMARKS.md has the benchmark proper).
TEST_F(RigTest, CheckpointPausesKeepTheGuestRunningAndLoseNoOutput) {
  config::LibvirtSection cfg;
  cfg.connection_uri = rig_->LibvirtUri("a");
  auto hv = libvirt::MakeLibvirtHypervisor(cfg, {});
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(10)));

  // The guest's RAM file as QEMU sees it, reached through QEMU's own root (it lives in host a's
  // private mount namespace; the agent itself runs inside it and uses the path directly).
  const std::string pid = novadt::testing::ReadFile(rig_->dir() + "/a/run/qemu/dtguest.pid");
  ASSERT_FALSE(pid.empty());
  auto mem_path = engine::QmpCall(*hv, kGuestUuid, {{"execute", "qom-get"},
      {"arguments", {{"path", "/objects/pc.ram"}, {"property", "mem-path"}}}});
  auto mem_size = engine::QmpCall(*hv, kGuestUuid, {{"execute", "qom-get"},
      {"arguments", {{"path", "/objects/pc.ram"}, {"property", "size"}}}});
  ASSERT_TRUE(mem_path.ok() && mem_size.ok()) << mem_path.status() << mem_size.status();
  const std::string ram = "/proc/" + std::to_string(std::stoi(pid)) + "/root" +
                          mem_path->get<std::string>();
  const uint64_t ram_size = mem_size->get<uint64_t>();

  auto tracker = dirty::MakeDirtyTracker(
      {ram, ram_size, 0, dirty::DirtyTrackerOptions::Method::kHashScan, 0});
  ASSERT_TRUE(tracker.ok()) << tracker.status();
  auto stager = engine::RamStager::Open(ram, ram_size);
  ASSERT_TRUE(stager.ok()) << stager.status();
  auto gate = engine::EgressGate::Create(*hv, kGuestUuid);
  ASSERT_TRUE(gate.ok());
  SystemClock clock;
  engine::Checkpointer cp(*hv, kGuestUuid, **tracker, **stager, **gate, nullptr, clock);
  ASSERT_TRUE(cp.Prepare().ok());
  ASSERT_TRUE(engine::QmpCall(*hv, kGuestUuid, {{"execute", "stop"}}).ok());
  ASSERT_TRUE((*tracker)->Reset().ok());
  ASSERT_TRUE((*gate)->Open(1).ok());
  ASSERT_TRUE(engine::QmpCall(*hv, kGuestUuid, {{"execute", "cont"}}).ok());

  const size_t values_before = rig_->ObserverValues().size();
  core::StagedEpoch staged;
  engine::RamStager::Prefault(staged, ram_size / core::kGuestPageSize);
  std::vector<double> pause_ms;
  std::vector<engine::PauseTimings> parts;
  std::vector<size_t> dirty_pages;
  size_t device_state = 0;
  for (uint64_t epoch = 1; epoch <= 20; ++epoch) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto t = cp.Take(epoch, staged);
    ASSERT_TRUE(t.ok()) << "epoch " << epoch << ": " << t.status();
    pause_ms.push_back(std::chrono::duration<double, std::milli>(t->total).count());
    parts.push_back(*t);
    dirty_pages.push_back(staged.page_index.size());
    device_state = staged.device_state.size();
    ASSERT_TRUE((*gate)->Release(epoch).ok());  // as if the backup acked epoch at once
  }
  ASSERT_TRUE((*gate)->ReleaseAll().ok());

  std::vector<double> sorted = pause_ms;
  std::sort(sorted.begin(), sorted.end());
  std::printf("checkpoint pause on the rig (%llu MiB guest, TCG, hash-scan): p50 %.1f ms, max %.1f ms; "
              "dirty pages/epoch median %zu; device state %zu bytes\n",
              static_cast<unsigned long long>(ram_size >> 20), sorted[sorted.size() / 2],
              sorted.back(), dirty_pages[dirty_pages.size() / 2], device_state);
  // Where the pause goes (medians of each part; they need not add up to the total's median).
  auto median_ms = [&](Clock::Duration engine::PauseTimings::*part) {
    std::vector<double> v;
    for (const auto& p : parts) v.push_back(std::chrono::duration<double, std::milli>(p.*part).count());
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("  medians: before the pause %.2f; stop %.2f, migrate %.2f, dirty scan %.2f, copy %.2f, "
              "device state wait %.2f, cont %.2f ms\n",
              median_ms(&engine::PauseTimings::prepare), median_ms(&engine::PauseTimings::stop),
              median_ms(&engine::PauseTimings::save_start), median_ms(&engine::PauseTimings::dirty),
              median_ms(&engine::PauseTimings::copy), median_ms(&engine::PauseTimings::device_state),
              median_ms(&engine::PauseTimings::resume));
  {
    std::vector<double> rt;
    for (int i = 0; i < 21; ++i) {
      const auto a = std::chrono::steady_clock::now();
      ASSERT_TRUE(engine::QmpCall(*hv, kGuestUuid, {{"execute", "query-status"}}).ok());
      rt.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(rt.begin(), rt.end());
    std::printf("  QMP round trip through libvirtd (query-status): median %.2f ms, min %.2f\n", rt[10], rt[0]);
  }
  EXPECT_GT(device_state, 100000u);  // CPU + devices + ROM/ACPI blocks, not the shared RAM
  EXPECT_LT(device_state, ram_size / 8);

  ASSERT_TRUE(WaitFor([&] { return rig_->ObserverValues().size() > values_before + 50; }, seconds(10)))
      << "the guest did not keep counting across checkpoints";
  auto values = rig_->ObserverValues();
  EXPECT_EQ(values.back() - values.front() + 1, static_cast<int64_t>(values.size()))
      << "values lost across checkpoints";
  EXPECT_EQ(hv->LookupDomain(kGuestUuid)->state, core::DomainState::kRunning);
}

// The engine's capture-only endpoint: the block copy's initial copy covers the whole disk (it
// seeds the replica), then guest writes follow, and nothing needs a local copy of the disk.
TEST_F(RigTest, NbdDiskCaptureBuffersTheInitialCopyThenGuestWrites) {
  config::LibvirtSection cfg;
  cfg.connection_uri = rig_->LibvirtUri("a");
  auto hv = libvirt::MakeLibvirtHypervisor(cfg, {});
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(10)));
  const uint64_t disk_size = 16 << 20;  // the rig's test-guest disk
  auto qemu = ResolveFileOwner(Rig::kQemuUser, Rig::kQemuGroup);
  ASSERT_TRUE(qemu.ok()) << qemu.status();

  // A socket directory QEMU (libvirt-qemu) cannot reach is refused before any block copy.
  novadt::testing::ScratchDir unreachable("nova-dt-capture");  // mkdtemp: 0700
  Status refused = engine::MakeNbdDiskCapture(*hv, kGuestUuid, {{"vda", disk_size}},
                                              unreachable.path() + "/nbd/" + kGuestUuid, *qemu)
                       ->Start(seconds(60));
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_NE(refused.message().find("not searchable by libvirt-qemu"), std::string::npos)
      << refused;

  // As the agent makes it: <state_path>/nbd/<uuid>/<dev>.sock (state_path a fresh directory in
  // the rig's, which libvirt-qemu can pass).
  const std::string socket_dir = rig_->dir() + "/capture-state/nbd/" + kGuestUuid;
  auto capture =
      engine::MakeNbdDiskCapture(*hv, kGuestUuid, {{"vda", disk_size}}, socket_dir, *qemu);
  Status started = capture->Start(seconds(60));
  ASSERT_TRUE(started.ok()) << started;
  struct stat st {};
  for (const std::string& d : {rig_->dir() + "/capture-state/nbd", socket_dir}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0710u) << d;
    EXPECT_EQ(st.st_uid, 0u) << d;
    EXPECT_EQ(st.st_gid, qemu->gid) << d;
  }
  ASSERT_EQ(::stat((socket_dir + "/vda.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, qemu->uid);
  EXPECT_EQ(st.st_gid, qemu->gid);

  std::vector<bool> covered(disk_size / 512, false);
  auto writes = capture->TakeWrites();
  for (const auto& w : writes) {
    const uint64_t len = w.zeroes ? w.length : w.data.size();
    for (uint64_t s = w.offset / 512; s < (w.offset + len) / 512; ++s) covered[s] = true;
  }
  EXPECT_EQ(std::count(covered.begin(), covered.end(), false), 0)
      << "the initial copy did not cover the disk";
  ASSERT_TRUE(WaitFor([&] { return capture->buffered_bytes() >= 20 * 512; }, seconds(10)))
      << "no guest writes after the initial copy";
  capture->Stop();
  EXPECT_TRUE(absl::IsFailedPrecondition(hv->DiskCaptureReady(kGuestUuid, "vda").status()));
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
