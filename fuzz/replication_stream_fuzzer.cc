// The backup's side of a replication stream (agent/core/replication_receiver.h), which every
// message from a peer goes through before it reaches the replica: the StreamOpen checks, then
// items in any order with any sizes, counts and encodings. The sink checks what the receiver
// promises it (pages and disk writes inside the geometry, one epoch at a time, a commit only of
// a complete epoch with its device state) and refuses now and then, as a full disk would.
//
// The input drives a FuzzedDataProvider: a few bytes for the StreamOpen (boot files included),
// then one item after another (boot file chunks included). Page data is made up by the harness
// (an input need not spell out 4 KiB pages), and an EpochEnd may take its counts from the
// harness's own tally, so that commits are reached.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/replication_receiver.h"
#include "fuzz/fuzz_check.h"

namespace {

using namespace novadt;
using namespace novadt::core;

// What the receiver let through, checked against the stream's open.
class CheckingSink final : public ReplicaSink {
 public:
  CheckingSink(const StreamOpen& open, FuzzedDataProvider& in) : open_(open), in_(in) {}

  Status AddBootFileData(const BootFileChunk& c) override {
    FUZZ_CHECK(!boot_done_ && !in_epoch_ && committed_ == 0 && !closed_,
               "boot file data after the boot files or inside an epoch");
    FUZZ_CHECK(!c.data.empty(), "empty boot file chunk");
    const BootFile* file = nullptr;
    for (const auto& f : open_.boot_files) {
      if (f.name == c.name) file = &f;
    }
    FUZZ_CHECK(file != nullptr, "boot file not declared");
    uint64_t& got = boot_bytes_[c.name];
    FUZZ_CHECK(c.offset == got && c.data.size() <= file->size_bytes - got,
               "boot file chunk out of order or beyond its size");
    got += c.data.size();
    return Refuse() ? absl::ResourceExhaustedError("refused") : absl::OkStatus();
  }
  Status EndBootFiles() override {
    FUZZ_CHECK(!boot_done_ && !in_epoch_ && !closed_, "EndBootFiles twice or inside an epoch");
    for (const auto& f : open_.boot_files) {
      FUZZ_CHECK(boot_bytes_[f.name] == f.size_bytes, "EndBootFiles with a boot file incomplete");
    }
    boot_done_ = true;
    return Refuse() ? absl::ResourceExhaustedError("refused") : absl::OkStatus();
  }
  Status BeginEpoch(uint64_t epoch) override {
    FUZZ_CHECK(!in_epoch_ && !closed_, "BeginEpoch inside an epoch or after Close");
    FUZZ_CHECK(boot_done_, "BeginEpoch before EndBootFiles");
    FUZZ_CHECK(committed_ == 0 || epoch == committed_ + 1, "epoch %llu after committed %llu",
               static_cast<unsigned long long>(epoch), static_cast<unsigned long long>(committed_));
    if (Refuse()) return absl::ResourceExhaustedError("refused");
    in_epoch_ = true;
    epoch_ = epoch;
    state_done_ = false;
    return absl::OkStatus();
  }
  Status AddPages(const RamPages& pages) override {
    FUZZ_CHECK(in_epoch_, "pages outside an epoch");
    FUZZ_CHECK(pages.data.size() == pages.page_index.size() * kGuestPageSize, "page data size");
    for (uint64_t p : pages.page_index) {
      FUZZ_CHECK(p < open_.ram_size_bytes / kGuestPageSize, "page %llu beyond RAM",
                 static_cast<unsigned long long>(p));
    }
    return Refuse() ? absl::ResourceExhaustedError("refused") : absl::OkStatus();
  }
  Status AddDiskWrite(const DiskWrite& w) override {
    FUZZ_CHECK(in_epoch_, "disk write outside an epoch");
    const DiskGeometry* disk = nullptr;
    for (const auto& d : open_.disks) {
      if (d.name == w.disk) disk = &d;
    }
    FUZZ_CHECK(disk != nullptr, "write to unknown disk");
    const uint64_t len = w.zeroes ? w.length : w.data.size();
    FUZZ_CHECK(!w.zeroes || w.data.empty(), "zeroes with data");
    FUZZ_CHECK(w.offset <= disk->size_bytes && len <= disk->size_bytes - w.offset,
               "write beyond the disk");
    return Refuse() ? absl::ResourceExhaustedError("refused") : absl::OkStatus();
  }
  Status AddDeviceState(const DeviceStateChunk& c) override {
    FUZZ_CHECK(in_epoch_ && !state_done_, "device state outside an epoch or after its end");
    state_done_ = c.last;
    return Refuse() ? absl::ResourceExhaustedError("refused") : absl::OkStatus();
  }
  Status CommitEpoch(const EpochEnd& end) override {
    FUZZ_CHECK(in_epoch_ && state_done_ && end.epoch == epoch_,
               "commit of an incomplete or other epoch");
    if (Refuse()) return absl::ResourceExhaustedError("refused");
    in_epoch_ = false;
    committed_ = end.epoch;
    return absl::OkStatus();
  }
  void Close(const Status&) override {
    FUZZ_CHECK(!closed_, "closed twice");
    closed_ = true;
  }

 private:
  bool Refuse() { return in_.ConsumeIntegralInRange<uint8_t>(0, 63) == 0; }

