#include "agent/replica/replica_store.h"

#include <errno.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include "agent/core/replica_basis.h"
#include "tests/support/test_util.h"
#include "tests/unit/replica/replica_test_util.h"

namespace novadt::replica {
namespace {

using ::novadt::testing::ScratchDir;
using ::testing::HasSubstr;

// Fails one chosen step (the n-th call of it) with a chosen status.
class FailStepHook final : public FaultHook {
 public:
  FailStepHook(CommitStep step, Status status, int nth = 1)
      : step_(step), status_(std::move(status)), nth_(nth) {}
  Status Before(CommitStep step) override {
    if (armed_ && step == step_ && ++seen_ == nth_) return status_;
    return absl::OkStatus();
  }
  void Arm() { armed_ = true; }

 private:
  CommitStep step_;
  Status status_;
  int nth_;
  int seen_ = 0;
  bool armed_ = false;
};

class ReplicaStoreTest : public ::testing::Test {
 protected:
  std::string Dir() const { return ReplicaDir(scratch_.path(), "8e4f2c1a-uuid"); }
  std::unique_ptr<ReplicaStore> CreateSeeded(uint64_t up_to, const ReplicaOptions& opt = {}) {
    auto store = ReplicaStore::Create(Dir(), geometry_, opt);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    for (uint64_t n = 1; n <= up_to; ++n) {
      Status st = FeedAndCommit(**store, MakeEpoch(geometry_, n));
      EXPECT_TRUE(st.ok()) << "epoch " << n << ": " << st;
    }
    return *std::move(store);
  }

