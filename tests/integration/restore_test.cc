// Stage VII end to end on the two-host rig: the test guest runs on host a; a checkpoint is taken
// through the agent's libvirt adapter (QMP x-ignore-shared, stop, RAM + disk copied into a
// ReplicaStore on b's side, device state through getfd + migrate fd:, cont) and committed; the
// guest on a is destroyed (the primary dies); FailoverRestorer brings it back on b through b's
// libvirtd, with the nova-dt libvirt hook (installed by `rig up`) placing the replica RAM as the
// guest RAM. The guest must continue exactly where the checkpoint left it: next value
// checkpoint+1, same boot id (no reboot), no MISMATCH (disk and memory of one epoch), and the
// domain runs on b and is persistent.
//
// The test runs outside the rig's mount namespaces: it sees a host's private libvirt directories
// (guest RAM tmpfs included) through /proc/<that host's libvirtd>/root, which is what
// LauncherOptions::host_root is for.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "agent/common/clock.h"
#include "agent/common/file_owner.h"
#include "agent/engine/failover_restorer.h"
#include "agent/engine/qmp.h"
#include "agent/libvirt/libvirt_hypervisor.h"
#include "agent/libvirt/libvirt_launcher.h"
#include "agent/replica/replica_store.h"
#include "tests/guest/dtcounter.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kUuid[] = "5c7e9a10-2b4d-4f60-8a1c-3e5f7a9b0d12";
constexpr char kName[] = "dtguest";

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct ObsLine {
  double time = 0;
  int64_t seq = -1;  // -1: not a value line
  std::string boot;
  std::string text;
};

std::vector<ObsLine> ObserverLog(const Rig& rig) {
  std::vector<ObsLine> out;
  std::istringstream in(novadt::testing::ReadFile(rig.dir() + "/observer.log"));
  for (std::string line; std::getline(in, line);) {
    ObsLine l;
    l.text = line;
    std::istringstream f(line);
    std::string src, tok;
    f >> l.time >> src;
    while (f >> tok) {
      if (tok.rfind("seq=", 0) == 0) l.seq = std::stoll(tok.substr(4));
      if (tok.rfind("boot=", 0) == 0) l.boot = tok.substr(5);
    }
    out.push_back(l);
  }
  return out;
}

std::vector<ObsLine> ValuesAfter(const Rig& rig, double t) {
  std::vector<ObsLine> out;
  for (auto& l : ObserverLog(rig)) {
    if (l.time > t && l.seq >= 0) out.push_back(l);
  }
  return out;
}

std::string HostRoot(const Rig& rig, const std::string& host) {
  std::string pid = novadt::testing::ReadFile(rig.dir() + "/" + host + "/libvirtd.pid");
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return "/proc/" + pid + "/root";
}

StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Status WaitMigrated(core::Hypervisor& hv) {
  for (int i = 0; i < 10000; ++i) {
    auto q = engine::QmpCall(hv, kUuid, {{"execute", "query-migrate"}});
    if (!q.ok()) return q.status();
    const std::string st = q->value("status", "");
    if (st == "completed") return absl::OkStatus();
    if (st == "failed" || st == "cancelled") return absl::InternalError("migrate " + st);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return absl::DeadlineExceededError("migrate did not complete");
}

struct Checkpoint {
  int64_t value = 0;  // the counter value on the disk at the pause
  double t_cont = 0;  // unix time just before cont
  double pause_ms = 0;
};

// The checkpointer stand-in: one full epoch (every RAM page, the whole disk, the device state)
// captured while the guest is paused on a, written into `store` as epoch 1 and committed.
StatusOr<Checkpoint> TakeCheckpoint(core::Hypervisor& hv, const std::string& ram_file,
                                    const std::string& disk_file, const std::string& scratch,
                                    replica::ReplicaStore& store) {
  NOVA_DT_RETURN_IF_ERROR(
      engine::QmpCall(
          hv, kUuid,
          {{"execute", "migrate-set-capabilities"},
           {"arguments",
            {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}}}}}}})
          .status());
  NOVA_DT_RETURN_IF_ERROR(store.BeginEpoch(store.committed_epoch() + 1));
  Checkpoint ck;
  const auto t0 = std::chrono::steady_clock::now();
  NOVA_DT_RETURN_IF_ERROR(engine::QmpCall(hv, kUuid, {{"execute", "stop"}}).status());

  constexpr size_t kChunk = 4 << 20;
  std::string buf(kChunk, '\0');
  {
    std::ifstream ram(ram_file, std::ios::binary);
    if (!ram) return absl::NotFoundError("cannot open " + ram_file);
    uint64_t page = 0;
    while (ram.read(buf.data(), kChunk) || ram.gcount() > 0) {
      const size_t n = static_cast<size_t>(ram.gcount());
      std::vector<uint64_t> idx(n / replica::kReplicaPageSize);
      for (auto& i : idx) i = page++;
      NOVA_DT_RETURN_IF_ERROR(store.AddPages(idx, std::string_view(buf.data(), n)));
    }
  }
  {
    std::ifstream disk(disk_file, std::ios::binary);
    if (!disk) return absl::NotFoundError("cannot open " + disk_file);
    uint64_t off = 0;
    while (disk.read(buf.data(), kChunk) || disk.gcount() > 0) {
      const size_t n = static_cast<size_t>(disk.gcount());
      if (off == 0) {
        dt_rec rec;
        std::memcpy(&rec, buf.data(), sizeof rec);
        if (dt_rec_check(&rec, DT_KIND_HEADER) != 1) return absl::DataLossError("no disk header");
        ck.value = static_cast<int64_t>(rec.value);
      }
      NOVA_DT_RETURN_IF_ERROR(store.AddDiskWrite("vda", off, std::string_view(buf.data(), n)));
      off += n;
    }
  }

  const std::string dev = scratch + "/devstate.bin";
  const int fd = ::open(dev.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError("cannot create " + dev);
  auto got = hv.QemuMonitorCommandWithFd(
      kUuid, R"({"execute":"getfd","arguments":{"fdname":"dtsave"}})", fd);
  ::close(fd);
  if (!got.ok()) return got.status();
  if (got->find("\"return\"") == std::string::npos) return absl::InternalError("getfd: " + *got);
  NOVA_DT_RETURN_IF_ERROR(
      engine::QmpCall(hv, kUuid, {{"execute", "migrate"}, {"arguments", {{"uri", "fd:dtsave"}}}})
          .status());
  NOVA_DT_RETURN_IF_ERROR(WaitMigrated(hv));
  ck.t_cont = UnixNow();  // before cont: the guest may send before libvirt returns the reply
  NOVA_DT_RETURN_IF_ERROR(engine::QmpCall(hv, kUuid, {{"execute", "cont"}}).status());
  ck.pause_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  auto blob = ReadAll(dev);
  if (!blob.ok()) return blob.status();
  NOVA_DT_RETURN_IF_ERROR(store.SetDeviceState(*blob));
  NOVA_DT_RETURN_IF_ERROR(store.Commit());
  std::printf("checkpoint: value %lld, guest paused %.1f ms, device state %zu bytes\n",
              static_cast<long long>(ck.value), ck.pause_ms, blob->size());
  return ck;
}

