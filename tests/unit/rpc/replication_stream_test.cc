// The replication stream over real gRPC on port 0: ordered items, commit acks, heartbeats in
// both directions, refusals and broken streams as the primary sees them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "agent/core/replica_basis.h"
#include "agent/rpc/agent_server.h"
#include "agent/rpc/grpc_replication.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_util.h"

namespace novadt::rpc {
namespace {

using novadt::testing::FakeReplicaState;
using novadt::testing::SmallEpoch;
using novadt::testing::TestOpen;
using novadt::testing::WaitFor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

// What the primary's callbacks saw.
struct PrimaryView {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> committed;
  std::vector<uint64_t> synced;
  std::shared_ptr<FakeReplicaState> state;  // to see what the backup had at a sync
  size_t calls_at_sync = 0;
  int heartbeats = 0;
  std::optional<Status> done;
  int done_calls = 0;

  core::EpochStreamCallbacks Callbacks() {
    return {[this](const core::StreamAck& a) {
              std::lock_guard<std::mutex> lock(mu);
              if (a.kind == core::StreamAck::Kind::kCommitted) {
                committed.push_back(a.epoch);
              } else if (a.kind == core::StreamAck::Kind::kSynced) {
                synced.push_back(a.epoch);
                calls_at_sync = state ? state->Calls().size() : 0;
              } else {
                ++heartbeats;
              }
              cv.notify_all();
            },
            [this](const Status& st) {
              std::lock_guard<std::mutex> lock(mu);
              done = st;
              ++done_calls;
              cv.notify_all();
            }};
  }
  bool WaitDone(milliseconds t) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, t, [this] { return done.has_value(); });
  }
  std::vector<uint64_t> Committed() {
    std::lock_guard<std::mutex> lock(mu);
    return committed;
  }
  int Heartbeats() {
    std::lock_guard<std::mutex> lock(mu);
    return heartbeats;
  }
};

