// The replication stream's items, checked by the receiver, landing in a real replica store.
#include "agent/replica/store_sink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "agent/core/epoch_sender.h"
#include "agent/core/replica_basis.h"
#include "agent/core/replication_receiver.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_util.h"

namespace novadt::replica {
namespace {

using novadt::testing::ReadFile;
using novadt::testing::TestOpen;
using ::testing::HasSubstr;

// The backup these tests play; the primaries are rig-a (TestOpen()) and others.
constexpr char kThisHost[] = "backup-host";

class StoreSinkTest : public ::testing::Test {
 protected:
  core::ReplicaSinkFactory Factory() {
    if (!registry_) {
      registry_ = std::make_unique<ReplicaRegistry>(
          RegistryOptions{dir_.path(), kThisHost, max_streams_per_peer_, ReplicaOptions{}},
          Events());
    }
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
  static std::string Uuid() { return TestOpen().instance_uuid; }
  static core::StreamOpen WithBasis(uint64_t basis_id) {
    core::StreamOpen o = TestOpen();
    o.basis_id = basis_id;
    return o;
  }
  // A stream from `open` committing SmallEpoch(1..n), closed by its primary.
  void StreamEpochs(const core::StreamOpen& open, uint64_t n) {
    auto r = core::ReplicationReceiver::Start(open, Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (uint64_t e = 1; e <= n; ++e) {
      for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*r)->Handle(item).ok());
    }
    (*r)->Close(absl::OkStatus());
  }
  // The committed epoch as the replica files say (no stream may be open).
  uint64_t CommittedEpoch() {
    auto store = ReplicaStore::Open(ReplicaDir(dir_.path(), Uuid()));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? (*store)->committed_epoch() : ~0ull;
  }

  novadt::testing::ScratchDir dir_;
  std::mutex mu_;
  std::vector<uint64_t> committed_;
  std::vector<Status> closed_;
  std::atomic<int> heard_{0};
  int max_streams_per_peer_ = 64;
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
  // Another primary is refused while the stream is open: the replica is rig-a's.
  core::StreamOpen other = TestOpen();
  other.primary_host = "intruder";
  auto second = core::ReplicationReceiver::Start(other, factory);
  EXPECT_TRUE(absl::IsPermissionDenied(second.status())) << second.status();
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("belongs to primary rig-a"));

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

  auto fenced = registry_->Fence(TestOpen().instance_uuid, /*handed_over=*/true);
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
    ASSERT_TRUE(registry_->Fence(uuid, /*handed_over=*/true).ok());
    (*r)->Close(absl::CancelledError("taken over"));
  }
  EXPECT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(TestOpen(), factory).status()));
  const uint64_t mark = registry_->Relinquish(uuid, "rig-b", /*released=*/true);
  ASSERT_TRUE(registry_->DiscardIfUnused(uuid, mark).ok());
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  core::StreamOpen from_new_primary = TestOpen();
  from_new_primary.primary_host = "rig-b";
  auto r = core::ReplicationReceiver::Start(from_new_primary, factory);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  // With that stream open (or once it opened), DiscardIfUnused leaves its replica alone.
  ASSERT_TRUE(registry_->DiscardIfUnused(uuid, mark).ok());
  EXPECT_TRUE(std::filesystem::exists(ReplicaDir(dir_.path(), uuid)));
  ASSERT_TRUE((*r)->Handle(novadt::testing::SmallEpoch(2).front()).ok());
}

TEST_F(StoreSinkTest, FenceOfAnUnknownServerIsNotFound) {
  Factory();
  EXPECT_TRUE(absl::IsNotFound(registry_->Fence("00000000-0000-0000-0000-00000000dead", /*handed_over=*/true).status()));
}

// A fence that finds no replica to restore fences nothing: the server's streams are still
// accepted (not refused as taken over until the agent restarts).
TEST_F(StoreSinkTest, AFenceOfAMissingReplicaLeavesTheServerStreamable) {
  Factory();
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/true);
  EXPECT_TRUE(absl::IsNotFound(fenced.status())) << fenced.status();
  EXPECT_FALSE(registry_->TakenOverHere(Uuid()));
  StreamEpochs(TestOpen(), 1);
  EXPECT_EQ(CommittedEpoch(), 1u);
  // Nor one whose files are gone from under a known entry.
  std::filesystem::remove_all(ReplicaDir(dir_.path(), Uuid()));
  fenced = registry_->Fence(Uuid(), /*handed_over=*/true);
  EXPECT_TRUE(absl::IsNotFound(fenced.status())) << fenced.status();
  EXPECT_FALSE(registry_->TakenOverHere(Uuid()));
  auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
  EXPECT_TRUE(r.ok()) << r.status();
}

// Discard() removes the directory while the server's entry is still locked: a stream opening
// meanwhile waits, then starts afresh — its new replica is never removed under it, and no
// leftover of the old one is in its way.
TEST_F(StoreSinkTest, AStreamOpeningWhileADiscardRemovesTheReplicaKeepsItsFreshOne) {
  StreamEpochs(TestOpen(), 1);
  const std::string dir = ReplicaDir(dir_.path(), Uuid());
  // Something that takes a while to remove (and is no replica file).
  constexpr int kJunk = 20000;
  std::filesystem::create_directory(dir + "/junk");
  for (int i = 0; i < kJunk; ++i) std::ofstream(dir + "/junk/" + std::to_string(i));
  std::atomic<bool> done{false};
  Status discarded;
  std::thread discard([&] {
    discarded = registry_->Discard(Uuid());
    done = true;
  });
  // Wait until the removal has begun.
  auto removing = [&] {
    for (int i = 0; i < kJunk; i += kJunk / 50) {
      if (!std::filesystem::exists(dir + "/junk/" + std::to_string(i))) return true;
    }
    return false;
  };
  while (!done && !removing()) std::this_thread::yield();
  auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
  discard.join();
  ASSERT_TRUE(discarded.ok()) << discarded;
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) {
    auto handled = (*r)->Handle(item);
    ASSERT_TRUE(handled.ok()) << handled.status();
  }
  (*r)->Close(absl::OkStatus());
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_FALSE(std::filesystem::exists(dir + "/junk"));
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

// --- boot files (protocol 4) ------------------------------------------------------------------

std::vector<core::StreamItem> SeedOverBasis();  // below

