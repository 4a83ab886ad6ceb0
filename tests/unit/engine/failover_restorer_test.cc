// FailoverRestorer over FakeHypervisor and a fake launcher that does what libvirt + the nova-dt
// hook do to the file system: on start it reads the arm file and hard-links the replica RAM to
// <ram dir>/<id>-<name>/pc.ram (or, when told to behave like a host without the hook, creates a
// fresh file there).
#include "agent/engine/failover_restorer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>

#include "tests/support/fake_hypervisor.h"
#include "tests/support/test_util.h"

namespace novadt::engine {
namespace {

namespace fs = std::filesystem;
using novadt::testing::FakeHypervisor;
using novadt::testing::ScratchDir;

constexpr char kUuid[] = "0d5b2f3a-1111-4c2e-9a7b-0123456789ab";
constexpr char kXml[] = "<domain type='qemu'><name>g</name></domain>";

// Fails on demand; records the lifecycle calls in order.
class FakeLauncher final : public core::DomainLauncher {
 public:
  FakeLauncher(std::string ram_dir, std::string arm_dir)
      : ram_dir_(std::move(ram_dir)), arm_dir_(std::move(arm_dir)) {}

  bool run_hook = true;
  Status start_error, resume_error, define_error;

  // Called at the start, before anything else (what the host looks like when libvirt starts).
  std::function<void()> on_start;

  StatusOr<core::LaunchedDomain> StartPausedIncoming(const core::RestoreSpec& spec) override {
    Record("start");
    if (on_start) on_start();
    last_spec = spec;
    if (!start_error.ok()) return start_error;
    ++id_;
    const std::string dir = ram_dir_ + "/" + std::to_string(id_) + "-g";
    fs::create_directories(dir);
    const std::string arm = arm_dir_ + "/" + kUuid + ".arm";
    if (run_hook && fs::exists(arm)) {
      struct stat st {};
      ::stat(arm.c_str(), &st);
      last_arm_mode = st.st_mode & 07777;
      last_arm_uid = st.st_uid;
      last_arm_links = st.st_nlink;
      last_arm_text.assign(std::istreambuf_iterator<char>(std::ifstream(arm).rdbuf()), {});
      std::string target;
      std::getline(std::ifstream(arm), target);
      last_arm = target;
      if (target.empty() || target[0] != '/') target = arm_dir_ + "/" + target;
      fs::create_hard_link(target, dir + "/pc.ram");
      fs::remove(arm);
    } else {
      std::ofstream(dir + "/pc.ram") << "fresh";
    }
    running_ = true;
    return core::LaunchedDomain{started_uuid.empty() ? kUuid : started_uuid, "g", id_};
  }
  std::string started_uuid;  // the UUID the started domain has ("" : the server's)
  std::vector<std::string> destroyed;  // UUIDs Destroy() was called with
  StatusOr<std::string> DomainRamFile(std::string_view) override {
    Record("ram-file");
    if (!running_) return absl::NotFoundError("not running");
    return ram_dir_ + "/" + std::to_string(id_) + "-g/pc.ram";
  }
  Status Resume(std::string_view) override {
    Record("resume");
    return resume_error;
  }
  Status MakePersistent(const core::RestoreSpec&) override {
    Record("define");
    return define_error;
  }
  Status Destroy(std::string_view uuid) override {
    Record("destroy");
    destroyed.emplace_back(uuid);
    if (running_) fs::remove_all(ram_dir_ + "/" + std::to_string(id_) + "-g");  // as libvirt
    running_ = false;
    return absl::OkStatus();
  }

  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  bool running() const { return running_; }
  core::RestoreSpec last_spec;
  std::string last_arm;  // the arm file's line the hook saw
  std::string last_arm_text;  // all of it
  mode_t last_arm_mode = 0;
  uid_t last_arm_uid = 0;
  nlink_t last_arm_links = 0;

