#include "agent/engine/ram_stager.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "tests/support/guest_ram.h"
#include "tests/support/test_util.h"

namespace novadt::engine {
namespace {

constexpr uint64_t kPages = 256;
constexpr size_t kPage = core::kGuestPageSize;

// A guest-RAM file and a writable shared mapping of it, standing in for QEMU.
class RamStagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ram_ = std::make_unique<novadt::testing::GuestRamFile>(dir_.path() + "/pc.ram", kPages * kPage);
    ASSERT_NE(ram_->data(), nullptr);
    path_ = ram_->path();
    guest_ = ram_->data();
    for (uint64_t p = 0; p < kPages; ++p) std::memset(guest_ + p * kPage, int(p & 0xff), kPage);
  }

  novadt::testing::ScratchDir dir_;
  std::string path_;
  std::unique_ptr<novadt::testing::GuestRamFile> ram_;
  char* guest_ = nullptr;
};

TEST_F(RamStagerTest, StagesExactlyTheDirtyPagesAsTheGuestWroteThem) {
  auto stager = RamStager::Open(path_, kPages * kPage);
  ASSERT_TRUE(stager.ok()) << stager.status();
  core::StagedEpoch e;
  RamStager::Prefault(e, 8);
  const void* data_before = e.page_data.data();

  guest_[3 * kPage + 17] = 'X';  // the "guest" writes after the file was mapped
  dirty::DirtyPages dirty(kPages);
  for (uint64_t p : {3, 64, 255}) dirty.Insert(p);
  ASSERT_TRUE((*stager)->Stage(dirty, e).ok());
  EXPECT_EQ(e.page_index, (std::vector<uint64_t>{3, 64, 255}));
  ASSERT_EQ(e.page_data.size(), 3 * kPage);
  EXPECT_EQ(e.page_data[17], 'X');
  EXPECT_EQ(std::memcmp(e.page_data.data() + kPage, guest_ + 64 * kPage, kPage), 0);
  EXPECT_EQ(std::memcmp(e.page_data.data() + 2 * kPage, guest_ + 255 * kPage, kPage), 0);
  EXPECT_EQ(e.page_data.data(), data_before) << "a pre-faulted buffer must be reused";

  // The staged copy is a snapshot: later guest writes do not change it.
  guest_[3 * kPage + 17] = 'Y';
  EXPECT_EQ(e.page_data[17], 'X');
}

TEST_F(RamStagerTest, RangesCoverSeeding) {
  auto stager = RamStager::Open(path_, kPages * kPage);
  ASSERT_TRUE(stager.ok());
  core::StagedEpoch e;
  ASSERT_TRUE((*stager)->StageRange(250, 6, e).ok());
  EXPECT_EQ(e.page_index.front(), 250u);
  EXPECT_EQ(e.page_index.back(), 255u);
  EXPECT_EQ(std::memcmp(e.page_data.data(), guest_ + 250 * kPage, 6 * kPage), 0);
  EXPECT_TRUE(absl::IsInvalidArgument((*stager)->StageRange(250, 7, e)));
}

TEST_F(RamStagerTest, BadGeometryIsAClearError) {
  EXPECT_TRUE(absl::IsInvalidArgument(RamStager::Open(path_, 1000).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(RamStager::Open(path_, (kPages + 1) * kPage).status()));
  EXPECT_TRUE(absl::IsNotFound(RamStager::Open(path_ + ".missing", kPage).status()));
  auto stager = RamStager::Open(path_, kPages * kPage);
  core::StagedEpoch e;
  EXPECT_TRUE(absl::IsInvalidArgument((*stager)->Stage(dirty::DirtyPages(kPages - 1), e)));
}

}  // namespace
}  // namespace novadt::engine
