#include "agent/core/epoch_sender.h"

#include <algorithm>

namespace novadt::core {

EpochWriter::EpochWriter(EpochStream& stream, uint64_t epoch, size_t max_chunk_bytes)
    : stream_(stream), chunk_(max_chunk_bytes) {
  end_.epoch = epoch;
}

Status EpochWriter::Begin() { return stream_.Send(EpochBegin{end_.epoch}); }

Status EpochWriter::Pages(const StagedEpoch& staged) {
  if (staged.page_data.size() != staged.page_index.size() * kGuestPageSize) {
    return absl::InvalidArgumentError("staged epoch " + std::to_string(staged.epoch) +
                                      ": page data does not match the page list");
  }
  const size_t pages_per_chunk = chunk_ / kGuestPageSize;
  for (size_t first = 0; first < staged.page_index.size(); first += pages_per_chunk) {
    const size_t n = std::min(pages_per_chunk, staged.page_index.size() - first);
    RamPages chunk;
    chunk.page_index.assign(staged.page_index.begin() + first,
                            staged.page_index.begin() + first + n);
    chunk.data = staged.page_data.substr(first * kGuestPageSize, n * kGuestPageSize);
    NOVA_DT_RETURN_IF_ERROR(stream_.Send(chunk));
    end_.pages += n;
  }
  return absl::OkStatus();
}

Status EpochWriter::DiskWrites(const std::vector<DiskWrite>& writes) {
  for (const DiskWrite& w : writes) {
    if (w.zeroes || w.data.size() <= chunk_) {
      NOVA_DT_RETURN_IF_ERROR(stream_.Send(w));
      ++end_.disk_writes;
      continue;
    }
    // A large write goes as consecutive pieces; their order keeps the disk's byte history.
    for (size_t off = 0; off < w.data.size(); off += chunk_) {
      NOVA_DT_RETURN_IF_ERROR(
          stream_.Send(DiskWrite{w.disk, w.offset + off, w.data.substr(off, chunk_)}));
      ++end_.disk_writes;
    }
  }
  return absl::OkStatus();
}

Status EpochWriter::End(const std::string& device_state, DeviceStateEncoding encoding) {
  // Always at least one chunk, so an empty device state is still explicitly complete.
  size_t off = 0;
  do {
    const size_t n = std::min(chunk_, device_state.size() - off);
    NOVA_DT_RETURN_IF_ERROR(
        stream_.Send(DeviceStateChunk{device_state.substr(off, n), off + n == device_state.size(),
                                      encoding}));
    off += n;
  } while (off < device_state.size());
  end_.device_state_bytes = device_state.size();
  return stream_.Send(end_);
}

Status SendEpoch(const StagedEpoch& epoch, EpochStream& stream, size_t max_chunk_bytes) {
  if (epoch.page_data.size() != epoch.page_index.size() * kGuestPageSize) {
    return absl::InvalidArgumentError("staged epoch " + std::to_string(epoch.epoch) +
                                      ": page data does not match the page list");
  }
  if (max_chunk_bytes < kGuestPageSize) {
    return absl::InvalidArgumentError("chunk size below one page");
  }
  EpochWriter w(stream, epoch.epoch, max_chunk_bytes);
  NOVA_DT_RETURN_IF_ERROR(w.Begin());
  NOVA_DT_RETURN_IF_ERROR(w.Pages(epoch));
  NOVA_DT_RETURN_IF_ERROR(w.DiskWrites(epoch.disk_writes));
  return w.End(epoch.device_state, epoch.device_state_encoding);
}

}  // namespace novadt::core
