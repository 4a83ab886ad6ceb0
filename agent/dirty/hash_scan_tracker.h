// Dirty tracking by page hashes, for kernels without soft-dirty bits (this sandbox's).
//
// Maps the guest RAM file read-only and MAP_SHARED (the guest's writes through QEMU's own
// shared mapping are visible), keeps one XXH3-64 hash per 4 KiB page (2 MiB per GiB of RAM) and
// reports the pages whose hash changed. Consequences, all fine for replication:
//  - a write that leaves a page's bytes as they were is not reported (the replica already
//    holds those bytes);
//  - two different contents of one page colliding on 64 bits would go unreported
//    (probability 2^-64 per changed page);
//  - the first Reset() reads every page, which makes the whole RAM file resident.
// Collect() and Reset() split the pages over `threads` threads (contiguous ranges of whole
// 64-page bitmap words, so threads never share a bitmap word).
//
// Thread-compatible (see DirtyTracker). REQUIRES: the RAM file is not truncated while the
// tracker lives (reading a truncated mapping raises SIGBUS).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/dirty/dirty_tracker.h"
#include "agent/common/scoped_fd.h"

namespace novadt::dirty {

class HashScanTracker final : public DirtyTracker {
 public:
  // Opens and maps `ram_path`. InvalidArgument when `ram_size` is 0 or not a multiple of
  // kPageSize, or `threads` is 0; NotFound when the file is missing; FailedPrecondition when
  // it is shorter than `ram_size`.
  static StatusOr<std::unique_ptr<HashScanTracker>> Create(const std::string& ram_path,
                                                           uint64_t ram_size, unsigned threads);

  std::string_view name() const override { return "hash-scan"; }
  uint64_t page_count() const override { return page_count_; }
  unsigned threads() const { return threads_; }
  Status Reset() override;
  StatusOr<DirtyPages> Collect() override;

 private:
  HashScanTracker(ScopedFd fd, ScopedMapping mapping, uint64_t page_count, unsigned threads);
  // Hashes pages [first, last) (whole words, except possibly at the end of RAM). With
  // `bits` null: stores the hashes (baseline). Otherwise stores the changed hashes and
  // writes the bitmap words of the range into `bits`. REQUIRES: `first` % 64 == 0.
  void ScanRange(uint64_t first, uint64_t last, uint64_t* bits);
  // Runs ScanRange over all pages on threads_ threads.
  void ScanAll(uint64_t* bits);

  ScopedFd fd_;
  ScopedMapping mapping_;
  const unsigned char* base_;
  uint64_t page_count_;
  unsigned threads_;
  bool armed_ = false;
  std::unique_ptr<uint64_t[]> hashes_;
};

}  // namespace novadt::dirty
