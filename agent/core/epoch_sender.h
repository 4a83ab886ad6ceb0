// Stage IV/V, sender half: one staged epoch → the ordered item sequence of the replication
// stream (EpochBegin, RAM pages, disk writes, device state, EpochEnd), chunked so no message
// exceeds the transport's limit. Runs on the sender thread after the guest was resumed
// (stage III), so its cost is off the checkpoint pause.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/core/replication_link.h"

namespace novadt::core {

// What stages I-III leave for the sender: everything copied out while the guest was paused.
struct StagedEpoch {
  uint64_t epoch = 0;
  std::vector<uint64_t> page_index;  // dirty pages, ascending
  std::string page_data;             // page_index.size() * kGuestPageSize bytes, same order
  std::vector<DiskWrite> disk_writes;  // in the order the guest issued them
  std::string device_state;            // CPU + device state blob of the checkpoint
  // How device_state is encoded (the checkpointer stages it raw; the session may delta-encode
  // it before sending).
  DeviceStateEncoding device_state_encoding = DeviceStateEncoding::kRaw;
};

// Largest payload put into one stream item by default (well under the peer link's 16 MiB).
inline constexpr size_t kDefaultChunkBytes = 4 << 20;

// Writes one epoch onto a stream in parts, keeping the counts EpochEnd reports. Seeding uses the
// parts directly (RAM slices streamed while the guest runs, the rest at the first pause);
// SendEpoch() is the one-shot form. Every method returns the stream's error if it ended; the
// backup then drops the partial epoch.
class EpochWriter {
 public:
  // REQUIRES: max_chunk_bytes >= kGuestPageSize.
  EpochWriter(EpochStream& stream, uint64_t epoch, size_t max_chunk_bytes = kDefaultChunkBytes);
  Status Begin();
  // Pages of staged.page_index/page_data (InvalidArgument when they do not match).
  Status Pages(const StagedEpoch& staged);
  Status DiskWrites(const std::vector<DiskWrite>& writes);
  // Device state, then EpochEnd: the epoch is complete.
  Status End(const std::string& device_state,
             DeviceStateEncoding encoding = DeviceStateEncoding::kRaw);

 private:
  EpochStream& stream_;
  const size_t chunk_;
  EpochEnd end_;
};

// Sends `epoch` on `stream` (Begin, pages, disk writes, device state, End). REQUIRES:
// page_data.size() == page_index.size() * kGuestPageSize, max_chunk_bytes >= kGuestPageSize
// (InvalidArgument otherwise, nothing sent).
Status SendEpoch(const StagedEpoch& epoch, EpochStream& stream,
                 size_t max_chunk_bytes = kDefaultChunkBytes);

}  // namespace novadt::core
