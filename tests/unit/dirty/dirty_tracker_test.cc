#include "agent/dirty/dirty_tracker.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/dirty/hash_scan_tracker.h"
#include "agent/dirty/soft_dirty_tracker.h"

namespace novadt::dirty {
namespace {

using ::testing::ElementsAre;
using Method = DirtyTrackerOptions::Method;

// An independent probe written differently from the library's: a private file mapping this
// time, and both reads through one fstream.
bool DirectSoftDirtyProbe() {
  auto* p = static_cast<volatile char*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) return false;
  p[100] = 1;
  bool result = false;
  {
    std::ofstream("/proc/self/clear_refs") << "4";
    std::ifstream pm("/proc/self/pagemap", std::ios::binary);
    auto read_entry = [&] {
      uint64_t e = 0;
      pm.seekg(static_cast<std::streamoff>(reinterpret_cast<uintptr_t>(p) / 4096 * 8));
      pm.read(reinterpret_cast<char*>(&e), 8);
      return e;
    };
    const uint64_t before = read_entry();
    p[200] = 2;
    const uint64_t after = read_entry();
    result = !((before >> 55) & 1) && ((after >> 55) & 1);
  }
  munmap(const_cast<char*>(p), 4096);
  return result;
}

TEST(KernelHasSoftDirtyTest, AgreesWithADirectProbe) {
  const bool has = KernelHasSoftDirty();
  EXPECT_EQ(has, DirectSoftDirtyProbe());
  EXPECT_EQ(has, KernelHasSoftDirty());  // stable across calls
  RecordProperty("kernel_has_soft_dirty", has ? "true" : "false");
}

class MakeDirtyTrackerTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kRamSize = 1 << 20;
  static constexpr pid_t kPid = 777;
  void SetUp() override {
    char tmpl[] = "/tmp/dirty_factory.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ram_ = dir_ + "/guest ram";
    std::ofstream(ram_).close();
    std::filesystem::resize_file(ram_, kRamSize);
    std::filesystem::create_directories(dir_ + "/proc/" + std::to_string(kPid));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Proc(const std::string& file) const {
    return dir_ + "/proc/" + std::to_string(kPid) + "/" + file;
  }
  DirtyTrackerOptions Options(Method m) const {
    DirtyTrackerOptions o;
    o.ram_path = ram_;
    o.ram_size = kRamSize;
    o.method = m;
    o.proc_root = dir_ + "/proc";
    return o;
  }
  std::string dir_, ram_;
};

TEST_F(MakeDirtyTrackerTest, HashScanWithoutPidOrWhenAsked) {
  for (Method m : {Method::kAuto, Method::kHashScan}) {
    auto t = MakeDirtyTracker(Options(m));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->name(), "hash-scan");
    EXPECT_EQ((*t)->page_count(), kRamSize / kPageSize);
    auto* hs = dynamic_cast<HashScanTracker*>(t->get());
    ASSERT_NE(hs, nullptr);
    EXPECT_EQ(hs->threads(), std::max(1u, std::thread::hardware_concurrency()));
  }
  DirtyTrackerOptions o = Options(Method::kHashScan);
  o.scan_threads = 3;
  auto t = MakeDirtyTracker(o);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(dynamic_cast<HashScanTracker*>(t->get())->threads(), 3u);
}

// With a real pid, kAuto follows the kernel: on this sandbox (no CONFIG_MEM_SOFT_DIRTY) that is
// hash-scan, the path exercised end to end.
TEST_F(MakeDirtyTrackerTest, AutoFollowsTheKernel) {
  DirtyTrackerOptions o = Options(Method::kAuto);
  o.proc_root = "/proc";
  o.qemu_pid = getpid();
  int fd = open(ram_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* guest = mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(guest, MAP_FAILED);
  static_cast<char*>(guest)[0] = 1;  // make the mapping's pages present
  auto t = MakeDirtyTracker(o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->name(), KernelHasSoftDirty() ? "soft-dirty" : "hash-scan");
  // End to end on whichever method was chosen, with this process standing in for QEMU.
  ASSERT_TRUE((*t)->Reset().ok());
  static_cast<char*>(guest)[5 * kPageSize + 9] = 42;
  static_cast<char*>(guest)[200 * kPageSize] = 43;
  auto d = (*t)->Collect();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ToVector(), ElementsAre(5, 200));
  munmap(guest, kRamSize);
  close(fd);
}

TEST_F(MakeDirtyTrackerTest, SoftDirtyOnAFakeProc) {
  std::ofstream(Proc("maps"))
      << "55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:01 100 /usr/bin/qemu-system-x86_64\n"
      << "7f1000000000-7f1000200000 rw-s 00000000 00:1a 78 " << ram_ << "\n";
  std::ofstream(Proc("clear_refs")).close();
  std::vector<uint64_t> entries(kRamSize / kPageSize, kPagemapPresent | kPagemapFile);
  entries[3] |= kPagemapSoftDirty;
  {
    std::ofstream pm(Proc("pagemap"), std::ios::binary);
    pm.seekp(static_cast<std::streamoff>(0x7f1000000000 / kPageSize * 8));
    pm.write(reinterpret_cast<const char*>(entries.data()),
             static_cast<std::streamsize>(entries.size() * 8));
  }
  DirtyTrackerOptions o = Options(Method::kSoftDirty);
  o.qemu_pid = kPid;
  auto t = MakeDirtyTracker(o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->name(), "soft-dirty");
  // The mapping is 2 MiB, the RAM 1 MiB: only the RAM is tracked.
  EXPECT_EQ((*t)->page_count(), kRamSize / kPageSize);
  ASSERT_TRUE((*t)->Reset().ok());
  auto d = (*t)->Collect();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ToVector(), ElementsAre(3));
}

TEST_F(MakeDirtyTrackerTest, SoftDirtyErrors) {
  DirtyTrackerOptions o = Options(Method::kSoftDirty);
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kInvalidArgument);  // no pid
  o.qemu_pid = kPid;
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kNotFound);  // no maps
  std::ofstream(Proc("maps")) << "7f1000000000-7f1000200000 rw-s 00000000 00:1a 78 /other\n";
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(Proc("maps")) << "7f1000000000-7f1000080000 rw-s 00000000 00:1a 78 " << ram_
                              << "\n";  // 512 KiB mapped, 1 MiB of RAM
  auto t = MakeDirtyTracker(o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MakeDirtyTrackerTest, BadOptions) {
  DirtyTrackerOptions o = Options(Method::kAuto);
  o.ram_path.clear();
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options(Method::kAuto);
  o.ram_size = 1000;
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options(Method::kHashScan);
  o.ram_size = 2 * kRamSize;
  EXPECT_EQ(MakeDirtyTracker(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace novadt::dirty