class ReplicationStreamTest : public ::testing::Test {
 protected:
  void StartBackup(bool keeps_replicas = true) {
    ServiceHandlers h;
    h.host = "rig-b";
    h.status = [] { return core::AgentStatusSnapshot{}; };
    h.hello_received = [](auto&&...) {};
    h.peer_credentials = PeerCredentials::Insecure({"rig-a"});
    if (keeps_replicas) {
      h.open_replica = [this, sinks = novadt::testing::FakeSinkFactory(state_)](
                           const core::StreamOpen& open) {
        last_basis_id_ = open.basis_id;
        {
          std::lock_guard<std::mutex> lock(basis_mu_);
          last_boot_files_ = open.boot_files;
        }
        return sinks(open);
      };
      h.replica_basis = [this](const std::string& primary, const std::string& uuid) {
        std::lock_guard<std::mutex> lock(basis_mu_);
        basis_asked_by_ = primary + " " + uuid;
        return basis_;
      };
    }
    h.replication_heartbeat = milliseconds(50);
    h.stream_limits = limits_;
    auto s = StartAgentServer("unix:" + dir_.path() + "/b.sock", "127.0.0.1:0", std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  StatusOr<std::unique_ptr<core::EpochStream>> Open(const core::StreamOpen& open = TestOpen()) {
    return link_->Open(server_->peer_address(), open, view_.Callbacks());
  }

  novadt::testing::ScratchDir dir_;
  std::shared_ptr<FakeReplicaState> state_ = std::make_shared<FakeReplicaState>();
  std::unique_ptr<AgentServer> server_;
  std::unique_ptr<core::ReplicationLink> link_ = MakeGrpcReplicationLink();
  PrimaryView view_;
  std::atomic<uint64_t> last_basis_id_{0};
  std::mutex basis_mu_;
  StatusOr<core::ReplicaBasis> basis_ = absl::NotFoundError("no replica here");  // basis_mu_
  std::string basis_asked_by_;                                                  // basis_mu_
  std::vector<core::BootFile> last_boot_files_;                                // basis_mu_
  core::StreamLimits limits_;
};

// A basis large enough for several chunks of hashes, with a short last disk block.
core::ReplicaBasis LargeBasis() {
  core::ReplicaBasis b;
  b.id = 0x1234567890abcdefull;
  b.ram_size_bytes = 100000 * core::kGuestPageSize;
  b.disks = {{"vda", (1 << 20) + 5}, {"vdb", core::kBasisBlockSize}};
  uint64_t n = 0;
  const auto next = [&n] { ++n; return core::ContentHash{n * 0x9e3779b97f4a7c15ull, ~n}; };
  for (uint64_t i = 0; i < 100000; ++i) b.ram_pages.push_back(next());
  for (const auto& d : b.disks) {
    for (uint64_t i = 0; i < core::BasisBlockCount(d.size_bytes); ++i) {
      b.disk_blocks[d.name].push_back(next());
    }
  }
  return b;
}

TEST_F(ReplicationStreamTest, BasisArrivesWholeAndTheNextOpenNamesIt) {
  StartBackup();
  const core::ReplicaBasis sent = LargeBasis();
  ASSERT_TRUE(sent.Validate().ok());
  {
    std::lock_guard<std::mutex> lock(basis_mu_);
    basis_ = sent;
  }
  core::StreamOpen open = TestOpen();  // the server the basis describes
  open.ram_size_bytes = sent.ram_size_bytes;
  open.disks = sent.disks;
  auto got = link_->Basis(server_->peer_address(), open, seconds(5));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, sent.id);
  EXPECT_EQ(got->ram_size_bytes, sent.ram_size_bytes);
  EXPECT_EQ(got->disks, sent.disks);
  EXPECT_TRUE(got->ram_pages == sent.ram_pages);
  EXPECT_TRUE(got->disk_blocks == sent.disk_blocks);
  {
    std::lock_guard<std::mutex> lock(basis_mu_);
    EXPECT_EQ(basis_asked_by_, TestOpen().primary_host + " " + TestOpen().instance_uuid);
  }
  open.basis_id = got->id;
  auto stream = Open(open);
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (const auto& item : SmallEpoch(1)) ASSERT_TRUE((*stream)->Send(item).ok());
  ASSERT_TRUE(WaitFor([&] { return view_.Committed().size() == 1; }, seconds(5)));
  EXPECT_EQ(last_basis_id_.load(), sent.id);
}

// What the backup says is outside input: a basis whose shape is not this server's (a huge RAM
// claimed, say) is refused from its first chunk, before anything is allocated for it.
TEST_F(ReplicationStreamTest, ABasisOfAnotherShapeIsRefusedBeforeAnythingIsAllocated) {
  StartBackup();
  core::ReplicaBasis huge = LargeBasis();
  huge.ram_size_bytes = uint64_t{1} << 50;  // 2^38 hashes if believed
  {
    std::lock_guard<std::mutex> lock(basis_mu_);
    basis_ = huge;
  }
  auto got = link_->Basis(server_->peer_address(), TestOpen(), seconds(5));
  EXPECT_TRUE(absl::IsFailedPrecondition(got.status())) << got.status();
}

TEST_F(ReplicationStreamTest, BasisRefusalsKeepTheirCodes) {
  StartBackup();
  auto none = link_->Basis(server_->peer_address(), TestOpen(), seconds(5));
  EXPECT_TRUE(absl::IsNotFound(none.status())) << none.status();
  {
    std::lock_guard<std::mutex> lock(basis_mu_);
    basis_ = core::TakenOverRefusal(TestOpen().instance_uuid);
  }
  auto taken = link_->Basis(server_->peer_address(), TestOpen(), seconds(5));
  EXPECT_TRUE(core::IsTakenOverRefusal(taken.status())) << taken.status();
}

TEST_F(ReplicationStreamTest, AgentWithoutReplicasHasNoBasis) {
  StartBackup(/*keeps_replicas=*/false);
  auto basis = link_->Basis(server_->peer_address(), TestOpen(), seconds(5));
  EXPECT_TRUE(absl::IsUnimplemented(basis.status())) << basis.status();
}

TEST_F(ReplicationStreamTest, EpochsArriveInOrderAndAreAckedAfterCommit) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (uint64_t e = 1; e <= 3; ++e) {
    for (const auto& item : SmallEpoch(e)) ASSERT_TRUE((*stream)->Send(item).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return view_.Committed().size() == 3; }, seconds(5)));
  EXPECT_THAT(view_.Committed(), ElementsAre(1, 2, 3));
  EXPECT_THAT(state_->Committed(), ElementsAre(1, 2, 3));
  EXPECT_TRUE((*stream)->Finish(seconds(5)).ok());
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_TRUE(view_.done->ok()) << *view_.done;
  EXPECT_EQ(state_->Calls().back(), "close OK");
  EXPECT_EQ(view_.done_calls, 1);
}