 private:
  void Record(const std::string& c) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back(c);
  }
  std::mutex mu_;
  std::vector<std::string> calls_;
  std::string ram_dir_, arm_dir_;
  int id_ = 4;
  bool running_ = false;
};

class FailoverRestorerTest : public ::testing::Test {
 protected:
  FailoverRestorerTest()
      : arm_dir_(dir_.path() + "/nova-dt"),
        launcher_(dir_.path(), arm_dir_),
        restorer_(launcher_, hv_, clock_, Options()) {
    fs::create_directories(arm_dir_ + "/" + kUuid);
    req_.instance_uuid = kUuid;
    req_.domain_xml = kXml;
    req_.committed_epoch = 7;
    req_.ram_path = arm_dir_ + "/" + kUuid + "/ram.img";
    req_.device_state_path = arm_dir_ + "/" + kUuid + "/devstate-1.bin";
    req_.disk_paths = {{"vda", arm_dir_ + "/" + kUuid + "/disk-vda.raw"}};
    std::ofstream(req_.ram_path) << "replica ram";
    std::ofstream(req_.device_state_path) << "DEVICE-STATE";
    // query-migrate: "active" twice, then "completed".
    hv_.On("query-migrate", [this](const nlohmann::json&) {
      const char* s = ++polls_ < 3 ? "active" : "completed";
      return nlohmann::json{{"return", {{"status", s}}}};
    });
  }

  FailoverRestorerOptions Options() {
    FailoverRestorerOptions o;
    o.arm_dir = arm_dir_;
    o.poll_interval = std::chrono::milliseconds(0);
    o.load_timeout = std::chrono::milliseconds(500);
    o.instances_path = dir_.path() + "/instances";
    return o;
  }

  std::vector<std::string> QmpNames() {
    std::vector<std::string> out;
    for (const auto& c : hv_.Commands()) out.push_back(nlohmann::json::parse(c)["execute"]);
    return out;
  }

  bool Armed() const { return fs::exists(arm_dir_ + "/" + kUuid + ".arm"); }

