// Boot files on both sides (engine/boot_files.h): read from Nova's instance directory on the
// primary and sent in chunks; written into the instance directory the backup makes at restore.
// Both run as root where Nova's user (and whoever it lets) can plant links, FIFOs and
// directories: each case plants one and checks nothing is followed, read or overwritten.
#include "agent/engine/boot_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/test_util.h"

namespace novadt::engine {
namespace {

namespace fs = std::filesystem;
using novadt::testing::PseudoRandomBytes;
using novadt::testing::ReadFile;
using novadt::testing::ScratchDir;
using ::testing::HasSubstr;

constexpr char kUuid[] = "4a1b2c3d-5e6f-4a0b-8c1d-2e3f4a5b6c7d";

// Records what it is sent.
class RecordingStream final : public core::EpochStream {
 public:
  Status Send(const core::StreamItem& item) override {
    chunks.push_back(std::get<core::BootFileChunk>(item));
    return fail;
  }
  Status Heartbeat() override { return absl::OkStatus(); }
  Status Finish(std::chrono::milliseconds) override { return absl::OkStatus(); }
  void Cancel() override {}
  std::vector<core::BootFileChunk> chunks;
  Status fail;
};

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

class BootFileSourceTest : public ::testing::Test {
 protected:
  BootFileSourceTest() {
    fs::create_directories(instance_dir_);
    Write(instance_dir_ + "/kernel", kernel_);
    Write(instance_dir_ + "/ramdisk", ramdisk_);
  }
  StatusOr<BootFileSource> Open(std::vector<std::string> names, uint64_t max = 64 << 20) {
    return BootFileSource::Open(instances_, kUuid, names, max);
  }

