// Invariant 2 under process death: a forked child runs a commit and _exit()s at the k-th fault
// hook call (every numbered step of Commit(), spills included); the parent then Open()s the
// replica and checks it is exactly epoch N or exactly epoch N+1, for every k until the child
// completes. Corruption of the record, the commit mark and the journal is checked the same way:
// Open() recovers to an exact epoch or fails with DataLoss, never returns a mix.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "agent/replica/replica_store.h"
#include "tests/support/test_util.h"
#include "tests/unit/replica/replica_test_util.h"

namespace novadt::replica {
namespace {

using ::novadt::testing::ScratchDir;

constexpr int kCrashExit = 77;

// Kills the process at the k-th call: no destructors, no flushing of user-space state.
class CrashAtHook final : public FaultHook {
 public:
  explicit CrashAtHook(int k, int report_fd = -1) : k_(k), report_fd_(report_fd) {}
  Status Before(CommitStep step) override {
    if (++calls_ == k_) {
      if (report_fd_ >= 0) {
        int s = static_cast<int>(step);
        (void)!::write(report_fd_, &s, sizeof s);
      }
      ::_exit(kCrashExit);
    }
    return absl::OkStatus();
  }

 private:
  int k_;
  int report_fd_;
  int calls_ = 0;
};

struct ChildResult {
  int exit_code = -1;
  int crashed_step = 0;  // CommitStep value the child died before; 0 when it did not crash
};

// Runs `body` in a forked child; the child exits 0 when body returns true.
template <typename Body>
ChildResult RunInChild(Body body) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    bool ok = body(pipefd[1]);
    ::_exit(ok ? 0 : 1);
  }
  ::close(pipefd[1]);
  ChildResult r;
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  int step = 0;
  if (::read(pipefd[0], &step, sizeof step) == sizeof step) r.crashed_step = step;
  ::close(pipefd[0]);
  return r;
}

class ReplicaCrashTest : public ::testing::Test {
 protected:
  std::string Dir() const { return scratch_.path() + "/replica"; }

  // A fresh replica at epoch `n` (in this process).
  void Prepare(uint64_t n, const ReplicaOptions& opt) {
    ASSERT_TRUE(ReplicaStore::Destroy(Dir()).ok());
    auto store = ReplicaStore::Create(Dir(), geometry_, opt);
    ASSERT_TRUE(store.ok()) << store.status();
    for (uint64_t i = 1; i <= n; ++i) {
      ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, i)).ok());
    }
  }

  // In a child: opens the replica and commits epoch `n` with a crash at hook call k.
  ChildResult CommitWithCrashAt(uint64_t n, int k, ReplicaOptions opt) {
    return RunInChild([&](int report_fd) {
      CrashAtHook hook(k, report_fd);
      opt.fault_hook = &hook;
      auto store = ReplicaStore::Open(Dir(), opt);
      if (!store.ok()) return false;
      return FeedAndCommit(**store, MakeEpoch(geometry_, n)).ok();
    });
  }

  // Opens the replica and checks it is exactly epoch n-1 or exactly n; returns the epoch.
  uint64_t ExpectExactlyOneOf(uint64_t n, const ReplicaOptions& opt = {}) {
    auto store = ReplicaStore::Open(Dir(), opt);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return ~0ull;
    uint64_t e = (*store)->committed_epoch();
    EXPECT_TRUE(e == n - 1 || e == n) << "epoch " << e;
    if (e == 0) return e;  // unseeded: contents are meaningless by design
    EXPECT_TRUE(ReplicaEquals(**store, models_[e]));
    EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.commit"));
    EXPECT_FALSE(std::filesystem::exists(Dir() + "/journal.redo"));
    return e;
  }

  // The crash sweep: every k until the child completes the commit.
  void SweepCommit(uint64_t n, const ReplicaOptions& opt, std::set<int>* steps_hit,
                   int* crash_points) {
    std::set<uint64_t> outcomes;
    for (int k = 1;; ++k) {
      SCOPED_TRACE(::testing::Message() << "crash at hook call " << k);
      Prepare(n - 1, opt);
      if (HasFatalFailure()) return;
      ChildResult r = CommitWithCrashAt(n, k, opt);
      if (r.exit_code == 0) {
        EXPECT_EQ(ExpectExactlyOneOf(n, opt), n);
        break;
      }
      ASSERT_EQ(r.exit_code, kCrashExit) << "child failed without crashing";
      steps_hit->insert(r.crashed_step);
      ++*crash_points;
      outcomes.insert(ExpectExactlyOneOf(n, opt));
      ASSERT_LT(k, 10000) << "commit never completes";
    }
    // Both outcomes must really occur, or the sweep proves nothing.
    EXPECT_EQ(outcomes, (std::set<uint64_t>{n - 1, n}));
  }

  ScratchDir scratch_{"nova-dt-replica-crash"};
  ReplicaGeometry geometry_ = SmallGeometry();
  std::vector<Model> models_ = Models(geometry_, 6);
};

