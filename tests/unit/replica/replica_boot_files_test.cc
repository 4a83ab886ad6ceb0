// The replica's boot files (replica_store.h, "Boot files"): kept private and durably with the
// replica, replaced only before a seed, checked before a restore uses them, removed with it.
// Process death while they are written is in replica_crash_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "agent/replica/replica_store.h"
#include "tests/support/test_util.h"
#include "tests/unit/replica/replica_test_util.h"

namespace novadt::replica {
namespace {

namespace fs = std::filesystem;
using ::novadt::testing::ScratchDir;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

class FailBootStep final : public FaultHook {
 public:
  explicit FailBootStep(CommitStep step) : step_(step) {}
  Status Before(CommitStep step) override {
    if (step == step_) return absl::ResourceExhaustedError("no space left (injected)");
    return absl::OkStatus();
  }

 private:
  CommitStep step_;
};

class ReplicaBootFilesTest : public ::testing::Test {
 protected:
  std::string Dir() const { return ReplicaDir(scratch_.path(), "8e4f2c1a-uuid"); }
  std::unique_ptr<ReplicaStore> Create(const ReplicaOptions& opt = {}) {
    auto store = ReplicaStore::Create(Dir(), geometry_, opt);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  const std::string kernel_ = Fill(1, 3 * 4096 + 17);
  const std::string ramdisk_ = Fill(2, 1000);
  ScratchDir scratch_{"nova-dt-replica-boot"};
  ReplicaGeometry geometry_ = SmallGeometry();
  std::vector<Model> models_ = Models(geometry_, 3);
};

TEST_F(ReplicaBootFilesTest, KeptPrivateWithTheReplicaAcrossARestartAndRemovedWithIt) {
  auto store = Create();
  ASSERT_TRUE(store);
  ASSERT_TRUE(GiveBootFiles(*store, {{"kernel", kernel_}, {"ramdisk", ramdisk_}}).ok());
  for (uint64_t n = 1; n <= 2; ++n)
    ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, n)).ok());
  auto files = store->BootFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, UnorderedElementsAre(Pair("kernel", Dir() + "/boot-kernel"),
                                           Pair("ramdisk", Dir() + "/boot-ramdisk")));
  EXPECT_EQ(Slurp(Dir() + "/boot-kernel"), kernel_);
  EXPECT_EQ(Slurp(Dir() + "/boot-ramdisk"), ramdisk_);
  for (const char* name : {"boot-kernel", "boot-ramdisk", "boot.rec"}) {
    struct stat st {};
    ASSERT_EQ(::lstat((Dir() + "/" + name).c_str(), &st), 0) << name;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << name;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
    EXPECT_EQ(st.st_uid, ::geteuid()) << name << ": the agent's, not QEMU's";
  }
  for (const auto& e : fs::directory_iterator(Dir())) {
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
  }

  // The agent restarts: the reopened replica has them as they were.
  store.reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->committed_epoch(), 2u);
  auto again = (*reopened)->BootFiles();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *files);

  ASSERT_TRUE((*reopened)->Destroy().ok());
  EXPECT_FALSE(fs::exists(Dir())) << "the boot files went with the replica";
}

TEST_F(ReplicaBootFilesTest, AReplicaWithoutBootRecordHasNone) {
  auto store = Create();
  ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 1)).ok());  // never given any
  auto files = store->BootFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(files->empty());
}

TEST_F(ReplicaBootFilesTest, ReplacedOnlyBeforeASeedAndOnlyWhole) {
  auto store = Create();
  ASSERT_TRUE(store);
  // Malformed replacements.
  for (const auto& bad : std::vector<std::vector<core::BootFile>>{{{"vmlinuz", 10}},
                                                                  {{"../kernel", 10}},
                                                                  {{"kernel", 0}},
                                                                  {{"kernel", 1}, {"kernel", 2}}}) {
    EXPECT_TRUE(absl::IsInvalidArgument(store->BeginBootFiles(bad)));
  }
  ASSERT_TRUE(store->BeginBootFiles({{"kernel", 10}, {"ramdisk", 4}}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(store->AddBootFileData("initrd", 0, "x")));
  EXPECT_TRUE(absl::IsInvalidArgument(store->AddBootFileData("kernel", 1, "x"))) << "a gap";
  EXPECT_TRUE(absl::IsInvalidArgument(store->AddBootFileData("kernel", 0, std::string(11, 'k'))))
      << "beyond the size";
  ASSERT_TRUE(store->AddBootFileData("kernel", 0, std::string(6, 'k')).ok());
  Status st = store->CommitBootFiles();
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("'kernel' has 6 of 10 bytes"));
  st = store->BeginEpoch(1);
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << "a seed while the boot files are incomplete";
  EXPECT_THAT(std::string(st.message()), HasSubstr("boot files are still being received"));
  ASSERT_TRUE(store->AddBootFileData("kernel", 6, "kkkk").ok());
  ASSERT_TRUE(store->AddBootFileData("ramdisk", 0, "rrrr").ok());
  ASSERT_TRUE(store->CommitBootFiles().ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store->CommitBootFiles())) << "nothing to commit";
  ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 1)).ok());
  // Seeded: the boot files of the seed's stream stay as they are.
  st = store->BeginBootFiles({{"kernel", 3}});
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_EQ(Slurp(Dir() + "/boot-kernel"), std::string(6, 'k') + "kkkk");
}