  ScratchDir dir_{"nova-dt-boot-source"};
  const std::string instances_ = dir_.path() + "/instances";
  const std::string instance_dir_ = instances_ + "/" + kUuid;
  const std::string kernel_ = PseudoRandomBytes(7, (5 << 20) / 2 + 123);  // 2.5 MiB: 3 chunks
  const std::string ramdisk_ = PseudoRandomBytes(8, 4000);
};

TEST_F(BootFileSourceTest, SendsEachFileWholeInOrderInBoundedChunks) {
  auto source = Open({"kernel", "ramdisk"});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->declared(), (std::vector<core::BootFile>{{"kernel", kernel_.size()},
                                                             {"ramdisk", ramdisk_.size()}}));
  RecordingStream stream;
  ASSERT_TRUE(source->Send(stream).ok());
  std::map<std::string, std::string> got;
  std::vector<std::string> order;
  for (const auto& c : stream.chunks) {
    EXPECT_LE(c.data.size(), core::kBootFileChunkBytes);
    EXPECT_FALSE(c.data.empty());
    EXPECT_EQ(c.offset, got[c.name].size()) << "in order, without gaps";
    got[c.name] += c.data;
    if (order.empty() || order.back() != c.name) order.push_back(c.name);
  }
  EXPECT_EQ(stream.chunks.size(), 4u);
  EXPECT_EQ(order, (std::vector<std::string>{"kernel", "ramdisk"})) << "one file after the other";
  EXPECT_TRUE(got["kernel"] == kernel_);
  EXPECT_TRUE(got["ramdisk"] == ramdisk_);
}

TEST_F(BootFileSourceTest, NoNamesOpensNothing) {
  fs::remove_all(instances_);
  auto source = BootFileSource::Open(instances_, "not even a uuid", {}, 1);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_TRUE(source->declared().empty());
  RecordingStream stream;
  EXPECT_TRUE(source->Send(stream).ok());
  EXPECT_TRUE(stream.chunks.empty());
}

TEST_F(BootFileSourceTest, WhatTheFileSystemHoldsIsCheckedBeforeAnythingIsSent) {
  const std::string secret = dir_.path() + "/secret";
  Write(secret, "root's secret");
  struct Case {
    std::string what;
    std::function<void()> plant;
    std::vector<std::string> names;
    absl::StatusCode code;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"kernel a symbolic link",
       [&] {
         fs::remove(instance_dir_ + "/kernel");
         fs::create_symlink(secret, instance_dir_ + "/kernel");
       },
       {"kernel"},
       absl::StatusCode::kFailedPrecondition,
       "/kernel is a symbolic link: refused (never followed)"},
      {"instance directory a symbolic link",
       [&] {
         fs::rename(instance_dir_, instances_ + "/elsewhere");
         fs::create_directory_symlink(instances_ + "/elsewhere", instance_dir_);
       },
       {"kernel"},
       absl::StatusCode::kFailedPrecondition,
       std::string(kUuid) + " is a symbolic link: refused"},
      {"ramdisk a FIFO",
       [&] {
         fs::remove(instance_dir_ + "/ramdisk");
         ASSERT_EQ(::mkfifo((instance_dir_ + "/ramdisk").c_str(), 0644), 0);
       },
       {"kernel", "ramdisk"},
       absl::StatusCode::kFailedPrecondition,
       "/ramdisk is a FIFO: refused"},
      {"kernel a directory",
       [&] {
         fs::remove(instance_dir_ + "/kernel");
         fs::create_directory(instance_dir_ + "/kernel");
       },
       {"kernel"},
       absl::StatusCode::kFailedPrecondition,
       "/kernel is a directory: refused"},
      {"empty",
       [&] { Write(instance_dir_ + "/kernel", ""); },
       {"kernel"},
       absl::StatusCode::kFailedPrecondition,
       "/kernel is empty"},
      {"missing",
       [&] { fs::remove(instance_dir_ + "/ramdisk"); },
       {"ramdisk"},
       absl::StatusCode::kNotFound,
       "/ramdisk"},
      {"other name",
       [] {},
       {"vmlinuz"},
       absl::StatusCode::kInvalidArgument,
       "'vmlinuz' is neither kernel nor ramdisk"},
      {"twice", [] {}, {"kernel", "kernel"}, absl::StatusCode::kInvalidArgument, "twice"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    fs::remove_all(instances_);
    fs::create_directories(instance_dir_);
    Write(instance_dir_ + "/kernel", kernel_);
    Write(instance_dir_ + "/ramdisk", ramdisk_);
    c.plant();
    auto source = Open(c.names);
    EXPECT_EQ(source.status().code(), c.code) << source.status();
    EXPECT_THAT(std::string(source.status().message()), HasSubstr(c.error));
  }
}

TEST_F(BootFileSourceTest, AFileLargerThanTheLimitIsNotSent) {
  auto source = Open({"ramdisk", "kernel"}, ramdisk_.size());
  EXPECT_TRUE(absl::IsResourceExhausted(source.status())) << source.status();
  EXPECT_THAT(std::string(source.status().message()),
              HasSubstr("/kernel of " + std::to_string(kernel_.size()) +
                        " bytes is larger than [replication] max_boot_file_bytes = " +
                        std::to_string(ramdisk_.size())));
  EXPECT_TRUE(Open({"ramdisk"}, ramdisk_.size()).ok()) << "at the limit is fine";
}

// What is sent is what was opened: a file cut short meanwhile fails the send, never sends less
// than it declared.
TEST_F(BootFileSourceTest, AFileCutShortAfterItWasOpenedFailsTheSend) {
  auto source = Open({"kernel"});
  ASSERT_TRUE(source.ok());
  fs::resize_file(instance_dir_ + "/kernel", 1000);
  RecordingStream stream;
  Status st = source->Send(stream);
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("became shorter while it was read"));
  EXPECT_TRUE(stream.chunks.empty());
}

TEST_F(BootFileSourceTest, TheStreamsErrorEndsTheSend) {
  auto source = Open({"kernel"});
  ASSERT_TRUE(source.ok());
  RecordingStream stream;
  stream.fail = absl::UnavailableError("replication stream broken");
  EXPECT_TRUE(absl::IsUnavailable(source->Send(stream)));
  EXPECT_EQ(stream.chunks.size(), 1u);
}

// ---------------------------------------------------------------------------------------------

class PrepareInstanceDirTest : public ::testing::Test {
 protected:
  PrepareInstanceDirTest() {
    fs::create_directories(instances_);
    fs::create_directories(replica_);
    Write(replica_ + "/boot-kernel", kernel_);
    Write(replica_ + "/boot-ramdisk", ramdisk_);
  }
  StatusOr<PreparedInstanceDir> Prepare(std::map<std::string, std::string> files) {
    return PrepareInstanceDir({instances_}, kUuid, files);
  }
  std::map<std::string, std::string> Both() const {
    return {{"kernel", replica_ + "/boot-kernel"}, {"ramdisk", replica_ + "/boot-ramdisk"}};
  }

  ScratchDir dir_{"nova-dt-instance-dir"};
  const std::string instances_ = dir_.path() + "/instances";
  const std::string instance_dir_ = instances_ + "/" + kUuid;
  const std::string replica_ = dir_.path() + "/replica";
  const std::string kernel_ = PseudoRandomBytes(9, 3 << 20);
  const std::string ramdisk_ = PseudoRandomBytes(10, 777);
};