  ScratchDir dir_{"nova-dt-restorer"};
  std::string arm_dir_;
  FakeHypervisor hv_;
  ManualClock clock_;
  FakeLauncher launcher_;
  FailoverRestorer restorer_;
  RestoreRequest req_;
  int polls_ = 0;
};

// The hook runs as root and trusts the arm file: only root may read or write it (0600). It names
// the replica RAM and, when QEMU's ids are configured, who QEMU runs as: the hook gives the
// guest-RAM directory it makes to them, as libvirt does with the ones it makes.
TEST_F(FailoverRestorerTest, TheArmFileIsRootsAloneAndNamesWhoQemuRunsAs) {
  ASSERT_TRUE(restorer_.Restore(req_).ok());
  EXPECT_EQ(launcher_.last_arm_mode, 0600u);
  EXPECT_EQ(launcher_.last_arm_text, std::string(kUuid) + "/ram.img\n");

  FailoverRestorerOptions o = Options();
  o.qemu.uid = 64055;
  o.qemu.gid = 64056;
  ASSERT_TRUE(launcher_.Destroy(kUuid).ok());  // its guest-RAM directory goes, as with libvirt
  FakeLauncher launcher(dir_.path(), arm_dir_);
  FailoverRestorer restorer(launcher, hv_, clock_, o);
  polls_ = 0;
  ASSERT_TRUE(restorer.Restore(req_).ok());
  EXPECT_EQ(launcher.last_arm_mode, 0600u);
  EXPECT_EQ(launcher.last_arm_text, std::string(kUuid) + "/ram.img\n64055:64056\n");
}

// A leftover <uuid>.arm.tmp (a crash mid-arm, or planted) is never reused: not its owner, not
// its other names, not a FIFO (whose open would block the take-over).
TEST_F(FailoverRestorerTest, ALeftoverArmTempFileIsReplacedNeverReused) {
  ASSERT_EQ(::geteuid(), 0u) << "chown to another user: run as root";
  const std::string tmp = arm_dir_ + "/" + kUuid + ".arm.tmp";
  // Another user's file, with a second name outside.
  const std::string victim = dir_.path() + "/victim";
  std::ofstream(victim) << "someone else's";
  ASSERT_EQ(::chown(victim.c_str(), 12345, 12345), 0);
  ASSERT_EQ(::chmod(victim.c_str(), 0666), 0);
  fs::create_hard_link(victim, tmp);
  ASSERT_TRUE(restorer_.Restore(req_).ok());
  EXPECT_EQ(launcher_.last_arm_uid, ::geteuid());
  EXPECT_EQ(launcher_.last_arm_mode, 0600u);
  EXPECT_EQ(launcher_.last_arm_links, 1u);
  EXPECT_EQ(launcher_.last_arm_text, std::string(kUuid) + "/ram.img\n");
  std::string left;
  std::getline(std::ifstream(victim), left);
  EXPECT_EQ(left, "someone else's") << "written through the leftover's other name";
  EXPECT_FALSE(fs::exists(tmp));

  // A FIFO (not tried once the above failed: an arm that reuses it blocks for good).
  if (HasFailure()) return;
  ASSERT_TRUE(launcher_.Destroy(kUuid).ok());
  ASSERT_EQ(::mkfifo(tmp.c_str(), 0666), 0);
  FakeLauncher launcher(dir_.path(), arm_dir_);
  FailoverRestorer restorer(launcher, hv_, clock_, Options());
  polls_ = 0;
  ASSERT_TRUE(restorer.Restore(req_).ok());
  EXPECT_EQ(launcher.last_arm_mode, 0600u);
  EXPECT_EQ(launcher.last_arm_text, std::string(kUuid) + "/ram.img\n");
  EXPECT_FALSE(fs::exists(tmp));
}

TEST_F(FailoverRestorerTest, RestoresWithTheStagedQmpSequence) {
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->epoch, 7u);
  EXPECT_EQ(r->domain_id, 5);
  EXPECT_TRUE(r->persistent);
  EXPECT_EQ(launcher_.calls(), (std::vector<std::string>{"start", "ram-file", "resume", "define"}));
  EXPECT_EQ(QmpNames(),
            (std::vector<std::string>{"migrate-set-capabilities", "getfd", "migrate-incoming",
                                      "query-migrate", "query-migrate", "query-migrate"}));
  const auto cmds = hv_.Commands();
  const auto caps = nlohmann::json::parse(cmds[0])["arguments"]["capabilities"][0];
  EXPECT_EQ(caps["capability"], "x-ignore-shared");
  EXPECT_EQ(caps["state"], true);
  const std::string fdname = nlohmann::json::parse(cmds[1])["arguments"]["fdname"];
  EXPECT_EQ(nlohmann::json::parse(cmds[2])["arguments"]["uri"], "fd:" + fdname);
  // The fd handed to QEMU is the committed device state.
  const int fd = hv_.TakeFd(fdname);
  ASSERT_GE(fd, 0);
  char buf[64] = {};
  ASSERT_EQ(pread(fd, buf, sizeof buf, 0), 12);
  close(fd);
  EXPECT_STREQ(buf, "DEVICE-STATE");
  // The launcher got the primary's XML and the replica's disks; the arm file is gone.
  EXPECT_EQ(launcher_.last_spec.domain_xml, kXml);
  EXPECT_EQ(launcher_.last_spec.disk_images, req_.disk_paths);
  EXPECT_FALSE(Armed());
  EXPECT_TRUE(launcher_.running());
}

TEST_F(FailoverRestorerTest, ArmFileNamesTheReplicaRelativeToTheArmDirectory) {
  ASSERT_TRUE(restorer_.Restore(req_).ok());
  struct stat a = {}, b = {};
  ASSERT_EQ(stat(req_.ram_path.c_str(), &a), 0);
  ASSERT_EQ(stat((dir_.path() + "/5-g/pc.ram").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(launcher_.last_arm, std::string(kUuid) + "/ram.img");
}

TEST_F(FailoverRestorerTest, WrongRamFileDestroysTheDomainAndNeverLoads) {
  launcher_.run_hook = false;  // a host without the hook: libvirt's own fresh RAM file
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("is not the replica RAM"), std::string::npos) << r.status();
  EXPECT_EQ(launcher_.calls(), (std::vector<std::string>{"start", "ram-file", "destroy"}));
  EXPECT_TRUE(hv_.Commands().empty()) << "QMP sent to a guest on the wrong memory";
  EXPECT_FALSE(launcher_.running());
  EXPECT_FALSE(Armed());
  EXPECT_TRUE(fs::exists(req_.ram_path)) << "the replica must survive a failed restore";
}

// The domain a restore starts is the one it destroys: a definition that named another domain
// (refused when the stream opened; this is the restorer's own guard) is stopped by its own UUID,
// and nothing is ever done to the server's name or sent to its QEMU.
TEST_F(FailoverRestorerTest, ADomainOtherThanTheServerIsDestroyedAndNothingElseTouched) {
  launcher_.started_uuid = "00000000-0000-4000-8000-00000000beef";
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_EQ(launcher_.destroyed, std::vector<std::string>{launcher_.started_uuid});
  EXPECT_TRUE(hv_.Commands().empty());
  EXPECT_FALSE(Armed());
}

TEST_F(FailoverRestorerTest, FailedMigrationDestroysTheDomain) {
  hv_.On("query-migrate", [](const nlohmann::json&) {
    return nlohmann::json{
        {"return", {{"status", "failed"}, {"error-desc", "load of migration failed"}}}};
  });
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("load of migration failed"), std::string::npos);
  EXPECT_NE(r.status().message().find("loading the device state"), std::string::npos);
  EXPECT_EQ(launcher_.calls(), (std::vector<std::string>{"start", "ram-file", "destroy"}));
  EXPECT_FALSE(launcher_.running());
  EXPECT_FALSE(Armed());
}

