// The primary's state machine over fakes: a scripted QEMU, an in-process replication link that
// feeds the backup's receiver and can stall or refuse, and a fake disk capture.
#include "agent/engine/primary_session.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sys/mman.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <thread>

#include "agent/core/replica_basis.h"
#include "agent/core/replication_receiver.h"
#include "tests/support/fake_hypervisor.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/fake_witness.h"
#include "tests/support/guest_ram.h"
#include "tests/support/test_util.h"

namespace novadt::engine {
namespace {

using novadt::testing::FakeHypervisor;
using novadt::testing::FakeReplicaState;
using novadt::testing::WaitFor;
using ::testing::HasSubstr;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kPages = 64;
constexpr size_t kPage = core::kGuestPageSize;

// In-process backup: every stream gets a ReplicationReceiver over a FakeReplicaSink; acks go
// back at once unless the link is stalled (then they wait); opens can be refused.
class LoopbackLink final : public core::ReplicationLink {
 public:
  class Stream final : public core::EpochStream {
   public:
    Stream(LoopbackLink& link, std::unique_ptr<core::ReplicationReceiver> r,
           core::EpochStreamCallbacks cb)
        : link_(link), receiver_(std::move(r)), cb_(std::move(cb)) {}
    Status Send(const core::StreamItem& item) override {
      if (link_.on_send) link_.on_send(item);
      std::optional<uint64_t> ack;
      if (link_.taken_over) {  // the backup failed the server over: it refuses and ends
        const Status refusal = core::TakenOverRefusal("the-server");
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (done_) return refusal;
          done_ = true;
          receiver_->Close(refusal);
        }
        cb_.on_done(refusal);
        return refusal;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_) return absl::CancelledError("stream cancelled");
        auto a = receiver_->Handle(item);
        if (!a.ok()) return a.status();
        ack = *a;
      }
      if (ack) link_.Ack(this, {core::StreamAck::Kind::kCommitted, *ack});
      return absl::OkStatus();
    }
    Status Heartbeat() override { return absl::OkStatus(); }
    Status Sync(uint64_t token) override {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_) return absl::CancelledError("stream cancelled");
      }
      ++link_.syncs;
      link_.Ack(this, {core::StreamAck::Kind::kSynced, token});
      return absl::OkStatus();
    }
    Status Finish(milliseconds) override { return absl::OkStatus(); }
    void Cancel() override {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_) return;
        done_ = true;
        receiver_->Close(absl::CancelledError("cancelled"));
      }
      cb_.on_done(absl::CancelledError("cancelled"));
    }
    void DeliverAck(const core::StreamAck& ack) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_) return;
      }
      cb_.on_ack(ack);
    }

   private:
    LoopbackLink& link_;
    std::mutex mu_;
    bool done_ = false;
    std::unique_ptr<core::ReplicationReceiver> receiver_;
    core::EpochStreamCallbacks cb_;
  };

  StatusOr<core::ReplicaBasis> Basis(const std::string&, const core::StreamOpen&,
                                     milliseconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    return basis;
  }
  Status Release(const std::string&, const core::StreamOpen&, milliseconds) override {
    if (on_release) on_release();
    ++releases;
    return release_answer;
  }

  StatusOr<std::unique_ptr<core::EpochStream>> Open(const std::string&, const core::StreamOpen& open,
                                                    core::EpochStreamCallbacks cb) override {
    if (refuse_opens_ > 0) {
      --refuse_opens_;
      cb.on_done(absl::UnavailableError("backup unreachable"));
      return absl::UnavailableError("backup unreachable");
    }
    if (taken_over) {
      cb.on_done(core::TakenOverRefusal(open.instance_uuid));
      return core::TakenOverRefusal(open.instance_uuid);
    }
    last_witness_generation = open.witness_generation;
    last_basis_id = open.basis_id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      opened.push_back(open);
    }
    auto r = core::ReplicationReceiver::Start(open, novadt::testing::FakeSinkFactory(state));
    if (!r.ok()) return r.status();
    ++opens;
    auto s = std::make_unique<Stream>(*this, *std::move(r), std::move(cb));
    std::lock_guard<std::mutex> lock(mu_);
    current_ = s.get();
    return std::unique_ptr<core::EpochStream>(std::move(s));
  }

  void Ack(Stream* s, const core::StreamAck& ack) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stalled_) {
        held_.push_back({s, ack});
        return;
      }
    }
    s->DeliverAck(ack);
  }
  void Stall(bool on) {
    std::vector<std::pair<Stream*, core::StreamAck>> release;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stalled_ = on;
      if (!on) release.swap(held_);
    }
    for (auto& [s, e] : release) {
      std::lock_guard<std::mutex> lock(mu_);
      if (s == current_) s->DeliverAck(e);
    }
  }

  std::shared_ptr<FakeReplicaState> state = std::make_shared<FakeReplicaState>();
  std::atomic<int> opens{0};
  std::atomic<int> refuse_opens_{0};
  std::atomic<int64_t> last_witness_generation{-1};
  std::atomic<bool> taken_over{false};  // the backup runs the server: every send is refused
  std::atomic<uint64_t> last_basis_id{0};
  std::vector<core::StreamOpen> opened;  // every StreamOpen received (under mu_: Opened())
  std::vector<core::StreamOpen> Opened() {
    std::lock_guard<std::mutex> lock(mu_);
    return opened;
  }
  std::atomic<int> syncs{0};
  // Release(): calls, what it answers, and what runs first (set before the session).
  std::atomic<int> releases{0};
  Status release_answer;
  std::function<void()> on_release;
  // Called with every item the primary sends (on its sending thread); set before the session.
  std::function<void(const core::StreamItem&)> on_send;
  // What Basis() answers (under mu_): none by default, as a backup without a replica.
  StatusOr<core::ReplicaBasis> basis = absl::NotFoundError("no replica here");
  void SetBasis(StatusOr<core::ReplicaBasis> b) {
    std::lock_guard<std::mutex> lock(mu_);
    basis = std::move(b);
  }

 private:
  std::mutex mu_;
  bool stalled_ = false;
  Stream* current_ = nullptr;
  std::vector<std::pair<Stream*, core::StreamAck>> held_;
};