core::StreamOpen WithBootFiles(const std::vector<std::pair<std::string, std::string>>& files,
                               uint64_t basis_id = 0) {
  core::StreamOpen o = TestOpen();
  o.protocol = core::kBootFilesProtocolVersion;
  o.basis_id = basis_id;
  for (const auto& [name, bytes] : files) o.boot_files.push_back({name, bytes.size()});
  return o;
}

// The items of those boot files, in chunks of 1000 bytes.
std::vector<core::StreamItem> BootFileItems(
    const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<core::StreamItem> out;
  for (const auto& [name, bytes] : files) {
    for (size_t off = 0; off < bytes.size(); off += 1000) {
      out.push_back(core::BootFileChunk{name, off, bytes.substr(off, 1000)});
    }
  }
  return out;
}

TEST_F(StoreSinkTest, TheStreamsBootFilesAreKeptWithTheReplicaAndGivenToItsFailover) {
  const std::string kernel = novadt::testing::PseudoRandomBytes(1, 5500);
  const std::string ramdisk = novadt::testing::PseudoRandomBytes(2, 700);
  auto r = core::ReplicationReceiver::Start(
      WithBootFiles({{"kernel", kernel}, {"ramdisk", ramdisk}}), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : BootFileItems({{"kernel", kernel}, {"ramdisk", ramdisk}})) {
    ASSERT_TRUE((*r)->Handle(item).ok());
  }
  for (uint64_t e = 1; e <= 2; ++e) {
    for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*r)->Handle(item).ok());
  }
  (*r)->Close(absl::CancelledError("the primary died"));
  r->reset();
  EXPECT_EQ(ReplicaFile("boot-kernel"), kernel);
  EXPECT_EQ(ReplicaFile("boot-ramdisk"), ramdisk);
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_EQ(fenced->committed_epoch, 2u);
  const std::string dir = ReplicaDir(dir_.path(), Uuid());
  EXPECT_EQ(fenced->boot_files,
            (std::map<std::string, std::string>{{"kernel", dir + "/boot-kernel"},
                                                {"ramdisk", dir + "/boot-ramdisk"}}));
  // Freed with the replica.
  registry_->Relinquish(Uuid(), "rig-a", /*released=*/true);
  ASSERT_TRUE(registry_->Discard(Uuid()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir));
}

// A re-seed over the replica (its basis) brings its own boot files: what it lacks goes. A stream
// of an older primary (protocol 3) leaves the replica with none.
TEST_F(StoreSinkTest, EveryStreamReplacesTheBootFilesAlsoOverItsBasis) {
  const std::string kernel = novadt::testing::PseudoRandomBytes(3, 2500);
  {
    auto r = core::ReplicationReceiver::Start(
        WithBootFiles({{"kernel", "old kernel"}, {"ramdisk", "old ramdisk"}}), Factory());
    ASSERT_TRUE(r.ok());
    for (const auto& item : BootFileItems({{"kernel", "old kernel"}, {"ramdisk", "old ramdisk"}})) {
      ASSERT_TRUE((*r)->Handle(item).ok());
    }
    for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::CancelledError("degraded"));
  }
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  {
    auto r = core::ReplicationReceiver::Start(WithBootFiles({{"kernel", kernel}}, basis->id),
                                              Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : BootFileItems({{"kernel", kernel}})) {
      ASSERT_TRUE((*r)->Handle(item).ok());
    }
    for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::CancelledError("the primary died"));
  }
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_EQ(fenced->boot_files.size(), 1u);
  EXPECT_EQ(ReadFile(fenced->boot_files.at("kernel")), kernel);
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), Uuid()) + "/boot-ramdisk"));

  registry_->Relinquish(Uuid(), "rig-a", /*released=*/false);
  basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  core::StreamOpen v3 = WithBasis(basis->id);
  v3.protocol = core::kBasisProtocolVersion;
  {
    auto r = core::ReplicationReceiver::Start(v3, Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::CancelledError("the primary died"));
  }
  fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_TRUE(fenced->boot_files.empty());
}

TEST_F(StoreSinkTest, AReplicaWithADamagedBootFileIsNotTakenOver) {
  const std::string kernel(3000, 'k');
  auto r = core::ReplicationReceiver::Start(WithBootFiles({{"kernel", kernel}}), Factory());
  ASSERT_TRUE(r.ok());
  for (const auto& item : BootFileItems({{"kernel", kernel}})) ASSERT_TRUE((*r)->Handle(item).ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::CancelledError("the primary died"));
  r->reset();
  {
    std::ofstream out(ReplicaDir(dir_.path(), Uuid()) + "/boot-kernel",
                      std::ios::binary | std::ios::trunc);
    out << std::string(3000, 'x');
  }
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  EXPECT_TRUE(absl::IsDataLoss(fenced.status())) << fenced.status();
  EXPECT_THAT(std::string(fenced.status().message()),
              HasSubstr("the boot files of the replica of " + Uuid() + " are damaged"));
  EXPECT_FALSE(registry_->TakenOverHere(Uuid())) << "a failed fence takes nothing over";
}

// An in-place seed over a basis: its epoch 1 carries one page and one disk block only.
std::vector<core::StreamItem> SeedOverBasis() {
  return {core::EpochBegin{1},
          core::RamPages{{3}, std::string(core::kGuestPageSize, 'x')},
          core::DiskWrite{"vda", 3 * core::kBasisBlockSize,
                          std::string(core::kBasisBlockSize, 'y')},
          core::DeviceStateChunk{"seed", true},
          core::EpochEnd{1, 1, 1, 4}};
}

TEST_F(StoreSinkTest, BasisOfAServerWithoutAReplicaIsNotFound) {
  Factory();
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-a", Uuid()).status()));
  StreamEpochs(TestOpen(), 1);
  ASSERT_TRUE(registry_->Discard(Uuid()).ok());
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-a", Uuid()).status()));
  // A replica that cannot be opened consistently is no basis either.
  StreamEpochs(TestOpen(), 1);
  {
    std::ofstream out(ReplicaDir(dir_.path(), Uuid()) + "/epoch.rec",
                      std::ios::binary | std::ios::trunc);
    out << "garbage";
  }
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-a", Uuid()).status()));
}