TEST_F(FailoverRestorerTest, QmpErrorOnMigrateIncomingDestroysTheDomain) {
  hv_.FailNext("migrate-incoming", "GenericError", "bad uri");
  auto r = restorer_.Restore(req_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad uri"), std::string::npos) << r.status();
  EXPECT_EQ(launcher_.calls().back(), "destroy");
  EXPECT_FALSE(launcher_.running());
}

TEST_F(FailoverRestorerTest, LoadThatNeverCompletesTimesOutAndDestroys) {
  hv_.On("query-migrate", [this](const nlohmann::json&) {
    clock_.Advance(std::chrono::milliseconds(100));
    return nlohmann::json{{"return", {{"status", "active"}}}};
  });
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsDeadlineExceeded(r.status())) << r.status();
  EXPECT_EQ(launcher_.calls().back(), "destroy");
  EXPECT_FALSE(launcher_.running());
}

TEST_F(FailoverRestorerTest, FailedStartDisarmsAndDestroysNothing) {
  launcher_.start_error = absl::UnavailableError("libvirtd down");
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_EQ(launcher_.calls(), (std::vector<std::string>{"start"}));
  EXPECT_FALSE(Armed());
}

TEST_F(FailoverRestorerTest, FailedResumeDestroys) {
  launcher_.resume_error = absl::FailedPreconditionError("cont refused");
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(launcher_.calls().back(), "destroy");
}

TEST_F(FailoverRestorerTest, FailedDefineLeavesTheRunningGuestAndReportsIt) {
  launcher_.define_error = absl::UnavailableError("define refused");
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->persistent);
  EXPECT_TRUE(absl::IsUnavailable(r->persist_error));
  EXPECT_TRUE(launcher_.running());
  EXPECT_EQ(launcher_.calls().back(), "define");
}

TEST_F(FailoverRestorerTest, RefusesUnseededReplicaAndRamOffTheHookFileSystem) {
  req_.committed_epoch = 0;
  EXPECT_TRUE(absl::IsFailedPrecondition(restorer_.Restore(req_).status()));
  req_.committed_epoch = 7;
  // A file on another file system (procfs) than the arm directory: no hard link possible.
  req_.ram_path = "/proc/self/status";
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("not on the file system"), std::string::npos);
  EXPECT_TRUE(launcher_.calls().empty());
  EXPECT_FALSE(Armed());
}

TEST_F(FailoverRestorerTest, MissingDeviceStateDestroys) {
  fs::remove(req_.device_state_path);
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsNotFound(r.status())) << r.status();
  EXPECT_EQ(launcher_.calls().back(), "destroy");
}