class FakeCapture final : public DiskCapture {
 public:
  Status Start(milliseconds) override {
    ++starts;
    if (on_start) on_start();
    std::lock_guard<std::mutex> lock(mu);
    writes = initial_copy;
    return absl::OkStatus();
  }
  std::vector<core::DiskWrite> TakeWrites() override {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(writes, {});
  }
  uint64_t buffered_bytes() const override { return 0; }
  void Stop() override { ++stops; }
  std::mutex mu;
  std::vector<core::DiskWrite> writes;
  std::atomic<int> starts{0}, stops{0};
  std::function<void()> on_start;  // runs between arming the tracker and the seeding copy
  std::vector<core::DiskWrite> initial_copy{{"vda", 0, std::string(4096, 'i')}};
};

class PrimarySessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ram_file_ =
        std::make_unique<novadt::testing::GuestRamFile>(dir_.path() + "/pc.ram", kPages * kPage);
    ASSERT_NE(ram_file_->data(), nullptr);
    ram_ = ram_file_->path();
    guest_ = ram_file_->data();
    hv_.Returns("query-rx-filter", json::array({{{"name", "net0"}}}));
    hv_.Returns("qom-get", "hostnet0");
    hv_.Returns("query-migrate", {{"status", "completed"}});
    hv_.On("migrate", [this](const json&) {
      const int fd = hv_.TakeFd("nova-dt-devstate");
      if (::write(fd, "devstate", 8) != 8) ADD_FAILURE();
      ::close(fd);
      guest_[(++tick_ % kPages) * kPage] ^= 1;  // the guest dirties a page every epoch
      return json{{"return", json::object()}};
    });
  }
  void TearDown() override { session_.reset(); }  // before the RAM it reads goes away

  void StartSession(SessionOptions o, witness::Witness* witness = nullptr) {
    SessionParts p;
    p.witness = witness;
    p.hypervisor = &hv_;
    p.link = &link_;
    p.backup_address = "backup:7070";
    p.open = novadt::testing::TestOpen();
    p.open.ram_size_bytes = kPages * kPage;
    p.tracker = *dirty::MakeDirtyTracker({ram_, kPages * kPage, 0,
                                          dirty::DirtyTrackerOptions::Method::kHashScan, 1});
    p.stager = *RamStager::Open(ram_, kPages * kPage);
    auto gate = EgressGate::Create(hv_, p.open.instance_uuid);
    ASSERT_TRUE(gate.ok());
    gate_ = gate->get();
    p.gate = *std::move(gate);
    auto capture = std::make_unique<FakeCapture>();
    capture->on_start = on_capture_start_;
    capture->initial_copy = initial_copy_;
    capture_ = capture.get();
    p.capture = std::move(capture);
    p.instances_path = dir_.path() + "/instances";
    p.boot_files = boot_files_;
    session_ = std::make_unique<PrimarySession>(std::move(p), o, clock_);
    session_->Start();
  }
  bool WaitState(PairState s, milliseconds t = milliseconds(5000)) {
    return WaitFor([&] { return session_->status().state == s; }, t);
  }
  int Count(const std::string& prefix) {
    int n = 0;
    for (const auto& c : hv_.Commands()) {
      if (c.find(prefix) != std::string::npos) ++n;
    }
    return n;
  }

  novadt::testing::ScratchDir dir_;
  std::unique_ptr<novadt::testing::GuestRamFile> ram_file_;
  std::string ram_;
  char* guest_ = nullptr;
  int tick_ = 0;
  FakeHypervisor hv_;
  LoopbackLink link_;
  SystemClock clock_;
  EgressGate* gate_ = nullptr;
  FakeCapture* capture_ = nullptr;
  std::function<void()> on_capture_start_;
  std::vector<core::DiskWrite> initial_copy_{{"vda", 0, std::string(4096, 'i')}};
  std::vector<std::string> boot_files_;  // SessionParts::boot_files
  novadt::testing::FakeWitness w;  // outlives the session (TearDown resets it first)
  std::unique_ptr<PrimarySession> session_;
};