  ScratchDir scratch_{"nova-dt-replica"};
  ReplicaGeometry geometry_ = SmallGeometry();
  std::vector<Model> models_ = Models(geometry_, 6);
};

TEST_F(ReplicaStoreTest, CreateLaysOutTheDirectoryUnseeded) {
  auto store = ReplicaStore::Create(Dir(), geometry_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 0u);
  EXPECT_EQ((*store)->ram_path(), Dir() + "/ram.img");
  EXPECT_EQ((*store)->disk_path("vda"), Dir() + "/disk-vda.raw");
  EXPECT_EQ((*store)->disk_path("nope"), "");
  EXPECT_EQ(std::filesystem::file_size(Dir() + "/ram.img"), geometry_.ram_size);
  EXPECT_EQ(std::filesystem::file_size(Dir() + "/disk-vdb.raw"), 20u * 1024);
  EXPECT_TRUE(std::filesystem::exists(Dir() + "/epoch.rec"));
  EXPECT_TRUE(ReplicaEquals(**store, models_[0]));

  EXPECT_EQ(ReplicaStore::Create(Dir(), geometry_).status().code(),
            absl::StatusCode::kAlreadyExists);
  ReplicaGeometry bad = geometry_;
  bad.ram_size = 1000;
  EXPECT_EQ(ReplicaStore::Create(scratch_.path() + "/other", bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReplicaStore::Open(scratch_.path() + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ReplicaStoreTest, CommitsEpochsInOrderAndSurvivesReopen) {
  auto store = CreateSeeded(0);
  for (uint64_t n = 1; n <= 5; ++n) {
    ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, n)).ok());
    EXPECT_TRUE(ReplicaEquals(*store, models_[n]));
  }
  // Device-state slots alternate; the committed one is what device_state_path() names.
  EXPECT_THAT(store->device_state_path(), HasSubstr("devstate-1.bin"));
  store.reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->geometry().disks.size(), 2u);
  EXPECT_EQ((*reopened)->geometry().ram_size, geometry_.ram_size);
  EXPECT_TRUE(ReplicaEquals(**reopened, models_[5]));
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.redo"));
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.commit"));
}

TEST_F(ReplicaStoreTest, WrongEpochOrderIsRefused) {
  auto store = CreateSeeded(2);
  for (uint64_t bad : {0, 1, 2, 4, 100}) {
    Status st = store->BeginEpoch(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << bad;
    EXPECT_THAT(st.message(), HasSubstr("wrong epoch order"));
  }
  ASSERT_TRUE(store->BeginEpoch(3).ok());
  EXPECT_EQ(store->BeginEpoch(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->BeginEpoch(4).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
}

TEST_F(ReplicaStoreTest, IncompleteEpochNeverTouchesTheReplica) {
  auto store = CreateSeeded(2);
  const std::string ram_before = Slurp(store->ram_path());
  const std::string vda_before = Slurp(store->disk_path("vda"));
  ASSERT_TRUE(Feed(*store, MakeEpoch(geometry_, 3)).ok());
  EXPECT_EQ(Slurp(store->ram_path()), ram_before);
  EXPECT_EQ(Slurp(store->disk_path("vda")), vda_before);
  EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
  // The primary dies mid-epoch: the backup drops the epoch, the replica stays at 2.
  store->Abort();
  EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.redo"));
  // ... and epoch 3 can be received again.
  ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 3)).ok());
  EXPECT_TRUE(ReplicaEquals(*store, models_[3]));
}

TEST_F(ReplicaStoreTest, AnOpenEpochLostWithTheProcessIsDiscardedOnOpen) {
  ReplicaOptions opt;
  opt.max_buffered_bytes = 4096;  // epoch 3 spills to journal.redo before Commit
  auto store = CreateSeeded(2, opt);
  ASSERT_TRUE(Feed(*store, MakeEpoch(geometry_, 3)).ok());
  EXPECT_TRUE(std::filesystem::exists(Dir() + "/journal.redo"));
  store.reset();  // no Commit, no Abort
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE(ReplicaEquals(**reopened, models_[2]));
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.redo"));
}

TEST_F(ReplicaStoreTest, LaterWritesWinWithinAnEpoch) {
  auto store = CreateSeeded(1);
  ASSERT_TRUE(store->BeginEpoch(2).ok());
  ASSERT_TRUE(store->AddPages({5, 6}, std::string(kPage, 'a') + std::string(kPage, 'b')).ok());
  ASSERT_TRUE(store->AddPages({5}, std::string(kPage, 'c')).ok());
  ASSERT_TRUE(store->AddDiskWrite("vdb", 10, std::string(100, 'x')).ok());
  ASSERT_TRUE(store->AddDiskWrite("vdb", 50, std::string(10, 'y')).ok());
  ASSERT_TRUE(store->SetDeviceState("dev").ok());
  ASSERT_TRUE(store->Commit().ok());
  std::string ram = Slurp(store->ram_path());
  EXPECT_EQ(ram.substr(5 * kPage, kPage), std::string(kPage, 'c'));
  EXPECT_EQ(ram.substr(6 * kPage, kPage), std::string(kPage, 'b'));
  std::string vdb = Slurp(store->disk_path("vdb"));
  EXPECT_EQ(vdb.substr(10, 40), std::string(40, 'x'));
  EXPECT_EQ(vdb.substr(50, 10), std::string(10, 'y'));
  EXPECT_EQ(vdb.substr(60, 50), std::string(50, 'x'));
  EXPECT_EQ(Slurp(store->device_state_path()), "dev");
}

TEST_F(ReplicaStoreTest, BadInputIsRefusedAndLeavesTheEpochUsable) {
  auto store = CreateSeeded(1);
  EXPECT_EQ(store->AddPages({1}, std::string(kPage, 'x')).code(),
            absl::StatusCode::kFailedPrecondition);  // no epoch open
  EXPECT_EQ(store->Commit().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store->BeginEpoch(2).ok());
  EXPECT_EQ(store->AddPages({64}, std::string(kPage, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddPages({1, 2}, std::string(kPage, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddDiskWrite("vdz", 0, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->AddDiskWrite("vdb", 20 * 1024 - 1, "xy").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AddDiskWrite("vdb", ~0ull, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Commit().code(), absl::StatusCode::kFailedPrecondition);  // no devstate
  ASSERT_TRUE(store->SetDeviceState("d").ok());
  EXPECT_EQ(store->SetDeviceState("d").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store->AddDiskWrite("vdb", 20 * 1024 - 1, "z").ok());
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->committed_epoch(), 2u);
  EXPECT_EQ(Slurp(store->disk_path("vdb")).back(), 'z');
}

TEST_F(ReplicaStoreTest, SpillsBeyondTheMemoryBoundAndReportsIt) {
  ReplicaOptions opt;
  opt.max_buffered_bytes = 3 * kPage;
  auto store = CreateSeeded(1, opt);
  EXPECT_EQ(store->stats().max_buffered_bytes, 3 * kPage);
  EXPECT_EQ(store->stats().ram_size, geometry_.ram_size);
  ASSERT_TRUE(store->BeginEpoch(2).ok());
  EXPECT_EQ(store->stats().spilled_bytes, 0u);
  std::vector<uint64_t> all;
  for (uint64_t p = 0; p < 64; ++p) all.push_back(p);
  const std::string ram2 = Fill(2222, 64 * kPage);
  ASSERT_TRUE(store->AddPages(all, ram2).ok());
  const std::string big = Fill(3333, 50000);  // > bound: straight to the journal
  ASSERT_TRUE(store->AddDiskWrite("vda", 1000, big).ok());
  ReplicaStats s = store->stats();
  EXPECT_GE(s.spilled_bytes, 64 * kPage + 50000);
  EXPECT_LE(s.buffered_bytes, 2 * opt.max_buffered_bytes);  // capacity, at most one regrowth
  ASSERT_TRUE(store->SetDeviceState("state-2").ok());
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->stats().buffered_bytes, 0u);
  EXPECT_EQ(store->stats().spilled_bytes, 0u);
  EXPECT_EQ(Slurp(store->ram_path()), ram2);
  EXPECT_EQ(Slurp(store->disk_path("vda")).substr(1000, big.size()), big);
}

TEST_F(ReplicaStoreTest, BuffersSmallEpochsInMemory) {
  auto store = CreateSeeded(1);
  ASSERT_TRUE(Feed(*store, MakeEpoch(geometry_, 2)).ok());
  EXPECT_EQ(store->stats().spilled_bytes, 0u);
  EXPECT_GT(store->stats().buffered_bytes, 9 * kPage);
  EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.redo"));
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
}

TEST_F(ReplicaStoreTest, SeedsWholeDisksInChunks) {
  ReplicaGeometry g;
  g.ram_size = 256 * kPage;
  g.disks = {{"vda", 8 << 20}};
  auto store = ReplicaStore::Create(Dir(), g);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string image = Fill(77, 8 << 20);
  ASSERT_TRUE((*store)->BeginEpoch(1).ok());
  for (uint64_t off = 0; off < image.size(); off += 1 << 20) {
    ASSERT_TRUE(
        (*store)->AddDiskWrite("vda", off, std::string_view(image).substr(off, 1 << 20)).ok());
  }
  ASSERT_TRUE((*store)->SetDeviceState("seed").ok());
  ASSERT_TRUE((*store)->Commit().ok());
  EXPECT_EQ((*store)->stats().spilled_bytes, 0u);
  store->reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->committed_epoch(), 1u);
  EXPECT_TRUE(Slurp((*reopened)->disk_path("vda")) == image);
}

TEST_F(ReplicaStoreTest, InjectedDiskFullBeforeTheMarkKeepsThePreviousEpoch) {
  for (CommitStep step :
       {CommitStep::kJournalWrite, CommitStep::kJournalSync, CommitStep::kDeviceStateSync,
        CommitStep::kMarkWrite, CommitStep::kMarkRename, CommitStep::kMarkDirSync}) {
    SCOPED_TRACE(std::string(CommitStepName(step)));
    ASSERT_TRUE(ReplicaStore::Destroy(Dir()).ok());
    FailStepHook hook(step, absl::ResourceExhaustedError("injected: No space left on device"));
    ReplicaOptions opt;
    opt.fault_hook = &hook;
    auto store = CreateSeeded(2, opt);
    hook.Arm();
    Status st = FeedAndCommit(*store, MakeEpoch(geometry_, 3));
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
    EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
    EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.commit"));
    // The store is usable: the epoch can be resent.
    ASSERT_TRUE(FeedAndCommit(*store, MakeEpoch(geometry_, 3)).ok());
    EXPECT_TRUE(ReplicaEquals(*store, models_[3]));
    store.reset();
    auto reopened = ReplicaStore::Open(Dir());
    ASSERT_TRUE(reopened.ok()) << reopened.status();
    EXPECT_TRUE(ReplicaEquals(**reopened, models_[3]));
  }
}

TEST_F(ReplicaStoreTest, FailureWhileApplyingBreaksTheStoreUntilReopenFinishesTheCommit) {
  FailStepHook hook(CommitStep::kApplyRecord, absl::InternalError("injected: EIO"), 2);
  ReplicaOptions opt;
  opt.fault_hook = &hook;
  auto store = CreateSeeded(2, opt);
  hook.Arm();
  EXPECT_EQ(FeedAndCommit(*store, MakeEpoch(geometry_, 3)).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(store->BeginEpoch(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->committed_epoch(), 2u);
  store.reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE(ReplicaEquals(**reopened, models_[3]));
}

// Real ENOSPC: a 1 MiB tmpfs holds the preallocated replica but not a large epoch's journal.
TEST_F(ReplicaStoreTest, RealDiskFullIsResourceExhaustedAndKeepsThePreviousEpoch) {
  std::string mnt = scratch_.path() + "/tmpfs";
  std::filesystem::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
    if (errno == EPERM) GTEST_SKIP() << "cannot mount a tmpfs (not root); injected ENOSPC covered";
    FAIL() << "mount tmpfs: " << std::strerror(errno);
  }
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  ReplicaGeometry g;
  g.ram_size = 96 * kPage;  // 384 KiB
  g.disks = {{"vda", 128 * 1024}};
  ReplicaOptions opt;
  opt.max_buffered_bytes = 16 * kPage;
  auto store = ReplicaStore::Create(mnt + "/r", g, opt);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<uint64_t> all;
  for (uint64_t p = 0; p < 96; ++p) all.push_back(p);
  const std::string ram1 = Fill(1, 96 * kPage), ram2 = Fill(2, 96 * kPage);
  ASSERT_TRUE((*store)->BeginEpoch(1).ok());
  ASSERT_TRUE((*store)->AddPages(all, ram1).ok());
  ASSERT_TRUE((*store)->SetDeviceState("one").ok());
  ASSERT_TRUE((*store)->Commit().ok());
  // Epoch 2 rewrites all RAM twice: ~800 KiB of journal does not fit.
  Status st = (*store)->BeginEpoch(2);
  for (int i = 0; i < 2 && st.ok(); ++i) st = (*store)->AddPages(all, ram2);
  if (st.ok()) st = (*store)->SetDeviceState("two");
  if (st.ok()) st = (*store)->Commit();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ((*store)->committed_epoch(), 1u);
  EXPECT_EQ(Slurp((*store)->ram_path()), ram1);
  EXPECT_FALSE(std::filesystem::exists(mnt + "/r/journal.redo"));
  // Space is back: a small epoch commits.
  ASSERT_TRUE((*store)->BeginEpoch(2).ok());
  ASSERT_TRUE((*store)->AddPages({3}, ram2.substr(3 * kPage, kPage)).ok());
  ASSERT_TRUE((*store)->SetDeviceState("two").ok());
  ASSERT_TRUE((*store)->Commit().ok());
  store->reset();
  auto reopened = ReplicaStore::Open(mnt + "/r");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->committed_epoch(), 2u);
  std::string expect = ram1;
  expect.replace(3 * kPage, kPage, ram2.substr(3 * kPage, kPage));
  EXPECT_EQ(Slurp((*reopened)->ram_path()), expect);
  EXPECT_EQ(Slurp((*reopened)->device_state_path()), "two");
}

TEST_F(ReplicaStoreTest, UnseedKeepsTheBytesAndASeedOverThemSendsOnlyWhatDiffers) {
  auto store = CreateSeeded(3);
  ASSERT_TRUE(store);
  const Model& old = models_[3];
  ASSERT_TRUE(store->Unseed().ok());
  EXPECT_EQ(store->committed_epoch(), 0u);
  EXPECT_TRUE(Slurp(store->ram_path()) == old.ram);
  for (const auto& [name, bytes] : old.disks) EXPECT_TRUE(Slurp(store->disk_path(name)) == bytes);
  EXPECT_TRUE(store->Unseed().ok()) << "already not seeded: nothing to do";
  EXPECT_EQ(store->committed_epoch(), 0u);

  // Durable: a reopened store is not seeded either, and its files still hold the bytes.
  store.reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  store = *std::move(reopened);
  EXPECT_EQ(store->committed_epoch(), 0u);
  EXPECT_TRUE(Slurp(store->ram_path()) == old.ram);
  EXPECT_TRUE(Slurp(store->disk_path("vda")) == old.disks.at("vda"));
  EXPECT_EQ(store->BeginEpoch(4).code(), absl::StatusCode::kFailedPrecondition);

  // The seed (epoch 1) carries only a few pages and one disk write.
  const std::string pages = Fill(4242, 2 * kPage);
  const std::string write = Fill(4343, 3000);
  ASSERT_TRUE(store->BeginEpoch(1).ok());
  ASSERT_TRUE(store->AddPages({3, 60}, pages).ok());
  ASSERT_TRUE(store->AddDiskWrite("vdb", 1234, write).ok());
  ASSERT_TRUE(store->SetDeviceState("reseeded").ok());
  ASSERT_TRUE(store->Commit().ok());
  Model m = old;
  m.epoch = 1;
  m.ram.replace(3 * kPage, kPage, pages.substr(0, kPage));
  m.ram.replace(60 * kPage, kPage, pages.substr(kPage));
  m.disks["vdb"].replace(1234, write.size(), write);
  m.devstate = "reseeded";
  EXPECT_TRUE(ReplicaEquals(*store, m));
  store.reset();
  reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_TRUE(ReplicaEquals(**reopened, m));
  // Later epochs go through the journal as usual.
  ASSERT_TRUE((*reopened)->BeginEpoch(2).ok());
  ASSERT_TRUE((*reopened)->AddPages({3}, std::string(kPage, 'q')).ok());
  ASSERT_TRUE((*reopened)->SetDeviceState("two").ok());
  ASSERT_TRUE((*reopened)->Commit().ok());
  m.epoch = 2;
  m.ram.replace(3 * kPage, kPage, std::string(kPage, 'q'));
  m.devstate = "two";
  EXPECT_TRUE(ReplicaEquals(**reopened, m));
}

TEST_F(ReplicaStoreTest, UnseedWithAnEpochOpenIsRefused) {
  auto store = CreateSeeded(2);
  ASSERT_TRUE(store);
  ASSERT_TRUE(Feed(*store, MakeEpoch(geometry_, 3)).ok());
  EXPECT_EQ(store->Unseed().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ReplicaEquals(*store, models_[2]));
  store.reset();
  auto reopened = ReplicaStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->committed_epoch(), 2u) << "a refused Unseed is not durable either";
  // Once the epoch is dropped it may.
  ASSERT_TRUE(Feed(**reopened, MakeEpoch(geometry_, 3)).ok());
  (*reopened)->Abort();
  EXPECT_TRUE((*reopened)->Unseed().ok());
  EXPECT_EQ((*reopened)->committed_epoch(), 0u);
  ASSERT_TRUE((*reopened)->Destroy().ok());
  EXPECT_EQ((*reopened)->Unseed().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ReplicaStoreTest, HashReplicaHashesEveryPageAndEveryDiskBlock) {
  ReplicaGeometry g;
  g.ram_size = 20 * kPage;
  // vda: more than one read chunk (1 MiB) and a short last block; vdb: one short block.
  g.disks = {{"vda", (1 << 20) + 70000}, {"vdb", 20 * 1024}};
  auto created = ReplicaStore::Create(Dir(), g);
  ASSERT_TRUE(created.ok()) << created.status();
  ReplicaStore& store = **created;

  // Not seeded yet: every hash is of zeroes.
  auto zero = HashReplica(store);
  ASSERT_TRUE(zero.ok()) << zero.status();
  ASSERT_EQ(zero->ram_pages.size(), 20u);
  for (const auto& h : zero->ram_pages) EXPECT_TRUE(h == core::HashZeroes(kPage));
  ASSERT_EQ(zero->disk_blocks.at("vda").size(), 18u);
  EXPECT_TRUE(zero->disk_blocks.at("vda").back() == core::HashZeroes(70000 - 65536));

  std::vector<uint64_t> all;
  for (uint64_t p = 0; p < 20; ++p) all.push_back(p);
  const std::string ram = Fill(11, g.ram_size);
  const std::string vda = Fill(12, g.disks[0].size);
  const std::string vdb = Fill(13, g.disks[1].size);
  ASSERT_TRUE(store.BeginEpoch(1).ok());
  ASSERT_TRUE(store.AddPages(all, ram).ok());
  ASSERT_TRUE(store.AddDiskWrite("vda", 0, vda).ok());
  ASSERT_TRUE(store.AddDiskWrite("vdb", 0, vdb).ok());
  ASSERT_TRUE(store.SetDeviceState("s").ok());
  ASSERT_TRUE(store.Commit().ok());

  auto basis = HashReplica(store);
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_EQ(basis->id, 0u) << "the caller names it";
  EXPECT_EQ(basis->ram_size_bytes, g.ram_size);
  const std::vector<core::DiskGeometry> disks = {{"vda", g.disks[0].size},
                                                 {"vdb", g.disks[1].size}};
  EXPECT_EQ(basis->disks, disks);
  EXPECT_TRUE(basis->Fits(g.ram_size, disks));
  ASSERT_EQ(basis->ram_pages.size(), 20u);
  for (uint64_t p = 0; p < 20; ++p) {
    EXPECT_TRUE(basis->ram_pages[p] ==
                core::HashContent(std::string_view(ram).substr(p * kPage, kPage)))
        << "page " << p;
  }
  ASSERT_EQ(basis->disk_blocks.size(), 2u);
  for (const auto& [name, image] : std::map<std::string, std::string>{{"vda", vda}, {"vdb", vdb}}) {
    const auto& blocks = basis->disk_blocks.at(name);
    ASSERT_EQ(blocks.size(), core::BasisBlockCount(image.size())) << name;
    for (uint64_t b = 0; b < blocks.size(); ++b) {
      EXPECT_TRUE(blocks[b] == core::HashContent(std::string_view(image).substr(
                                   b * core::kBasisBlockSize, core::kBasisBlockSize)))
          << name << " block " << b;
    }
  }
  EXPECT_EQ(basis->disk_blocks.at("vda").size(), 18u);
  EXPECT_EQ(basis->disk_blocks.at("vdb").size(), 1u);
  basis->id = 1;
  EXPECT_TRUE(basis->Validate().ok()) << basis->Validate();
  EXPECT_FALSE(basis->ram_pages[0] == zero->ram_pages[0]);
}

// `bytes` cut or zero-padded to `size`: what a part of a basis holds of a source.
std::string Fitted(std::string bytes, uint64_t size) {
  bytes.resize(size, '\0');
  return bytes;
}

// Checks `basis` hashes exactly `ram` per page and `disks` per basis block.
::testing::AssertionResult HashesOf(const core::ReplicaBasis& basis, const std::string& ram,
                                    const std::map<std::string, std::string>& disks) {
  if (basis.ram_size_bytes != ram.size() || basis.ram_pages.size() != ram.size() / kPage) {
    return ::testing::AssertionFailure() << "RAM size " << basis.ram_size_bytes;
  }
  for (uint64_t p = 0; p < basis.ram_pages.size(); ++p) {
    if (!(basis.ram_pages[p] == core::HashContent(std::string_view(ram).substr(p * kPage, kPage)))) {
      return ::testing::AssertionFailure() << "RAM page " << p;
    }
  }
  if (basis.disk_blocks.size() != disks.size()) {
    return ::testing::AssertionFailure() << basis.disk_blocks.size() << " disks hashed";
  }
  for (const auto& [name, image] : disks) {
    auto it = basis.disk_blocks.find(name);
    if (it == basis.disk_blocks.end()) return ::testing::AssertionFailure() << "no disk " << name;
    if (it->second.size() != core::BasisBlockCount(image.size())) {
      return ::testing::AssertionFailure() << name << ": " << it->second.size() << " blocks";
    }
    for (uint64_t b = 0; b < it->second.size(); ++b) {
      if (!(it->second[b] == core::HashContent(std::string_view(image).substr(
                                 b * core::kBasisBlockSize, core::kBasisBlockSize)))) {
        return ::testing::AssertionFailure() << name << " block " << b;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

class CreateBasisTest : public ReplicaStoreTest {
 protected:
  static constexpr uint64_t kMiB = 1 << 20;
  CreateBasisTest() {
    geometry_.ram_size = 3 * kMiB + 8 * kPage;
    geometry_.disks = {{"vda", 2 * kMiB + 70000}, {"vdb", 20 * 1024}, {"vdc", 100000}};
    // RAM: data, an all-zero MiB, data; shorter than the guest's RAM (not a whole MiB).
    ram_ = Fill(1, kMiB) + std::string(kMiB, '\0') + Fill(2, kMiB / 2 + 100);
    // vda: an all-zero MiB, data, zeroes, data; longer than the disk (cut).
    vda_ = std::string(kMiB, '\0') + Fill(3, kMiB) + std::string(20000, '\0') +
           Fill(4, kMiB + 12345);
    ram_file_ = sources_.Write("ram", ram_);
    vda_file_ = sources_.Write("vda.raw", vda_);
  }

  ScratchDir sources_{"nova-dt-basis-src"};
  std::string ram_, vda_, ram_file_, vda_file_;
};

TEST_F(CreateBasisTest, TheBasisHoldsTheSourceBytesAndOpensNotSeeded) {
  ASSERT_GT(geometry_.ram_size, ram_.size());
  ASSERT_LT(geometry_.disks[0].size, vda_.size());
  // vdb has no source at all, vdc an empty path: both stay zero.
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, ram_file_,
                                        {{"vda", vda_file_}, {"vdc", ""}})
                  .ok());
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 0u);
  const ReplicaGeometry& g = (*store)->geometry();
  EXPECT_EQ(g.ram_size, geometry_.ram_size);
  ASSERT_EQ(g.disks.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(g.disks[i].name, geometry_.disks[i].name);
    EXPECT_EQ(g.disks[i].size, geometry_.disks[i].size);
  }

  const std::string ram = Fitted(ram_, geometry_.ram_size);
  const std::string vda = Fitted(vda_, geometry_.disks[0].size);
  const std::string ram_img = Slurp((*store)->ram_path());
  ASSERT_EQ(ram_img.size(), geometry_.ram_size);
  EXPECT_TRUE(ram_img.substr(0, ram_.size()) == ram_) << "the source's bytes";
  EXPECT_TRUE(ram_img.substr(ram_.size()) == std::string(geometry_.ram_size - ram_.size(), '\0'))
      << "zero beyond the shorter source";
  EXPECT_TRUE(ram_img == ram);
  const std::string vda_img = Slurp((*store)->disk_path("vda"));
  ASSERT_EQ(vda_img.size(), geometry_.disks[0].size) << "the longer source is cut";
  EXPECT_TRUE(vda_img == vda);
  EXPECT_TRUE(Slurp((*store)->disk_path("vdb")) == std::string(20 * 1024, '\0'));
  EXPECT_TRUE(Slurp((*store)->disk_path("vdc")) == std::string(100000, '\0'));
  // The sources are left as they were.
  EXPECT_TRUE(Slurp(ram_file_) == ram_);
  EXPECT_TRUE(Slurp(vda_file_) == vda_);

  // As a basis: its hashes are those of the source bytes.
  auto basis = HashReplica(**store);
  ASSERT_TRUE(basis.ok()) << basis.status();
  EXPECT_TRUE(HashesOf(*basis, ram,
                       {{"vda", vda},
                        {"vdb", std::string(20 * 1024, '\0')},
                        {"vdc", std::string(100000, '\0')}}));
  EXPECT_TRUE(basis->ram_pages[256 + 3] == core::HashZeroes(kPage)) << "the zero MiB";
  EXPECT_TRUE(basis->disk_blocks.at("vda")[0] == core::HashZeroes(core::kBasisBlockSize));

  // It is a replica like any other: a seed over it (Unseed, epoch 1) keeps the other bytes.
  ASSERT_TRUE((*store)->Unseed().ok());
  ASSERT_TRUE((*store)->BeginEpoch(1).ok());
  ASSERT_TRUE((*store)->AddPages({1}, std::string(kPage, 'p')).ok());
  ASSERT_TRUE((*store)->AddDiskWrite("vda", 5, "written").ok());
  ASSERT_TRUE((*store)->SetDeviceState("seeded over the basis").ok());
  ASSERT_TRUE((*store)->Commit().ok());
  Model m;
  m.epoch = 1;
  m.ram = ram;
  m.ram.replace(kPage, kPage, std::string(kPage, 'p'));
  m.disks["vda"] = vda;
  m.disks["vda"].replace(5, 7, "written");
  m.disks["vdb"] = std::string(20 * 1024, '\0');
  m.disks["vdc"] = std::string(100000, '\0');
  m.devstate = "seeded over the basis";
  EXPECT_TRUE(ReplicaEquals(**store, m));
}

TEST_F(CreateBasisTest, NoSourcesLeaveEveryPartZero) {
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, "", {}).ok());
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->committed_epoch(), 0u);
  EXPECT_TRUE(ReplicaEquals(**store, EmptyModel(geometry_)));

  // Only a disk, no RAM file (the copy's QEMU was gone already).
  ASSERT_TRUE((*store)->Destroy().ok());
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, "", {{"vda", vda_file_}}).ok());
  store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  Model m = EmptyModel(geometry_);
  m.disks["vda"] = Fitted(vda_, geometry_.disks[0].size);
  EXPECT_TRUE(ReplicaEquals(**store, m));
}