  const StreamOpen open_;
  FuzzedDataProvider& in_;
  bool in_epoch_ = false, state_done_ = false, closed_ = false, boot_done_ = false;
  std::map<std::string, uint64_t> boot_bytes_;
  uint64_t epoch_ = 0, committed_ = 0;
};

// A value that is mostly small and sometimes anything (offsets, lengths, epochs).
uint64_t Number(FuzzedDataProvider& in, uint64_t small) {
  return in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, small)
                          : in.ConsumeIntegral<uint64_t>();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  StreamOpen open;
  open.protocol = in.ConsumeIntegralInRange<uint32_t>(1, 5);
  open.instance_uuid = in.ConsumeBool() ? "3f2b6c1e-uuid" : "";
  open.primary_host = "primary";
  open.ram_size_bytes = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(1, 16) * 4096
                                         : in.ConsumeIntegral<uint64_t>();
  const int disks = in.ConsumeIntegralInRange<int>(0, 3);
  for (int i = 0; i < disks; ++i) {
    open.disks.push_back({in.ConsumeBool() ? "vd" + std::string(1, 'a' + i) : "",
                          Number(in, 1 << 16)});
  }
  open.basis_id = in.ConsumeBool() ? 0 : in.ConsumeIntegral<uint64_t>();
  const int boot_files = in.ConsumeIntegralInRange<int>(0, 3);
  for (int i = 0; i < boot_files; ++i) {
    open.boot_files.push_back({in.ConsumeBool() ? (in.ConsumeBool() ? "kernel" : "ramdisk")
                                                : in.ConsumeRandomLengthString(8),
                               Number(in, 3 * 4096)});
  }

  CheckingSink* sink = nullptr;
  auto receiver = ReplicationReceiver::Start(open, [&](const StreamOpen& o) -> StatusOr<std::unique_ptr<ReplicaSink>> {
    auto s = std::make_unique<CheckingSink>(o, in);
    sink = s.get();
    return std::unique_ptr<ReplicaSink>(std::move(s));
  });
  if (!receiver.ok()) return 0;

  // The harness's tally of the open epoch, for EpochEnds that claim the right counts.
  uint64_t epoch = 0, pages = 0, writes = 0, state_bytes = 0;
  Status why;
  while (in.remaining_bytes() > 0) {
    StreamItem item;
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
      case 5: {
        BootFileChunk c;
        c.name = in.ConsumeBool() ? (in.ConsumeBool() ? "kernel" : "ramdisk")
                                  : in.ConsumeRandomLengthString(8);
        c.offset = Number(in, 3 * 4096);
        c.data.assign(in.ConsumeIntegralInRange<size_t>(0, 5000), 'k');
        item = std::move(c);
        break;
      }
      case 0:
        item = EpochBegin{in.ConsumeBool() ? epoch + 1 : Number(in, 4)};
        break;
      case 1: {
        RamPages p;
        const int n = in.ConsumeIntegralInRange<int>(0, 3);
        for (int i = 0; i < n; ++i) p.page_index.push_back(Number(in, 20));
        p.data.assign(in.ConsumeBool() ? n * kGuestPageSize : in.ConsumeIntegralInRange(0, 9000),
                      'p');
        item = std::move(p);
        break;
      }
      case 2: {
        DiskWrite w;
        w.disk = in.ConsumeBool() ? "vd" + std::string(1, 'a' + in.ConsumeIntegralInRange(0, 3))
                                  : in.ConsumeRandomLengthString(8);
        w.offset = Number(in, 1 << 16);
        w.zeroes = in.ConsumeBool();
        w.length = Number(in, 1 << 16);
        if (!w.zeroes || in.ConsumeIntegralInRange(0, 7) == 0) {
          w.data = in.ConsumeRandomLengthString(64);
        }
        item = std::move(w);
        break;
      }
      case 3: {
        DeviceStateChunk c;
        c.data = in.ConsumeRandomLengthString(256);
        c.last = in.ConsumeBool();
        c.encoding = static_cast<DeviceStateEncoding>(in.ConsumeIntegralInRange<uint32_t>(0, 2));
        item = std::move(c);
        break;
      }
      default: {
        EpochEnd e;
        if (in.ConsumeBool()) {
          e = {epoch, pages, writes, state_bytes};
        } else {
          e = {Number(in, 4), Number(in, 4), Number(in, 4), Number(in, 512)};
        }
        item = e;
        break;
      }
    }
    auto acked = (*receiver)->Handle(item);
    if (!acked.ok()) {
      why = acked.status();
      break;
    }
    // Keep the tally as the receiver counts.
    if (const auto* b = std::get_if<EpochBegin>(&item)) {
      epoch = b->epoch;
      pages = writes = state_bytes = 0;
    } else if (const auto* p = std::get_if<RamPages>(&item)) {
      pages += p->page_index.size();
    } else if (std::holds_alternative<DiskWrite>(item)) {
      ++writes;
    } else if (const auto* c = std::get_if<DeviceStateChunk>(&item)) {
      state_bytes += c->data.size();
    } else if (std::holds_alternative<BootFileChunk>(item)) {
      FUZZ_CHECK(!acked->has_value(), "an ack for a boot file chunk");
    } else {
      FUZZ_CHECK(acked->has_value() && **acked == epoch, "an accepted EpochEnd not acked");
    }
    if (acked->has_value()) {
      FUZZ_CHECK(std::holds_alternative<EpochEnd>(item), "ack for a non-EpochEnd item");
    }
    if (in.ConsumeIntegralInRange(0, 31) == 0) (*receiver)->Heard();
  }
  (*receiver)->Close(why);
  (void)sink;
  return 0;
}
