// Failover of a server that boots from its own kernel and ramdisk, as Nova's libvirt driver boots
// one from Glance images with kernel_id/ramdisk_id: the domain names
// /var/lib/nova/instances/<uuid>/kernel and .../ramdisk and logs its serial console to
// .../console.log. That directory exists only on the primary (each rig host has its own
// /var/lib/nova); the backup has Nova's instances_path but nothing of the server in it. The
// primary host loses power (`rig kill a`: libvirtd, QEMU and the agent SIGKILLed at once) and the
// guest must go on on b with nothing any client saw lost: the backup brings the boot files with
// the replica (they came with the replication stream) and makes the instance directory as Nova
// would before it starts the domain (docs/compute-host.md, "Boot files").
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/agent_control.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::ReadFile;
using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "5e8b1c2d-3f4a-4b6c-8d7e-9f0a1b2c3d4e";
constexpr char kInstances[] = "/var/lib/nova/instances";

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kGuestUuid);
}

std::string Tail(const std::string& s, size_t n) {
  return s.substr(s.size() > n ? s.size() - n : 0);
}

// `stat -c FORMAT PATH` inside `host` ("" when it fails).
std::string Stat(const Rig& rig, const std::string& host, const std::string& format,
                 const std::string& path) {
  std::string out;
  if (rig.Exec(host, {"stat", "-c", format, path}, &out) != 0) return "";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

TEST(BootFilesE2eTest, ServerBootingFromItsInstanceDirectoryFailsOverToAHostWithoutOne) {
  Rig rig("bootf");
  ASSERT_TRUE(rig.Up().ok());
  const std::string instance_dir = std::string(kInstances) + "/" + kGuestUuid;
  ASSERT_TRUE(rig.BootGuest("a", "dtguest", kGuestUuid, 256, {"--nova-instance-dir"}).ok());
  // b is a compute host like a: nova-compute made its instances_path, but b never ran the server.
  ASSERT_EQ(rig.Exec("b", {"mkdir", "-p", "-m", "0755", kInstances}), 0);
  std::string out;
  ASSERT_NE(rig.Exec("b", {"test", "-e", instance_dir}), 0) << "b has the instance directory";
  // a's domain boots from its instance directory and logs its console there, as Nova's would.
  ASSERT_EQ(rig.Exec("a", {"virsh", "dumpxml", "dtguest"}, &out), 0);
  ASSERT_NE(out.find("<kernel>" + instance_dir + "/kernel</kernel>"), std::string::npos) << out;
  ASSERT_NE(out.find("<initrd>" + instance_dir + "/ramdisk</initrd>"), std::string::npos) << out;
  ASSERT_NE(out.find(instance_dir + "/console.log"), std::string::npos) << out;

  const std::vector<std::string> settings = {std::string("libvirt.instances_path=") + kInstances};
  ASSERT_TRUE(rig.StartAgent("a", settings).ok());
  ASSERT_TRUE(rig.StartAgent("b", settings).ok());
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > 20; }, seconds(60)));

  {
    grpc::ClientContext ctx;
    nova_dt::v1::ProtectRequest req;
    req.set_instance_uuid(kGuestUuid);
    req.set_backup_host("rig-b");
    nova_dt::v1::ProtectReply reply;
    grpc::Status st =
        nova_dt::v1::Control::NewStub(
            grpc::CreateChannel(rig.AgentControlAddress("a"), grpc::InsecureChannelCredentials()))
            ->Protect(&ctx, req, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n"
                         << ReadFile(rig.dir() + "/a/agent/agent.log");
  }
  std::optional<nova_dt::v1::ProtectedServer> backup;
  ASSERT_TRUE(WaitFor(
      [&] {
        backup = Server(rig, "b");
        return backup && backup->state() == "protected" && backup->last_committed_epoch() >= 10;
      },
      seconds(180)))
      << (backup ? backup->DebugString() : "no status on b") << "\n"
      << Tail(ReadFile(rig.dir() + "/a/agent/agent.log"), 3000) << "\n"
      << Tail(ReadFile(rig.dir() + "/b/agent/agent.log"), 3000);

  {
    // How long the seed spent on the boot files (a figure, not a bound).
    const std::string agent_log = ReadFile(rig.dir() + "/a/agent/agent.log");
    const size_t at = agent_log.find("boot files sent to the backup");
    ASSERT_NE(at, std::string::npos) << "a sent no boot files";
    std::printf("%s\n", agent_log.substr(at, agent_log.find('\n', at) - at).c_str());
  }
  // The replica on b holds the boot files, private to the agent, and b still has no instance
  // directory (it is made at restore).
  const std::string replica = std::string("/var/lib/libvirt/qemu/ram/nova-dt/") + kGuestUuid;
  const std::string guest_dir = std::string(NOVA_DT_BINARY_DIR) + "/guest";
  EXPECT_EQ(rig.Exec("b", {"cmp", replica + "/boot-kernel", guest_dir + "/vmlinux"}, &out), 0)
      << out;
  EXPECT_EQ(rig.Exec("b", {"cmp", replica + "/boot-ramdisk", guest_dir + "/initrd.img"}, &out), 0)
      << out;
  EXPECT_EQ(Stat(rig, "b", "%a %U", replica + "/boot-kernel"), "600 root");
  EXPECT_EQ(Stat(rig, "b", "%a %U", replica + "/boot-ramdisk"), "600 root");
  EXPECT_NE(rig.Exec("b", {"test", "-e", instance_dir}), 0);

  // Host a loses power: libvirtd, QEMU and the agent die at once. What the observer has by then
  // is everything a client ever saw from a.
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(rig.Kill("a").ok());
  const std::vector<int64_t> seen_before = rig.ObserverValues();
  ASSERT_FALSE(seen_before.empty());
  const int64_t last_seen = seen_before.back();
  const size_t seen_count = seen_before.size();

  // The guest speaks again, from host b.
  if (!WaitFor([&] { return rig.ObserverValues().back() > last_seen; }, seconds(30))) {
    std::string state;
    rig.Exec("b", {"virsh", "domstate", "dtguest", "--reason"}, &state);
    auto b = Server(rig, "b");
    FAIL() << "no new value after " << last_seen
           << "; status on b: " << (b ? b->DebugString() : "none") << "\ndomstate on b: " << state
           << "\nagent on b:\n"
           << Tail(ReadFile(rig.dir() + "/b/agent/agent.log"), 4000);
  }
  const double failover_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed).count();
  std::optional<nova_dt::v1::ProtectedServer> b;
  EXPECT_TRUE(WaitFor(
      [&] {
        b = Server(rig, "b");
        return b && b->role() == "primary";
      },
      seconds(10)));
  ASSERT_TRUE(b);
  std::printf("failover with boot files: kill -> first new value %.0f ms; %s\n", failover_ms,
              b->reason().c_str());
  {
    // The restore's own account of its steps (instance directory, start, load, resume).
    const std::string agent_log = ReadFile(rig.dir() + "/b/agent/agent.log");
    const size_t at = agent_log.find(": running from epoch");
    if (at != std::string::npos) {
      const size_t from = agent_log.rfind('\n', at) + 1;
      std::printf("%s\n", agent_log.substr(from, agent_log.find('\n', at) - from).c_str());
    }
  }
  EXPECT_EQ(b->state(), "unprotected");
  EXPECT_NE(b->reason().find("failed over from rig-a"), std::string::npos) << b->reason();

  // Nothing released was lost, nothing repeated, no reboot.
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > seen_count + 50; }, seconds(30)));
  const auto values = rig.ObserverValues();
  const std::vector<int64_t> after(values.begin() + seen_count, values.end());
  EXPECT_GT(after.front(), last_seen) << "the restored guest went back before released output";
  EXPECT_EQ(after.back() - after.front() + 1, static_cast<int64_t>(after.size()))
      << "the restored guest does not count on without gaps";
  const std::string log = ReadFile(rig.dir() + "/observer.log");
  EXPECT_EQ(log.find("MISMATCH"), std::string::npos) << "disk and memory of different epochs";
  std::set<std::string> boots;
  for (size_t at = log.find("boot="); at != std::string::npos; at = log.find("boot=", at + 1)) {
    boots.insert(log.substr(at, log.find_first_of(" \n", at) - at));
  }
  EXPECT_EQ(boots.size(), 1u) << "the guest booted again instead of continuing";
  EXPECT_EQ(rig.Exec("b",
                     {std::string(NOVA_DT_BINARY_DIR) + "/guest/dtcounter-read",
                      replica + "/disk-vda.raw", "--has", std::to_string(last_seen)},
                     &out),
            0)
      << out;

  // b now has the server's instance directory as Nova would have made it: the primary's kernel
  // and ramdisk, and the console log libvirt created there. Owned like instances_path (here
  // root's), the directory 0755, the boot files 0644 (libvirt gave them to QEMU's user for the
  // run: dynamic ownership).
  EXPECT_EQ(Stat(rig, "b", "%F %a %U", instance_dir), "directory 755 root");
  EXPECT_EQ(rig.Exec("b", {"cmp", instance_dir + "/kernel", guest_dir + "/vmlinux"}, &out), 0)
      << out;
  EXPECT_EQ(rig.Exec("b", {"cmp", instance_dir + "/ramdisk", guest_dir + "/initrd.img"}, &out), 0)
      << out;
  EXPECT_EQ(Stat(rig, "b", "%F %a", instance_dir + "/kernel"), "regular file 644");
  EXPECT_EQ(Stat(rig, "b", "%F %a", instance_dir + "/ramdisk"), "regular file 644");
  EXPECT_EQ(rig.Exec("b", {"test", "-f", instance_dir + "/console.log"}), 0);
  // The persistent definition on b boots from the same paths (a later start is an ordinary one).
  EXPECT_EQ(rig.Exec("b", {"virsh", "dumpxml", "--inactive", "dtguest"}, &out), 0);
  EXPECT_NE(out.find("<kernel>" + instance_dir + "/kernel</kernel>"), std::string::npos) << out;
  EXPECT_EQ(rig.Exec("b", {"virsh", "domstate", "dtguest"}, &out), 0);
  EXPECT_NE(out.find("running"), std::string::npos) << out;

  ASSERT_TRUE(rig.Down().ok());
  EXPECT_TRUE(rig.VerifyGone().ok());
}

}  // namespace
}  // namespace novadt