TEST_F(ReplicaCrashTest, KillAtEveryStepOfAnInMemoryCommit) {
  std::set<int> steps;
  int points = 0;
  SweepCommit(3, ReplicaOptions{}, &steps, &points);
  // Every step of the journaled commit was a crash point.
  for (int s = static_cast<int>(CommitStep::kJournalWrite);
       s <= static_cast<int>(CommitStep::kCleanupDirSync); ++s) {
    EXPECT_TRUE(steps.count(s)) << CommitStepName(static_cast<CommitStep>(s));
  }
  RecordProperty("crash_points", points);
  std::cout << "in-memory commit: " << points << " crash points\n";
}

TEST_F(ReplicaCrashTest, KillAtEveryStepOfASpilledCommit) {
  ReplicaOptions opt;
  opt.max_buffered_bytes = 2 * kPage;  // every batch spills; apply reads journal.redo
  std::set<int> steps;
  int points = 0;
  SweepCommit(4, opt, &steps, &points);
  EXPECT_GT(points, 20);
  std::cout << "spilled commit: " << points << " crash points\n";
}

TEST_F(ReplicaCrashTest, KillAtEveryStepOfTheSeed) {
  std::set<int> steps;
  int points = 0;
  SweepCommit(1, ReplicaOptions{}, &steps, &points);
  EXPECT_TRUE(steps.count(static_cast<int>(CommitStep::kRecordRename)));
  std::cout << "seed: " << points << " crash points\n";
}

TEST_F(ReplicaCrashTest, KillDuringRecoveryToo) {
  // First death while applying epoch 3 in place, then a death at every step of the recovery.
  int apply_calls = 0;
  {
    Prepare(2, {});
    // Hook calls before the second record is applied: journal write, sync, devstate sync,
    // mark write/rename/dirsync, first apply = 7; crash at the second apply (call 8).
    ChildResult r = CommitWithCrashAt(3, 8, {});
    ASSERT_EQ(r.exit_code, kCrashExit);
    ASSERT_EQ(r.crashed_step, static_cast<int>(CommitStep::kApplyRecord));
  }
  const std::string ram = Slurp(Dir() + "/ram.img");
  const std::string vda = Slurp(Dir() + "/disk-vda.raw");
  const std::string mark = Slurp(Dir() + "/journal.commit");
  const std::string journal = Slurp(Dir() + "/journal.redo");
  const std::string devstate0 = Slurp(Dir() + "/devstate-0.bin");
  const std::string devstate1 = Slurp(Dir() + "/devstate-1.bin");
  const std::string record = Slurp(Dir() + "/epoch.rec");
  // The replica files really are a mix now: only the journal makes them epoch 3.
  EXPECT_NE(ram, models_[2].ram);
  EXPECT_NE(ram, models_[3].ram);
  for (int k = 1;; ++k) {
    SCOPED_TRACE(::testing::Message() << "recovery crash at hook call " << k);
    // Restore the crashed state of the first death.
    WriteBytes(Dir() + "/ram.img", ram);
    WriteBytes(Dir() + "/disk-vda.raw", vda);
    WriteBytes(Dir() + "/journal.commit", mark);
    WriteBytes(Dir() + "/journal.redo", journal);
    WriteBytes(Dir() + "/devstate-0.bin", devstate0);
    WriteBytes(Dir() + "/devstate-1.bin", devstate1);
    WriteBytes(Dir() + "/epoch.rec", record);
    ChildResult r = RunInChild([&](int fd) {
      CrashAtHook hook(k, fd);
      ReplicaOptions opt;
      opt.fault_hook = &hook;
      return ReplicaStore::Open(Dir(), opt).ok();
    });
    ASSERT_EQ(ExpectExactlyOneOf(3), 3u) << "a valid commit mark must always win";
    ++apply_calls;
    if (r.exit_code == 0) break;
    ASSERT_EQ(r.exit_code, kCrashExit);
    ASSERT_LT(k, 1000);
  }
  EXPECT_GT(apply_calls, 5);
  std::cout << "recovery: " << apply_calls << " crash points\n";
}