TEST(RestoreTest, GuestContinuesOnTheBackupFromTheCommittedReplica) {
  Rig rig("rst");
  Status st = rig.Up();
  ASSERT_TRUE(st.ok()) << st;
  // An ordinary domain started and stopped on b first: the hook leaves unarmed starts alone, and
  // the restored domain's id (hence its RAM path) is not the first one.
  std::string out;
  st = rig.BootGuest("b", "other", "9e8d7c6b-5a49-4837-a625-141312111009");
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(rig.Exec("b", {"virsh", "destroy", "other"}, &out), 0) << out;
  st = rig.BootGuest("a", kName, kUuid);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(WaitFor([&] { return ValuesAfter(rig, 0).size() >= 30; }, seconds(60)))
      << "the guest on a sends nothing";

  config::LibvirtSection cfg_a, cfg_b;
  cfg_a.connection_uri = rig.LibvirtUri("a");
  cfg_b.connection_uri = rig.LibvirtUri("b");
  // The rig's guest boots its kernel from the build's guest directory (RIG_GUEST_DIR), or from the
  // rig's copies of it in $RIG_DIR/boot, and logs its console to /var/log/libvirt: b's restore
  // allow-list must allow them.
  cfg_b.restore_file_dirs = {std::string(NOVA_DT_BINARY_DIR) + "/guest", rig.dir() + "/boot",
                             "/var/log/libvirt"};
  auto hv_a = libvirt::MakeLibvirtHypervisor(cfg_a, {});
  auto hv_b = libvirt::MakeLibvirtHypervisor(cfg_b, {});
  ASSERT_TRUE(WaitFor([&] { return hv_a->connected() && hv_b->connected(); }, seconds(10)));

  // The primary's side, as the agent on a sees it.
  auto info = hv_a->LookupDomain(kUuid);
  ASSERT_TRUE(info.ok()) << info.status();
  const std::string root_a = HostRoot(rig, "a");
  const std::string ram_a =
      root_a + "/var/lib/libvirt/qemu/ram/" + std::to_string(info->id) + "-" + kName + "/pc.ram";
  const std::string disk_a = rig.dir() + "/a/lib/images/" + kName + ".raw";
  struct stat ram_st = {}, disk_st = {};
  ASSERT_EQ(::stat(ram_a.c_str(), &ram_st), 0) << ram_a;
  ASSERT_EQ(::stat(disk_a.c_str(), &disk_st), 0) << disk_a;
  std::string domain_xml;  // StreamOpen.domain_xml: the primary's live definition
  ASSERT_EQ(rig.Exec("a", {"virsh", "-q", "dumpxml", kName}, &domain_xml), 0) << domain_xml;

  // The backup's replica, inside b's guest-RAM tmpfs (where the hook can hard-link it from).
  const std::string root_b = HostRoot(rig, "b");
  // QEMU runs as libvirt-qemu on b, as on a real compute host: the replica is the agent's
  // (docs/compute-host.md, "Ownership and permissions").
  auto qemu = ResolveFileOwner(Rig::kQemuUser, Rig::kQemuGroup);
  ASSERT_TRUE(qemu.ok()) << qemu.status();
  const std::string replica_path = root_b + "/var/lib/libvirt/qemu/ram/nova-dt";
  st = replica::PrepareReplicaRoot(replica_path, *qemu);
  ASSERT_TRUE(st.ok()) << st;
  replica::ReplicaGeometry geo;
  geo.ram_size = static_cast<uint64_t>(ram_st.st_size);
  geo.disks = {{"vda", static_cast<uint64_t>(disk_st.st_size)}};
  replica::ReplicaOptions store_options;
  store_options.qemu = *qemu;
  auto store =
      replica::ReplicaStore::Create(replica::ReplicaDir(replica_path, kUuid), geo, store_options);
  ASSERT_TRUE(store.ok()) << store.status();

  novadt::testing::ScratchDir scratch("nova-dt-restore");
  auto ck = TakeCheckpoint(*hv_a, ram_a, disk_a, scratch.path(), **store);
  ASSERT_TRUE(ck.ok()) << ck.status();
  ASSERT_EQ((*store)->committed_epoch(), 1u);

  // The primary went on after the checkpoint, from exactly the checkpoint.
  ASSERT_TRUE(WaitFor([&] { return ValuesAfter(rig, ck->t_cont).size() >= 10; }, seconds(10)));
  const auto after_ck = ValuesAfter(rig, ck->t_cont);
  // The guest writes value n to its disk and only then sends it: a pause between the two leaves
  // n on the disk but unsent, and the guest sends n right after cont. Either way the checkpoint
  // fixes the next value, and the restored guest must send exactly that one first.
  const int64_t next = after_ck.front().seq;
  EXPECT_TRUE(next == ck->value || next == ck->value + 1)
      << "after the checkpoint (disk value " << ck->value << ") the primary sent " << next;
  const std::string boot = after_ck.front().boot;

  // The primary dies.
  ASSERT_EQ(rig.Exec("a", {"virsh", "destroy", kName}, &out), 0) << out;
  const int64_t primary_last = ValuesAfter(rig, ck->t_cont).back().seq;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  // Failover on b.
  libvirt::LauncherOptions lopts;
  lopts.host_root = root_b;
  auto launcher = libvirt::MakeLibvirtLauncher(cfg_b, lopts);
  SystemClock clock;
  engine::FailoverRestorerOptions ropts;
  ropts.arm_dir = replica_path;
  ropts.qemu = *qemu;
  engine::FailoverRestorer restorer(*launcher, *hv_b, clock, ropts);
  engine::RestoreRequest req;
  req.instance_uuid = kUuid;
  req.domain_xml = domain_xml;
  req.committed_epoch = (*store)->committed_epoch();
  req.ram_path = (*store)->ram_path();
  req.device_state_path = (*store)->device_state_path();
  req.disk_paths = {{"vda", (*store)->disk_path("vda")}};
  const double t0 = UnixNow();
  auto result = restorer.Restore(req);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->persistent) << result->persist_error;
  EXPECT_EQ(result->epoch, 1u);
  EXPECT_GT(result->domain_id, 1);

  ASSERT_TRUE(WaitFor([&] { return ValuesAfter(rig, t0).size() >= 50; }, seconds(20)))
      << "the restored guest on b sends nothing";
  const auto restored = ValuesAfter(rig, t0);
  EXPECT_EQ(restored.front().seq, next)
      << "the restored guest did not continue from the checkpoint";
  EXPECT_EQ(restored.front().boot, boot) << "the guest rebooted";
  for (size_t i = 0; i < 50; ++i) {
    ASSERT_EQ(restored[i].seq, next + static_cast<int64_t>(i)) << "gap after restore";
    ASSERT_EQ(restored[i].boot, boot);
  }
  for (const auto& l : ObserverLog(rig)) {
    EXPECT_EQ(l.text.find("MISMATCH"), std::string::npos) << l.text;
  }

  auto on_b = hv_b->LookupDomain(kUuid);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->state, core::DomainState::kRunning);
  ASSERT_EQ(rig.Exec("b", {"virsh", "dominfo", kName}, &out), 0) << out;
  EXPECT_NE(out.find("Persistent:     yes"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(replica_path + "/" + kUuid + ".arm"));

  // The restored QEMU runs as libvirt-qemu, on the replica's RAM in a directory the hook gave it
  // as libvirt would have.
  std::string pid = novadt::testing::ReadFile(root_b + "/run/libvirt/qemu/" + kName + ".pid");
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  const std::string proc_status = novadt::testing::ReadFile("/proc/" + pid + "/status");
  const size_t uid_line = proc_status.find("\nUid:");
  ASSERT_NE(uid_line, std::string::npos) << pid;
  EXPECT_EQ(std::stoul(proc_status.substr(uid_line + 5)), qemu->uid)
      << "QEMU on b does not run as libvirt-qemu";
  struct stat ram_dir = {};
  const std::string guest_ram_dir = root_b + "/var/lib/libvirt/qemu/ram/" +
                                    std::to_string(result->domain_id) + "-" + kName;
  ASSERT_EQ(::stat(guest_ram_dir.c_str(), &ram_dir), 0) << guest_ram_dir;
  EXPECT_EQ(ram_dir.st_mode & 07777, 0700u);
  EXPECT_EQ(ram_dir.st_uid, qemu->uid);
  EXPECT_EQ(ram_dir.st_gid, qemu->gid);

  const auto& t = result->timings;
  std::printf(
      "restore on b: checkpoint value %lld (primary reached %lld before it died), domain id %d\n"
      "  start paused+incoming %.1f ms, device state %.1f ms, resume %.1f ms -> start->running "
      "%.1f ms; define %.1f ms; start->first new value at the observer %.0f ms\n",
      static_cast<long long>(ck->value), static_cast<long long>(primary_last), result->domain_id,
      t.start_paused.count(), t.load_state.count(), t.resume.count(), t.to_running.count(),
      t.define.count(), (restored.front().time - t0) * 1000);

  std::fflush(stdout);
  // Every libvirt connection closed while the daemons still run (closing one to a killed daemon
  // would write to a dead socket).
  launcher.reset();
  hv_a.reset();
  hv_b.reset();
  store->reset();  // no file of b's tmpfs open when the rig goes
  st = rig.Down();
  EXPECT_TRUE(st.ok()) << st;
  st = rig.VerifyGone();
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace novadt