TEST_F(CreateBasisTest, AShortSourceLeavesTheRestZeroAndALongOneIsCut) {
  // A source of 1 byte, one of exactly the part's size plus one, one empty file.
  const std::string one = sources_.Write("one", "\x7f");
  const std::string empty = sources_.Write("empty", "");
  const std::string plus_one = sources_.Write("plus-one", Fill(9, 20 * 1024 + 1));
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, one,
                                        {{"vda", empty}, {"vdb", plus_one}, {"vdc", one}})
                  .ok());
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  Model m = EmptyModel(geometry_);
  m.ram[0] = '\x7f';
  m.disks["vdb"] = Fill(9, 20 * 1024);
  m.disks["vdc"][0] = '\x7f';
  EXPECT_TRUE(ReplicaEquals(**store, m));
}

TEST_F(CreateBasisTest, AnExistingReplicaIsAlreadyExistsAndUntouched) {
  geometry_ = SmallGeometry();
  auto seeded = CreateSeeded(2);
  ASSERT_TRUE(seeded);
  seeded.reset();
  Status st = ReplicaStore::CreateBasis(Dir(), geometry_, ram_file_, {{"vda", vda_file_}});
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists) << st;
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(ReplicaEquals(**store, models_[2]));
  store->reset();

  // An existing basis too.
  ASSERT_TRUE(ReplicaStore::Destroy(Dir()).ok());
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, "", {{"vdb", ram_file_}}).ok());
  st = ReplicaStore::CreateBasis(Dir(), geometry_, ram_file_, {{"vda", vda_file_}});
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists) << st;
  store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  Model m = EmptyModel(geometry_);
  m.disks["vdb"] = ram_.substr(0, 20 * 1024);
  EXPECT_TRUE(ReplicaEquals(**store, m));
}