// --- boot files ------------------------------------------------------------------------------
// A seed sends the boot files before its first epoch (replica_store.h, "Boot files"). Process
// death at every step of writing them and of the seed after them: the replica is either not
// seeded (never restored) or seeded with exactly the stream's boot files — never seeded with
// boot files missing, half-written or of another stream.

class ReplicaBootFilesCrashTest : public ReplicaCrashTest {
 protected:
  using Files = std::vector<std::pair<std::string, std::string>>;

  // The replica reopened after a death: its epoch, and its boot files checked.
  uint64_t ExpectSeededWith(const std::set<uint64_t>& epochs,
                            const std::map<uint64_t, Files>& files_of) {
    auto store = ReplicaStore::Open(Dir());
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return ~0ull;
    const uint64_t e = (*store)->committed_epoch();
    EXPECT_TRUE(epochs.count(e)) << "epoch " << e;
    for (const auto& entry : std::filesystem::directory_iterator(Dir())) {
      EXPECT_FALSE(entry.path().string().ends_with(".tmp")) << entry.path() << " left";
    }
    if (e == 0) return e;  // not seeded: never restored, whatever its boot files
    EXPECT_TRUE(ReplicaEquals(**store, models_[e]));
    auto files = (*store)->BootFiles();
    EXPECT_TRUE(files.ok()) << "epoch " << e << ": " << files.status();
    if (!files.ok()) return e;
    const Files& want = files_of.at(e);
    EXPECT_EQ(files->size(), want.size()) << "epoch " << e;
    for (const auto& [name, bytes] : want) {
      EXPECT_TRUE(files->count(name)) << name;
      if (files->count(name)) {
        EXPECT_EQ(Slurp(files->at(name)), bytes) << name;
      }
    }
    return e;
  }

  const Files kernel_and_ramdisk_ = {{"kernel", Fill(11, 3 * 4096 + 5)},
                                     {"ramdisk", Fill(12, 900)}};
  const Files other_kernel_ = {{"kernel", Fill(13, 2 * 4096)}};
};