// Boot files (protocol 4) over gRPC: declared in the StreamOpen, then in chunks below the 16 MiB
// message bound — here more than that in all.
TEST_F(ReplicationStreamTest, BootFilesLargerThanAMessageArriveWholeBeforeTheSeed) {
  StartBackup();
  const std::string kernel = novadt::testing::PseudoRandomBytes(21, (20 << 20) + 77);
  const std::string ramdisk = novadt::testing::PseudoRandomBytes(22, 3000);
  core::StreamOpen open = TestOpen();
  open.protocol = core::kBootFilesProtocolVersion;
  open.boot_files = {{"kernel", kernel.size()}, {"ramdisk", ramdisk.size()}};
  auto stream = Open(open);
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (const auto& [name, bytes] : {std::pair{"kernel", &kernel}, std::pair{"ramdisk", &ramdisk}}) {
    for (size_t off = 0; off < bytes->size(); off += core::kBootFileChunkBytes) {
      ASSERT_TRUE((*stream)
                      ->Send(core::BootFileChunk{name, off,
                                                 bytes->substr(off, core::kBootFileChunkBytes)})
                      .ok());
    }
  }
  for (const auto& item : SmallEpoch(1)) ASSERT_TRUE((*stream)->Send(item).ok());
  ASSERT_TRUE(WaitFor([&] { return view_.Committed().size() == 1; }, seconds(10)));
  {
    std::lock_guard<std::mutex> lock(basis_mu_);
    EXPECT_EQ(last_boot_files_, open.boot_files);
  }
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    EXPECT_TRUE(state_->boot_files["kernel"] == kernel);
    EXPECT_TRUE(state_->boot_files["ramdisk"] == ramdisk);
    EXPECT_EQ(state_->boot_files_ended, 1);
  }
  EXPECT_TRUE((*stream)->Finish(seconds(5)).ok());
}

// A boot file larger than the backup accepts is refused at the open, with the option's name:
// nothing of the stream reaches a sink.
TEST_F(ReplicationStreamTest, ABootFileBeyondTheBackupsLimitIsRefusedAtTheOpen) {
  limits_.max_boot_file_bytes = 1 << 20;
  StartBackup();
  core::StreamOpen open = TestOpen();
  open.protocol = core::kBootFilesProtocolVersion;
  open.boot_files = {{"kernel", (1 << 20) + 1}};
  auto stream = Open(open);
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_TRUE(absl::IsResourceExhausted(*view_.done)) << *view_.done;
  EXPECT_THAT(std::string(view_.done->message()), HasSubstr("max_boot_file_bytes = 1048576"));
  EXPECT_TRUE(state_->Calls().empty());
}

TEST_F(ReplicationStreamTest, SyncIsAnsweredOnceEverythingBeforeItWasHandled) {
  StartBackup();
  view_.state = state_;
  auto stream = Open();
  ASSERT_TRUE(stream.ok()) << stream.status();
  const auto items = SmallEpoch(1);
  for (size_t i = 0; i + 1 < items.size(); ++i) ASSERT_TRUE((*stream)->Send(items[i]).ok());
  ASSERT_TRUE((*stream)->Sync(7).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(view_.mu);
    return !view_.synced.empty();
  }, seconds(5)));
  std::lock_guard<std::mutex> lock(view_.mu);
  EXPECT_THAT(view_.synced, ElementsAre(7));
  EXPECT_EQ(view_.calls_at_sync, items.size() - 1) << "the backup answered before handling all";
  EXPECT_TRUE(view_.committed.empty());
}

TEST_F(ReplicationStreamTest, HeartbeatsFlowBothWaysWhileIdle) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  // Backup → primary every 50 ms without any traffic.
  EXPECT_TRUE(WaitFor([&] { return view_.Heartbeats() >= 3; }, seconds(5)));
  // Primary → backup: every message counts as a sign of life, heartbeats included.
  const int before = state_->heard.load();
  ASSERT_TRUE((*stream)->Heartbeat().ok());
  ASSERT_TRUE((*stream)->Heartbeat().ok());
  EXPECT_TRUE(WaitFor([&] { return state_->heard.load() >= before + 2; }, seconds(5)));
  EXPECT_TRUE(state_->Calls().empty());  // heartbeats never reach the replica itself
}

TEST_F(ReplicationStreamTest, VersionMismatchIsRefusedWithAClearReason) {
  StartBackup();
  core::StreamOpen open = TestOpen();
  open.protocol = 7;
  auto stream = Open(open);
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_TRUE(absl::IsFailedPrecondition(*view_.done)) << *view_.done;
  EXPECT_THAT(std::string(view_.done->message()), HasSubstr("protocol version 7"));
  if (stream.ok()) {
    Status st = (*stream)->Send(core::EpochBegin{1});
    EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  }
}