SessionOptions Fast() {
  SessionOptions o;
  o.epoch = milliseconds(20);
  o.degrade_after = milliseconds(300);
  o.reseed_after = milliseconds(100);
  o.seed_slice_pages = 16;
  return o;
}

TEST_F(PrimarySessionTest, SeedsThenCheckpointsAndEveryAckReleasesItsEpoch) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  ASSERT_TRUE(WaitFor([&] { return session_->status().last_committed >= 6; }, seconds(5)));
  auto calls = link_.state->Calls();
  // Epoch 1 carries the disk's initial copy, then all of RAM in 16-page slices (both while the
  // guest runs, before the first pause), then the first pause's dirty pages and the device
  // state.
  ASSERT_GE(calls.size(), 8u);
  EXPECT_EQ(calls[0], "begin 1");
  EXPECT_EQ(calls[1], "disk vda 0+4096");
  for (int i = 2; i <= 5; ++i) EXPECT_EQ(calls[i], "pages 16");
  EXPECT_NE(std::find(calls.begin(), calls.end(), "commit 1"), calls.end());
  // Output is held per epoch and let go by acks: never more than the open epoch plus one in
  // flight, and an object-del for each acked epoch.
  EXPECT_LE(gate_->held_epochs().size(), 2u);
  EXPECT_GE(Count("object-del"), 4);
  auto st = session_->status();
  EXPECT_EQ(st.dirty_tracking, "hash-scan");
  EXPECT_GT(st.pause_p50.count(), 0);
  EXPECT_GE(st.pause_p99, st.pause_p50);
  EXPECT_GE(st.last_checkpoint, 6u);
  // Every steady epoch streamed its dirty page (the fake guest dirties one per epoch) and the
  // 8-byte device state.
  EXPECT_GE(st.steady_epochs, 4u);
  EXPECT_GE(st.steady_pages, st.steady_epochs);
  EXPECT_GE(st.steady_bytes, st.steady_pages * kPage + 8 * st.steady_epochs);

  session_->Stop();
  EXPECT_EQ(session_->status().state, PairState::kUnprotected);
  EXPECT_TRUE(gate_->held_epochs().empty());
  EXPECT_GE(capture_->stops.load(), 1);
  // Every pause ended with the guest running.
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\""));
}

// A page the guest changes and changes back while the seeding copy runs looks clean to the dirty
// tracker (same bytes as when it was armed) but the copy caught the intermediate bytes: the first
// checkpoint must send it again.
// Unprotecting releases output the replica never gets: the backup is told first, so that it
// never restores the replica (docs/security.md) — and the output leaves even if it cannot
// confirm (the operator asked for an unprotected guest).
TEST_F(PrimarySessionTest, StopTellsTheBackupItsReplicaIsReleasedBeforeTheOutputLeaves) {
  for (bool confirmed : {true, false}) {
    SCOPED_TRACE(confirmed ? "backup confirms" : "backup unreachable");
    link_.release_answer = confirmed ? Status() : absl::UnavailableError("backup unreachable");
    int released_before = -1;
    link_.on_release = [&] { released_before = Count("object-del"); };
    StartSession(Fast());
    ASSERT_TRUE(WaitState(PairState::kProtected));
    const int releases = link_.releases;
    session_->Stop();
    EXPECT_EQ(link_.releases, releases + 1);
    ASSERT_GE(released_before, 0);
    EXPECT_GT(Count("object-del"), released_before) << "the held output left after the release";
    session_.reset();
  }
}

TEST_F(PrimarySessionTest, PageChangedAndRevertedDuringTheSeedingCopyIsSentAgain) {
  const char original = guest_[9 * kPage];
  std::atomic<int> stops{0};
  hv_.On("stop", [&](const json&) {
    if (++stops == 2) guest_[9 * kPage] = original;  // the first checkpoint's pause
    return json{{"return", json::object()}};
  });
  // After the tracker is armed, before the copy: the guest writes page 9.
  on_capture_start_ = [&] { guest_[9 * kPage] = static_cast<char>(original ^ 0x5a); };
  SessionOptions o = Fast();
  o.epoch = seconds(10);  // only the seeding epoch matters here
  StartSession(o);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  const std::vector<uint64_t> pages = link_.state->Pages();
  // Once in the copy (all 64 pages), once more at the first pause for page 9.
  EXPECT_EQ(std::count(pages.begin(), pages.end(), 9u), 2) << "page 9 was not sent again";
}

