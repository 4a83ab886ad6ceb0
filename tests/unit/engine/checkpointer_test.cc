#include "agent/engine/checkpointer.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

#include "tests/support/fake_hypervisor.h"
#include "tests/support/guest_ram.h"
#include "tests/support/test_util.h"

namespace novadt::engine {
namespace {

using novadt::testing::FakeHypervisor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kUuid[] = "3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10";
constexpr uint64_t kPages = 64;
constexpr size_t kPage = core::kGuestPageSize;

class CheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ram_ = std::make_unique<novadt::testing::GuestRamFile>(dir_.path() + "/pc.ram", kPages * kPage);
    ASSERT_NE(ram_->data(), nullptr);
    ram_path_ = ram_->path();
    guest_ = ram_->data();

    hv_.Returns("query-rx-filter", json::array({{{"name", "net0"}}}));
    hv_.Returns("qom-get", "hostnet0");
    // QEMU's side of the save: its migration thread writes the state into the passed fd (at the
    // fd's offset, shared with the agent's copy) and reports "completed" once it is all written.
    hv_.On("migrate", [this](const json& args) {
      EXPECT_EQ(args["uri"], "fd:nova-dt-devstate");
      const int fd = hv_.TakeFd("nova-dt-devstate");
      EXPECT_GE(fd, 0);
      const std::string state(100000 + saves_, 'S');  // each save a different length
      ++saves_;
      if (migration_.joinable()) migration_.join();
      migration_done_ = false;
      migration_ = std::thread([this, fd, state] {
        EXPECT_EQ(::write(fd, state.data(), state.size()), static_cast<ssize_t>(state.size()));
        ::close(fd);
        migration_done_ = true;
      });
      return json{{"return", json::object()}};
    });
    hv_.On("query-migrate", [this](const json&) {
      if (migration_.joinable() && migration_done_) migration_.join();
      return json{{"return", {{"status", migration_done_ && migrate_completes_ ? "completed" : "active"}}}};
    });

    auto tracker = dirty::MakeDirtyTracker({ram_path_, kPages * kPage, 0,
                                            dirty::DirtyTrackerOptions::Method::kHashScan, 1});
    ASSERT_TRUE(tracker.ok()) << tracker.status();
    tracker_ = *std::move(tracker);
    ASSERT_TRUE(tracker_->Reset().ok());
    auto stager = RamStager::Open(ram_path_, kPages * kPage);
    ASSERT_TRUE(stager.ok());
    stager_ = *std::move(stager);
    auto gate = EgressGate::Create(hv_, kUuid);
    ASSERT_TRUE(gate.ok());
    gate_ = *std::move(gate);
    ASSERT_TRUE(gate_->Open(1).ok());
    cp_ = std::make_unique<Checkpointer>(
        hv_, kUuid, *tracker_, *stager_, *gate_,
        [this] { return std::exchange(disk_writes_, {}); }, clock_);
    hv_.ClearCommands();
  }

  std::vector<std::string> Executes() {
    std::vector<std::string> out;
    for (const auto& c : hv_.Commands()) out.push_back(json::parse(c)["execute"]);
    return out;
  }

  novadt::testing::ScratchDir dir_;
  std::unique_ptr<novadt::testing::GuestRamFile> ram_;
  std::string ram_path_;
  char* guest_ = nullptr;
  FakeHypervisor hv_;
  SystemClock clock_;
  ~CheckpointerTest() override {
    if (migration_.joinable()) migration_.join();
  }

  bool migrate_completes_ = true;
  int saves_ = 0;
  std::thread migration_;
  std::atomic<bool> migration_done_{false};
  std::vector<core::DiskWrite> disk_writes_;
  std::unique_ptr<dirty::DirtyTracker> tracker_;
  std::unique_ptr<RamStager> stager_;
  std::unique_ptr<EgressGate> gate_;
  std::unique_ptr<Checkpointer> cp_;
};

TEST_F(CheckpointerTest, PrepareEnablesIgnoreShared) {
  ASSERT_TRUE(cp_->Prepare().ok());
  json c = json::parse(hv_.Commands().at(0));
  EXPECT_EQ(c["execute"], "migrate-set-capabilities");
  EXPECT_EQ(c["arguments"]["capabilities"][0]["capability"], "x-ignore-shared");
  EXPECT_EQ(c["arguments"]["capabilities"][0]["state"], true);
}