// After an agent restart the registry knows nothing of the replica left on disk: it is a basis.
TEST_F(StoreSinkTest, AReplicaLeftByAnEarlierRunIsABasis) {
  StreamEpochs(TestOpen(), 2);
  registry_.reset();
  auto factory = Factory();  // a new registry over the same replica_path
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(basis->ram_pages[7] == core::HashContent(std::string(core::kGuestPageSize, 'c')));
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), factory);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(7 * 4096, 4096), std::string(4096, 'c'));
}

TEST_F(StoreSinkTest, BasisDescribesTheReplicaAndAStreamNamingItSeedsInPlace) {
  StreamEpochs(TestOpen(), 2);
  const std::string ram = ReplicaFile("ram.img");
  const std::string disk = ReplicaFile("disk-vda.raw");
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_NE(basis->id, 0u);
  EXPECT_TRUE(basis->Validate().ok()) << basis->Validate();
  EXPECT_TRUE(basis->Fits(TestOpen().ram_size_bytes, TestOpen().disks));
  ASSERT_EQ(basis->ram_pages.size(), 64u);
  for (size_t p = 0; p < 64; ++p) {
    EXPECT_TRUE(basis->ram_pages[p] ==
                core::HashContent(std::string_view(ram).substr(p * core::kGuestPageSize,
                                                               core::kGuestPageSize)))
        << "page " << p;
  }
  EXPECT_TRUE(basis->ram_pages[0] == core::HashContent(std::string(core::kGuestPageSize, 'c')));
  ASSERT_EQ(basis->disk_blocks.at("vda").size(), 16u);
  for (size_t b = 0; b < 16; ++b) {
    EXPECT_TRUE(basis->disk_blocks.at("vda")[b] ==
                core::HashContent(std::string_view(disk).substr(b * core::kBasisBlockSize,
                                                                core::kBasisBlockSize)))
        << "block " << b;
  }
  EXPECT_TRUE(basis->disk_blocks.at("vda")[1] == core::HashZeroes(core::kBasisBlockSize));
  EXPECT_EQ(CommittedEpoch(), 2u) << "handing out a basis changes nothing yet";

  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(ReplicaFile("ram.img") == ram) << "seeded in place, not re-created";
  for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
  const std::vector<core::StreamItem> second = {
      core::EpochBegin{2}, core::RamPages{{5}, std::string(core::kGuestPageSize, 'z')},
      core::DeviceStateChunk{"two", true}, core::EpochEnd{2, 1, 0, 3}};
  for (const auto& item : second) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();

  EXPECT_EQ(committed_, (std::vector<uint64_t>{1, 2, 1, 2}));
  std::string want_ram = ram;
  want_ram.replace(3 * core::kGuestPageSize, core::kGuestPageSize,
                   std::string(core::kGuestPageSize, 'x'));
  want_ram.replace(5 * core::kGuestPageSize, core::kGuestPageSize,
                   std::string(core::kGuestPageSize, 'z'));
  EXPECT_TRUE(ReplicaFile("ram.img") == want_ram);
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));  // the old bytes
  std::string want_disk = disk;
  want_disk.replace(3 * core::kBasisBlockSize, core::kBasisBlockSize,
                    std::string(core::kBasisBlockSize, 'y'));
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == want_disk);
  EXPECT_EQ(ReplicaFile("disk-vda.raw").substr(4096, 512), std::string(512, 'd'));
  EXPECT_EQ(CommittedEpoch(), 2u);
}

// Until the seed's epoch 1 commits, the replica holds a mix of old and new bytes: it must not
// count as committed (a take-over then has nothing to restore).
TEST_F(StoreSinkTest, AnInPlaceSeedCutShortLeavesTheReplicaNotSeeded) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  auto seed = SeedOverBasis();
  ASSERT_TRUE((*r)->Handle(seed[0]).ok());
  ASSERT_TRUE((*r)->Handle(seed[1]).ok());
  (*r)->Close(absl::CancelledError("primary gone"));
  r->reset();
  EXPECT_EQ(CommittedEpoch(), 0u);
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/true);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_EQ(fenced->committed_epoch, 0u);
}

TEST_F(StoreSinkTest, AStreamNamingABasisNeverHandedOutIsRefusedAndKeepsTheReplica) {
  StreamEpochs(TestOpen(), 2);
  auto r = core::ReplicationReceiver::Start(WithBasis(12345), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
  EXPECT_EQ(CommittedEpoch(), 2u);
  // With a basis handed out, another id is refused just the same.
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  r = core::ReplicationReceiver::Start(WithBasis(basis->id + 1), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(CommittedEpoch(), 2u);
}

TEST_F(StoreSinkTest, ABasisReplacedByANewerOneIsRefused) {
  StreamEpochs(TestOpen(), 2);
  auto first = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->id, second->id);
  auto r = core::ReplicationReceiver::Start(WithBasis(first->id), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
  EXPECT_EQ(CommittedEpoch(), 2u);
}

TEST_F(StoreSinkTest, ABasisIsStaleOnceAnotherStreamOpened) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  StreamEpochs(TestOpen(), 1);  // a full seed in between
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'b'));  // that seed's
  EXPECT_EQ(CommittedEpoch(), 1u);
}

TEST_F(StoreSinkTest, ABasisServesOneStream) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  {
    auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::OkStatus());
  }
  auto again = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(again.status())) << again.status();
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(3 * 4096, 4096), std::string(4096, 'x'));
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
}

TEST_F(StoreSinkTest, AStreamNamingABasisOfAnotherShapeIsRefusedAndKeepsTheReplica) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  core::StreamOpen resized = WithBasis(basis->id);
  resized.ram_size_bytes *= 2;
  auto r = core::ReplicationReceiver::Start(resized, Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(CommittedEpoch(), 2u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
}

TEST_F(StoreSinkTest, BasisEndsAStreamStillOpenFromTheSamePrimary) {
  auto factory = Factory();
  auto old_stream = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(old_stream.ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) {
    ASSERT_TRUE((*old_stream)->Handle(item).ok());
  }
  auto second = novadt::testing::SmallEpoch(2);
  ASSERT_TRUE((*old_stream)->Handle(second[0]).ok());
  ASSERT_TRUE((*old_stream)->Handle(second[1]).ok());  // epoch 2 open, pages buffered

  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  // The committed epoch 1, not the dropped epoch 2.
  EXPECT_TRUE(basis->ram_pages[0] == core::HashContent(std::string(core::kGuestPageSize, 'b')));
  auto refused = (*old_stream)->Handle(second[2]);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_FALSE(core::IsTakenOverRefusal(refused.status()));
  (*old_stream)->Close(refused.status());
  old_stream->reset();

  // The old stream's end does not spoil the basis.
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), factory);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'b'));
  EXPECT_EQ(ReplicaFile("ram.img").substr(3 * 4096, 4096), std::string(4096, 'x'));
}

