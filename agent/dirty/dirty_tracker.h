// Which guest RAM pages were written since the last checkpoint (ARCHITECTURE.md, "Dirty pages").
//
// Two implementations behind one interface, chosen at run time by MakeDirtyTracker():
//  - "soft-dirty": the kernel's soft-dirty bits of QEMU's RAM mapping, read from
//    /proc/<qemu-pid>/pagemap and cleared with /proc/<qemu-pid>/clear_refs. Cost is
//    proportional to the page-table walk, not to RAM contents. Needs CONFIG_MEM_SOFT_DIRTY.
//  - "hash-scan": one 64-bit XXH3 hash per page of the shared RAM file; Collect() rehashes
//    every page. Works on any kernel; cost is one read pass over guest RAM.
//
// Thread safety: a DirtyTracker is thread-compatible (one owner, e.g. the epoch thread; calls
// must not overlap). Implementations may use worker threads inside a call.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "agent/common/status.h"
#include "agent/dirty/dirty_pages.h"

namespace novadt::dirty {

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;

  // "soft-dirty" or "hash-scan"; reported in the agent's status.
  virtual std::string_view name() const = 0;
  // Number of pages of guest RAM tracked (RAM size / kPageSize).
  virtual uint64_t page_count() const = 0;

  // Starts tracking from now: later Collect() calls report writes made after this call.
  // REQUIRES: the guest is paused (or its writes until the next pause may be missed).
  // On failure the tracker is not armed and Collect() fails until a Reset() succeeds.
  virtual Status Reset() = 0;

  // Returns every page written since the last successful Collect() or Reset(), and re-arms
  // so that the next Collect() starts from now. Pages may be over-reported (a page written
  // and restored to the same bytes may or may not appear), never under-reported.
  // REQUIRES: the guest is paused for the whole call.
  // FailedPrecondition before the first successful Reset(); other errors (I/O on /proc)
  // leave the tracker disarmed: the caller must Reset() and send a full copy.
  virtual StatusOr<DirtyPages> Collect() = 0;
};

// True when this kernel tracks soft-dirty bits. Probed, not read from the kernel config: maps
// an anonymous page in this process, clears soft-dirty bits via /proc/self/clear_refs, writes
// the page and checks pagemap bit 55 (SPIKE-NOTES.md: without CONFIG_MEM_SOFT_DIRTY the
// clear_refs write succeeds but the bit stays 0). Any failure of the probe counts as false.
// Side effect: clears the soft-dirty bits of the calling process (harmless to the agent).
bool KernelHasSoftDirty();

struct DirtyTrackerOptions {
  enum class Method {
    kAuto,       // soft-dirty when KernelHasSoftDirty() and qemu_pid > 0, else hash-scan
    kSoftDirty,  // soft-dirty without probing the kernel (the caller knows); fails if unusable
    kHashScan,   // hash-scan always
  };
  // Guest RAM file (memory-backend-file,share=on) exactly as QEMU opened it.
  std::string ram_path;
  // Guest RAM size in bytes; a multiple of kPageSize. The file must be at least this long.
  uint64_t ram_size = 0;
  // QEMU's pid; 0 when unknown (hash-scan only).
  pid_t qemu_pid = 0;
  Method method = Method::kAuto;
  // Hash-scan worker threads (the calling thread included); 0: hardware concurrency.
  unsigned scan_threads = 0;
  // Where procfs is mounted; tests point it at a directory of fake files.
  std::string proc_root = "/proc";
};

// Builds the tracker for `options` (not yet armed: call Reset()). InvalidArgument for bad
// options, NotFound when the RAM file or QEMU's mapping of it is missing,
// FailedPrecondition when Method::kSoftDirty was asked for but QEMU's mapping is unusable.
StatusOr<std::unique_ptr<DirtyTracker>> MakeDirtyTracker(const DirtyTrackerOptions& options);

}  // namespace novadt::dirty
