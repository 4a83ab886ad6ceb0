#include "agent/engine/ram_stager.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace novadt::engine {

StatusOr<std::unique_ptr<RamStager>> RamStager::Open(const std::string& ram_path,
                                                     uint64_t ram_size) {
  if (ram_size == 0 || ram_size % core::kGuestPageSize != 0) {
    return absl::InvalidArgumentError("guest RAM size " + std::to_string(ram_size) +
                                      " is not a positive multiple of the page size");
  }
  ScopedFd fd(::open(ram_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::NotFoundError("cannot open guest RAM file " + ram_path + ": " +
                               std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < ram_size) {
    return absl::FailedPreconditionError("guest RAM file " + ram_path + " is shorter than " +
                                         std::to_string(ram_size) + " bytes");
  }
  void* addr = ::mmap(nullptr, ram_size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return absl::InternalError("cannot map guest RAM file " + ram_path + ": " +
                               std::strerror(errno));
  }
  return std::unique_ptr<RamStager>(
      new RamStager(ScopedMapping(addr, ram_size), ram_size / core::kGuestPageSize));
}

void RamStager::Prefault(core::StagedEpoch& epoch, uint64_t pages) {
  const size_t bytes = pages * core::kGuestPageSize;
  if (epoch.page_data.size() < bytes) epoch.page_data.resize(bytes);  // writes every byte
  epoch.page_index.reserve(pages);
  epoch.page_index.resize(pages);  // touches the index array's pages too
}

Status RamStager::Stage(const dirty::DirtyPages& dirty, core::StagedEpoch& epoch) const {
  if (dirty.page_count() != page_count_) {
    return absl::InvalidArgumentError("dirty set covers " + std::to_string(dirty.page_count()) +
                                      " pages, guest RAM has " + std::to_string(page_count_));
  }
  const size_t n = dirty.count();
  epoch.page_index.resize(n);
  epoch.page_data.resize(n * core::kGuestPageSize);
  size_t i = 0;
  for (uint64_t p : dirty) {
    epoch.page_index[i] = p;
    std::memcpy(epoch.page_data.data() + i * core::kGuestPageSize, page(p), core::kGuestPageSize);
    ++i;
  }
  return absl::OkStatus();
}

Status RamStager::StageRange(uint64_t first, uint64_t count, core::StagedEpoch& epoch) const {
  if (first > page_count_ || count > page_count_ - first) {
    return absl::InvalidArgumentError("pages " + std::to_string(first) + "+" +
                                      std::to_string(count) + " beyond guest RAM");
  }
  epoch.page_index.resize(count);
  for (uint64_t i = 0; i < count; ++i) epoch.page_index[i] = first + i;
  epoch.page_data.assign(page(first), count * core::kGuestPageSize);
  return absl::OkStatus();
}

}  // namespace novadt::engine