// Another peer must neither end the owner's stream nor read hashes of the guest's RAM.
TEST_F(StoreSinkTest, BasisFromAPeerThatIsNotTheOwnerIsRefusedAndTheStreamCarriesOn) {
  auto factory = Factory();
  auto r = core::ReplicationReceiver::Start(TestOpen(), factory);
  ASSERT_TRUE(r.ok());
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  auto basis = registry_->Basis("intruder", Uuid());
  EXPECT_TRUE(absl::IsPermissionDenied(basis.status())) << basis.status();
  // The open stream carries on.
  for (const auto& item : novadt::testing::SmallEpoch(2)) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(committed_, (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreSinkTest, BasisOfAServerTakenOverHereIsTheTakenOverRefusal) {
  StreamEpochs(TestOpen(), 1);
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  auto basis = registry_->Basis("rig-a", Uuid());
  EXPECT_TRUE(core::IsTakenOverRefusal(basis.status())) << basis.status();
  EXPECT_TRUE(core::IsTakenOverRefusal(registry_->Basis("rig-b", Uuid()).status()));
}

// A planned switchover away from here: the files the copy ran on are the new primary's basis.
TEST_F(StoreSinkTest, ARelinquishedReplicaIsABasisForTheNewPrimary) {
  StreamEpochs(TestOpen(), 2);
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  {  // the copy that ran here changed the files
    std::ofstream out(ReplicaDir(dir_.path(), Uuid()) + "/ram.img",
                      std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(9 * 4096);
    out << std::string(4096, 'r');
  }
  const uint64_t mark = registry_->Relinquish(Uuid(), "rig-b", /*released=*/true);
  auto basis = registry_->Basis("rig-b", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(basis->ram_pages[9] == core::HashContent(std::string(4096, 'r')));
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), mark).ok());
  ASSERT_TRUE(std::filesystem::exists(ReplicaDir(dir_.path(), Uuid())))
      << "its basis was handed out: kept";
  core::StreamOpen open = WithBasis(basis->id);
  open.primary_host = "rig-b";
  auto r = core::ReplicationReceiver::Start(open, Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(9 * 4096, 4096), std::string(4096, 'r'));
}

// store_sink.h: "any other stream, fence or discard invalidates it". A copy may run on the files
// after a fence: a basis handed out before must not seed in place over them.
TEST_F(StoreSinkTest, AFenceInvalidatesABasisHandedOutBefore) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  {  // the copy that ran here changed the files
    std::ofstream out(ReplicaDir(dir_.path(), Uuid()) + "/ram.img",
                      std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(9 * 4096);
    out << std::string(4096, 'r');
  }
  registry_->Relinquish(Uuid(), "rig-b", /*released=*/true);
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
}

// DiscardIfUnused keeps the files only when they were used since Relinquish(); a basis handed
// out before the fence (and invalidated by it) is no such use.
TEST_F(StoreSinkTest, ABasisHandedOutBeforeAFenceDoesNotKeepARelinquishedReplica) {
  StreamEpochs(TestOpen(), 2);
  ASSERT_TRUE(registry_->Basis("rig-a", Uuid()).ok());
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  const uint64_t mark = registry_->Relinquish(Uuid(), "rig-b", /*released=*/true);
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), mark).ok());
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), Uuid())));
}

TEST_F(StoreSinkTest, ADiscardInvalidatesABasis) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  ASSERT_TRUE(registry_->Discard(Uuid()).ok());
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_FALSE(std::filesystem::exists(ReplicaDir(dir_.path(), Uuid())));
}

// What a copy that ran here leaves (ReplicaRegistry::KeepBasis): a RAM file and a raw image of
// TestOpen()'s shape, in a directory of their own.
class KeepBasisTest : public StoreSinkTest {
 protected:
  static constexpr uint64_t kPageSize = core::kGuestPageSize;
  KeepBasisTest() {
    // RAM: pages of distinct bytes with a run of all-zero pages; the image: data, a zero block.
    for (uint64_t p = 0; p < 64; ++p) {
      ram_ += (p >= 20 && p < 30) ? std::string(kPageSize, '\0')
                                  : std::string(kPageSize, static_cast<char>('A' + p % 26));
    }
    for (uint64_t b = 0; b < 16; ++b) {
      disk_ += b == 5 ? std::string(core::kBasisBlockSize, '\0')
                      : std::string(core::kBasisBlockSize, static_cast<char>('a' + b));
    }
    ram_file_ = sources_.Write("ram", ram_);
    disk_file_ = sources_.Write("disk.raw", disk_);
  }
  static ReplicaGeometry Geometry() {
    ReplicaGeometry g;
    g.ram_size = TestOpen().ram_size_bytes;
    for (const auto& d : TestOpen().disks) g.disks.push_back({d.name, d.size_bytes});
    return g;
  }
  // The copy here goes away; `new_owner` runs the server now.
  StatusOr<uint64_t> Keep(const std::string& new_owner = "some-host") {
    return registry_->KeepBasis(Uuid(), Geometry(), ram_file_, {{"vda", disk_file_}}, new_owner);
  }
  bool ReplicaExists() { return std::filesystem::exists(ReplicaDir(dir_.path(), Uuid())); }
  static core::StreamOpen From(const std::string& host, uint64_t basis_id = 0) {
    core::StreamOpen o = WithBasis(basis_id);
    o.primary_host = host;
    return o;
  }
  // A stream from `host` over basis `basis_id` committing SeedOverBasis(), then closed.
  void SeedOver(const std::string& host, uint64_t basis_id) {
    auto r = core::ReplicationReceiver::Start(From(host, basis_id), Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : SeedOverBasis()) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::OkStatus());
  }
  // The kept bytes with SeedOverBasis()'s page 3 and vda block 3.
  std::string SeededRam() const {
    std::string ram = ram_;
    ram.replace(3 * kPageSize, kPageSize, std::string(kPageSize, 'x'));
    return ram;
  }
  std::string SeededDisk() const {
    std::string disk = disk_;
    disk.replace(3 * core::kBasisBlockSize, core::kBasisBlockSize,
                 std::string(core::kBasisBlockSize, 'y'));
    return disk;
  }

  novadt::testing::ScratchDir sources_{"nova-dt-kept-copy"};
  std::string ram_, disk_, ram_file_, disk_file_;
};

