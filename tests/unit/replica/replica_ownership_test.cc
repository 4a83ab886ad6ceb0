// Who may open a replica's files (replica_store.h, "Ownership and permissions"): ram.img and the
// disk images belong to the user QEMU runs as, every other file to the agent, all mode 0600; the
// directory belongs to the agent and QEMU's group, mode 0710 — also for files made after
// Create(), for replicas reopened from looser modes, for bases and for the replica root. Run as
// root (chown to another user); the ids are made-up numbers, no account needed.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "agent/replica/replica_store.h"
#include "tests/support/test_util.h"
#include "tests/unit/replica/replica_test_util.h"

namespace novadt::replica {
namespace {

namespace fs = std::filesystem;
using ::novadt::testing::ScratchDir;
using ::testing::HasSubstr;

constexpr uid_t kQemuUid = 64990;
constexpr gid_t kQemuGid = 64991;

FileOwner Qemu() {
  FileOwner q;
  q.uid = kQemuUid;
  q.gid = kQemuGid;
  q.groups = {kQemuGid};
  q.name = "qemu-test";
  return q;
}

struct Mode {
  uid_t uid;
  gid_t gid;
  mode_t mode;
  bool operator==(const Mode&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Mode& m) {
  return os << m.uid << ":" << m.gid << " " << std::oct << m.mode << std::dec;
}

Mode ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return {st.st_uid, st.st_gid, st.st_mode & 07777};
}

bool QemuFile(const std::string& name) {
  return name == "ram.img" || (name.starts_with("disk-") && name.ends_with(".raw"));
}

// Every file of `dir` has the owner and mode of the scheme; returns how many there are.
int ExpectScheme(const std::string& dir) {
  EXPECT_EQ(ModeOf(dir), (Mode{::geteuid(), kQemuGid, 0710})) << dir;
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const Mode want = QemuFile(name) ? Mode{kQemuUid, kQemuGid, 0600}
                                     : Mode{::geteuid(), ::getegid(), 0600};
    EXPECT_EQ(ModeOf(e.path().string()), want) << name;
    ++files;
  }
  return files;
}

// Fails the n-th apply of a journal record: the epoch is durable (journal.commit written) but
// not applied, so its files stay on disk.
class FailApply final : public FaultHook {
 public:
  Status Before(CommitStep step) override {
    if (armed && step == CommitStep::kApplyRecord) return absl::InternalError("injected");
    return absl::OkStatus();
  }
  bool armed = false;
};

class ReplicaOwnershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the ownership tests chown files to another user: run as root";
    options_.qemu = Qemu();
  }
  std::string Dir() const { return ReplicaDir(scratch_.path(), "8e4f2c1a-uuid"); }

  ScratchDir scratch_{"nova-dt-replica-owner"};
  ReplicaGeometry geometry_ = SmallGeometry();
  ReplicaOptions options_;
};

