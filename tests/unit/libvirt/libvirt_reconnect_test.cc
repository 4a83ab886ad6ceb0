// The libvirt adapter through libvirt's remote driver to a private libvirtd serving the test
// driver ("test+unix:///default"), so the connection can really drop: the daemon is killed and
// restarted under the adapter. Needs root (the daemon runs in its own mount namespace so it does
// not touch the machine's /run/libvirt).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>

#include "agent/libvirt/libvirt_hypervisor.h"
#include "tests/support/test_util.h"

namespace novadt::libvirt {
namespace {

using novadt::testing::ScratchDir;
using novadt::testing::Subprocess;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kTestDomainUuid[] = "6695eb01-f6a4-8304-79aa-97f2502e193f";

// A libvirtd with private state directories and its sockets in a scratch directory.
class PrivateLibvirtd {
 public:
  explicit PrivateLibvirtd(const ScratchDir& dir) : dir_(dir) {
    dir_.Write("libvirtd.conf",
               "unix_sock_dir = \"" + dir_.path() + "\"\n"
               "unix_sock_rw_perms = \"0700\"\n"
               "auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n");
  }
  void Start() {
    const std::string script =
        "set -e; mount --make-rprivate /; "
        "for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do "
        "mkdir -p $d; mount -t tmpfs tmpfs $d; done; "
        "exec libvirtd -f " + dir_.path() + "/libvirtd.conf -p " + dir_.path() + "/pid";
    daemon_ = std::make_unique<Subprocess>(
        std::vector<std::string>{"unshare", "--mount", "sh", "-c", script},
        dir_.path() + "/libvirtd.log");
  }
  void Kill() {
    daemon_->Signal(SIGKILL);
    daemon_->Wait(seconds(5));
    daemon_.reset();
  }
  std::string uri() const {
    return "test+unix:///default?socket=" + dir_.path() + "/libvirt-sock";
  }
  std::string log() const { return novadt::testing::ReadFile(dir_.path() + "/libvirtd.log"); }

 private:
  const ScratchDir& dir_;
  std::unique_ptr<Subprocess> daemon_;
};

TEST(LibvirtReconnectTest, ReconnectsAfterTheDaemonDiesAndComesBack) {
  ASSERT_EQ(geteuid(), 0u) << "this test starts a private libvirtd and needs root";
  ScratchDir dir("nova-dt-libvirtd");
  PrivateLibvirtd daemon(dir);

  std::mutex mu;
  std::vector<bool> changes;
  core::HypervisorObserver obs;
  obs.on_connection_change = [&](bool up) {
    std::lock_guard<std::mutex> lock(mu);
    changes.push_back(up);
  };
  config::LibvirtSection cfg;
  cfg.connection_uri = daemon.uri();
  cfg.keepalive_interval_s = 1;
  cfg.keepalive_count = 2;
  cfg.reconnect_max_backoff_ms = 400;

  // Started before the daemon: keeps retrying.
  auto hv = MakeLibvirtHypervisor(cfg, obs);
  EXPECT_FALSE(hv->connected());

  daemon.Start();
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(15))) << daemon.log();
  EXPECT_EQ(hv->reconnects(), 0u);
  ASSERT_TRUE(hv->LookupDomain(kTestDomainUuid).ok());

  daemon.Kill();
  ASSERT_TRUE(WaitFor([&] { return !hv->connected(); }, seconds(10)));
  EXPECT_TRUE(absl::IsUnavailable(hv->LookupDomain(kTestDomainUuid).status()));

  daemon.Start();
  ASSERT_TRUE(WaitFor([&] { return hv->connected(); }, seconds(15))) << daemon.log();
  EXPECT_EQ(hv->reconnects(), 1u);
  auto info = hv->LookupDomain(kTestDomainUuid);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name, "test");

  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(changes, (std::vector<bool>{true, false, true}));
  hv.reset();
  daemon.Kill();
}

}  // namespace
}  // namespace novadt::libvirt