TEST_F(KeepBasisTest, AKeptCopyIsABasisAndAStreamNamingItSeedsInPlaceOverIt) {
  Factory();
  auto mark = Keep();
  ASSERT_TRUE(mark.ok()) << mark.status();
  ASSERT_TRUE(ReplicaExists());
  EXPECT_EQ(CommittedEpoch(), 0u) << "a kept copy is never restored from";
  EXPECT_TRUE(ReplicaFile("ram.img") == ram_);
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == disk_);

  auto basis = registry_->Basis("some-host", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_NE(basis->id, 0u);
  EXPECT_TRUE(basis->Validate().ok()) << basis->Validate();
  EXPECT_TRUE(basis->Fits(TestOpen().ram_size_bytes, TestOpen().disks));
  ASSERT_EQ(basis->ram_pages.size(), 64u);
  for (uint64_t p = 0; p < 64; ++p) {
    EXPECT_TRUE(basis->ram_pages[p] ==
                core::HashContent(std::string_view(ram_).substr(p * kPageSize, kPageSize)))
        << "page " << p;
  }
  EXPECT_TRUE(basis->ram_pages[25] == core::HashZeroes(kPageSize));
  ASSERT_EQ(basis->disk_blocks.at("vda").size(), 16u);
  for (uint64_t b = 0; b < 16; ++b) {
    EXPECT_TRUE(basis->disk_blocks.at("vda")[b] ==
                core::HashContent(std::string_view(disk_).substr(b * core::kBasisBlockSize,
                                                                 core::kBasisBlockSize)))
        << "block " << b;
  }
  EXPECT_TRUE(basis->disk_blocks.at("vda")[5] == core::HashZeroes(core::kBasisBlockSize));

  // The new primary's seed sends one page and one block; the rest is the kept copy's.
  SeedOver("some-host", basis->id);
  EXPECT_EQ(committed_, (std::vector<uint64_t>{1}));
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_TRUE(ReplicaFile("ram.img") == SeededRam());
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, kPageSize), std::string(kPageSize, 'A'));
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == SeededDisk());
  EXPECT_EQ(ReplicaFile("disk-vda.raw").substr(0, 512), std::string(512, 'a'));
  // The seed used it: it is kept.
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  EXPECT_TRUE(ReplicaExists());
  EXPECT_EQ(CommittedEpoch(), 1u);
}

TEST_F(KeepBasisTest, KeepBasisWhileAStreamIsOpenIsRefusedAndChangesNothing) {
  auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  const std::string ram = ReplicaFile("ram.img");
  const std::string disk = ReplicaFile("disk-vda.raw");

  auto mark = Keep();
  EXPECT_TRUE(absl::IsFailedPrecondition(mark.status())) << mark.status();
  EXPECT_TRUE(ReplicaFile("ram.img") == ram);
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == disk);
  // The stream carries on undisturbed.
  for (const auto& item : novadt::testing::SmallEpoch(2)) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(committed_, (std::vector<uint64_t>{1, 2}));
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_TRUE(closed_[0].ok()) << closed_[0];
  EXPECT_EQ(CommittedEpoch(), 2u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
  // A basis handed out after it is the stream's replica, not the copy's files.
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(basis->ram_pages[0] == core::HashContent(std::string(kPageSize, 'c')));
}

TEST_F(KeepBasisTest, AnExistingReplicaIsKeptAsItIs) {
  StreamEpochs(TestOpen(), 2);
  const std::string ram = ReplicaFile("ram.img");
  const std::string disk = ReplicaFile("disk-vda.raw");
  ASSERT_FALSE(ram == ram_);

  auto mark = Keep("rig-b");
  ASSERT_TRUE(mark.ok()) << mark.status();
  EXPECT_TRUE(ReplicaFile("ram.img") == ram) << "not overwritten by the copy's RAM";
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == disk);
  EXPECT_EQ(CommittedEpoch(), 2u);
  // It is the basis a re-protection gets.
  auto basis = registry_->Basis("rig-b", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(basis->ram_pages[0] == core::HashContent(std::string(kPageSize, 'c')));
  EXPECT_TRUE(ReplicaFile("ram.img") == ram);
}

TEST_F(KeepBasisTest, TheMarkOfAnExistingReplicaFreesItWhenUnused) {
  StreamEpochs(TestOpen(), 1);
  auto mark = Keep("rig-b");
  ASSERT_TRUE(mark.ok()) << mark.status();
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  EXPECT_FALSE(ReplicaExists());
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-b", Uuid()).status()));
}

// A copy ran here on the replica it took over and goes away (another host runs the server now):
// the new primary may protect it towards here again.
TEST_F(KeepBasisTest, KeepBasisOnAServerTakenOverHereClearsTheFence) {
  StreamEpochs(TestOpen(), 2);
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  ASSERT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(From("rig-b"), Factory()).status()));
  {  // the copy that ran here changed the files
    std::ofstream out(ReplicaDir(dir_.path(), Uuid()) + "/ram.img",
                      std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(9 * 4096);
    out << std::string(4096, 'r');
  }
  const std::string ram = ReplicaFile("ram.img");

  auto mark = Keep("rig-b");
  ASSERT_TRUE(mark.ok()) << mark.status();
  EXPECT_TRUE(ReplicaFile("ram.img") == ram) << "the files the copy ran on are kept";
  auto basis = registry_->Basis("rig-b", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(basis->ram_pages[9] == core::HashContent(std::string(kPageSize, 'r')));
  SeedOver("rig-b", basis->id);
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(9 * 4096, 4096), std::string(4096, 'r'));
  EXPECT_EQ(ReplicaFile("ram.img").substr(3 * 4096, 4096), std::string(4096, 'x'));
}

