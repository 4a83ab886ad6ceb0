// The replication stream's items, checked by the receiver, landing in a real replica store.
#include "agent/replica/store_sink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <mutex>

#include "agent/core/epoch_sender.h"
#include "agent/core/replication_receiver.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_util.h"

namespace novadt::replica {
namespace {

using novadt::testing::ReadFile;
using novadt::testing::TestOpen;
using ::testing::HasSubstr;

class StoreSinkTest : public ::testing::Test {
 protected:
  core::ReplicaSinkFactory Factory() {
    if (!registry_) registry_ = std::make_unique<ReplicaRegistry>(dir_.path(), ReplicaOptions{}, Events());
    return registry_->Factory();
  }
  ReplicaEvents Events() {
    ReplicaEvents ev;
    ev.committed = [this](const std::string&, uint64_t e) {
      std::lock_guard<std::mutex> lock(mu_);
      committed_.push_back(e);
    };
    ev.closed = [this](const std::string&, const Status& why) {
      std::lock_guard<std::mutex> lock(mu_);
      closed_.push_back(why);
    };
    ev.heard = [this](const std::string&) { ++heard_; };
    return ev;
  }
  std::string ReplicaFile(const std::string& name) {
    return ReadFile(ReplicaDir(dir_.path(), TestOpen().instance_uuid) + "/" + name);
  }

  novadt::testing::ScratchDir dir_;
  std::mutex mu_;
  std::vector<uint64_t> committed_;
  std::vector<Status> closed_;
  std::atomic<int> heard_{0};
  std::unique_ptr<ReplicaRegistry> registry_;
};

TEST_F(StoreSinkTest, EpochsFromTheStreamLandInTheReplicaFiles) {
  auto factory = Factory();
  auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(r.ok()) << r.status();
  for (uint64_t e = 1; e <= 2; ++e) {
    for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*r)->Handle(item).ok());
  }
  // Epoch 3: a zeroes write over epoch 1's data, sent through the sender.
  core::StagedEpoch third;
  third.epoch = 3;
  third.disk_writes.push_back({"vda", 4096, "", true, 512});
  third.device_state = "device-state-of-epoch-3";
  class Loop final : public core::EpochStream {
   public:
    explicit Loop(core::ReplicationReceiver& r) : r_(r) {}
    Status Send(const core::StreamItem& i) override { return r_.Handle(i).status(); }
    Status Heartbeat() override { return absl::OkStatus(); }
    Status Finish(std::chrono::milliseconds) override { return absl::OkStatus(); }
    void Cancel() override {}
    core::ReplicationReceiver& r_;
  } loop(**r);
  ASSERT_TRUE(core::SendEpoch(third, loop, core::kGuestPageSize).ok());
  (*r)->Close(absl::OkStatus());

  EXPECT_EQ(committed_, (std::vector<uint64_t>{1, 2, 3}));
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_TRUE(closed_[0].ok());
  const std::string ram = ReplicaFile("ram.img");
  ASSERT_EQ(ram.size(), TestOpen().ram_size_bytes);
  EXPECT_EQ(ram.substr(0, 4096), std::string(4096, 'c'));  // page 0 from epoch 2
  EXPECT_EQ(ram.substr(7 * 4096, 4096), std::string(4096, 'c'));
  EXPECT_EQ(ram.substr(4096, 4096), std::string(4096, '\0'));  // never written
  const std::string disk = ReplicaFile("disk-vda.raw");
  EXPECT_EQ(disk.substr(4096, 512), std::string(512, '\0'));  // epoch 1's write, zeroed by 3
  EXPECT_EQ(disk.substr(8192, 512), std::string(512, 'd'));   // epoch 2's write
}

TEST_F(StoreSinkTest, StreamEndingMidEpochKeepsTheCommittedReplica) {
  auto factory = Factory();
  auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(r.ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  auto second = novadt::testing::SmallEpoch(2);
  for (size_t i = 0; i + 1 < second.size(); ++i) ASSERT_TRUE((*r)->Handle(second[i]).ok());
  (*r)->Close(absl::OkStatus());
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_TRUE(absl::IsDataLoss(closed_[0])) << closed_[0];
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'b'));  // still epoch 1
  auto store = ReplicaStore::Open(ReplicaDir(dir_.path(), TestOpen().instance_uuid));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 1u);
}

TEST_F(StoreSinkTest, OneStreamPerServerAtATimeAndANewStreamReseeds) {
  auto factory = Factory();
  auto first = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(first.ok());
  // Another primary is refused while the stream is open.
  core::StreamOpen other = TestOpen();
  other.primary_host = "intruder";
  auto second = core::ReplicationReceiver::Start(other, factory);
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("already being replicated"));

  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*first)->Handle(item).ok());
  (*first)->Close(absl::OkStatus());
  first->reset();
  // After the first stream is gone a new one is accepted, and starts a fresh replica at epoch 1.
  auto third = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, '\0'));
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*third)->Handle(item).ok());
}