// The real hook (deploy/libvirt-hooks/qemu) on an armed start, as libvirtd runs it: it makes the
// guest-RAM directory before libvirt does (libvirt then leaves it as it is), so it makes it as
// libvirt would: mode 0700, owned by QEMU's ids from the arm file; pc.ram is the replica's inode.
TEST(LibvirtHookTest, MakesTheGuestRamDirectoryForQemusUserAsLibvirtWould) {
  ASSERT_EQ(::geteuid(), 0u) << "the hook chowns: run as root";
  ScratchDir dir("nova-dt-hook");
  const std::string store = dir.path() + "/nova-dt";
  fs::create_directories(store + "/" + kUuid);
  const std::string ram = store + "/" + kUuid + "/ram.img";
  std::ofstream(ram) << "replica ram";
  auto run_hook = [&](int id) {
    std::ofstream(dir.path() + "/domain.xml")
        << "<domain type='qemu' id='" << id << "'>\n  <name>guest</name>\n  <uuid>" << kUuid
        << "</uuid>\n</domain>\n";
    const std::string cmd = "NOVA_DT_RAM_DIR=" + dir.path() + " sh " NOVA_DT_SOURCE_DIR
                            "/deploy/libvirt-hooks/qemu guest prepare begin - < " + dir.path() +
                            "/domain.xml 2>/dev/null";
    return std::system(cmd.c_str());
  };

  std::ofstream(store + "/" + kUuid + ".arm") << kUuid << "/ram.img\n64990:64991\n";
  ASSERT_EQ(run_hook(7), 0);
  struct stat d = {}, linked = {}, replica = {};
  ASSERT_EQ(::stat((dir.path() + "/7-guest").c_str(), &d), 0);
  EXPECT_EQ(d.st_mode & 07777, 0700u);
  EXPECT_EQ(d.st_uid, 64990u);
  EXPECT_EQ(d.st_gid, 64991u);
  ASSERT_EQ(::stat((dir.path() + "/7-guest/pc.ram").c_str(), &linked), 0);
  ASSERT_EQ(::stat(ram.c_str(), &replica), 0);
  EXPECT_EQ(linked.st_ino, replica.st_ino);
  EXPECT_FALSE(fs::exists(store + "/" + kUuid + ".arm")) << "one shot";

  // RAM_DIR belongs to QEMU's user: a link planted where the directory goes is refused.
  fs::create_symlink(dir.path() + "/elsewhere", dir.path() + "/8-guest");
  std::ofstream(store + "/" + kUuid + ".arm") << kUuid << "/ram.img\n64990:64991\n";
  EXPECT_NE(run_hook(8), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/elsewhere"));
  // A malformed owner line refuses the start.
  std::ofstream(store + "/" + kUuid + ".arm") << kUuid << "/ram.img\n64990:x;rm\n";
  EXPECT_NE(run_hook(9), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/9-guest"));

  // RAM_DIR is QEMU's user's: an arm file not root's, or one with a second name, or a store
  // that is a link (renamed away and replaced), names nothing the hook links.
  const std::string arm = store + "/" + kUuid + ".arm";
  std::ofstream(arm) << kUuid << "/ram.img\n";
  ASSERT_EQ(::chown(arm.c_str(), 64990, 64990), 0);
  EXPECT_NE(run_hook(10), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/10-guest"));
  ASSERT_EQ(::chown(arm.c_str(), 0, 0), 0);
  ASSERT_EQ(::link(arm.c_str(), (dir.path() + "/second-name").c_str()), 0);
  EXPECT_NE(run_hook(11), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/11-guest"));
  fs::remove(dir.path() + "/second-name");
  fs::rename(store, dir.path() + "/real-store");
  fs::create_directory_symlink(dir.path() + "/real-store", store);
  EXPECT_NE(run_hook(12), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/12-guest"));
  // The replica RAM named must not be a link either.
  fs::remove(store);
  fs::rename(dir.path() + "/real-store", store);
  fs::rename(ram, ram + ".real");
  fs::create_symlink(ram + ".real", ram);
  EXPECT_NE(run_hook(13), 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/13-guest/pc.ram"));
  // Restored: the start goes through again.
  fs::remove(ram);
  fs::rename(ram + ".real", ram);
  EXPECT_EQ(run_hook(14), 0);
}

// ---------------------------------------------------------------------------------------------
// Step 0: Nova's instance directory of a server booting from its own kernel and ramdisk, which
// the backup host never had (engine/boot_files.h).

class InstanceDirRestoreTest : public FailoverRestorerTest {
 protected:
  InstanceDirRestoreTest() {
    fs::create_directories(instances_);
    fs::permissions(instances_, fs::perms(0755));
    std::ofstream(arm_dir_ + "/" + kUuid + "/boot-kernel") << "the kernel";
    std::ofstream(arm_dir_ + "/" + kUuid + "/boot-ramdisk") << "the ramdisk";
    req_.instance_dir = true;
    req_.boot_files = {{"kernel", arm_dir_ + "/" + kUuid + "/boot-kernel"},
                       {"ramdisk", arm_dir_ + "/" + kUuid + "/boot-ramdisk"}};
  }
  const std::string instances_ = dir_.path() + "/instances";
  const std::string instance_dir_ = instances_ + "/" + kUuid;
};

TEST_F(InstanceDirRestoreTest, TheBootFilesAreInTheInstanceDirectoryBeforeTheDomainStarts) {
  std::string kernel_at_start, ramdisk_at_start;
  launcher_.on_start = [&] {
    kernel_at_start = novadt::testing::ReadFile(instance_dir_ + "/kernel");
    ramdisk_at_start = novadt::testing::ReadFile(instance_dir_ + "/ramdisk");
    std::ofstream(instance_dir_ + "/console.log") << "";  // libvirt makes it, as root
  };
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(kernel_at_start, "the kernel");
  EXPECT_EQ(ramdisk_at_start, "the ramdisk");
  EXPECT_TRUE(fs::is_directory(instance_dir_));
  EXPECT_TRUE(fs::exists(instance_dir_ + "/console.log")) << "left for the running guest";
  EXPECT_EQ(novadt::testing::ReadFile(instance_dir_ + "/kernel"), "the kernel");
  EXPECT_GE(r->timings.instance_dir.count(), 0);
}

// A definition that only logs its console there still gets the directory (no boot files).
TEST_F(InstanceDirRestoreTest, ADirectoryForTheConsoleLogAlone) {
  req_.boot_files.clear();
  bool dir_at_start = false;
  launcher_.on_start = [&] { dir_at_start = fs::is_directory(instance_dir_); };
  ASSERT_TRUE(restorer_.Restore(req_).ok());
  EXPECT_TRUE(dir_at_start);
  EXPECT_FALSE(fs::exists(instance_dir_ + "/kernel"));
}

// A replica seeded by a primary that sent no boot files (before replication protocol 4) cannot
// be restored: said before anything is made or started.
TEST_F(InstanceDirRestoreTest, AReplicaWithoutTheBootFilesItNeedsIsRefusedBeforeAnythingStarts) {
  req_.boot_files["ramdisk"] = "";
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::HasSubstr("preparing the instance directory: the domain boots from " +
                                   instance_dir_ +
                                   "/ramdisk but the replica holds no copy of it"));
  EXPECT_TRUE(launcher_.calls().empty());
  EXPECT_FALSE(fs::exists(instance_dir_));
  EXPECT_FALSE(Armed());
}

TEST_F(InstanceDirRestoreTest, WithoutNovasInstancesPathTheRestoreSaysSo) {
  fs::remove_all(instances_);
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::HasSubstr("Nova's instances_path " + instances_ +
                                   " ([libvirt] instances_path) does not exist"));
  EXPECT_TRUE(launcher_.calls().empty());
}

// A failed restore leaves no instance directory it made behind (a retry makes it again); one
// that was there before stays.
TEST_F(InstanceDirRestoreTest, AFailedStartRemovesTheDirectoryItMadeAndKeepsOneThatWasThere) {
  launcher_.start_error = absl::UnavailableError("Failed to create file console.log");
  launcher_.on_start = [&] { std::ofstream(instance_dir_ + "/console.log") << "x"; };
  auto r = restorer_.Restore(req_);
  ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_FALSE(fs::exists(instance_dir_));

  fs::create_directory(instance_dir_);
  fs::permissions(instance_dir_, fs::perms(0755));
  std::ofstream(instance_dir_ + "/disk.info") << "{}";  // Nova's own
  r = restorer_.Restore(req_);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(fs::exists(instance_dir_ + "/disk.info"));
  EXPECT_EQ(novadt::testing::ReadFile(instance_dir_ + "/kernel"), "the kernel");

  launcher_.start_error = absl::OkStatus();
  r = restorer_.Restore(req_);
  EXPECT_TRUE(r.ok()) << "a retry over what the failed attempt left: " << r.status();
}

}  // namespace
}  // namespace novadt::engine