TEST_F(KeepBasisTest, KeepBasisOnAServerTakenOverHereAcceptsAFullSeedToo) {
  StreamEpochs(TestOpen(), 1);
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  ASSERT_TRUE(std::filesystem::remove_all(ReplicaDir(dir_.path(), Uuid())) > 0);
  ASSERT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(From("rig-b"), Factory()).status()));
  // No replica left: the copy's files are kept, and the fence goes.
  auto mark = Keep();
  ASSERT_TRUE(mark.ok()) << mark.status();
  EXPECT_TRUE(ReplicaFile("ram.img") == ram_);
  EXPECT_EQ(CommittedEpoch(), 0u);
  auto r = core::ReplicationReceiver::Start(From("rig-b"), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
  (*r)->Close(absl::OkStatus());
  r->reset();
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_EQ(ReplicaFile("ram.img").substr(4096, 4096), std::string(4096, '\0'))
      << "a full seed starts afresh";
}

TEST_F(KeepBasisTest, DiscardIfUnusedFreesAKeptCopyNothingUsed) {
  Factory();
  auto mark = Keep();
  ASSERT_TRUE(mark.ok()) << mark.status();
  ASSERT_TRUE(ReplicaExists());
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  EXPECT_FALSE(ReplicaExists());
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("some-host", Uuid()).status()));
  // Again: nothing to free.
  EXPECT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  // The sources are the copy's, not the registry's.
  EXPECT_EQ(ReadFile(ram_file_), ram_);
  // A later stream seeds anew.
  StreamEpochs(TestOpen(), 1);
  EXPECT_EQ(CommittedEpoch(), 1u);
}

TEST_F(KeepBasisTest, DiscardIfUnusedKeepsAKeptCopyWhoseBasisWasHandedOut) {
  Factory();
  auto mark = Keep();
  ASSERT_TRUE(mark.ok()) << mark.status();
  auto basis = registry_->Basis("some-host", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  ASSERT_TRUE(ReplicaExists()) << "its basis was handed out: kept";
  EXPECT_TRUE(ReplicaFile("ram.img") == ram_);
  // And the basis is still good.
  SeedOver("some-host", basis->id);
  EXPECT_EQ(CommittedEpoch(), 1u);
  EXPECT_TRUE(ReplicaFile("ram.img") == SeededRam());
  EXPECT_TRUE(ReplicaFile("disk-vda.raw") == SeededDisk());
}

TEST_F(KeepBasisTest, DiscardIfUnusedKeepsAKeptCopyOnceAStreamOpened) {
  auto factory = Factory();
  auto mark = Keep();
  ASSERT_TRUE(mark.ok()) << mark.status();
  {  // a stream open right now
    auto r = core::ReplicationReceiver::Start(From("some-host"), factory);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*r)->Handle(item).ok());
    ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
    EXPECT_TRUE(ReplicaExists());
    for (const auto& item : novadt::testing::SmallEpoch(2)) ASSERT_TRUE((*r)->Handle(item).ok());
    (*r)->Close(absl::OkStatus());
  }
  // ... and once it has ended.
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  EXPECT_TRUE(ReplicaExists());
  EXPECT_EQ(CommittedEpoch(), 2u);
  EXPECT_EQ(committed_, (std::vector<uint64_t>{1, 2}));
}

// Discard() erases the entry; marks handed out before must not match the streams of the new
// one (stream ids are unique across the registry).
TEST_F(KeepBasisTest, DiscardIfUnusedKeepsTheReplicaOfAStreamOpenedAfterADiscard) {
  StreamEpochs(TestOpen(), 1);  // stream 1 of the entry
  auto mark = Keep();           // an existing replica: kept, mark 1
  ASSERT_TRUE(mark.ok()) << mark.status();
  ASSERT_TRUE(registry_->Discard(Uuid()).ok());
  StreamEpochs(From("rig-b"), 2);  // a new stream after the mark: stream 1 of a new entry
  ASSERT_EQ(CommittedEpoch(), 2u);
  ASSERT_TRUE(registry_->DiscardIfUnused(Uuid(), *mark).ok());
  EXPECT_TRUE(ReplicaExists()) << "a stream opened since the mark: its replica must be kept";
}

// ---------------------------------------------------------------------------------------------
// Ownership (replica_owner.h, docs/security.md): only the primary that owns a replica may stream
// to it, ask for its basis or hand the server over; the record survives agent restarts.

class OwnershipTest : public StoreSinkTest {
 protected:
  static core::StreamOpen From(const std::string& host) {
    core::StreamOpen o = TestOpen();
    o.primary_host = host;
    return o;
  }
  // A stream from rig-a that committed two epochs and then broke (rig-a's agent died): the
  // replica stays rig-a's live, failover-eligible replica.
  void BrokenStreamFromTheOwner() {
    auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
    ASSERT_TRUE(r.ok()) << r.status();
    for (uint64_t e = 1; e <= 2; ++e) {
      for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*r)->Handle(item).ok());
    }
    (*r)->Close(absl::CancelledError("primary cancelled the stream"));
  }
  // The registry as a restarted agent makes it.
  void Restart() {
    registry_.reset();
    Factory();
  }
};

TEST_F(OwnershipTest, AnotherPeerCannotReplaceALiveReplicaEvenWithNoStreamOpen) {
  BrokenStreamFromTheOwner();
  for (bool restarted : {false, true}) {
    SCOPED_TRACE(restarted ? "after an agent restart" : "same agent");
    if (restarted) Restart();
    auto r = core::ReplicationReceiver::Start(From("rig-x"), Factory());
    EXPECT_TRUE(absl::IsPermissionDenied(r.status())) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("belongs to primary rig-a"));
    EXPECT_EQ(CommittedEpoch(), 2u) << "the replica a failover would restore is untouched";
    EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, 'c'));
    EXPECT_TRUE(absl::IsPermissionDenied(registry_->Basis("rig-x", Uuid()).status()));
    EXPECT_TRUE(absl::IsPermissionDenied(registry_->CheckOwner("rig-x", Uuid())));
    EXPECT_TRUE(registry_->CheckOwner("rig-a", Uuid()).ok());
  }
  // The owner itself may re-seed, also after the restart (its basis too).
  auto basis = registry_->Basis("rig-a", Uuid());
  ASSERT_TRUE(basis.ok()) << basis.status();
  auto r = core::ReplicationReceiver::Start(WithBasis(basis->id), Factory());
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(OwnershipTest, AReplicaItsOwnerReleasedIsReplacedByAnotherPeersFreshSeedNeverDescribed) {
  StreamEpochs(TestOpen(), 2);  // closed by its primary: released
  EXPECT_TRUE(registry_->CheckOwner("rig-a", Uuid()).ok()) << "still rig-a's to hand over";
  // Another peer learns nothing of it ...
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-x", Uuid()).status()));
  // ... and its stream starts a fresh replica, owned by it now.
  auto r = core::ReplicationReceiver::Start(From("rig-x"), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, '\0')) << "a fresh replica";
  EXPECT_TRUE(registry_->CheckOwner("rig-x", Uuid()).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(
      core::ReplicationReceiver::Start(TestOpen(), Factory()).status()))
      << "rig-a's replica it is no more";
}

