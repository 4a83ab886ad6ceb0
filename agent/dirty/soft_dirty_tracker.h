// Dirty tracking by the kernel's soft-dirty bits (Documentation/admin-guide/mm/soft-dirty.rst).
//
// Reset() writes "4" to /proc/<qemu-pid>/clear_refs; Collect() reads the 64-bit pagemap entries
// of QEMU's RAM mapping from /proc/<qemu-pid>/pagemap (bit 55 = soft-dirty) and clears again.
// Limits, all outside what a paused TCG/KVM guest does through QEMU's own mapping:
//  - only writes through QEMU's page tables are seen: another process writing the same RAM
//    file (a vhost-user backend) is invisible;
//  - clear_refs clears the bits of the whole QEMU process: one tracker per QEMU;
//  - a shmem page reclaimed from QEMU's page tables loses its bit; the RAM must not be
//    swapped out (no swap, or locked memory).
// The parsing is in free functions so it can be tested on constructed data.
//
// Thread-compatible (see DirtyTracker).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/dirty/dirty_tracker.h"
#include "agent/common/scoped_fd.h"

namespace novadt::dirty {

// Bits of a /proc/<pid>/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
inline constexpr uint64_t kPagemapSoftDirty = uint64_t{1} << 55;
inline constexpr uint64_t kPagemapExclusive = uint64_t{1} << 56;
inline constexpr uint64_t kPagemapFile = uint64_t{1} << 61;  // file page or shared anon
inline constexpr uint64_t kPagemapSwapped = uint64_t{1} << 62;
inline constexpr uint64_t kPagemapPresent = uint64_t{1} << 63;

// One line of /proc/<pid>/maps.
struct MapsEntry {
  uint64_t start = 0;   // first address
  uint64_t end = 0;     // one past the last address
  std::string perms;    // e.g. "rw-s"
  uint64_t offset = 0;  // file offset of `start`
  std::string dev;      // "maj:min", hex
  uint64_t inode = 0;
  std::string path;      // empty for anonymous memory; without the " (deleted)" suffix
  bool deleted = false;  // the kernel appended " (deleted)": the file was unlinked
};

// Parses one maps line (no trailing newline needed). The path is everything after the inode
// and the padding spaces, so paths with spaces survive. InvalidArgument on a malformed line.
StatusOr<MapsEntry> ParseMapsLine(std::string_view line);

// Virtual address range [start, end) in QEMU's address space.
struct AddressRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - start; }
};

// Finds QEMU's mapping of the RAM file `ram_path` in the text of /proc/<pid>/maps: the
// mappings of that path (deleted or not) that are contiguous in memory and in file offset
// are merged (QEMU's madvise() calls can split one mmap into several lines), and the run
// that starts at file offset 0 and is the longest is returned. NotFound when there is none;
// InvalidArgument on a malformed line.
StatusOr<AddressRange> FindRamMapping(std::string_view maps_text, std::string_view ram_path);

// The pages whose pagemap entry has the soft-dirty bit, entry i being page i. Present,
// swapped and absent entries alike: the bit is what counts (the kernel keeps it in swap
// entries, and reports every page of a freshly created mapping as soft-dirty).
DirtyPages PagemapToDirtyPages(std::span<const uint64_t> entries);

class SoftDirtyTracker final : public DirtyTracker {
 public:
  // Opens <proc_root>/<pid>/pagemap and <proc_root>/<pid>/clear_refs for the RAM mapped at
  // `range` (page aligned, non-empty: InvalidArgument otherwise). NotFound/Unavailable when
  // the files cannot be opened (QEMU gone, or no permission to read its pagemap).
  static StatusOr<std::unique_ptr<SoftDirtyTracker>> Create(const std::string& proc_root, pid_t pid,
                                                            AddressRange range);

  std::string_view name() const override { return "soft-dirty"; }
  uint64_t page_count() const override { return range_.size() / kPageSize; }
  Status Reset() override;
  StatusOr<DirtyPages> Collect() override;

 private:
  SoftDirtyTracker(ScopedFd pagemap, ScopedFd clear_refs, AddressRange range)
      : pagemap_(std::move(pagemap)), clear_refs_(std::move(clear_refs)), range_(range) {}
  Status ClearSoftDirty();

  ScopedFd pagemap_;
  ScopedFd clear_refs_;
  AddressRange range_;
  bool armed_ = false;
  std::vector<uint64_t> buffer_;  // pagemap entries of the range, reused across Collect()s
};

}  // namespace novadt::dirty
