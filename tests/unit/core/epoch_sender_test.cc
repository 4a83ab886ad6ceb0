#include "agent/core/epoch_sender.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/core/replication_receiver.h"
#include "tests/support/fake_replica_sink.h"

namespace novadt::core {
namespace {

using novadt::testing::FakeReplicaState;
using novadt::testing::FakeSinkFactory;
using novadt::testing::TestOpen;
using ::testing::ElementsAre;

// An EpochStream that hands every item straight to a ReplicationReceiver (the backup's checks)
// and can break after a number of items.
class LoopbackStream final : public EpochStream {
 public:
  explicit LoopbackStream(ReplicationReceiver& r) : r_(r) {}
  Status Send(const StreamItem& item) override {
    if (break_after_ >= 0 && sent_ >= break_after_) return absl::UnavailableError("link down");
    ++sent_;
    auto ack = r_.Handle(item);
    if (!ack.ok()) return ack.status();
    if (ack->has_value()) acks.push_back(**ack);
    return absl::OkStatus();
  }
  Status Heartbeat() override { return absl::OkStatus(); }
  Status Finish(std::chrono::milliseconds) override { return absl::OkStatus(); }
  void Cancel() override {}

  std::vector<uint64_t> acks;
  int sent_ = 0;
  int break_after_ = -1;

 private:
  ReplicationReceiver& r_;
};

StagedEpoch Staged(uint64_t epoch, std::vector<uint64_t> pages, size_t device_state_bytes) {
  StagedEpoch s;
  s.epoch = epoch;
  s.page_index = std::move(pages);
  for (size_t i = 0; i < s.page_index.size(); ++i) {
    s.page_data.append(kGuestPageSize, static_cast<char>('A' + i % 26));
  }
  s.device_state.assign(device_state_bytes, 's');
  return s;
}

class EpochSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = ReplicationReceiver::Start(TestOpen(), FakeSinkFactory(state_));
    ASSERT_TRUE(r.ok());
    receiver_ = *std::move(r);
    stream_ = std::make_unique<LoopbackStream>(*receiver_);
  }
  std::shared_ptr<FakeReplicaState> state_ = std::make_shared<FakeReplicaState>();
  std::unique_ptr<ReplicationReceiver> receiver_;
  std::unique_ptr<LoopbackStream> stream_;
};

TEST_F(EpochSenderTest, ChunksPagesDiskWritesAndDeviceStateIntoAValidEpoch) {
  StagedEpoch e = Staged(1, {0, 1, 2, 3, 9}, 3 * kGuestPageSize + 1);
  e.disk_writes.push_back({"vda", 0, std::string(5 * kGuestPageSize, 'd')});
  e.disk_writes.push_back({"vda", 1 << 19, "", true, 8192});
  ASSERT_TRUE(SendEpoch(e, *stream_, 2 * kGuestPageSize).ok());
  EXPECT_THAT(stream_->acks, ElementsAre(1));
  EXPECT_THAT(state_->Calls(),
              ElementsAre("begin 1", "pages 2", "pages 2", "pages 1", "disk vda 0+8192",
                          "disk vda 8192+8192", "disk vda 16384+4096", "disk vda 524288+8192 zeroes",
                          "devstate 8192", "devstate 4097 last", "commit 1"));
}

TEST_F(EpochSenderTest, EmptyEpochStillCarriesAnExplicitlyCompleteDeviceState) {
  ASSERT_TRUE(SendEpoch(Staged(1, {}, 0), *stream_).ok());
  EXPECT_THAT(state_->Calls(), ElementsAre("begin 1", "devstate 0 last", "commit 1"));
}

TEST_F(EpochSenderTest, ConsecutiveEpochsAreAcceptedByTheBackupsChecks) {
  for (uint64_t n = 1; n <= 5; ++n) {
    ASSERT_TRUE(SendEpoch(Staged(n, {n, n + 10}, 100), *stream_).ok());
  }
  EXPECT_THAT(stream_->acks, ElementsAre(1, 2, 3, 4, 5));
}

TEST_F(EpochSenderTest, BrokenStreamStopsTheEpochAndTheBackupKeepsThePreviousOne) {
  ASSERT_TRUE(SendEpoch(Staged(1, {1}, 10), *stream_).ok());
  stream_->break_after_ = stream_->sent_ + 2;
  Status st = SendEpoch(Staged(2, {1, 2, 3}, 10), *stream_, kGuestPageSize);
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_THAT(stream_->acks, ElementsAre(1));
  receiver_->Close(absl::OkStatus());
  EXPECT_THAT(state_->Calls().back(), ::testing::HasSubstr("stream ended inside epoch 2"));
}

TEST_F(EpochSenderTest, AnEpochWrittenInPartsCountsEveryPart) {
  // Seeding: RAM slices while the guest runs, the rest at the first pause.
  EpochWriter w(*stream_, 1, kGuestPageSize);
  ASSERT_TRUE(w.Begin().ok());
  ASSERT_TRUE(w.Pages(Staged(1, {0, 1}, 0)).ok());
  ASSERT_TRUE(w.Pages(Staged(1, {2}, 0)).ok());
  ASSERT_TRUE(w.Pages(Staged(1, {1}, 0)).ok());  // re-dirtied while seeding: sent again
  ASSERT_TRUE(w.DiskWrites({{"vda", 0, std::string(100, 'd')}}).ok());
  ASSERT_TRUE(w.End("devstate").ok());
  EXPECT_THAT(stream_->acks, ElementsAre(1));
}

TEST_F(EpochSenderTest, InconsistentStagingIsRefused) {
  StagedEpoch e = Staged(1, {1, 2}, 10);
  e.page_data.resize(kGuestPageSize);
  EXPECT_TRUE(absl::IsInvalidArgument(SendEpoch(e, *stream_)));
  EXPECT_TRUE(absl::IsInvalidArgument(SendEpoch(Staged(1, {1}, 1), *stream_, 100)));
  EXPECT_TRUE(state_->Calls().empty());
}

}  // namespace
}  // namespace novadt::core