// The backup's basis (its replica's bytes, hashed) already holds all but pages 3 and 5 and the
// second 64 KiB block of the disk: the seed sends only those, names the basis in its open, and
// the pair is protected as usual.
TEST_F(PrimarySessionTest, SeedWithABasisSendsOnlyWhatTheBackupLacks) {
  initial_copy_ = {{"vda", 0, std::string(core::kBasisBlockSize, 'i') +
                                  std::string(core::kBasisBlockSize, 'j')}};
  core::ReplicaBasis basis;
  basis.id = 42;
  basis.ram_size_bytes = kPages * kPage;
  basis.disks = novadt::testing::TestOpen().disks;
  for (uint64_t p = 0; p < kPages; ++p) {
    basis.ram_pages.push_back(core::HashContent(std::string_view(guest_ + p * kPage, kPage)));
  }
  basis.ram_pages[3] = basis.ram_pages[5] = core::HashContent("something else");
  auto& blocks = basis.disk_blocks["vda"];
  blocks.assign(core::BasisBlockCount(basis.disks[0].size_bytes), core::HashZeroes(core::kBasisBlockSize));
  blocks[0] = core::HashContent(std::string(core::kBasisBlockSize, 'i'));
  ASSERT_TRUE(basis.Validate().ok());
  link_.SetBasis(basis);
  SessionOptions o = Fast();
  o.epoch = seconds(10);  // only the seeding epoch matters here
  StartSession(o);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  EXPECT_EQ(link_.last_basis_id.load(), 42u);
  const auto calls = link_.state->Calls();
  const auto commit = std::find(calls.begin(), calls.end(), "commit 1");
  ASSERT_NE(commit, calls.end());
  EXPECT_NE(std::find(calls.begin(), commit, "disk vda 65536+65536"), commit);
  for (auto c = calls.begin(); c != commit; ++c) {
    EXPECT_NE(*c, "disk vda 0+131072") << "the block the basis holds went again";
    EXPECT_NE(*c, "disk vda 0+65536") << "the block the basis holds went again";
  }
  const std::vector<uint64_t> pages = link_.state->Pages();
  ASSERT_GE(pages.size(), 2u);
  EXPECT_EQ(pages[0], 3u);
  EXPECT_EQ(pages[1], 5u);
  // At most the page the guest dirtied during the first pause comes on top.
  EXPECT_LE(pages.size(), 3u);
  const auto st = session_->status();
  EXPECT_EQ(st.seed_basis_bytes, (kPages - 2) * kPage + core::kBasisBlockSize);
  EXPECT_LE(st.seed_bytes, 3 * kPage + core::kBasisBlockSize);
  session_->Stop();
}

// A backup out of space cannot seed in place over its replica (even the epoch record's
// rewrite needs room); a full seed frees the old replica first. So after RESOURCE_EXHAUSTED
// the next seed ignores the basis.
TEST_F(PrimarySessionTest, ABackupOutOfSpaceIsSeededInFullNextTime) {
  core::ReplicaBasis basis;
  basis.id = 42;
  basis.ram_size_bytes = kPages * kPage;
  basis.disks = novadt::testing::TestOpen().disks;
  basis.ram_pages.assign(kPages, core::ContentHash{});
  basis.disk_blocks["vda"].assign(core::BasisBlockCount(basis.disks[0].size_bytes), {});
  link_.SetBasis(basis);
  {
    std::lock_guard<std::mutex> lock(link_.state->mu);
    link_.state->fail_on = "commit 1";
    link_.state->fail_with = absl::ResourceExhaustedError("No space left on device");
  }
  StartSession(Fast());
  ASSERT_TRUE(WaitFor([&] { return link_.opens.load() >= 2; }, seconds(5)));
  EXPECT_EQ(link_.last_basis_id.load(), 0u) << "the second seed still named the basis";
  session_->Stop();
}

TEST_F(PrimarySessionTest, ABasisOfAnotherShapeOrNoneMeansAFullSeed) {
  core::ReplicaBasis other;
  other.id = 7;
  other.ram_size_bytes = 2 * kPages * kPage;  // the server was resized since
  other.ram_pages.assign(2 * kPages, core::ContentHash{});
  other.disks = novadt::testing::TestOpen().disks;
  other.disk_blocks["vda"].assign(core::BasisBlockCount(other.disks[0].size_bytes), {});
  link_.SetBasis(other);
  SessionOptions o = Fast();
  o.epoch = seconds(10);
  StartSession(o);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  EXPECT_EQ(link_.last_basis_id.load(), 0u);
  EXPECT_GE(link_.state->Pages().size(), kPages);
  EXPECT_EQ(session_->status().seed_basis_bytes, 0u);
  session_->Stop();
}

TEST_F(PrimarySessionTest, ABasisRefusedAsTakenOverStandsTheCopyDown) {
  link_.SetBasis(core::TakenOverRefusal(novadt::testing::TestOpen().instance_uuid));
  StartSession(Fast());
  ASSERT_TRUE(WaitFor([&] { return session_->status().taken_over; }, seconds(5)));
  EXPECT_EQ(link_.opens.load(), 0);
  session_->Stop();
}

