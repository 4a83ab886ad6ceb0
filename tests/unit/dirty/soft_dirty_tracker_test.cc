#include "agent/dirty/soft_dirty_tracker.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace novadt::dirty {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// --- maps lines -------------------------------------------------------------------------------

TEST(ParseMapsLineTest, FileMapping) {
  auto e = ParseMapsLine(
      "7f2a40000000-7f2a80000000 rw-s 00000000 00:1a 4242                       "
      "/var/lib/libvirt/qemu/ram/3-instance-00000001/pc.ram\n");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->start, 0x7f2a40000000u);
  EXPECT_EQ(e->end, 0x7f2a80000000u);
  EXPECT_EQ(e->perms, "rw-s");
  EXPECT_EQ(e->offset, 0u);
  EXPECT_EQ(e->dev, "00:1a");
  EXPECT_EQ(e->inode, 4242u);
  EXPECT_EQ(e->path, "/var/lib/libvirt/qemu/ram/3-instance-00000001/pc.ram");
  EXPECT_FALSE(e->deleted);
}

TEST(ParseMapsLineTest, AnonymousAndPseudoPaths) {
  auto anon = ParseMapsLine("55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0 ");
  ASSERT_TRUE(anon.ok()) << anon.status();
  EXPECT_EQ(anon->path, "");
  auto stack = ParseMapsLine("7ffc1d5e0000-7ffc1d601000 rw-p 00000000 00:00 0      [stack]");
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->path, "[stack]");
  auto noslash = ParseMapsLine("7ffc1d5e0000-7ffc1d601000 r--p 00001000 fd:01 12");
  ASSERT_TRUE(noslash.ok());
  EXPECT_EQ(noslash->offset, 0x1000u);
  EXPECT_EQ(noslash->path, "");
}

TEST(ParseMapsLineTest, PathWithSpacesAndDeletedFile) {
  auto e = ParseMapsLine(
      "7f0000000000-7f0000100000 rw-s 00000000 00:1a 77   /dev/shm/my guest  ram (deleted)");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->path, "/dev/shm/my guest  ram");
  EXPECT_TRUE(e->deleted);
}

TEST(ParseMapsLineTest, MalformedLinesAreInvalidArgument) {
  for (const char* line :
       {"", "zzzz-0000 rw-p 00000000 00:00 0", "1000 rw-p 00000000 00:00 0",
        "2000-1000 rw-p 00000000 00:00 0", "1000-2000 rw 00000000 00:00 0",
        "1000-2000 rw-p xyz 00:00 0", "1000-2000 rw-p 0 0000 0", "1000-2000 rw-p 0 00:00 abc"}) {
    auto e = ParseMapsLine(line);
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << "line: " << line;
  }
}

constexpr char kRam[] = "/dev/shm/nova dt/pc.ram";

TEST(FindRamMappingTest, FindsTheMappingByPath) {
  const std::string maps =
      "55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:01 100 /usr/bin/qemu-system-x86_64\n"
      "7f0000000000-7f0000001000 rw-s 00000000 00:1a 77 /dev/shm/nova dt/pc.ram.bak\n"
      "7f1000000000-7f1040000000 rw-s 00000000 00:1a 78 /dev/shm/nova dt/pc.ram\n"
      "7ffc1d5e0000-7ffc1d601000 rw-p 00000000 00:00 0 [stack]\n";
  auto r = FindRamMapping(maps, kRam);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->start, 0x7f1000000000u);
  EXPECT_EQ(r->end, 0x7f1040000000u);
  EXPECT_EQ(r->size(), 1u << 30);
}