// The same primary opens a new stream while its old one still looks open here (its end lost on
// a lossy link): the new stream replaces it; the old one refuses its next item and its end
// reports nothing (the replica is the new stream's).
TEST_F(StoreSinkTest, ANewStreamFromTheSamePrimarySupersedesTheOpenOne) {
  auto factory = Factory();
  auto old_stream = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(old_stream.ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) {
    ASSERT_TRUE((*old_stream)->Handle(item).ok());
  }
  auto fresh = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, '\0')) << "a fresh replica";
  auto refused = (*old_stream)->Handle(novadt::testing::SmallEpoch(2).front());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("superseded"));
  const size_t closes = closed_.size();
  (*old_stream)->Close(absl::CancelledError("gone"));
  old_stream->reset();
  EXPECT_EQ(closed_.size(), closes) << "the superseded stream's end is not the replica's";
  // The new stream owns the replica and commits.
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*fresh)->Handle(item).ok());
  auto store = ReplicaStore::Open(ReplicaDir(dir_.path(), TestOpen().instance_uuid));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 1u);
}

TEST_F(StoreSinkTest, FenceEndsReplicationForGoodAndHandsOverTheCommittedReplica) {
  auto factory = Factory();
  auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(r.ok());
  for (uint64_t e = 1; e <= 2; ++e) {
    for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*r)->Handle(item).ok());
  }
  auto third = novadt::testing::SmallEpoch(3);
  ASSERT_TRUE((*r)->Handle(third[0]).ok());  // epoch 3 open when the backup takes over
  (*r)->Heard();

  auto fenced = registry_->Fence(TestOpen().instance_uuid);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_EQ(fenced->committed_epoch, 2u);
  EXPECT_EQ(fenced->ram_path, ReplicaDir(dir_.path(), TestOpen().instance_uuid) + "/ram.img");
  ASSERT_EQ(fenced->disk_paths.count("vda"), 1u);
  // The open stream cannot touch the replica any more, and no new stream can start.
  // Both say the backup runs the server: the primary must stand down (core::IsTakenOverRefusal).
  auto refused = (*r)->Handle(third[1]);
  EXPECT_TRUE(core::IsTakenOverRefusal(refused.status())) << refused.status();
  (*r)->Close(refused.status());
  r->reset();
  EXPECT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(TestOpen(), factory).status()));
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));  // still epoch 2
  EXPECT_GT(heard_.load(), 0);
}

// A copy that ran here on a replica it took over switches away (planned switchover): the host it
// moves to may then protect it towards here again, and the old files go once no stream uses them.
TEST_F(StoreSinkTest, RelinquishedServerMayBeStreamedAgainAndItsIdleReplicaFreed) {
  auto factory = Factory();
  const std::string uuid = TestOpen().instance_uuid;
  {
    auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
    ASSERT_TRUE(r.ok());
    for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
    ASSERT_TRUE(registry_->Fence(uuid).ok());
    (*r)->Close(absl::CancelledError("taken over"));
  }
  EXPECT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(TestOpen(), factory).status()));
  registry_->Relinquish(uuid);
  ASSERT_TRUE(registry_->DiscardIfIdle(uuid).ok());
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  core::StreamOpen from_new_primary = TestOpen();
  from_new_primary.primary_host = "rig-b";
  auto r = core::ReplicationReceiver::Start(from_new_primary, factory);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  // With that stream open, DiscardIfIdle leaves its replica alone.
  ASSERT_TRUE(registry_->DiscardIfIdle(uuid).ok());
  EXPECT_TRUE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  ASSERT_TRUE((*r)->Handle(novadt::testing::SmallEpoch(2).front()).ok());
}

TEST_F(StoreSinkTest, FenceOfAnUnknownServerIsNotFound) {
  Factory();
  EXPECT_TRUE(absl::IsNotFound(registry_->Fence("00000000-0000-0000-0000-00000000dead").status()));
}

TEST_F(StoreSinkTest, DiscardEndsTheStreamRemovesTheReplicaAndAllowsAFreshSeed) {
  auto factory = Factory();
  const std::string uuid = TestOpen().instance_uuid;
  auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(r.ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  ASSERT_TRUE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));

  ASSERT_TRUE(registry_->Discard(uuid).ok());
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  auto refused = (*r)->Handle(novadt::testing::SmallEpoch(2)[0]);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_FALSE(core::IsTakenOverRefusal(refused.status())) << "discarded is not taken over";
  (*r)->Close(refused.status());
  r->reset();
  // Unlike a fenced server, a discarded one may be protected again later: a new replica.
  auto again = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  // Nothing to free is fine.
  EXPECT_TRUE(registry_->Discard("00000000-0000-0000-0000-00000000dead").ok());
}

}  // namespace
}  // namespace novadt::replica