// A page the guest changes after the seeding copy sent it goes again in a pre-copy round, while
// the guest runs — not at the first pause (whose resend gates the first ack).
TEST_F(PrimarySessionTest, PageChangedAfterTheCopyGoesAgainBeforeTheFirstPause) {
  std::atomic<bool> changed{false};
  link_.on_send = [&](const core::StreamItem& item) {
    const auto* p = std::get_if<core::RamPages>(&item);
    if (p && !p->page_index.empty() && p->page_index.back() == kPages - 1 && !changed) {
      guest_[5 * kPage + 7] ^= 0x33;  // the copy's last slice is on its way: page 5 was sent
      changed = true;
    }
  };
  SessionOptions o = Fast();
  o.epoch = seconds(10);  // only the seeding epoch matters here
  StartSession(o);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  const std::vector<uint64_t> pages = link_.state->Pages();
  // The copy's 64 pages, then the round: page 5 alone; the pause resends at most the page the
  // fake guest dirties while paused, never page 5 once more.
  ASSERT_GE(pages.size(), kPages + 1);
  EXPECT_EQ(pages[kPages], 5u);
  EXPECT_EQ(std::count(pages.begin(), pages.end(), 5u), 2);
}

// Seeding passes end with a barrier: while the backup has not received the copy (acks held
// here, as on a slow link), the first pause — whose resend and ack gate held output — waits.
TEST_F(PrimarySessionTest, TheFirstPauseWaitsUntilTheBackupReceivedTheCopy) {
  link_.Stall(true);
  StartSession(Fast());
  ASSERT_TRUE(WaitFor([&] { return link_.syncs.load() >= 1; }, seconds(2)));
  std::this_thread::sleep_for(milliseconds(400));  // > the 300 ms degrade bound
  EXPECT_EQ(session_->status().state, PairState::kSeeding) << session_->status().reason;
  EXPECT_EQ(Count("\"stop\""), 1) << "only the pause arming the tracker";
  EXPECT_EQ(link_.syncs.load(), 1) << "the next pass waits for the barrier";
  link_.Stall(false);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  EXPECT_GE(link_.syncs.load(), 2);
  session_->Stop();
}

TEST_F(PrimarySessionTest, StalledBackupHoldsOutputUntilTheBoundThenDegradesAndReseeds) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected));
  link_.Stall(true);
  // Within the bound: still protected, output accumulates in held epochs.
  ASSERT_TRUE(WaitFor([&] { return gate_->held_epochs().size() >= 4; }, seconds(2)));
  EXPECT_EQ(session_->status().state, PairState::kProtected);
  // Past it: degraded, everything released, the guest runs on.
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(3)));
  EXPECT_THAT(session_->status().reason, HasSubstr("did not acknowledge epoch"));
  EXPECT_TRUE(WaitFor([&] { return gate_->held_epochs().empty(); }, seconds(1)));
  // The backup comes back: a new stream seeds again and the pair is protected again.
  link_.Stall(false);
  ASSERT_TRUE(WaitFor([&] { return session_->status().state == PairState::kProtected &&
                                   session_->status().reseeds >= 1; }, seconds(5)))
      << session_->status().reason;
  EXPECT_GE(link_.opens.load(), 2);
  EXPECT_GE(capture_->starts.load(), 2);
}

TEST_F(PrimarySessionTest, UnreachableBackupIsReportedAndRetried) {
  link_.refuse_opens_ = 2;
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(2)));
  EXPECT_THAT(session_->status().reason, HasSubstr("backup unreachable"));
  ASSERT_TRUE(WaitState(PairState::kProtected, seconds(5))) << session_->status().reason;
  EXPECT_EQ(session_->status().reseeds, 2u);
}

// --- boot files (a direct kernel boot from Nova's instance directory) -------------------------

class BootFilesSessionTest : public PrimarySessionTest {
 protected:
  void SetUp() override {
    PrimarySessionTest::SetUp();
    instance_dir_ = dir_.path() + "/instances/" + novadt::testing::TestOpen().instance_uuid;
    std::filesystem::create_directories(instance_dir_);
    Write("kernel", kernel_);
    Write("ramdisk", "ramdisk of the first seed");
    boot_files_ = {"kernel", "ramdisk"};
  }
  void Write(const std::string& name, const std::string& bytes) {
    std::ofstream(instance_dir_ + "/" + name, std::ios::binary | std::ios::trunc) << bytes;
  }
  int CountCalls(const std::string& prefix) {
    int n = 0;
    for (const auto& c : link_.state->Calls()) n += c.rfind(prefix, 0) == 0;
    return n;
  }
  std::string instance_dir_;
  const std::string kernel_ = novadt::testing::PseudoRandomBytes(5, (3 << 20) / 2);
};

