#include "agent/nbd/block_backend.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/support/test_util.h"
#include "tests/unit/nbd/fake_backend.h"

namespace novadt::nbd {
namespace {

using novadt::testing::ReadFile;
using novadt::testing::ScratchDir;

TEST(RawFileBackendTest, ReadsWritesZeroesAndFlushes) {
  ScratchDir dir;
  std::string path = dir.Write("disk.raw", std::string(8192, 'x'));
  auto backend = OpenRawFileBackend(path);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->Size(), 8192u);

  ASSERT_TRUE((*backend)->Write(100, "hello", /*fua=*/false).ok());
  ASSERT_TRUE((*backend)->Write(4096, "world", /*fua=*/true).ok());
  ASSERT_TRUE((*backend)->WriteZeroes(1000, 2000, /*fua=*/false).ok());
  ASSERT_TRUE((*backend)->Flush().ok());

  auto read = (*backend)->Read(98, 9);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "xxhelloxx");

  std::string expected(8192, 'x');
  expected.replace(100, 5, "hello");
  expected.replace(4096, 5, "world");
  expected.replace(1000, 2000, std::string(2000, '\0'));
  EXPECT_EQ(ReadFile(path), expected);
}

TEST(RawFileBackendTest, MissingFileIsNotFound) {
  ScratchDir dir;
  auto backend = OpenRawFileBackend(dir.path() + "/nope.raw");
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kNotFound);
}

struct Seen {
  CapturedWrite::Kind kind;
  uint64_t offset;
  uint32_t length;
  std::string data;
};

TEST(CapturingBackendTest, CapturesAppliedWritesInOrder) {
  auto inner = std::make_unique<MemoryBackend>(1024);
  MemoryBackend* mem = inner.get();
  std::vector<Seen> seen;
  auto backend = NewCapturingBackend(std::move(inner), [&](const CapturedWrite& w) {
    seen.push_back({w.kind, w.offset, w.length, std::string(w.data)});
    return Status();
  });
  ASSERT_TRUE(backend->Write(10, "abc", false).ok());
  ASSERT_TRUE(backend->WriteZeroes(500, 20, false).ok());
  mem->FailWrites(absl::ErrnoToStatus(ENOSPC, "full"));
  EXPECT_EQ(backend->Write(0, "zz", false).code(), absl::StatusCode::kResourceExhausted);
  mem->FailWrites(Status());
  ASSERT_TRUE(backend->Write(1000, "xy", true).ok());
  ASSERT_TRUE(backend->Flush().ok());

  ASSERT_EQ(seen.size(), 3u);  // the failed write was not captured
  EXPECT_EQ(seen[0].kind, CapturedWrite::Kind::kData);
  EXPECT_EQ(seen[0].offset, 10u);
  EXPECT_EQ(seen[0].data, "abc");
  EXPECT_EQ(seen[1].kind, CapturedWrite::Kind::kZeroes);
  EXPECT_EQ(seen[1].offset, 500u);
  EXPECT_EQ(seen[1].length, 20u);
  EXPECT_EQ(seen[2].offset, 1000u);
  EXPECT_EQ(seen[2].data, "xy");
  EXPECT_EQ(*backend->Read(10, 3), "abc");
}

TEST(CapturingBackendTest, CallbackFailureFailsTheWrite) {
  auto backend = NewCapturingBackend(std::make_unique<MemoryBackend>(64), [](const CapturedWrite&) {
    return absl::UnavailableError("stream down");
  });
  EXPECT_EQ(backend->Write(0, "a", false).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace novadt::nbd
