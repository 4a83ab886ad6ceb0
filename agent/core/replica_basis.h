// Incremental (re)seeding: a backup that already holds bytes of a server's replica (an older
// epoch of it after the pair degraded, or what is left of it after a restart) describes them as
// hashes — the replica's basis — and the primary's seed sends only the RAM pages and disk blocks
// whose bytes differ. RAM is compared per guest page, disks per aligned kBasisBlockSize block.
//
// Correctness does not depend on which epoch the basis holds, only on its bytes: a page or block
// is left out only when its bytes hash the same on both sides (XXH3-128), and the backup accepts
// a stream naming a basis only while the replica files are exactly as hashed (replica/
// store_sink.h). A guest can at most collide its own pages, which damages only its own replica.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/core/replication_link.h"

namespace novadt::core {

// Disk blocks of a basis: large enough that the hashes stay small (16 bytes per 64 KiB), small
// enough that a guest's scattered writes leave most blocks unchanged.
inline constexpr uint64_t kBasisBlockSize = 64 << 10;

// XXH3-128 of some bytes (ContentHash and ReplicaBasis are in replication_link.h).
ContentHash HashContent(std::string_view bytes);
// HashContent of `length` zero bytes (kBasisBlockSize is cached).
ContentHash HashZeroes(uint64_t length);
// Block i of a disk of `disk_size` bytes covers [i * kBasisBlockSize, min(+kBasisBlockSize,
// disk_size)): the last block may be short and is hashed as such.
inline uint64_t BasisBlockCount(uint64_t disk_size) {
  return (disk_size + kBasisBlockSize - 1) / kBasisBlockSize;
}

// The primary's filter of a seed's disk writes against a basis, applied in stream order (the
// block copy's initial copy and guest writes alike). A write's whole blocks whose bytes equal
// the basis are left out (the replica has them); everything else goes. Once a write that goes
// touches a block, that block never matches again in this stream: the replica's block is then
// no longer the basis's. Not thread-safe.
class DiskBasisFilter {
 public:
  DiskBasisFilter() = default;  // no basis: every write goes
  DiskBasisFilter(const std::vector<DiskGeometry>& disks,
                  std::map<std::string, std::vector<ContentHash>> blocks);
  // Appends to `out` the parts of `w` the replica lacks (in order, not overlapping).
  void Filter(DiskWrite w, std::vector<DiskWrite>& out);
  uint64_t skipped_bytes() const { return skipped_; }

 private:
  struct Disk {
    uint64_t size = 0;
    std::vector<ContentHash> blocks;
    std::vector<bool> valid;  // the replica's block still holds the basis's bytes
  };
  std::map<std::string, Disk> disks_;
  uint64_t skipped_ = 0;
};

}  // namespace novadt::core