// Every stream (every seed: also a re-seed, also one over a basis) declares the boot files and
// sends them, read anew, before its first epoch; protocol 4.
TEST_F(BootFilesSessionTest, EveryStreamCarriesTheBootFilesBeforeItsSeed) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  auto calls = link_.state->Calls();
  ASSERT_GE(calls.size(), 4u);
  EXPECT_EQ(calls[0], "bootfile kernel 0+1048576");
  EXPECT_EQ(calls[1], "bootfile kernel 1048576+524288");
  EXPECT_EQ(calls[2], "bootfile ramdisk 0+25");
  EXPECT_EQ(calls[3], "begin 1");
  auto opens = link_.Opened();
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_EQ(opens[0].protocol, core::kBootFilesProtocolVersion);
  EXPECT_EQ(opens[0].boot_files, (std::vector<core::BootFile>{{"kernel", kernel_.size()},
                                                              {"ramdisk", 25}}));
  // The ramdisk changes (a rebuild would), and the backup stalls: the re-seed sends it anew.
  Write("ramdisk", "ramdisk of the re-seed");
  link_.Stall(true);
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(3)));
  link_.Stall(false);
  ASSERT_TRUE(WaitFor([&] { return session_->status().state == PairState::kProtected &&
                                   session_->status().reseeds >= 1; }, seconds(5)))
      << session_->status().reason;
  EXPECT_EQ(CountCalls("bootfile kernel 0+"), 2);
  EXPECT_EQ(CountCalls("bootfile ramdisk 0+"), 2);
  EXPECT_EQ(link_.state->boot_files["ramdisk"],
            "ramdisk of the first seed" + std::string("ramdisk of the re-seed"));
  EXPECT_EQ(link_.state->boot_files_ended, 2);
  opens = link_.Opened();
  ASSERT_GE(opens.size(), 2u);
  EXPECT_EQ(opens.back().boot_files[1], (core::BootFile{"ramdisk", 22}));
}

// Without boot files the stream is protocol 3: a backup from before boot files accepts it.
TEST_F(PrimarySessionTest, AStreamWithoutBootFilesIsOneAnOlderBackupAccepts) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  auto opens = link_.Opened();
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_EQ(opens[0].protocol, core::kBasisProtocolVersion);
  EXPECT_TRUE(opens[0].boot_files.empty());
  EXPECT_EQ(link_.state->boot_files_ended, 1);
}

TEST_F(BootFilesSessionTest, ABootFileThatCannotBeSentFailsTheSeedSayingWhy) {
  SessionOptions o = Fast();
  o.max_boot_file_bytes = kernel_.size() - 1;
  StartSession(o);
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(3)));
  EXPECT_THAT(session_->status().reason, HasSubstr("max_boot_file_bytes"));
  EXPECT_EQ(link_.opens.load(), 0) << "nothing is opened for a boot file that cannot be sent";
  session_.reset();

  std::filesystem::remove(instance_dir_ + "/ramdisk");
  std::filesystem::create_symlink(instance_dir_ + "/kernel", instance_dir_ + "/ramdisk");
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(3)));
  EXPECT_THAT(session_->status().reason, HasSubstr("/ramdisk is a symbolic link: refused"));
}

TEST_F(PrimarySessionTest, FailedCheckpointDegradesWithTheReasonAndLeavesTheGuestRunning) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected));
  hv_.FailNext("migrate", "GenericError", "migration blocked by a device");
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(2)));
  EXPECT_THAT(session_->status().reason, HasSubstr("migration blocked by a device"));
  EXPECT_TRUE(gate_->held_epochs().empty());
  session_->Stop();
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\""));
}

// --- with a fencing witness (docs/witness.md) ---------------------------------------------------

TEST_F(PrimarySessionTest, ClaimsTheServerAtTheWitnessAndSendsTheGenerationWithTheStream) {
  w.FailNext("Claim", absl::UnavailableError("etcd down"));
  StartSession(Fast(), &w);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  EXPECT_EQ(w.calls("Claim"), 2) << "retried while the witness was unreachable";
  EXPECT_EQ(session_->status().witness_generation, 1);
  EXPECT_EQ(link_.last_witness_generation.load(), 1);
  auto owner = w.Read(novadt::testing::TestOpen().instance_uuid);
  ASSERT_TRUE(owner.ok());
  EXPECT_EQ(owner->owner, novadt::testing::TestOpen().primary_host);
}

TEST_F(PrimarySessionTest, ServerOwnedByAnotherHostIsNeverProtectedFromHere) {
  ASSERT_TRUE(w.Claim(novadt::testing::TestOpen().instance_uuid, "other-host").ok());
  StartSession(Fast(), &w);
  ASSERT_TRUE(WaitState(PairState::kDegraded)) << session_->status().reason;
  EXPECT_THAT(session_->status().reason, HasSubstr("owned by 'other-host'"));
  EXPECT_EQ(link_.opens.load(), 0) << "no replica of a copy this host does not own";
}