TEST_F(CheckpointerTest, OnePauseStagesEverythingAndResumesBehindANewEgressBuffer) {
  guest_[5 * kPage] = 'x';
  guest_[40 * kPage + 9] = 'y';
  disk_writes_ = {{"vda", 512, "w1"}, {"vda", 0, "w2"}};
  core::StagedEpoch e;
  auto t = cp_->Take(1, e);
  ASSERT_TRUE(t.ok()) << t.status();
  // The egress buffer and the fd before the pause; in it only stop, migrate, polls and cont.
  auto ex = Executes();
  ASSERT_GE(ex.size(), 6u);
  EXPECT_THAT(std::vector<std::string>(ex.begin(), ex.begin() + 4),
              ElementsAre("object-add", "getfd", "stop", "migrate"));
  for (size_t i = 4; i + 1 < ex.size(); ++i) EXPECT_EQ(ex[i], "query-migrate");
  EXPECT_EQ(ex.back(), "cont");
  EXPECT_EQ(e.epoch, 1u);
  EXPECT_THAT(e.page_index, ElementsAre(5, 40));
  EXPECT_EQ(e.page_data[0], 'x');
  EXPECT_EQ(e.page_data[kPage + 9], 'y');
  ASSERT_EQ(e.disk_writes.size(), 2u);
  EXPECT_EQ(e.disk_writes[0].data, "w1");
  EXPECT_EQ(e.device_state, std::string(100000, 'S'));
  EXPECT_GE(t->total, t->stop + t->save_start + t->dirty + t->copy + t->device_state + t->resume);
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1, 2));
  EXPECT_GE(t->total, t->stop + t->dirty + t->copy + t->device_state);

  // The next pause sees only what changed since.
  hv_.ClearCommands();
  guest_[5 * kPage + 1] = 'z';
  ASSERT_TRUE(cp_->Take(2, e).ok());
  EXPECT_THAT(e.page_index, ElementsAre(5));
  EXPECT_EQ(e.device_state, std::string(100001, 'S')) << "the reused file holds only this save";
  EXPECT_TRUE(e.disk_writes.empty());
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1, 2, 3));
}

TEST_F(CheckpointerTest, FailedDeviceStateSaveStillResumesTheGuest) {
  hv_.FailNext("migrate", "GenericError", "migration blocked");
  core::StagedEpoch e;
  auto t = cp_->Take(1, e);
  EXPECT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("migration blocked"));
  EXPECT_EQ(Executes().back(), "cont");
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1)) << "no new epoch after a failed checkpoint";
}

TEST_F(CheckpointerTest, DeviceStateSaveIsBoundedAndCancelledBeforeTheGuestResumes) {
  migrate_completes_ = false;
  cp_->set_device_state_timeout(std::chrono::milliseconds(200));
  core::StagedEpoch e;
  auto t = cp_->Take(1, e);
  EXPECT_TRUE(absl::IsDeadlineExceeded(t.status())) << t.status();
  auto ex = Executes();
  ASSERT_GE(ex.size(), 7u);
  EXPECT_THAT(std::vector<std::string>(ex.end() - 3, ex.end()),
              ElementsAre("migrate_cancel", "object-del", "cont"));
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1));
}

TEST_F(CheckpointerTest, FailedMigrationReportedByQemuIsAnError) {
  hv_.Returns("query-migrate", {{"status", "failed"}, {"error-desc", "disk full"}});
  core::StagedEpoch e;
  auto t = cp_->Take(1, e);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("disk full"));
  EXPECT_EQ(Executes().back(), "cont");
}

TEST_F(CheckpointerTest, StopFailingLeavesTheGuestAlone) {
  hv_.FailNext("stop");
  core::StagedEpoch e;
  EXPECT_FALSE(cp_->Take(1, e).ok());
  EXPECT_THAT(Executes(), ElementsAre("object-add", "getfd", "stop", "object-del"));
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1)) << "the buffer opened for epoch 2 is gone";
}

TEST_F(CheckpointerTest, FailedFdPassingNeverStopsTheGuest) {
  hv_.FailNext("getfd");
  core::StagedEpoch e;
  EXPECT_FALSE(cp_->Take(1, e).ok());
  EXPECT_THAT(Executes(), ElementsAre("object-add", "getfd", "object-del"));
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1));
}

TEST_F(CheckpointerTest, FailedEgressBufferNeverStopsTheGuest) {
  hv_.FailNext("object-add");
  core::StagedEpoch e;
  EXPECT_FALSE(cp_->Take(1, e).ok());
  EXPECT_THAT(Executes(), ElementsAre("object-add"));
  EXPECT_THAT(gate_->held_epochs(), ElementsAre(1));
}

TEST_F(CheckpointerTest, GuestThatCannotBeResumedIsAnInternalError) {
  hv_.FailNext("cont", "GenericError", "cannot continue");
  core::StagedEpoch e;
  auto t = cp_->Take(1, e);
  EXPECT_TRUE(absl::IsInternal(t.status())) << t.status();
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("cannot resume the guest"));
}

}  // namespace
}  // namespace novadt::engine