TEST_F(ReplicaOwnershipTest, CreateGivesTheImagesToQemuAndEverythingElseToTheAgent) {
  auto store = ReplicaStore::Create(Dir(), geometry_, options_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(ModeOf(Dir() + "/ram.img"), (Mode{kQemuUid, kQemuGid, 0600}));
  EXPECT_EQ(ModeOf(Dir() + "/disk-vda.raw"), (Mode{kQemuUid, kQemuGid, 0600}));
  EXPECT_EQ(ModeOf(Dir() + "/disk-vdb.raw"), (Mode{kQemuUid, kQemuGid, 0600}));
  EXPECT_EQ(ModeOf(Dir() + "/epoch.rec"), (Mode{::geteuid(), ::getegid(), 0600}));
  EXPECT_EQ(ModeOf(Dir() + "/devstate-0.bin"), (Mode{::geteuid(), ::getegid(), 0600}));
  EXPECT_EQ(ExpectScheme(Dir()), 5);
}

TEST_F(ReplicaOwnershipTest, FilesMadeLaterFollowTheSameRule) {
  FailApply hook;
  options_.max_buffered_bytes = 4096;  // epochs spill to journal.redo while they arrive
  options_.fault_hook = &hook;
  auto store = ReplicaStore::Create(Dir(), geometry_, options_);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, 1)).ok());  // seed: devstate-1, epoch.rec
  ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, 2)).ok());  // journal, mark, replaced
  ASSERT_TRUE(Feed(**store, MakeEpoch(geometry_, 3)).ok());
  ASSERT_TRUE(fs::exists(Dir() + "/journal.redo"));
  EXPECT_EQ(ExpectScheme(Dir()), 7);  // + devstate-1.bin, journal.redo

  // Epoch 3 durable but not applied: the commit mark stays until the replica is reopened.
  hook.armed = true;
  ASSERT_FALSE((*store)->Commit().ok());
  ASSERT_TRUE(fs::exists(Dir() + "/journal.commit"));
  EXPECT_EQ(ExpectScheme(Dir()), 8);
  store->reset();
  hook.armed = false;
  auto reopened = ReplicaStore::Open(Dir(), options_);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->committed_epoch(), 3u);
  ASSERT_TRUE((*reopened)->Unseed().ok());  // epoch.rec replaced once more
  EXPECT_EQ(ExpectScheme(Dir()), 6);
}

TEST_F(ReplicaOwnershipTest, OpenGivesAnOlderReplicaTheSchemeWithoutTouchingItsData) {
  {
    auto store = ReplicaStore::Create(Dir(), geometry_);  // the agent's own ids
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, 1)).ok());
  }
  // As an agent before this scheme left it.
  ASSERT_EQ(::chmod(Dir().c_str(), 0755), 0);
  for (const auto& e : fs::directory_iterator(Dir())) {
    ASSERT_EQ(::chmod(e.path().c_str(), 0644), 0);
  }
  const std::string ram = Slurp(Dir() + "/ram.img");
  auto store = ReplicaStore::Open(Dir(), options_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 1u);
  EXPECT_EQ(Slurp(Dir() + "/ram.img"), ram);
  EXPECT_EQ(ExpectScheme(Dir()), 6);
}

TEST_F(ReplicaOwnershipTest, ABasisFollowsTheRule) {
  const std::string src = scratch_.Write("pc.ram", Fill(7, geometry_.ram_size));
  const Mode src_before = ModeOf(src);
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, src, {}, options_).ok());
  EXPECT_EQ(ExpectScheme(Dir()), 5);
  EXPECT_EQ(Slurp(Dir() + "/ram.img"), Slurp(src));
  EXPECT_EQ(ModeOf(src), src_before) << "the source is not the replica's: left as it was";
}

// The source of a basis is a running copy's RAM file, in a directory QEMU's user owns, and its
// disk images: the agent reads it as root into a file QEMU's user reads back. A compromised
// QEMU must not be able to point it at another file (a symbolic or a hard link, a file of some
// other user): refused, naming the file, and no replica is left behind.
TEST_F(ReplicaOwnershipTest, ABasisSourceThatIsALinkOrAnotherUsersFileIsRefused) {
  const std::string secret = scratch_.Write("shadow", Fill(3, geometry_.ram_size));
  const std::string ram_dir = scratch_.path() + "/5-guest";
  fs::create_directories(ram_dir);
  auto refused = [&](const std::string& src, const std::string& why) {
    SCOPED_TRACE(why);
    Status st = ReplicaStore::CreateBasis(Dir(), geometry_, src, {}, options_);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(src));
    EXPECT_THAT(std::string(st.message()), HasSubstr(why));
    EXPECT_FALSE(fs::exists(Dir())) << "nothing is kept";
    // Nor as a disk image.
    st = ReplicaStore::CreateBasis(Dir(), geometry_, "", {{"vdb", src}}, options_);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_FALSE(fs::exists(Dir()));
  };

  const std::string symlink = ram_dir + "/pc.ram";
  fs::create_symlink(secret, symlink);
  refused(symlink, "symbolic link");
  fs::remove(symlink);

  // A hard link to the secret (as QEMU's user could make to a file of its own).
  const std::string hardlink = ram_dir + "/pc.ram";
  fs::create_hard_link(secret, hardlink);
  refused(hardlink, "2 names");
  fs::remove(hardlink);

  // A file of a third user (neither QEMU's nor the agent's).
  const std::string foreign = scratch_.Write("foreign.ram", Fill(4, geometry_.ram_size));
  ASSERT_EQ(::chown(foreign.c_str(), 12345, 12345), 0);
  refused(foreign, "uid 12345");

  // Not a regular file: a FIFO is refused, never waited on.
  const std::string fifo = ram_dir + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  refused(fifo, "not a regular file");

  // QEMU's own RAM file, one name: kept.
  const std::string ram = scratch_.Write("pc.ram", Fill(5, geometry_.ram_size));
  ASSERT_EQ(::chown(ram.c_str(), kQemuUid, kQemuGid), 0);
  Status st = ReplicaStore::CreateBasis(Dir(), geometry_, ram, {}, options_);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(Slurp(Dir() + "/ram.img"), Slurp(ram));
  EXPECT_EQ(Slurp(secret), Fill(3, geometry_.ram_size)) << "untouched";
}