// A re-seed over the replica (Unseed) brings the new stream's set: a name it lacks goes.
TEST_F(ReplicaBootFilesTest, TheNextSeedReplacesTheSet) {
  auto store = Create();
  ASSERT_TRUE(GiveBootFiles(*store, {{"kernel", kernel_}, {"ramdisk", ramdisk_}}).ok());
  ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 1)).ok());
  ASSERT_TRUE(store->Unseed().ok());
  ASSERT_TRUE(GiveBootFiles(*store, {{"kernel", "new kernel"}}).ok());
  auto files = store->BootFiles();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, UnorderedElementsAre(Pair("kernel", Dir() + "/boot-kernel")));
  EXPECT_EQ(Slurp(Dir() + "/boot-kernel"), "new kernel");
  EXPECT_FALSE(fs::exists(Dir() + "/boot-ramdisk"));
  ASSERT_TRUE(GiveBootFiles(*store, {}).ok());  // a stream without boot files
  files = store->BootFiles();
  ASSERT_TRUE(files.ok());
  EXPECT_TRUE(files->empty());
  EXPECT_FALSE(fs::exists(Dir() + "/boot-kernel"));
}

// What a restore would copy into the instance directory is checked against boot.rec first.
TEST_F(ReplicaBootFilesTest, DamagedBootFilesAreDataLossNamingTheFile) {
  struct Case {
    std::string what;
    std::function<void()> damage;
    std::string error;
  };
  const std::string k = Dir() + "/boot-kernel";
  const std::vector<Case> cases = {
      {"flipped byte",
       [&] {
         std::string b = Slurp(k);
         b[100] ^= 1;
         WriteBytes(k, b);
       },
       "boot-kernel: checksum does not match boot.rec"},
      {"truncated", [&] { fs::resize_file(k, 10); }, "boot-kernel: 10 bytes, boot.rec says"},
      {"removed", [&] { fs::remove(k); }, "boot-kernel"},
      {"symbolic link to the same bytes",
       [&] {
         WriteBytes(Dir() + "/../elsewhere", kernel_);
         fs::remove(k);
         fs::create_symlink(Dir() + "/../elsewhere", k);
       },
       "boot-kernel"},
      {"directory",
       [&] {
         fs::remove(k);
         fs::create_directory(k);
       },
       "boot-kernel"},
      {"boot.rec flipped",
       [&] {
         std::string b = Slurp(Dir() + "/boot.rec");
         b[10] ^= 1;
         WriteBytes(Dir() + "/boot.rec", b);
       },
       "boot.rec: checksum mismatch"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    fs::remove_all(Dir());
    fs::remove(Dir() + "/../elsewhere");
    auto store = Create();
    ASSERT_TRUE(store);
    ASSERT_TRUE(GiveBootFiles(*store, {{"kernel", kernel_}, {"ramdisk", ramdisk_}}).ok());
    ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 1)).ok());
    c.damage();
    auto files = store->BootFiles();
    EXPECT_TRUE(absl::IsDataLoss(files.status())) << files.status();
    EXPECT_THAT(std::string(files.status().message()), HasSubstr(c.error));
    fs::remove_all(Dir());
  }
}

TEST_F(ReplicaBootFilesTest, AFailedWriteDropsTheReplacementAndBlocksTheSeedUntilTheNext) {
  for (CommitStep step :
       {CommitStep::kBootFileWrite, CommitStep::kBootFileSync, CommitStep::kBootFileRename,
        CommitStep::kBootRecordWrite, CommitStep::kBootRecordRename}) {
    SCOPED_TRACE(CommitStepName(step));
    fs::remove_all(Dir());
    FailBootStep hook(step);
    ReplicaOptions opt;
    opt.fault_hook = &hook;
    auto store = Create(opt);
    ASSERT_TRUE(store);
    Status st = GiveBootFiles(*store, {{"kernel", kernel_}});
    EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
    for (const auto& e : fs::directory_iterator(Dir())) {
      EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
    }
    st = store->BeginEpoch(1);
    EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("boot files are incomplete"));
  }
  // The next replacement that completes lets the seed begin.
  fs::remove_all(Dir());
  auto store = Create();
  ASSERT_TRUE(store->BeginBootFiles({{"kernel", 4}}).ok());
  ASSERT_TRUE(store->AddBootFileData("kernel", 0, "kk").ok());
  ASSERT_TRUE(GiveBootFiles(*store, {{"kernel", kernel_}}).ok()) << "a new one drops the old";
  EXPECT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 1)).ok());
}

TEST_F(ReplicaBootFilesTest, HalfReceivedBootFilesAreRemovedWhenTheReplicaIsOpened) {
  auto store = Create();
  ASSERT_TRUE(store->BeginBootFiles({{"kernel", 10}, {"ramdisk", 10}}).ok());
  ASSERT_TRUE(store->AddBootFileData("kernel", 0, "12345").ok());
  ASSERT_TRUE(fs::exists(Dir() + "/boot-kernel.tmp"));
  store.reset();  // the agent died
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_FALSE(fs::exists(Dir() + "/boot-kernel.tmp"));
  EXPECT_FALSE(fs::exists(Dir() + "/boot-ramdisk.tmp"));
  EXPECT_EQ((*reopened)->committed_epoch(), 0u);
  EXPECT_TRUE(ReplicaStore::Destroy(Dir()).ok()) << "boot files are replica files";
}

}  // namespace
}  // namespace novadt::replica
