#include "agent/core/replication_receiver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/fake_replica_sink.h"

namespace novadt::core {
namespace {

using novadt::testing::FakeReplicaState;
using novadt::testing::FakeSinkFactory;
using novadt::testing::SmallEpoch;
using novadt::testing::TestOpen;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ReplicationReceiverTest : public ::testing::Test {
 protected:
  std::unique_ptr<ReplicationReceiver> Start(const StreamOpen& open = TestOpen()) {
    auto r = ReplicationReceiver::Start(open, FakeSinkFactory(state_));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  // Feeds items; returns the first error, and the acks in *acks.
  Status Feed(ReplicationReceiver& r, const std::vector<StreamItem>& items,
              std::vector<uint64_t>* acks = nullptr) {
    for (const auto& item : items) {
      auto a = r.Handle(item);
      if (!a.ok()) return a.status();
      if (a->has_value() && acks) acks->push_back(**a);
    }
    return absl::OkStatus();
  }

  std::shared_ptr<FakeReplicaState> state_ = std::make_shared<FakeReplicaState>();
};

TEST_F(ReplicationReceiverTest, CompleteEpochsAreCommittedAndAckedInOrder) {
  auto r = Start();
  std::vector<uint64_t> acks;
  ASSERT_TRUE(Feed(*r, SmallEpoch(1), &acks).ok());
  ASSERT_TRUE(Feed(*r, SmallEpoch(2), &acks).ok());
  EXPECT_THAT(acks, ElementsAre(1, 2));
  EXPECT_EQ(r->last_committed(), 2u);
  r->Close(absl::OkStatus());
  EXPECT_THAT(state_->Calls(),
              ElementsAre("begin 1", "pages 2", "disk vda 4096+512", "devstate 10",
                          "devstate 5 last", "commit 1", "begin 2", "pages 2", "disk vda 8192+512",
                          "devstate 10", "devstate 5 last", "commit 2", "close OK"));
}

TEST_F(ReplicationReceiverTest, OpenIsChecked) {
  StreamOpen o = TestOpen();
  o.protocol = kReplicationProtocolVersion + 1;
  auto r = ReplicationReceiver::Start(o, FakeSinkFactory(state_));
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status()));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("protocol version " + std::to_string(kReplicationProtocolVersion + 1)));

  o = TestOpen();
  o.instance_uuid.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));
  o = TestOpen();
  o.ram_size_bytes = 1000;
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));
  o = TestOpen();
  o.disks.push_back({"", 10});
  EXPECT_TRUE(absl::IsInvalidArgument(ReplicationReceiver::Start(o, FakeSinkFactory(state_)).status()));

  auto refusing = [](const StreamOpen&) -> StatusOr<std::unique_ptr<ReplicaSink>> {
    return absl::ResourceExhaustedError("no space for a replica");
  };
  EXPECT_TRUE(absl::IsResourceExhausted(ReplicationReceiver::Start(TestOpen(), refusing).status()));
}

TEST_F(ReplicationReceiverTest, ItemsOutOfOrderEndTheStream) {
  struct Case {
    std::vector<StreamItem> items;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{RamPages{{1}, std::string(4096, 'x')}}, "RamPages outside an epoch"},
      {{EpochEnd{1}}, "EpochEnd outside an epoch"},
      {{EpochBegin{1}, EpochBegin{2}}, "EpochBegin while epoch 1 is still open"},
      {{EpochBegin{1}, EpochEnd{2}}, "EpochEnd 2 for open epoch 1"},
      {{EpochBegin{1}, EpochEnd{1}}, "without the device state"},
      {{EpochBegin{1}, DeviceStateChunk{"x", true}, DeviceStateChunk{"y", true}},
       "DeviceState after the last chunk"},
      {{EpochBegin{1}, DeviceStateChunk{"x", true}, EpochEnd{1, 3, 0, 1}},
       "epoch 1 incomplete: primary sent 3 pages"},
  };
  for (const auto& c : cases) {
    auto r = Start();
    Status st = Feed(*r, c.items);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error));
  }
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  Status st = Feed(*r, {EpochBegin{3}});
  EXPECT_THAT(std::string(st.message()), HasSubstr("wrong epoch order"));
}

TEST_F(ReplicationReceiverTest, MalformedDataIsRefusedBeforeReachingTheSink) {
  struct Case {
    StreamItem item;
    std::string error;
  };
  const std::vector<Case> cases = {
      {RamPages{{1, 2}, std::string(4096, 'x')}, "2 pages carries 4096 bytes"},
      {RamPages{{64}, std::string(4096, 'x')}, "page 64 beyond guest RAM"},
      {DiskWrite{"vdb", 0, "x"}, "unknown disk 'vdb'"},
      {DiskWrite{"vda", (1 << 20) - 1, "xy"}, "beyond disk 'vda'"},
      {DiskWrite{"vda", ~0ull, "x"}, "beyond disk 'vda'"},
      {DiskWrite{"vda", 0, "x", true, 1}, "zeroes carries data"},
  };
  for (const auto& c : cases) {
    auto r = Start();
    ASSERT_TRUE(Feed(*r, {EpochBegin{1}}).ok());
    Status st = Feed(*r, {c.item});
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.error));
  }
  for (const auto& call : state_->Calls()) EXPECT_EQ(call, "begin 1");
}

TEST_F(ReplicationReceiverTest, SinkRefusalIsTheStreamsError) {
  state_->fail_on = "commit 2";
  state_->fail_with = absl::ResourceExhaustedError("replica disk full");
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  Status st = Feed(*r, SmallEpoch(2));
  EXPECT_TRUE(absl::IsResourceExhausted(st));
  EXPECT_EQ(r->last_committed(), 1u);
  r->Close(st);
  EXPECT_EQ(state_->Calls().back(), "close RESOURCE_EXHAUSTED: replica disk full");
}

TEST_F(ReplicationReceiverTest, StreamEndingMidEpochTellsTheSinkToDropIt) {
  auto r = Start();
  ASSERT_TRUE(Feed(*r, SmallEpoch(1)).ok());
  ASSERT_TRUE(Feed(*r, {EpochBegin{2}, RamPages{{3}, std::string(4096, 'z')}}).ok());
  r->Close(absl::OkStatus());
  r->Close(absl::OkStatus());  // idempotent
  auto calls = state_->Calls();
  EXPECT_THAT(calls.back(), HasSubstr("DATA_LOSS: stream ended inside epoch 2"));
  EXPECT_EQ(std::count_if(calls.begin(), calls.end(),
                          [](const auto& c) { return c.rfind("close", 0) == 0; }),
            1);
}

}  // namespace
}  // namespace novadt::core
