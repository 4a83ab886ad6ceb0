#include "agent/dirty/dirty_tracker.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/dirty/hash_scan_tracker.h"
#include "agent/common/scoped_fd.h"
#include "agent/dirty/soft_dirty_tracker.h"

namespace novadt::dirty {
namespace {

// Reads this process's pagemap entry for `addr`; false on failure.
bool ReadOwnPagemap(int fd, const void* addr, uint64_t* entry) {
  const off_t off =
      static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / kPageSize * sizeof(uint64_t));
  return ::pread(fd, entry, sizeof(*entry), off) == static_cast<ssize_t>(sizeof(*entry));
}

}  // namespace

bool KernelHasSoftDirty() {
  void* page =
      ::mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return false;
  ScopedMapping mapping(page, kPageSize);
  auto* byte = static_cast<volatile unsigned char*>(page);
  *byte = 1;  // fault the page in, so that the clear below write-protects a real entry
  ScopedFd clear_refs(::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC));
  ScopedFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!clear_refs.valid() || !pagemap.valid()) return false;
  if (::write(clear_refs.get(), "4", 1) != 1) return false;
  uint64_t before = 0;
  if (!ReadOwnPagemap(pagemap.get(), page, &before)) return false;
  *byte = 2;
  uint64_t after = 0;
  if (!ReadOwnPagemap(pagemap.get(), page, &after)) return false;
  // Cleared by clear_refs, set again by the write: the kernel tracks soft-dirty.
  return !(before & kPagemapSoftDirty) && (after & kPagemapSoftDirty);
}

StatusOr<std::unique_ptr<DirtyTracker>> MakeDirtyTracker(const DirtyTrackerOptions& options) {
  if (options.ram_path.empty()) return absl::InvalidArgumentError("no guest RAM file given");
  if (options.ram_size == 0 || options.ram_size % kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat("guest RAM size ", options.ram_size,
                                                   " is not a positive multiple of ", kPageSize));
  }
  using Method = DirtyTrackerOptions::Method;
  const bool soft_dirty =
      options.method == Method::kSoftDirty ||
      (options.method == Method::kAuto && options.qemu_pid > 0 && KernelHasSoftDirty());
  if (soft_dirty) {
    if (options.qemu_pid <= 0) {
      return absl::InvalidArgumentError("soft-dirty tracking needs QEMU's pid");
    }
    const std::string maps_path = absl::StrCat(options.proc_root, "/", options.qemu_pid, "/maps");
    std::ifstream maps(maps_path);
    if (!maps) return absl::NotFoundError(absl::StrCat("cannot read ", maps_path));
    std::stringstream text;
    text << maps.rdbuf();
    StatusOr<AddressRange> range = FindRamMapping(text.str(), options.ram_path);
    if (!range.ok()) return range.status();
    if (range->size() < options.ram_size) {
      return absl::FailedPreconditionError(absl::StrCat("QEMU maps ", range->size(), " bytes of ",
                                                        options.ram_path, ", less than the ",
                                                        options.ram_size, " bytes of guest RAM"));
    }
    range->end = range->start + options.ram_size;
    StatusOr<std::unique_ptr<SoftDirtyTracker>> t =
        SoftDirtyTracker::Create(options.proc_root, options.qemu_pid, *range);
    if (!t.ok()) return t.status();
    return std::unique_ptr<DirtyTracker>(*std::move(t));
  }
  unsigned threads = options.scan_threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  StatusOr<std::unique_ptr<HashScanTracker>> t =
      HashScanTracker::Create(options.ram_path, options.ram_size, threads);
  if (!t.ok()) return t.status();
  return std::unique_ptr<DirtyTracker>(*std::move(t));
}

}  // namespace novadt::dirty