TEST_F(PrimarySessionTest, DegradedPairReleasesOutputOnlyAfterTheWitnessAdvancedTheGeneration) {
  StartSession(Fast(), &w);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  for (int i = 0; i < 3; ++i) w.FailNext("AdvanceGeneration", absl::UnavailableError("etcd down"));
  link_.Stall(true);
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(3)));
  // The witness could not confirm: the backup's replica might still be resumed, so the output it
  // lacks stays held.
  ASSERT_TRUE(WaitFor([&] { return w.calls("AdvanceGeneration") >= 2; }, seconds(2)));
  const int deleted_while_held = Count("object-del");
  EXPECT_FALSE(gate_->held_epochs().empty());
  EXPECT_TRUE(session_->status().output_held_for_witness);
  EXPECT_THAT(session_->status().reason, HasSubstr("etcd down"));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(Count("object-del"), deleted_while_held) << "output left before the witness said so";
  // Third failure, then success: generation 2, and only then is the output released (the
  // session then re-seeds at once and holds output of the new attempt).
  ASSERT_TRUE(WaitFor([&] { return !session_->status().output_held_for_witness; }, seconds(3)));
  EXPECT_EQ(w.calls("AdvanceGeneration"), 4);
  EXPECT_GT(Count("object-del"), deleted_while_held);
  EXPECT_EQ(session_->status().witness_generation, 2);
  EXPECT_EQ(w.Read(novadt::testing::TestOpen().instance_uuid)->generation, 2);
  // The backup returns: the new replica carries the new generation.
  link_.Stall(false);
  ASSERT_TRUE(WaitFor([&] { return session_->status().state == PairState::kProtected &&
                                   session_->status().reseeds >= 1; }, seconds(5)))
      << session_->status().reason;
  EXPECT_EQ(link_.last_witness_generation.load(), 2);
}

TEST_F(PrimarySessionTest, FencedGuestStaysPausedThroughCheckpointsUntilUnfenced) {
  StartSession(Fast(), &w);
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  ASSERT_TRUE(session_->Fence("lease not renewed").ok());
  EXPECT_TRUE(session_->status().fenced);
  const size_t after_fence = hv_.Commands().size();
  EXPECT_NE(hv_.Commands().back().find("\"stop\""), std::string::npos);
  std::this_thread::sleep_for(milliseconds(150));  // several epoch ticks
  auto cmds = hv_.Commands();
  for (size_t i = after_fence; i < cmds.size(); ++i) {
    EXPECT_EQ(cmds[i].find("\"cont\""), std::string::npos) << "a fenced guest was resumed";
  }
  const uint64_t checkpoint = session_->status().last_checkpoint;
  ASSERT_TRUE(session_->Fence("again").ok());  // idempotent: no second stop
  EXPECT_EQ(hv_.Commands().size(), cmds.size());
  ASSERT_TRUE(session_->Unfence().ok());
  EXPECT_FALSE(session_->status().fenced);
  ASSERT_TRUE(WaitFor([&] { return session_->status().last_committed > checkpoint + 2; }, seconds(3)))
      << "checkpoints resume after the fence";
  session_->Stop();
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\""));
}

// The backup failed the server over while this primary lived (no witness to stop it): it
// refuses the stream as taken over. The copy here must stand down: nothing held is released (a
// client would see output the running copy never sent), no re-seed is tried.
TEST_F(PrimarySessionTest, BackupThatTookTheServerOverEndsTheSessionReleasingNothing) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  link_.Stall(true);  // epochs in flight: output held
  ASSERT_TRUE(WaitFor([&] { return gate_->held_epochs().size() >= 2; }, seconds(2)));
  const int deleted = Count("object-del");
  link_.taken_over = true;
  ASSERT_TRUE(WaitFor([&] { return session_->status().taken_over; }, seconds(2)));
  std::this_thread::sleep_for(milliseconds(300));  // past reseed_after: no new attempt
  const auto st = session_->status();
  EXPECT_EQ(st.state, PairState::kDegraded);
  EXPECT_THAT(st.reason, HasSubstr("this copy stands down"));
  EXPECT_EQ(Count("object-del"), deleted) << "held output left a copy the backup replaced";
  EXPECT_FALSE(gate_->held_epochs().empty());
  EXPECT_EQ(st.reseeds, 0u);
  EXPECT_EQ(link_.opens.load(), 1);
  session_->Stop();  // unprotecting it releases nothing either
  EXPECT_EQ(Count("object-del"), deleted);
}

// --- planned switchover (HandOver) --------------------------------------------------------------