// As nova-compute, running as the owner of instances_path, would have made it: the directory
// 0755 and the boot files 0644, that user's. Nothing else is left there.
TEST_F(PrepareInstanceDirTest, MakesTheDirectoryAsNovaWouldWithTheBootFilesInIt) {
  ASSERT_EQ(::geteuid(), 0u) << "chown to Nova's user: run as root";
  ASSERT_EQ(::chown(instances_.c_str(), 64060, 64061), 0);  // e.g. Debian's nova:nova
  auto prepared = Prepare(Both());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_TRUE(prepared->created);
  EXPECT_EQ(prepared->path, instance_dir_);
  EXPECT_EQ(prepared->files, (std::vector<std::string>{"kernel", "ramdisk"}));
  struct stat d = Lstat(instance_dir_);
  EXPECT_TRUE(S_ISDIR(d.st_mode));
  EXPECT_EQ(d.st_mode & 07777, 0755u);
  EXPECT_EQ(d.st_uid, 64060u);
  EXPECT_EQ(d.st_gid, 64061u);
  for (const char* name : {"kernel", "ramdisk"}) {
    struct stat f = Lstat(instance_dir_ + "/" + name);
    EXPECT_TRUE(S_ISREG(f.st_mode)) << name;
    EXPECT_EQ(f.st_mode & 07777, 0644u) << name;
    EXPECT_EQ(f.st_uid, 64060u) << name;
    EXPECT_EQ(f.st_gid, 64061u) << name;
  }
  EXPECT_TRUE(ReadFile(instance_dir_ + "/kernel") == kernel_);
  EXPECT_EQ(ReadFile(instance_dir_ + "/ramdisk"), ramdisk_);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(instance_dir_)) {
    names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"kernel", "ramdisk"}));
  EXPECT_TRUE(SyncInstanceDir(*prepared).ok());

  // Undone after a failed restore: what libvirt made goes too, and the directory.
  Write(instance_dir_ + "/console.log", "booting");
  ASSERT_TRUE(DiscardInstanceDir(*prepared).ok());
  EXPECT_FALSE(fs::exists(instance_dir_));
  EXPECT_TRUE(fs::is_directory(instances_));
}

TEST_F(PrepareInstanceDirTest, WithoutInstancesPathNothingIsMade) {
  fs::remove_all(instances_);
  auto prepared = Prepare(Both());
  EXPECT_TRUE(absl::IsFailedPrecondition(prepared.status())) << prepared.status();
  EXPECT_THAT(std::string(prepared.status().message()),
              HasSubstr("Nova's instances_path " + instances_ +
                        " ([libvirt] instances_path) does not exist on this host"));
  EXPECT_FALSE(fs::exists(instances_));
}

// An earlier attempt's (or Nova's own) regular files are replaced; a directory found there is
// kept as it is (not undone after a failure).
TEST_F(PrepareInstanceDirTest, AnExistingDirectoryIsUsedAndItsRegularBootFilesReplaced) {
  fs::create_directory(instance_dir_);
  fs::permissions(instance_dir_, fs::perms(0755));
  Write(instance_dir_ + "/kernel", "an older kernel");
  Write(instance_dir_ + "/disk.info", "{}");
  auto prepared = Prepare(Both());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_FALSE(prepared->created);
  EXPECT_TRUE(ReadFile(instance_dir_ + "/kernel") == kernel_);
  ASSERT_TRUE(DiscardInstanceDir(*prepared).ok());
  EXPECT_TRUE(fs::exists(instance_dir_ + "/disk.info"));
  EXPECT_TRUE(fs::exists(instance_dir_ + "/kernel"));
}

