// Stage II, RAM half: while the guest is paused, copy the epoch's dirty pages out of the shared
// guest-RAM file (memory-backend-file,share=on: the agent maps the same file QEMU does) into the
// staging buffer the sender streams from after the guest resumed.
//
// The staging buffer is reused from epoch to epoch and pre-faulted up front: the first copy into
// fresh memory costs page faults (SPIKE-NOTES.md measured 510 ms for 256 MiB) that must not land
// in a checkpoint pause.
//
// Thread-compatible: owned by the epoch engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/core/epoch_sender.h"
#include "agent/dirty/dirty_pages.h"
#include "agent/common/scoped_fd.h"

namespace novadt::engine {

class RamStager {
 public:
  // Maps `ram_path` read-only and shared. `ram_size` must be a positive multiple of the page size
  // and at most the file's length (InvalidArgument / FailedPrecondition otherwise).
  static StatusOr<std::unique_ptr<RamStager>> Open(const std::string& ram_path, uint64_t ram_size);

  // Grows the reusable staging buffer of `epoch` to hold `pages` pages and touches every byte of
  // it, outside any pause.
  static void Prefault(core::StagedEpoch& epoch, uint64_t pages);

  // Replaces epoch.page_index/page_data with the pages of `dirty`, ascending. REQUIRES: guest
  // paused; dirty.page_count() == page_count(). Reuses the buffers' capacity: no allocation
  // when Prefault() covered the count.
  Status Stage(const dirty::DirtyPages& dirty, core::StagedEpoch& epoch) const;

  // Copies pages [first, first + count) — for seeding, which streams all of RAM in slices while
  // the guest runs (the dirty tracker, armed before, catches what changes meanwhile).
  Status StageRange(uint64_t first, uint64_t count, core::StagedEpoch& epoch) const;

  uint64_t page_count() const { return page_count_; }
  // The live bytes of page `index` (kGuestPageSize of them). REQUIRES: index < page_count().
  const char* page(uint64_t index) const {
    return static_cast<const char*>(map_.get()) + index * core::kGuestPageSize;
  }

 private:
  RamStager(ScopedMapping map, uint64_t page_count)
      : map_(std::move(map)), page_count_(page_count) {}
  ScopedMapping map_;
  uint64_t page_count_;
};

}  // namespace novadt::engine