TEST_F(PrimarySessionTest, HandOverCommitsAFinalEpochWithTheGuestLeftPausedAndReleasesAllOutput) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  ASSERT_TRUE(WaitFor([&] { return session_->status().last_committed >= 3; }, seconds(3)));
  // The final epoch's ack arrives a while after it was sent, as over a real link.
  link_.Stall(true);
  std::thread backup([&] {
    std::this_thread::sleep_for(milliseconds(100));
    link_.Stall(false);
  });
  auto handed = session_->HandOver();
  backup.join();
  ASSERT_TRUE(handed.ok()) << handed.status();
  EXPECT_TRUE(session_->status().handing_over);
  const auto st = session_->status();
  EXPECT_EQ(handed->epoch, st.last_committed) << "the final epoch is the last one committed";
  EXPECT_EQ(handed->epoch, st.last_checkpoint) << "no checkpoint after the final one";
  EXPECT_EQ(st.state, PairState::kUnprotected);
  EXPECT_THAT(st.reason, HasSubstr("handed over at epoch " + std::to_string(handed->epoch)));
  EXPECT_TRUE(st.fenced);
  EXPECT_LE(handed->paused_at, clock_.Now());
  // Everything the guest sent before the final pause has left (the backup's copy sent it too);
  // QEMU sends released frames only while the VM runs, so the guest ran for one round trip
  // after the release, into a last buffer that is never released.
  EXPECT_EQ(gate_->held_epochs(), std::vector<uint64_t>{handed->epoch + 2});
  {
    const auto cmds = hv_.Commands();
    ASSERT_GE(cmds.size(), 4u);
    const size_t n = cmds.size();
    EXPECT_NE(cmds[n - 4].find("object-add"), std::string::npos) << cmds[n - 4];
    EXPECT_NE(cmds[n - 4].find("-" + std::to_string(handed->epoch + 2)), std::string::npos);
    EXPECT_NE(cmds[n - 3].find("object-del"), std::string::npos) << cmds[n - 3];
    EXPECT_NE(cmds[n - 3].find("-" + std::to_string(handed->epoch + 1)), std::string::npos);
    EXPECT_NE(cmds[n - 2].find("\"cont\""), std::string::npos) << cmds[n - 2];
    EXPECT_NE(cmds[n - 1].find("\"stop\""), std::string::npos) << cmds[n - 1];
  }
  // The guest stopped once more than it was resumed, and stays so: no checkpoint, no unfence.
  const size_t commands = hv_.Commands().size();
  std::this_thread::sleep_for(milliseconds(150));  // several epoch ticks
  EXPECT_EQ(hv_.Commands().size(), commands) << "the session still drives QEMU";
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\"") + 1);
  EXPECT_FALSE(session_->Unfence().ok());
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\"") + 1);
  const auto calls = link_.state->Calls();
  EXPECT_NE(std::find(calls.begin(), calls.end(), "commit " + std::to_string(handed->epoch)),
            calls.end());
  EXPECT_FALSE(session_->HandOver().ok()) << "only once";
  // Even unprotecting now releases nothing: what the guest sent after the final epoch must never
  // leave from here (the backup may run the server), and the guest stays paused.
  const int deleted = Count("object-del");
  session_->Stop();
  EXPECT_GE(capture_->stops.load(), 1);
  EXPECT_EQ(Count("object-del"), deleted);
  EXPECT_EQ(gate_->held_epochs(), std::vector<uint64_t>{handed->epoch + 2});
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\"") + 1) << "stopping does not resume the guest";
}

TEST_F(PrimarySessionTest, HandOverIsRefusedUnlessThePairIsProtected) {
  link_.refuse_opens_ = 1000;
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kDegraded, seconds(2)));
  auto handed = session_->HandOver();
  EXPECT_TRUE(absl::IsFailedPrecondition(handed.status())) << handed.status();
  EXPECT_THAT(handed.status().message(), HasSubstr("the pair is degraded"));
  session_->Stop();
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\""));
}

TEST_F(PrimarySessionTest, FinalEpochNotCommittedResumesTheGuestAndTheSessionGoesOn) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  link_.Stall(true);
  auto handed = session_->HandOver();  // the final epoch's ack never comes: degrade bound
  ASSERT_FALSE(handed.ok());
  EXPECT_THAT(handed.status().message(), HasSubstr("not committed"));
  EXPECT_FALSE(session_->status().fenced);
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\"")) << "the guest runs again";
  EXPECT_TRUE(WaitFor([&] { return gate_->held_epochs().empty(); }, seconds(1)));
  link_.Stall(false);
  ASSERT_TRUE(WaitFor([&] { return session_->status().state == PairState::kProtected &&
                                   session_->status().reseeds >= 1; }, seconds(5)))
      << session_->status().reason;
  session_->Stop();
}

TEST_F(PrimarySessionTest, FenceDuringAFailingHandOverKeepsTheGuestPaused) {
  StartSession(Fast());
  ASSERT_TRUE(WaitState(PairState::kProtected)) << session_->status().reason;
  link_.Stall(true);
  std::future<StatusOr<PrimarySession::HandOverResult>> handed =
      std::async(std::launch::async, [&] { return session_->HandOver(); });
  ASSERT_TRUE(WaitFor([&] { return session_->status().fenced; }, seconds(2)))
      << "the final epoch pauses the guest";
  ASSERT_TRUE(session_->Fence("the witness lease was lost").ok());  // e.g. ownership lost
  ASSERT_FALSE(handed.get().ok());
  EXPECT_TRUE(session_->status().fenced) << "a failed switchover does not lift a fence";
  EXPECT_EQ(Count("\"stop\""), Count("\"cont\"") + 1);
  link_.Stall(false);
  session_->Stop();
}

}  // namespace
}  // namespace novadt::engine