// Whatever someone planted is refused, never followed, never written through.
TEST_F(PrepareInstanceDirTest, WhatSomeonePlantedIsRefusedNeverFollowed) {
  ASSERT_EQ(::geteuid(), 0u) << "chown to another user: run as root";
  const std::string victim = dir_.path() + "/victim";
  const std::string victim_dir = dir_.path() + "/victim-dir";
  struct Case {
    std::string what;
    std::function<void()> plant;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"kernel a symbolic link",
       [&] {
         fs::create_directory(instance_dir_);
         fs::create_symlink(victim, instance_dir_ + "/kernel");
       },
       "/kernel exists and is a symbolic link: refused"},
      {"ramdisk a directory", [&] { fs::create_directories(instance_dir_ + "/ramdisk"); },
       "/ramdisk exists and is a directory: refused"},
      {"kernel a FIFO",
       [&] {
         fs::create_directory(instance_dir_);
         ASSERT_EQ(::mkfifo((instance_dir_ + "/kernel").c_str(), 0644), 0);
       },
       "/kernel exists and is a FIFO: refused"},
      {"the instance directory a symbolic link",
       [&] { fs::create_directory_symlink(victim_dir, instance_dir_); },
       " is a symbolic link: refused (never followed)"},
      {"the instance directory a file", [&] { Write(instance_dir_, "x"); }, " is not a directory"},
      {"the instance directory someone else's",
       [&] {
         fs::create_directory(instance_dir_);
         ASSERT_EQ(::chown(instance_dir_.c_str(), 12345, 12345), 0);
       },
       "belongs to uid 12345, neither root nor the owner of"},
      {"the instance directory writable by others",
       [&] {
         fs::create_directory(instance_dir_);
         fs::permissions(instance_dir_, fs::perms(0777));
       },
       "is writable by group or others: refused"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    fs::remove_all(instance_dir_);
    fs::remove_all(victim_dir);
    fs::create_directory(victim_dir);
    Write(victim, "root's file");
    c.plant();
    auto prepared = Prepare(Both());
    EXPECT_TRUE(absl::IsFailedPrecondition(prepared.status())) << prepared.status();
    EXPECT_THAT(std::string(prepared.status().message()), HasSubstr(c.error));
    EXPECT_EQ(ReadFile(victim), "root's file");
    EXPECT_TRUE(fs::is_empty(victim_dir)) << "written through a planted link";
    for (const auto& e : fs::directory_iterator(instances_)) {
      if (!fs::is_directory(fs::symlink_status(e.path()))) continue;
      for (const auto& f : fs::directory_iterator(e.path())) {
        EXPECT_FALSE(f.path().filename().string().ends_with(".tmp")) << f.path();
      }
    }
  }
}

// A leftover temporary file by the name the writer uses (a crash, or planted as a link to a
// victim) is removed, never opened.
TEST_F(PrepareInstanceDirTest, ALeftoverTemporaryFileIsRemovedNeverWrittenThrough) {
  const std::string victim = dir_.path() + "/victim";
  Write(victim, "root's file");
  fs::create_directory(instance_dir_);
  fs::permissions(instance_dir_, fs::perms(0755));
  fs::create_symlink(victim, instance_dir_ + "/.kernel.nova-dt.tmp");
  auto prepared = Prepare(Both());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(ReadFile(victim), "root's file");
  EXPECT_FALSE(fs::exists(fs::symlink_status(instance_dir_ + "/.kernel.nova-dt.tmp")));
  EXPECT_TRUE(ReadFile(instance_dir_ + "/kernel") == kernel_);
}

// The replica's copy is the agent's own file; a link there is not followed either. What was made
// is undone.
TEST_F(PrepareInstanceDirTest, ASourceThatIsALinkIsRefusedAndTheDirectoryUndone) {
  fs::remove(replica_ + "/boot-ramdisk");
  fs::create_symlink(replica_ + "/boot-kernel", replica_ + "/boot-ramdisk");
  auto prepared = Prepare(Both());
  EXPECT_FALSE(prepared.ok());
  EXPECT_FALSE(fs::exists(instance_dir_)) << "the directory it made stays behind";
}

// Made durable after the guest runs, by name again: never through a link planted meanwhile.
TEST_F(PrepareInstanceDirTest, SyncingLaterFollowsNoLinkPlantedMeanwhile) {
  auto prepared = Prepare(Both());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const std::string fifo = dir_.path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  fs::remove(instance_dir_ + "/ramdisk");
  fs::create_symlink(fifo, instance_dir_ + "/ramdisk");  // an open through it would block
  Status st = SyncInstanceDir(*prepared);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("/ramdisk"));
}

TEST_F(PrepareInstanceDirTest, OnlyCanonicalUuidsAndNovasNames) {
  EXPECT_TRUE(absl::IsInvalidArgument(PrepareInstanceDir({instances_}, "../x", {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      PrepareInstanceDir({instances_}, kUuid, {{"../kernel", replica_ + "/boot-kernel"}})
          .status()));
  EXPECT_TRUE(fs::is_empty(instances_));
}

}  // namespace
}  // namespace novadt::engine
