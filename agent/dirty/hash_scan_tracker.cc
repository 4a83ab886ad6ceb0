#include "agent/dirty/hash_scan_tracker.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"

namespace novadt::dirty {
namespace {

// XXH3-64 of one page. On x86-64, Debian's libxxhash picks the widest vector unit of the CPU
// at run time (AVX2/AVX-512); the plain entry point is built for SSE2 only and is about 1.6x
// slower here (BENCHMARKS.md). Both give the same value.
inline uint64_t HashPage(const unsigned char* page) {
#if defined(__x86_64__)
  return XXH3_64bits_dispatch(page, kPageSize);
#else
  return XXH3_64bits(page, kPageSize);
#endif
}

}  // namespace

StatusOr<std::unique_ptr<HashScanTracker>> HashScanTracker::Create(const std::string& ram_path,
                                                                   uint64_t ram_size,
                                                                   unsigned threads) {
  if (ram_size == 0 || ram_size % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest RAM size ", ram_size, " is not a positive multiple of ", kPageSize));
  }
  if (threads == 0) return absl::InvalidArgumentError("hash-scan needs at least one thread");
  ScopedFd fd(::open(ram_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    const std::string msg =
        absl::StrCat("cannot open guest RAM file ", ram_path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return absl::UnavailableError(absl::StrCat("fstat ", ram_path, ": ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(st.st_size) < ram_size) {
    return absl::FailedPreconditionError(absl::StrCat("guest RAM file ", ram_path, " holds ",
                                                      st.st_size, " bytes, less than the ",
                                                      ram_size, " bytes of guest RAM to track"));
  }
  // MAP_POPULATE: set up the page-table entries once, not on the first scan during a pause.
  void* addr = ::mmap(nullptr, ram_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return absl::UnavailableError(
        absl::StrCat("mmap of guest RAM file ", ram_path, ": ", std::strerror(errno)));
  }
  ScopedMapping mapping(addr, ram_size);
  return std::unique_ptr<HashScanTracker>(
      new HashScanTracker(std::move(fd), std::move(mapping), ram_size / kPageSize, threads));
}

HashScanTracker::HashScanTracker(ScopedFd fd, ScopedMapping mapping, uint64_t page_count,
                                 unsigned threads)
    : fd_(std::move(fd)),
      mapping_(std::move(mapping)),
      base_(static_cast<const unsigned char*>(mapping_.get())),
      page_count_(page_count),
      threads_(threads),
      hashes_(new uint64_t[page_count]) {}

void HashScanTracker::ScanRange(uint64_t first, uint64_t last, uint64_t* bits) {
  uint64_t* hashes = hashes_.get();
  if (bits == nullptr) {
    for (uint64_t p = first; p < last; ++p) hashes[p] = HashPage(base_ + p * kPageSize);
    return;
  }
  // `first` is word aligned; build each bitmap word locally and store it once.
  for (uint64_t word_start = first; word_start < last; word_start += 64) {
    const uint64_t word_end = std::min(word_start + 64, last);
    uint64_t word = 0;
    for (uint64_t p = word_start; p < word_end; ++p) {
      const uint64_t h = HashPage(base_ + p * kPageSize);
      if (h != hashes[p]) {  // compare first: unchanged pages do not dirty the hash array
        hashes[p] = h;
        word |= uint64_t{1} << (p - word_start);
      }
    }
    bits[word_start / 64] = word;
  }
}

void HashScanTracker::ScanAll(uint64_t* bits) {
  const uint64_t words = DirtyPages::WordsFor(page_count_);
  const unsigned n = static_cast<unsigned>(std::min<uint64_t>(threads_, words));
  if (n <= 1) {
    ScanRange(0, page_count_, bits);
    return;
  }
  std::vector<std::thread> workers;
  workers.reserve(n - 1);
  auto range = [&](unsigned i) {
    const uint64_t first = words * i / n * 64;
    const uint64_t last = std::min(words * (i + 1) / n * 64, page_count_);
    return std::pair{first, last};
  };
  for (unsigned i = 1; i < n; ++i) {
    const auto r = range(i);
    try {
      workers.emplace_back([this, bits, r] {
        pthread_setname_np(pthread_self(), "dirty-scan");
        ScanRange(r.first, r.second, bits);
      });
    } catch (const std::system_error&) {  // no thread to be had: scan that range here
      ScanRange(r.first, r.second, bits);
    }
  }
  const auto r0 = range(0);
  ScanRange(r0.first, r0.second, bits);
  for (std::thread& t : workers) t.join();
}

Status HashScanTracker::Reset() {
  ScanAll(nullptr);
  armed_ = true;
  return absl::OkStatus();
}

StatusOr<DirtyPages> HashScanTracker::Collect() {
  if (!armed_) return absl::FailedPreconditionError("hash-scan: Collect() before Reset()");
  std::vector<uint64_t> words(DirtyPages::WordsFor(page_count_), 0);
  ScanAll(words.data());
  return DirtyPages::FromWords(page_count_, std::move(words));
}

}  // namespace novadt::dirty