TEST_F(ReplicationStreamTest, OutOfOrderEpochEndsTheStreamAndKeepsTheCommittedOnes) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  for (const auto& item : SmallEpoch(1)) ASSERT_TRUE((*stream)->Send(item).ok());
  (void)(*stream)->Send(core::EpochBegin{5});
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_TRUE(absl::IsInvalidArgument(*view_.done)) << *view_.done;
  EXPECT_THAT(std::string(view_.done->message()), HasSubstr("wrong epoch order"));
  EXPECT_THAT(view_.Committed(), ElementsAre(1));
  EXPECT_THAT(state_->Calls().back(), HasSubstr("close INVALID_ARGUMENT"));
  // Later sends report the stream's end instead of pretending to work.
  EXPECT_FALSE((*stream)->Send(core::EpochBegin{2}).ok());
}

TEST_F(ReplicationStreamTest, DiskFullOnTheBackupReachesThePrimary) {
  state_->fail_on = "commit 2";
  state_->fail_with = absl::ResourceExhaustedError("replica disk full");
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  for (uint64_t e = 1; e <= 2; ++e) {
    for (const auto& item : SmallEpoch(e)) (void)(*stream)->Send(item);
  }
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_TRUE(absl::IsResourceExhausted(*view_.done)) << *view_.done;
  EXPECT_THAT(std::string(view_.done->message()), HasSubstr("replica disk full"));
  EXPECT_THAT(view_.Committed(), ElementsAre(1));
}

TEST_F(ReplicationStreamTest, AgentWithoutReplicasAnswersUnimplemented) {
  StartBackup(/*keeps_replicas=*/false);
  auto stream = Open();
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_EQ(view_.done->code(), absl::StatusCode::kUnimplemented) << *view_.done;
}

TEST_F(ReplicationStreamTest, BackupGoingAwayMidEpochBreaksTheStreamAndTheReplicaDropsTheEpoch) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  for (const auto& item : SmallEpoch(1)) ASSERT_TRUE((*stream)->Send(item).ok());
  ASSERT_TRUE((*stream)->Send(core::EpochBegin{2}).ok());
  ASSERT_TRUE(WaitFor([&] { return view_.Committed().size() == 1; }, seconds(5)));
  server_->Shutdown(milliseconds(100));
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_FALSE(view_.done->ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto calls = state_->Calls();
        return !calls.empty() && calls.back().rfind("close", 0) == 0 && calls.back() != "close OK";
      },
      seconds(5)));
}

TEST_F(ReplicationStreamTest, PrimaryCancellingIsSeenByTheBackup) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(core::EpochBegin{1}).ok());
  // Cancel only once the backup is inside epoch 1 (earlier, there is nothing to drop).
  ASSERT_TRUE(WaitFor([&] { return !state_->Calls().empty(); }, seconds(5)));
  (*stream)->Cancel();
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_EQ(view_.done->code(), absl::StatusCode::kCancelled) << *view_.done;
  // The backup sees the end either as a cancel or as the stream ending inside epoch 1 (gRPC
  // does not always report the cancel before the read fails); either way the epoch is dropped.
  EXPECT_TRUE(WaitFor(
      [&] {
        auto calls = state_->Calls();
        return !calls.empty() && (calls.back().rfind("close CANCELLED", 0) == 0 ||
                                  calls.back().rfind("close DATA_LOSS", 0) == 0);
      },
      seconds(5)))
      << (state_->Calls().empty() ? "" : state_->Calls().back());
}

TEST_F(ReplicationStreamTest, UnreachableBackupFailsOpenAndReportsDoneOnce) {
  const std::string address = "127.0.0.1:" + std::to_string(novadt::testing::FreeTcpPort());
  auto stream = link_->Open(address, TestOpen(), view_.Callbacks());
  EXPECT_FALSE(stream.ok());
  EXPECT_TRUE(absl::IsUnavailable(stream.status())) << stream.status();
  ASSERT_TRUE(view_.WaitDone(seconds(5)));
  EXPECT_EQ(view_.done_calls, 1);
}

TEST_F(ReplicationStreamTest, OversizedMessageIsRefused) {
  StartBackup();
  auto stream = Open();
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(core::EpochBegin{1}).ok());
  const size_t pages = (kMaxPeerMessageBytes / core::kGuestPageSize) + 1;
  core::RamPages big;
  for (size_t i = 0; i < pages; ++i) big.page_index.push_back(i % 64);
  big.data.assign(pages * core::kGuestPageSize, 'x');
  (void)(*stream)->Send(big);
  ASSERT_TRUE(view_.WaitDone(seconds(10)));
  EXPECT_EQ(view_.done->code(), absl::StatusCode::kResourceExhausted) << *view_.done;
  EXPECT_TRUE(state_->Committed().empty());
}

}  // namespace
}  // namespace novadt::rpc