TEST_F(CreateBasisTest, AMissingSourceFailsAndLeavesNoDirectory) {
  const std::string missing = sources_.path() + "/no-such-file";
  Status st = ReplicaStore::CreateBasis(Dir(), geometry_, missing, {{"vda", vda_file_}});
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("no-such-file")) << st;
  EXPECT_FALSE(std::filesystem::exists(Dir()));

  // A missing disk source, after the RAM was copied.
  st = ReplicaStore::CreateBasis(Dir(), geometry_, ram_file_, {{"vda", vda_file_}, {"vdc", missing}});
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(std::filesystem::exists(Dir()));
  EXPECT_EQ(ReplicaStore::Open(Dir()).status().code(), absl::StatusCode::kNotFound);

  // A bad geometry is refused before anything is made.
  ReplicaGeometry bad = geometry_;
  bad.ram_size = 1000;
  EXPECT_EQ(ReplicaStore::CreateBasis(Dir(), bad, ram_file_, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(Dir()));

  // Nothing is in the way of a later basis.
  ASSERT_TRUE(ReplicaStore::CreateBasis(Dir(), geometry_, ram_file_, {{"vda", vda_file_}}).ok());
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE(Slurp((*store)->ram_path()) == Fitted(ram_, geometry_.ram_size));
}

TEST_F(ReplicaStoreTest, DestroyRemovesTheReplicaButNotForeignFiles) {
  auto store = CreateSeeded(2);
  ASSERT_TRUE(store->Destroy().ok());
  EXPECT_FALSE(std::filesystem::exists(Dir()));
  EXPECT_EQ(store->BeginEpoch(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ReplicaStore::Destroy(Dir()).ok());  // idempotent

  store = CreateSeeded(1);
  scratch_.Write("8e4f2c1a-uuid/precious.txt", "keep me");
  EXPECT_EQ(ReplicaStore::Destroy(Dir()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(std::filesystem::exists(Dir() + "/precious.txt"));
  EXPECT_TRUE(std::filesystem::exists(Dir() + "/epoch.rec"));
}

}  // namespace
}  // namespace novadt::replica