TEST_F(OwnershipTest, ABasisIsOnlyEverTheOwnersAndAStreamCannotNameAnotherPeersBasis) {
  StreamEpochs(TestOpen(), 2);
  auto basis = registry_->Basis("rig-a", Uuid());  // released, but still rig-a's basis
  ASSERT_TRUE(basis.ok()) << basis.status();
  core::StreamOpen open = From("rig-x");
  open.basis_id = basis->id;
  auto r = core::ReplicationReceiver::Start(open, Factory());
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(CommittedEpoch(), 2u);
}

TEST_F(OwnershipTest, ATakeOverIsRememberedAcrossRestartsAndRefusesTheOldPrimary) {
  BrokenStreamFromTheOwner();
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  Restart();
  auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
  EXPECT_TRUE(core::IsTakenOverRefusal(r.status())) << r.status();
  EXPECT_TRUE(core::IsTakenOverRefusal(registry_->Basis("rig-a", Uuid()).status()));
  EXPECT_EQ(CommittedEpoch(), 2u) << "the files the restored copy runs on are untouched";
  // A switchover away from here names the new owner: its stream is accepted.
  registry_->Relinquish(Uuid(), "rig-b", /*released=*/true);
  Restart();
  EXPECT_TRUE(registry_->Basis("rig-b", Uuid()).ok());
  // rig-b released it: to rig-a it is a replica another peer let go, never described.
  const Status old_primary = registry_->Basis("rig-a", Uuid()).status();
  EXPECT_TRUE(absl::IsNotFound(old_primary)) << old_primary;
}

// The take-over must be on disk before the copy runs on the files: otherwise, after a restart,
// the old primary's stream would re-create the replica under the restored copy.
TEST_F(OwnershipTest, AFenceThatCannotRecordTheTakeOverFailsAndFencesNothing) {
  BrokenStreamFromTheOwner();
  const std::string obstacle = ReplicaDir(dir_.path(), Uuid()) + "/owner.rec.tmp";
  ASSERT_TRUE(std::filesystem::create_directory(obstacle));  // owner.rec cannot be written
  auto fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  EXPECT_FALSE(fenced.ok());
  EXPECT_THAT(std::string(fenced.status().message()), HasSubstr("cannot record the take-over"));
  EXPECT_FALSE(registry_->TakenOverHere(Uuid()));
  auto owner = ReadReplicaOwner(ReplicaDir(dir_.path(), Uuid()));
  ASSERT_TRUE(owner.ok()) << owner.status();
  EXPECT_EQ(*owner, (ReplicaOwner{"rig-a", false, false})) << "still rig-a's live replica";
  EXPECT_TRUE(registry_->CheckOwner("rig-a", Uuid()).ok());
  EXPECT_EQ(CommittedEpoch(), 2u);
  // Once owner.rec can be written, the same fence succeeds.
  std::filesystem::remove(obstacle);
  fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
  ASSERT_TRUE(fenced.ok()) << fenced.status();
  EXPECT_EQ(fenced->committed_epoch, 2u);
  EXPECT_TRUE(registry_->TakenOverHere(Uuid()));
}

// A replica without a usable owner record (made before owner records, or the record damaged):
// the take-over is recorded all the same, and so survives a restart.
TEST_F(OwnershipTest, AFenceRecordsTheTakeOverWhenNoOwnerWasRecorded) {
  for (bool corrupt : {false, true}) {
    SCOPED_TRACE(corrupt ? "owner.rec corrupt" : "no owner.rec");
    BrokenStreamFromTheOwner();
    registry_.reset();
    const std::string record = ReplicaDir(dir_.path(), Uuid()) + "/owner.rec";
    if (corrupt) {
      std::ofstream(record, std::ios::trunc) << "nova-dt-owner 1\nhost rig-a\n";
    } else {
      ASSERT_TRUE(std::filesystem::remove(record));
    }
    Factory();
    ASSERT_TRUE(absl::IsNotFound(registry_->CheckOwner("rig-a", Uuid()))) << "nobody's";
    auto fenced = registry_->Fence(Uuid(), /*handed_over=*/false);
    ASSERT_TRUE(fenced.ok()) << fenced.status();
    EXPECT_EQ(fenced->committed_epoch, 2u);
    auto owner = ReadReplicaOwner(ReplicaDir(dir_.path(), Uuid()));
    ASSERT_TRUE(owner.ok()) << owner.status();
    EXPECT_EQ(*owner, (ReplicaOwner{kThisHost, false, true}));
    Restart();
    EXPECT_TRUE(registry_->TakenOverHere(Uuid()));
    auto r = core::ReplicationReceiver::Start(TestOpen(), Factory());
    EXPECT_TRUE(core::IsTakenOverRefusal(r.status())) << r.status();
    EXPECT_EQ(CommittedEpoch(), 2u);
    ASSERT_TRUE(registry_->Discard(Uuid()).ok());
  }
}

TEST_F(OwnershipTest, AFailedTakeOverLeavesTheReplicaToItsOwner) {
  BrokenStreamFromTheOwner();
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  registry_->Relinquish(Uuid(), "rig-a", /*released=*/false);
  EXPECT_TRUE(registry_->CheckOwner("rig-a", Uuid()).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(
      core::ReplicationReceiver::Start(From("rig-x"), Factory()).status()));
  EXPECT_TRUE(core::ReplicationReceiver::Start(TestOpen(), Factory()).ok());
}

