// A guest-RAM file and a writable shared mapping of it, standing in for QEMU's shared
// file-backed guest RAM in engine tests. The mapping goes away with the object; the file stays
// (it lives in the test's scratch directory).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <string>

namespace novadt::testing {

class GuestRamFile {
 public:
  // Creates (or resizes) `path` to `bytes` bytes and maps it. Fails the current test when it
  // cannot; data() is then nullptr.
  GuestRamFile(std::string path, size_t bytes) : path_(std::move(path)), size_(bytes) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size_)) != 0) {
      ADD_FAILURE() << "cannot create the guest RAM file " << path_;
      if (fd >= 0) ::close(fd);
      return;
    }
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) {
      ADD_FAILURE() << "cannot map " << path_;
      return;
    }
    data_ = static_cast<char*>(p);
  }
  ~GuestRamFile() {
    if (data_) ::munmap(data_, size_);
  }
  GuestRamFile(const GuestRamFile&) = delete;
  GuestRamFile& operator=(const GuestRamFile&) = delete;

  char* data() const { return data_; }
  const std::string& path() const { return path_; }
  size_t size() const { return size_; }

 private:
  std::string path_;
  size_t size_;
  char* data_ = nullptr;
};

}  // namespace novadt::testing
