// RAII for file descriptors and mappings (STYLE.md rule 4).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <utility>

namespace novadt {

// Owns one file descriptor; closes it on destruction. -1 means none.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~ScopedFd() { Reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// Owns one mmap()ed region; unmaps it on destruction.
class ScopedMapping {
 public:
  ScopedMapping() = default;
  ScopedMapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  ScopedMapping(ScopedMapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  ScopedMapping& operator=(ScopedMapping&& o) noexcept {
    if (this != &o) {
      Reset();
      addr_ = std::exchange(o.addr_, nullptr);
      len_ = std::exchange(o.len_, 0);
    }
    return *this;
  }
  ~ScopedMapping() { Reset(); }
  void* get() const { return addr_; }
  size_t size() const { return len_; }

 private:
  void Reset() {
    if (addr_ != nullptr) ::munmap(addr_, len_);
    addr_ = nullptr;
  }
  void* addr_ = nullptr;
  size_t len_ = 0;
};

}  // namespace novadt