TEST_F(OwnershipTest, AnUnreadableOwnerRecordMakesTheReplicaNobodysNeverAnAbort) {
  BrokenStreamFromTheOwner();
  registry_.reset();
  std::ofstream(ReplicaDir(dir_.path(), Uuid()) + "/owner.rec", std::ios::trunc)
      << "nova-dt-owner 1\nhost rig-a\nreleased 0\n";
  Factory();
  EXPECT_TRUE(absl::IsNotFound(registry_->CheckOwner("rig-a", Uuid())));
  EXPECT_TRUE(absl::IsNotFound(registry_->Basis("rig-a", Uuid()).status()));
  auto r = core::ReplicationReceiver::Start(From("rig-x"), Factory());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReplicaFile("ram.img").substr(0, 4096), std::string(4096, '\0')) << "a fresh replica";
}

TEST_F(OwnershipTest, MalformedIdentifiersAreRefusedAndNoPathIsBuiltFromThem) {
  StreamEpochs(TestOpen(), 1);
  const std::string u = Uuid();
  std::string upper = u;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::vector<std::string> bad = {"../x", "../../x", "./" + u, u + "/..", "{" + u + "}",
                                        upper, u + "0", std::string(300, 'a'), ""};
  for (const std::string& b : bad) {
    SCOPED_TRACE(b);
    core::StreamOpen open = TestOpen();
    open.instance_uuid = b;
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Factory()(open).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Basis("rig-a", b).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->CheckOwner("rig-a", b)));
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Fence(b, /*handed_over=*/true).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Discard(b)));
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->DiscardIfUnused(b, 0)));
    EXPECT_TRUE(absl::IsInvalidArgument(
        registry_->KeepBasis(b, {4096, {}}, "", {}, "rig-b").status()));
  }
  for (const std::string& host : {std::string("../x"), std::string("a b"), std::string("")}) {
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Factory()(From(host)).status())) << host;
    EXPECT_TRUE(absl::IsInvalidArgument(registry_->Basis(host, u).status())) << host;
  }
  // Nothing was made or removed anywhere: the replica root holds exactly the one replica, and
  // the directory above it nothing new.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    names.push_back(e.path().filename());
  }
  EXPECT_EQ(names, std::vector<std::string>{u});
  EXPECT_EQ(CommittedEpoch(), 1u);
}

TEST_F(OwnershipTest, StreamsPerPeerAreBoundedAndAReplacingStreamDoesNotCountTwice) {
  max_streams_per_peer_ = 2;
  auto open = [](int i) {
    core::StreamOpen o = TestOpen();
    o.instance_uuid = "3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a1" + std::to_string(i);
    return o;
  };
  auto one = core::ReplicationReceiver::Start(open(1), Factory());
  auto two = core::ReplicationReceiver::Start(open(2), Factory());
  ASSERT_TRUE(one.ok() && two.ok());
  auto three = core::ReplicationReceiver::Start(open(3), Factory());
  EXPECT_TRUE(absl::IsResourceExhausted(three.status())) << three.status();
  // Another primary has its own allowance.
  core::StreamOpen other = open(4);
  other.primary_host = "rig-x";
  EXPECT_TRUE(core::ReplicationReceiver::Start(other, Factory()).ok());
  // rig-a replacing its own stream of server 2 is not a third stream.
  auto two_again = core::ReplicationReceiver::Start(open(2), Factory());
  EXPECT_TRUE(two_again.ok()) << two_again.status();
  two->reset();
  (*one)->Close(absl::OkStatus());
  one->reset();
  EXPECT_TRUE(core::ReplicationReceiver::Start(open(3), Factory()).ok()) << "a slot is free again";
}

// Release: the owner ends protection on purpose (unprotect) before it releases output the replica
// lacks; from then on a failover never restores it — also across a restart of the backup — while
// a planned hand-over (whose final stream also ended on purpose) still can.
TEST_F(OwnershipTest, AReleasedReplicaIsNeverFencedForAFailoverButMayBeHandedOver) {
  BrokenStreamFromTheOwner();
  EXPECT_TRUE(absl::IsPermissionDenied(registry_->Release("rig-x", Uuid())));
  EXPECT_TRUE(absl::IsNotFound(registry_->Release("rig-a", "00000000-0000-4000-8000-000000000000")));
  ASSERT_TRUE(registry_->Release("rig-a", Uuid()).ok());
  ASSERT_TRUE(registry_->Release("rig-a", Uuid()).ok()) << "idempotent";
  Restart();
  auto refused = registry_->Fence(Uuid(), /*handed_over=*/false);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_TRUE(core::ReplicationReceiver::Start(TestOpen(), Factory()).ok())
      << "nothing was fenced: its owner may protect it again";
}

TEST_F(OwnershipTest, AStreamItsOwnerClosedReleasesTheReplicaAndABrokenOneDoesNot) {
  BrokenStreamFromTheOwner();
  EXPECT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/false).ok()) << "a failover restores it";
  registry_->Relinquish(Uuid(), "rig-a", /*released=*/false);
  StreamEpochs(TestOpen(), 2);  // closed by its primary
  EXPECT_TRUE(absl::IsFailedPrecondition(registry_->Fence(Uuid(), false).status()));
  auto handed = registry_->Fence(Uuid(), /*handed_over=*/true);
  ASSERT_TRUE(handed.ok()) << handed.status();
  EXPECT_EQ(handed->committed_epoch, 2u);
}

// A switchover away from a replica this host took over relinquishes it first; when the switchover
// fails and the copy resumes here, fencing it again makes its files the running copy's again.
TEST_F(OwnershipTest, AReplicaTakenOverHereIsFencedAgainAfterAFailedSwitchoverAway) {
  BrokenStreamFromTheOwner();
  EXPECT_FALSE(registry_->TakenOverHere(Uuid()));
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/false).ok());
  EXPECT_TRUE(registry_->TakenOverHere(Uuid()));
  registry_->Relinquish(Uuid(), "rig-b", /*released=*/true);
  EXPECT_FALSE(registry_->TakenOverHere(Uuid()));
  ASSERT_TRUE(registry_->Fence(Uuid(), /*handed_over=*/true).ok());
  Restart();
  EXPECT_TRUE(registry_->TakenOverHere(Uuid()));
  EXPECT_TRUE(core::IsTakenOverRefusal(
      core::ReplicationReceiver::Start(From("rig-b"), Factory()).status()));
  EXPECT_FALSE(registry_->TakenOverHere("not-a-uuid"));
}

}  // namespace
}  // namespace novadt::replica