TEST_F(ReplicaBootFilesCrashTest, KillAtEveryStepOfTheBootFilesAndTheSeedAfterThem) {
  std::set<int> steps;
  std::set<uint64_t> outcomes;
  int points = 0;
  for (int k = 1;; ++k) {
    SCOPED_TRACE(::testing::Message() << "crash at hook call " << k);
    Prepare(0, {});
    ChildResult r = RunInChild([&](int report_fd) {
      CrashAtHook hook(k, report_fd);
      ReplicaOptions opt;
      opt.fault_hook = &hook;
      auto store = ReplicaStore::Open(Dir(), opt);
      return store.ok() && GiveBootFiles(**store, kernel_and_ramdisk_).ok() &&
             FeedAndCommit(**store, MakeEpoch(geometry_, 1)).ok();
    });
    const uint64_t e = ExpectSeededWith({0, 1}, {{1, kernel_and_ramdisk_}});
    if (r.exit_code == 0) {
      EXPECT_EQ(e, 1u);
      break;
    }
    ASSERT_EQ(r.exit_code, kCrashExit) << "child failed without crashing";
    steps.insert(r.crashed_step);
    outcomes.insert(e);
    ++points;
    ASSERT_LT(k, 10000);
  }
  EXPECT_EQ(outcomes, (std::set<uint64_t>{0, 1}));
  for (int s = static_cast<int>(CommitStep::kBootFileWrite);
       s <= static_cast<int>(CommitStep::kBootRecordDirSync); ++s) {
    EXPECT_TRUE(steps.count(s)) << CommitStepName(static_cast<CommitStep>(s));
  }
  std::cout << "boot files + seed: " << points << " crash points\n";
}

// A re-seed over the replica (a stream naming its basis: Unseed, the new stream's boot files,
// epoch 1) killed at every step: the replica is the old seeded one with the old boot files, not
// seeded, or the new one with the new boot files.
TEST_F(ReplicaBootFilesCrashTest, KillAtEveryStepOfAReseedThatReplacesTheBootFiles) {
  std::set<uint64_t> outcomes;
  for (int k = 1;; ++k) {
    SCOPED_TRACE(::testing::Message() << "crash at hook call " << k);
    Prepare(0, {});
    {
      auto store = ReplicaStore::Open(Dir());
      ASSERT_TRUE(store.ok());
      ASSERT_TRUE(GiveBootFiles(**store, kernel_and_ramdisk_).ok());
      for (uint64_t n = 1; n <= 2; ++n) {
        ASSERT_TRUE(FeedAndCommit(**store, MakeEpoch(geometry_, n)).ok());
      }
    }
    ChildResult r = RunInChild([&](int report_fd) {
      CrashAtHook hook(k, report_fd);
      ReplicaOptions opt;
      opt.fault_hook = &hook;
      auto store = ReplicaStore::Open(Dir(), opt);
      return store.ok() && (*store)->Unseed().ok() && GiveBootFiles(**store, other_kernel_).ok() &&
             FeedAndCommit(**store, MakeEpoch(geometry_, 1)).ok();
    });
    // Epoch 1 of the re-seed is a full seed (MakeEpoch(1)): models_[1] either way.
    const uint64_t e =
        ExpectSeededWith({0, 1, 2}, {{2, kernel_and_ramdisk_}, {1, other_kernel_}});
    outcomes.insert(e);
    if (r.exit_code == 0) {
      EXPECT_EQ(e, 1u);
      break;
    }
    ASSERT_EQ(r.exit_code, kCrashExit) << "child failed without crashing";
    ASSERT_LT(k, 10000);
  }
  EXPECT_EQ(outcomes, (std::set<uint64_t>{0, 1, 2}));
}

// --- corruption ------------------------------------------------------------------------------

class ReplicaCorruptionTest : public ReplicaCrashTest {
 protected:
  void FlipByte(const std::string& path, size_t at) {
    std::string b = Slurp(path);
    ASSERT_LT(at, b.size());
    b[at] ^= 0x5a;
    WriteBytes(path, b);
  }
  void Truncate(const std::string& path, size_t len) { std::filesystem::resize_file(path, len); }
  absl::StatusCode OpenCode() { return ReplicaStore::Open(Dir()).status().code(); }

  // Replica at 2 with a crash of the epoch 3 commit at the nth hook call for `step`.
  void CrashedAt(CommitStep step, int nth = 1) {
    int seen = 0;
    for (int k = 1; k < 1000; ++k) {
      Prepare(2, {});
      ChildResult r = CommitWithCrashAt(3, k, {});
      ASSERT_EQ(r.exit_code, kCrashExit) << CommitStepName(step) << " never reached";
      if (r.crashed_step == static_cast<int>(step) && ++seen == nth) return;
    }
    FAIL() << "no crash point";
  }
};

