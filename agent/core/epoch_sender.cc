#include "agent/core/epoch_sender.h"

#include <algorithm>

namespace novadt::core {

Status SendEpoch(const StagedEpoch& epoch, EpochStream& stream, size_t max_chunk_bytes) {
  if (epoch.page_data.size() != epoch.page_index.size() * kGuestPageSize) {
    return absl::InvalidArgumentError("staged epoch " + std::to_string(epoch.epoch) +
                                      ": page data does not match the page list");
  }
  if (max_chunk_bytes < kGuestPageSize) {
    return absl::InvalidArgumentError("chunk size below one page");
  }
  EpochEnd end{epoch.epoch, epoch.page_index.size(), 0, epoch.device_state.size()};
  NOVA_DT_RETURN_IF_ERROR(stream.Send(EpochBegin{epoch.epoch}));

  const size_t pages_per_chunk = max_chunk_bytes / kGuestPageSize;
  for (size_t first = 0; first < epoch.page_index.size(); first += pages_per_chunk) {
    const size_t n = std::min(pages_per_chunk, epoch.page_index.size() - first);
    RamPages chunk;
    chunk.page_index.assign(epoch.page_index.begin() + first,
                            epoch.page_index.begin() + first + n);
    chunk.data = epoch.page_data.substr(first * kGuestPageSize, n * kGuestPageSize);
    NOVA_DT_RETURN_IF_ERROR(stream.Send(chunk));
  }

  for (const DiskWrite& w : epoch.disk_writes) {
    if (w.zeroes || w.data.size() <= max_chunk_bytes) {
      NOVA_DT_RETURN_IF_ERROR(stream.Send(w));
      ++end.disk_writes;
      continue;
    }
    // A large write goes as consecutive pieces; their order keeps the disk's byte history.
    for (size_t off = 0; off < w.data.size(); off += max_chunk_bytes) {
      NOVA_DT_RETURN_IF_ERROR(
          stream.Send(DiskWrite{w.disk, w.offset + off, w.data.substr(off, max_chunk_bytes)}));
      ++end.disk_writes;
    }
  }

  // Always at least one chunk, so an empty device state is still explicitly complete.
  size_t off = 0;
  do {
    const size_t n = std::min(max_chunk_bytes, epoch.device_state.size() - off);
    NOVA_DT_RETURN_IF_ERROR(stream.Send(
        DeviceStateChunk{epoch.device_state.substr(off, n), off + n == epoch.device_state.size()}));
    off += n;
  } while (off < epoch.device_state.size());

  return stream.Send(end);
}

}  // namespace novadt::core
