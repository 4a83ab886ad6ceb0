// journal.redo as the backup replays it into a replica (agent/replica/replica_format.h
// ReplayJournal; the store's Open() recovery and Commit() use it). The replica is 64 pages of
// RAM and two disks; the epoch is the one the input's header names (or a wrong one, chosen by
// the input's length), so that records are reached. Every page and disk range the replay hands
// out must lie inside the replica: an out-of-range write is a crash here.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/replica/replica_format.h"
#include "fuzz/fuzz_check.h"

namespace {

using namespace novadt;
using namespace novadt::replica;

ReplicaGeometry Geometry() {
  ReplicaGeometry g;
  g.ram_size = 64 * kReplicaPageSize;
  g.disks = {{"vda", 1 << 20}, {"vdb", 4097}};
  return g;
}

class Checker final : public JournalVisitor {
 public:
  explicit Checker(const ReplicaGeometry& g) : g_(g) {}
  Status Page(uint64_t page, std::string_view bytes) override {
    FUZZ_CHECK(page < g_.ram_size / kReplicaPageSize, "page %llu beyond RAM",
               static_cast<unsigned long long>(page));
    FUZZ_CHECK(bytes.size() == kReplicaPageSize, "page of %zu bytes", bytes.size());
    return absl::OkStatus();
  }
  Status DiskBytes(size_t disk, uint64_t offset, std::string_view bytes) override {
    FUZZ_CHECK(disk < g_.disks.size(), "disk index %zu", disk);
    FUZZ_CHECK(offset <= g_.disks[disk].size && bytes.size() <= g_.disks[disk].size - offset,
               "disk write %llu+%zu beyond disk %zu", static_cast<unsigned long long>(offset),
               bytes.size(), disk);
    FUZZ_CHECK(!bytes.empty() && bytes.size() <= kJournalReadChunk, "piece of %zu bytes",
               bytes.size());
    return absl::OkStatus();
  }

 private:
  const ReplicaGeometry& g_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  uint64_t epoch = size >= kJournalHeaderSize ? GetU64(bytes.data() + kJournalMagic.size()) : 0;
  if (size % 7 == 0) ++epoch;  // sometimes the wrong epoch
  static const ReplicaGeometry geometry = Geometry();
  Checker checker(geometry);
  MemoryJournalSource src(bytes);
  (void)ReplayJournal(epoch, bytes.size(), geometry, src, checker);
  // A source longer than the journal it holds (the store's buffer is exactly the journal, but
  // the replay must not rely on it).
  MemoryJournalSource longer(bytes);
  (void)ReplayJournal(epoch, bytes.size() / 2, geometry, longer, checker);
  return 0;
}