TEST_F(ReplicaCorruptionTest, DamagedEpochRecordIsDataLoss) {
  Prepare(2, {});
  const std::string rec = Dir() + "/epoch.rec";
  const size_t size = std::filesystem::file_size(rec);
  for (size_t at : {size_t{0}, size_t{9}, size_t{20}, size / 2, size - 1}) {
    Prepare(2, {});
    FlipByte(rec, at);
    EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss) << "flip at " << at;
  }
  for (size_t len : {size_t{0}, size_t{5}, size - 8, size - 1}) {
    Prepare(2, {});
    Truncate(rec, len);
    EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss) << "truncate to " << len;
  }
  Prepare(2, {});
  std::filesystem::remove(rec);
  EXPECT_EQ(OpenCode(), absl::StatusCode::kNotFound);
}

TEST_F(ReplicaCorruptionTest, DamagedImagesOrDeviceStateAreDataLoss) {
  Prepare(2, {});
  Truncate(Dir() + "/ram.img", geometry_.ram_size - kPage);
  EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss);
  Prepare(2, {});
  std::filesystem::remove(Dir() + "/disk-vdb.raw");
  EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss);
  Prepare(2, {});
  auto store = ReplicaStore::Open(Dir());
  ASSERT_TRUE(store.ok());
  const std::string ds = (*store)->device_state_path();
  store->reset();
  FlipByte(ds, 100);
  EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss);
}

// A journal that was never marked valid is discarded whatever its state: nothing was applied.
TEST_F(ReplicaCorruptionTest, DamagedUnmarkedJournalIsDiscarded) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    CrashedAt(CommitStep::kMarkWrite);  // journal written and synced, no mark
    const std::string j = Dir() + "/journal.redo";
    ASSERT_TRUE(std::filesystem::exists(j));
    if (variant == 0) FlipByte(j, 100);
    if (variant == 1) Truncate(j, std::filesystem::file_size(j) / 2);
    if (variant == 2) Truncate(j, 3);
    EXPECT_EQ(ExpectExactlyOneOf(3), 2u);
  }
}

// A marked journal may have been partly applied: damage to it or to the mark is DataLoss.
TEST_F(ReplicaCorruptionTest, DamagedMarkedJournalOrMarkIsDataLoss) {
  const std::string j = Dir() + "/journal.redo";
  const std::string m = Dir() + "/journal.commit";
  struct Case {
    const char* name;
    std::function<void()> damage;
  };
  std::vector<Case> cases = {
      {"flip journal byte", [&] { FlipByte(j, std::filesystem::file_size(j) - 10); }},
      {"flip journal header", [&] { FlipByte(j, 3); }},
      {"truncate journal", [&] { Truncate(j, std::filesystem::file_size(j) - 1); }},
      {"remove journal", [&] { std::filesystem::remove(j); }},
      {"flip mark byte", [&] { FlipByte(m, 12); }},
      {"truncate mark", [&] { Truncate(m, 20); }},
      {"flip new devstate", [&] { FlipByte(Dir() + "/devstate-1.bin", 7); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    CrashedAt(CommitStep::kApplyRecord, 2);  // mark durable, one record applied
    c.damage();
    EXPECT_EQ(OpenCode(), absl::StatusCode::kDataLoss);
  }
  // Undamaged, the same state recovers to epoch 3.
  CrashedAt(CommitStep::kApplyRecord, 2);
  EXPECT_EQ(ExpectExactlyOneOf(3), 3u);
}

TEST_F(ReplicaCorruptionTest, StaleMarkOfTheCommittedEpochIsOnlyCleanedUp) {
  CrashedAt(CommitStep::kMarkRemove);
  ASSERT_TRUE(std::filesystem::exists(Dir() + "/journal.commit"));
  EXPECT_EQ(ExpectExactlyOneOf(3), 3u);
}

}  // namespace
}  // namespace novadt::replica
