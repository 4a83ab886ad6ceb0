#include "agent/core/replica_basis.h"

#include <xxhash.h>

namespace novadt::core {

ContentHash HashContent(std::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.low64, h.high64};
}

ContentHash HashZeroes(uint64_t length) {
  static const ContentHash kBlock = HashContent(std::string(kBasisBlockSize, '\0'));
  if (length == kBasisBlockSize) return kBlock;
  return HashContent(std::string(length, '\0'));
}

bool ReplicaBasis::Fits(uint64_t ram_size, const std::vector<DiskGeometry>& geometry) const {
  return ram_size_bytes == ram_size && disks == geometry;
}

Status ReplicaBasis::Validate() const {
  if (id == 0) return absl::InvalidArgumentError("basis without an id");
  if (ram_pages.size() != ram_size_bytes / kGuestPageSize) {
    return absl::InvalidArgumentError("basis has " + std::to_string(ram_pages.size()) +
                                      " RAM page hashes for " + std::to_string(ram_size_bytes) +
                                      " bytes of RAM");
  }
  if (disk_blocks.size() != disks.size()) {
    return absl::InvalidArgumentError("basis has block hashes of " +
                                      std::to_string(disk_blocks.size()) + " disks, not " +
                                      std::to_string(disks.size()));
  }
  for (const auto& d : disks) {
    auto it = disk_blocks.find(d.name);
    if (it == disk_blocks.end() || it->second.size() != BasisBlockCount(d.size_bytes)) {
      return absl::InvalidArgumentError("basis of disk " + d.name +
                                        " does not cover its " + std::to_string(d.size_bytes) +
                                        " bytes");
    }
  }
  return absl::OkStatus();
}

DiskBasisFilter::DiskBasisFilter(const std::vector<DiskGeometry>& disks,
                                 std::map<std::string, std::vector<ContentHash>> blocks) {
  for (const auto& d : disks) {
    auto it = blocks.find(d.name);
    if (it == blocks.end() || it->second.size() != BasisBlockCount(d.size_bytes)) continue;
    Disk& disk = disks_[d.name];
    disk.size = d.size_bytes;
    disk.valid.assign(it->second.size(), true);
    disk.blocks = std::move(it->second);
  }
}

void DiskBasisFilter::Filter(DiskWrite w, std::vector<DiskWrite>& out) {
  auto it = disks_.find(w.disk);
  const uint64_t length = w.zeroes ? w.length : w.data.size();
  if (it == disks_.end() || length == 0 || w.offset + length > it->second.size) {
    out.push_back(std::move(w));  // nothing to compare (the backup judges a bad write)
    return;
  }
  Disk& disk = it->second;
  const uint64_t end = w.offset + length;
  const size_t first_out = out.size();
  uint64_t pending = w.offset;  // start of the part not yet decided to go out
  const auto emit = [&](uint64_t from, uint64_t to) {
    if (from == to) return;
    DiskWrite part;
    part.disk = w.disk;
    part.offset = from;
    part.zeroes = w.zeroes;
    if (w.zeroes) {
      part.length = to - from;
    } else {
      part.data = w.data.substr(from - w.offset, to - from);
    }
    out.push_back(std::move(part));
  };
  for (uint64_t b = w.offset / kBasisBlockSize; b * kBasisBlockSize < end; ++b) {
    const uint64_t bs = b * kBasisBlockSize;
    const uint64_t be = std::min(bs + kBasisBlockSize, disk.size);
    const bool whole = bs >= w.offset && be <= end;
    bool same = false;
    if (whole && disk.valid[b]) {
      const ContentHash h =
          w.zeroes ? HashZeroes(be - bs)
                   : HashContent(std::string_view(w.data).substr(bs - w.offset, be - bs));
      same = h == disk.blocks[b];
    }
    if (same) {
      emit(pending, bs);
      pending = be;
      skipped_ += be - bs;
    } else {
      disk.valid[b] = false;  // the part that goes changes the replica's block
    }
  }
  if (pending == w.offset) {  // nothing left out: the write goes whole
    out.resize(first_out);
    out.push_back(std::move(w));
    return;
  }
  emit(pending, end);
}

}  // namespace novadt::core