TEST(FindRamMappingTest, MergesSplitMappingsAndAcceptsDeletedFiles) {
  // QEMU's madvise() split one mmap into three lines; the file was unlinked meanwhile.
  const std::string maps =
      "7f1000000000-7f1000200000 rw-s 00000000 00:1a 78 /dev/shm/nova dt/pc.ram (deleted)\n"
      "7f1000200000-7f1000400000 rw-s 00200000 00:1a 78 /dev/shm/nova dt/pc.ram (deleted)\n"
      "7f1000400000-7f1000800000 rw-s 00400000 00:1a 78 /dev/shm/nova dt/pc.ram (deleted)\n"
      // A second, smaller mapping of the start of the file (e.g. a vhost helper): not chosen.
      "7f2000000000-7f2000001000 r--s 00000000 00:1a 78 /dev/shm/nova dt/pc.ram (deleted)\n"
      // A mapping of a later part of the file only: never chosen.
      "7f3000000000-7f3040000000 rw-s 00800000 00:1a 78 /dev/shm/nova dt/pc.ram (deleted)\n";
  auto r = FindRamMapping(maps, kRam);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->start, 0x7f1000000000u);
  EXPECT_EQ(r->end, 0x7f1000800000u);
}

TEST(FindRamMappingTest, NotFoundAndMalformed) {
  EXPECT_EQ(FindRamMapping("7f1000000000-7f1000200000 rw-s 00000000 00:1a 78 /other\n", kRam)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FindRamMapping("garbage\n", kRam).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- pagemap entries --------------------------------------------------------------------------

constexpr uint64_t kPfn = 0x12345;                    // PFN bits 0-54 (zero without CAP_SYS_ADMIN)
constexpr uint64_t kSwapEntry = (0x777ull << 5) | 3;  // swap offset/type bits 0-54

TEST(PagemapToDirtyPagesTest, SoftDirtyBitDecidesWhateverTheOtherBits) {
  std::vector<uint64_t> entries = {
      kPagemapPresent | kPfn,                                     // 0 present, clean
      kPagemapPresent | kPagemapSoftDirty | kPfn,                 // 1 present, dirty
      0,                                                          // 2 absent
      kPagemapSwapped | kSwapEntry,                               // 3 swapped, clean
      kPagemapSwapped | kPagemapSoftDirty | kSwapEntry,           // 4 swapped, dirty
      kPagemapPresent | kPagemapFile | kPagemapSoftDirty,         // 5 shared file, dirty
      kPagemapPresent | kPagemapFile | kPagemapExclusive | kPfn,  // 6 shared file, clean
      kPagemapSoftDirty,                                          // 7 absent, new VMA
  };
  DirtyPages d = PagemapToDirtyPages(entries);
  EXPECT_EQ(d.page_count(), entries.size());
  EXPECT_THAT(d.ToVector(), ElementsAre(1, 4, 5, 7));
}

TEST(PagemapToDirtyPagesTest, LargeBufferAcrossWords) {
  std::vector<uint64_t> entries(1000, kPagemapPresent | kPagemapFile);
  for (size_t i : {0u, 63u, 64u, 127u, 999u}) entries[i] |= kPagemapSoftDirty;
  DirtyPages d = PagemapToDirtyPages(entries);
  EXPECT_EQ(d.count(), 5u);
  EXPECT_THAT(d.ToVector(), ElementsAre(0, 63, 64, 127, 999));
  EXPECT_TRUE(PagemapToDirtyPages({}).empty());
}

// --- SoftDirtyTracker on a fake proc root -----------------------------------------------------

// A directory laid out like /proc/<pid>/ with a pagemap file the test writes and a
// clear_refs file that collects one "4" per clear.
class FakeProc {
 public:
  static constexpr pid_t kPid = 4321;
  FakeProc() {
    char tmpl[] = "/tmp/dirty_proc.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    root_ = tmpl;
    std::filesystem::create_directories(dir());
    std::ofstream(dir() + "clear_refs").close();
  }
  ~FakeProc() { std::filesystem::remove_all(root_); }
  const std::string& root() const { return root_; }
  std::string dir() const { return root_ + "/" + std::to_string(kPid) + "/"; }
  // Writes pagemap entries for the pages starting at virtual address `start`.
  void WritePagemap(uint64_t start, const std::vector<uint64_t>& entries) {
    std::fstream f(dir() + "pagemap", std::ios::in | std::ios::out | std::ios::binary);
    if (!f) f.open(dir() + "pagemap", std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(start / kPageSize * 8));
    f.write(reinterpret_cast<const char*>(entries.data()),
            static_cast<std::streamsize>(entries.size() * 8));
  }
  void WriteMaps(const std::string& text) { std::ofstream(dir() + "maps") << text; }
  std::string ClearRefs() const {
    std::ifstream f(dir() + "clear_refs");
    return {std::istreambuf_iterator<char>(f), {}};
  }

 private:
  std::string root_;
};

constexpr uint64_t kStart = 0x7f1000000000;

TEST(SoftDirtyTrackerTest, ReadsTheRangeAndClearsAfterEachCollect) {
  FakeProc proc;
  const uint64_t pages = 130;
  // Entries before the range must not be read: make them all dirty.
  proc.WritePagemap(kStart - 4 * kPageSize, std::vector<uint64_t>(4, kPagemapSoftDirty));
  std::vector<uint64_t> entries(pages, kPagemapPresent | kPagemapFile);
  entries[0] |= kPagemapSoftDirty;
  entries[64] |= kPagemapSoftDirty;
  entries[129] |= kPagemapSoftDirty;
  proc.WritePagemap(kStart, entries);
  proc.WritePagemap(kStart + pages * kPageSize, {kPagemapSoftDirty});  // after the range

  auto t =
      SoftDirtyTracker::Create(proc.root(), FakeProc::kPid, {kStart, kStart + pages * kPageSize});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->name(), "soft-dirty");
  EXPECT_EQ((*t)->page_count(), pages);
  EXPECT_EQ((*t)->Collect().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*t)->Reset().ok());
  EXPECT_EQ(proc.ClearRefs(), "4");

  auto d = (*t)->Collect();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ToVector(), ElementsAre(0, 64, 129));
  EXPECT_EQ(proc.ClearRefs(), "44");  // re-armed

  // The "kernel" cleared the bits; a new epoch dirties one page.
  std::vector<uint64_t> next(pages, kPagemapPresent | kPagemapFile);
  next[7] |= kPagemapSoftDirty;
  proc.WritePagemap(kStart, next);
  d = (*t)->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), ElementsAre(7));
  EXPECT_EQ(proc.ClearRefs(), "444");

  proc.WritePagemap(kStart, std::vector<uint64_t>(pages, kPagemapPresent));
  d = (*t)->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), IsEmpty());
}

TEST(SoftDirtyTrackerTest, ShortPagemapDisarms) {
  FakeProc proc;
  proc.WritePagemap(kStart, std::vector<uint64_t>(10, 0));  // range is 20 pages
  auto t = SoftDirtyTracker::Create(proc.root(), FakeProc::kPid, {kStart, kStart + 20 * kPageSize});
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->Reset().ok());
  auto d = (*t)->Collect();
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(d.status().message(), HasSubstr("pagemap"));
  // Disarmed: the caller must Reset() and send everything.
  EXPECT_EQ((*t)->Collect().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SoftDirtyTrackerTest, CreateErrors) {
  FakeProc proc;
  EXPECT_EQ(SoftDirtyTracker::Create(proc.root(), FakeProc::kPid, {kStart, kStart}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SoftDirtyTracker::Create(proc.root(), FakeProc::kPid, {kStart + 1, kStart + 4096})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // No pagemap file yet / no such pid.
  EXPECT_EQ(SoftDirtyTracker::Create(proc.root(), FakeProc::kPid, {kStart, kStart + 4096})
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(SoftDirtyTracker::Create(proc.root(), 99999, {kStart, kStart + 4096}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace novadt::dirty