TEST_F(ReplicaOwnershipTest, ABasisSourceOfTheAgentsOwnIsKept) {
  // A disk image libvirt gave back to root when the copy stopped: the agent's own.
  const std::string disk = scratch_.Write("disk", Fill(6, geometry_.disks[1].size));
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, "", {{"vdb", disk}}, options_).ok());
  EXPECT_EQ(Slurp(Dir() + "/disk-vdb.raw"), Slurp(disk));
}

TEST_F(ReplicaOwnershipTest, ASymbolicLinkInAReplicaIsNeverFollowed) {
  {
    auto store = ReplicaStore::Create(Dir(), geometry_, options_);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, 1)).ok());
  }
  const std::string victim = scratch_.Write("victim", "not a replica's");
  ASSERT_EQ(::chmod(victim.c_str(), 0640), 0);
  const Mode before = ModeOf(victim);
  fs::remove(Dir() + "/disk-vdb.raw");
  fs::create_symlink(victim, Dir() + "/disk-vdb.raw");
  auto store = ReplicaStore::Open(Dir(), options_);
  EXPECT_FALSE(store.ok());
  EXPECT_EQ(ModeOf(victim), before) << "the link's target was chowned or chmodded";
  EXPECT_EQ(Slurp(victim), "not a replica's");
}

TEST_F(ReplicaOwnershipTest, TheReplicaRootIsTheAgentsAndQemusGroupsAndMustBeReachable) {
  // ScratchDir is 0700: QEMU's user could not pass it.
  const std::string root = scratch_.path() + "/ram/nova-dt";
  Status st = PrepareReplicaRoot(root, Qemu());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr(scratch_.path() + " (mode 0700"));
  EXPECT_THAT(st.message(), HasSubstr("not searchable by qemu-test"));
  EXPECT_EQ(ModeOf(root), (Mode{::geteuid(), kQemuGid, 0710}));

  ASSERT_EQ(::chmod(scratch_.path().c_str(), 0711), 0);
  ASSERT_EQ(::chmod((scratch_.path() + "/ram").c_str(), 0700), 0);
  ASSERT_EQ(::chown((scratch_.path() + "/ram").c_str(), kQemuUid, kQemuGid), 0);
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
  EXPECT_TRUE(PrepareReplicaRoot(root, Qemu()).ok());
  EXPECT_EQ(ModeOf(root), (Mode{::geteuid(), kQemuGid, 0710}));

  // A root that is a symbolic link is refused, not followed.
  const std::string link = scratch_.path() + "/link";
  fs::create_symlink(root, link);
  EXPECT_FALSE(PrepareReplicaRoot(link, Qemu()).ok());
}

}  // namespace
}  // namespace novadt::replica
