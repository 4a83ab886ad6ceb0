#include "agent/dirty/hash_scan_tracker.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

namespace novadt::dirty {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kRamSize = 4 << 20;  // 1024 pages
constexpr uint64_t kPages = kRamSize / kPageSize;

// A guest RAM file with distinct content per page, and a second MAP_SHARED mapping of it
// through which the test writes as the guest would (through QEMU's mapping).
class HashScanTrackerTest : public ::testing::TestWithParam<unsigned> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dirty_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/pc.ram";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, kRamSize), 0);
    void* p = ::mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    ASSERT_NE(p, MAP_FAILED);
    guest_ = static_cast<unsigned char*>(p);
    for (uint64_t i = 0; i < kPages; ++i) std::memcpy(guest_ + i * kPageSize, &i, sizeof(i));
  }
  void TearDown() override {
    if (guest_ != nullptr) ::munmap(guest_, kRamSize);
    if (fd_ >= 0) ::close(fd_);
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<HashScanTracker> MakeArmed() {
    auto t = HashScanTracker::Create(path_, kRamSize, GetParam());
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return nullptr;
    EXPECT_TRUE((*t)->Reset().ok());
    return *std::move(t);
  }
  // Writes one byte at `offset` inside `page`.
  void Poke(uint64_t page, uint64_t offset, unsigned char v) {
    guest_[page * kPageSize + offset] = v;
  }

  std::string dir_, path_;
  int fd_ = -1;
  unsigned char* guest_ = nullptr;
};

TEST_P(HashScanTrackerTest, NoWriteNothingDirty) {
  auto t = MakeArmed();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->name(), "hash-scan");
  EXPECT_EQ(t->page_count(), kPages);
  auto d = t->Collect();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->page_count(), kPages);
  EXPECT_TRUE(d->empty());
}

TEST_P(HashScanTrackerTest, ReportsExactlyTheWrittenPagesAcrossCollects) {
  auto t = MakeArmed();
  ASSERT_NE(t, nullptr);
  // Pages at both ends, on word boundaries (63/64) and in the middle of each thread's range.
  Poke(0, 0, 0xAA);
  Poke(63, 4095, 0xAA);
  Poke(64, 100, 0xAA);
  Poke(511, 7, 0xAA);
  Poke(512, 8, 0xAA);
  Poke(kPages - 1, 4095, 0xAA);
  auto d = t->Collect();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ToVector(), ElementsAre(0, 63, 64, 511, 512, kPages - 1));
  EXPECT_EQ(d->count(), 6u);

  // Re-armed: nothing written since, nothing reported.
  d = t->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), IsEmpty());

  // A new epoch: one page written again, one new page.
  Poke(64, 100, 0xBB);
  Poke(700, 2000, 0x01);
  d = t->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), ElementsAre(64, 700));
}

// Documented behaviour: a page written and restored to its old bytes within one epoch is not
// reported. That is fine for replication: the replica already holds those bytes.
TEST_P(HashScanTrackerTest, WriteRestoringTheSameBytesIsNotReported) {
  auto t = MakeArmed();
  ASSERT_NE(t, nullptr);
  const unsigned char old = guest_[300 * kPageSize + 10];
  Poke(300, 10, old ^ 0xFF);
  Poke(300, 10, old);
  Poke(301, 0, 0x55);
  auto d = t->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), ElementsAre(301));
}

TEST_P(HashScanTrackerTest, ResetStartsAFreshBaseline) {
  auto t = MakeArmed();
  ASSERT_NE(t, nullptr);
  Poke(5, 0, 0x42);
  ASSERT_TRUE(t->Reset().ok());
  Poke(6, 0, 0x42);
  auto d = t->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->ToVector(), ElementsAre(6));
}

TEST_P(HashScanTrackerTest, CollectBeforeResetFails) {
  auto t = HashScanTracker::Create(path_, kRamSize, GetParam());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Collect().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(HashScanTrackerTest, FileShorterThanRamIsAClearError) {
  auto t = HashScanTracker::Create(path_, kRamSize * 2, GetParam());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(t.status().message(), HasSubstr(path_));
  EXPECT_THAT(t.status().message(), HasSubstr("less than"));
}

TEST_P(HashScanTrackerTest, BadSizeAndMissingFile) {
  EXPECT_EQ(HashScanTracker::Create(path_, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HashScanTracker::Create(path_, kPageSize + 1, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HashScanTracker::Create(path_, kRamSize, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HashScanTracker::Create(dir_ + "/absent", kRamSize, 1).status().code(),
            absl::StatusCode::kNotFound);
}

// A RAM size that does not fill the last bitmap word, with more threads than words.
TEST_P(HashScanTrackerTest, OddPageCount) {
  const uint64_t pages = 70;
  auto t = HashScanTracker::Create(path_, pages * kPageSize, GetParam());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->Reset().ok());
  Poke(69, 1, 0x99);
  Poke(70, 1, 0x99);  // beyond the tracked RAM
  auto d = (*t)->Collect();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->page_count(), pages);
  EXPECT_THAT(d->ToVector(), ElementsAre(69));
}

INSTANTIATE_TEST_SUITE_P(Threads, HashScanTrackerTest, ::testing::Values(1u, 2u, 3u, 8u));

}  // namespace
}  // namespace novadt::dirty
