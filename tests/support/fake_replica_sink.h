// A ReplicaSink that records what it receives and can refuse on demand (LevelDB-style fault
// injection). Thread-safe: the recording may be read from the test thread while a gRPC thread
// feeds the sink.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/core/replication_link.h"

namespace novadt::testing {

struct FakeReplicaState {
  std::mutex mu;
  std::vector<std::string> calls;  // "begin 1", "pages 2", "disk vda 0+4096", "devstate 10",
                                   // "commit 1", "close OK" / "close <status>"
  std::vector<uint64_t> committed;
  std::vector<uint64_t> pages;  // every page index received, in order
  std::string device_state;     // the last complete device state handed to the sink
  std::string device_state_wip;
  // Boot files: the bytes received per name ("bootfile <name> <offset>+<n>" in `calls`), and how
  // often EndBootFiles() was called (not in `calls`, which older tests compare whole; fail_on
  // "bootfiles end" makes it fail).
  std::map<std::string, std::string> boot_files;
  int boot_files_ended = 0;
  std::atomic<int> heard{0};
  // Fault injection: the first call whose record starts with `fail_on` returns `fail_with`.
  std::string fail_on;
  absl::Status fail_with = absl::InternalError("injected");

  std::vector<std::string> Calls() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
  std::vector<uint64_t> Pages() {
    std::lock_guard<std::mutex> lock(mu);
    return pages;
  }
  std::vector<uint64_t> Committed() {
    std::lock_guard<std::mutex> lock(mu);
    return committed;
  }
};

class FakeReplicaSink final : public core::ReplicaSink {
 public:
  explicit FakeReplicaSink(std::shared_ptr<FakeReplicaState> state) : s_(std::move(state)) {}

  void OnPrimaryHeard() override { ++s_->heard; }
  Status AddBootFileData(const core::BootFileChunk& c) override {
    Status st = Record("bootfile " + c.name + " " + std::to_string(c.offset) + "+" +
                       std::to_string(c.data.size()));
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->boot_files[c.name] += c.data;
    }
    return st;
  }
  Status EndBootFiles() override {
    std::lock_guard<std::mutex> lock(s_->mu);
    ++s_->boot_files_ended;
    if (s_->fail_on == "bootfiles end") {
      s_->fail_on.clear();
      return s_->fail_with;
    }
    return absl::OkStatus();
  }
  Status BeginEpoch(uint64_t epoch) override { return Record("begin " + std::to_string(epoch)); }
  Status AddPages(const core::RamPages& p) override {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->pages.insert(s_->pages.end(), p.page_index.begin(), p.page_index.end());
    }
    return Record("pages " + std::to_string(p.page_index.size()));
  }
  Status AddDiskWrite(const core::DiskWrite& w) override {
    return Record("disk " + w.disk + " " + std::to_string(w.offset) + "+" +
                  std::to_string(w.zeroes ? w.length : w.data.size()) + (w.zeroes ? " zeroes" : ""));
  }
  Status AddDeviceState(const core::DeviceStateChunk& c) override {
    Status st = Record("devstate " + std::to_string(c.data.size()) + (c.last ? " last" : ""));
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->device_state_wip += c.data;
      if (c.last) s_->device_state = std::exchange(s_->device_state_wip, {});
    }
    return st;
  }
  Status CommitEpoch(const core::EpochEnd& e) override {
    Status st = Record("commit " + std::to_string(e.epoch));
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->committed.push_back(e.epoch);
    }
    return st;
  }
  void Close(const Status& why) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back(why.ok() ? "close OK" : "close " + why.ToString());
  }

 private:
  Status Record(const std::string& call) {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back(call);
    if (!s_->fail_on.empty() && call.rfind(s_->fail_on, 0) == 0) {
      s_->fail_on.clear();
      return s_->fail_with;
    }
    return absl::OkStatus();
  }

  std::shared_ptr<FakeReplicaState> s_;
};

// A factory making FakeReplicaSinks over one shared state.
inline core::ReplicaSinkFactory FakeSinkFactory(std::shared_ptr<FakeReplicaState> state) {
  return [state](const core::StreamOpen&) -> StatusOr<std::unique_ptr<core::ReplicaSink>> {
    return std::unique_ptr<core::ReplicaSink>(new FakeReplicaSink(state));
  };
}

// One small, complete epoch: 2 pages, 1 disk write, a 2-chunk device state.
inline std::vector<core::StreamItem> SmallEpoch(uint64_t epoch) {
  return {core::EpochBegin{epoch},
          core::RamPages{{0, 7}, std::string(2 * core::kGuestPageSize, char('a' + epoch))},
          core::DiskWrite{"vda", 4096 * epoch, std::string(512, 'd')},
          core::DeviceStateChunk{std::string(10, 's'), false},
          core::DeviceStateChunk{std::string(5, 's'), true},
          core::EpochEnd{epoch, 2, 1, 15}};
}

inline core::StreamOpen TestOpen() {
  core::StreamOpen o;
  o.instance_uuid = "3f0c2b8e-6d41-4a5e-9c3a-7b2d1e0f4a10";
  o.primary_host = "rig-a";
  o.ram_size_bytes = 64 * core::kGuestPageSize;
  o.disks = {{"vda", 1 << 20}};
  return o;
}

}  // namespace novadt::testing
