// An in-memory BlockBackend for tests whose writes (and reads) can be made to fail on demand.
#pragma once

#include <mutex>
#include <string>

#include "agent/nbd/block_backend.h"

namespace novadt::nbd {

class MemoryBackend final : public BlockBackend {
 public:
  explicit MemoryBackend(size_t size) : data_(size, '\0') {}

  uint64_t Size() const override { return size_; }
  StatusOr<std::string> Read(uint64_t offset, uint32_t length) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fail_reads_.ok()) return fail_reads_;
    return data_.substr(offset, length);
  }
  Status Write(uint64_t offset, std::string_view data, bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    data_.replace(offset, data.size(), data);
    return Status();
  }
  Status WriteZeroes(uint64_t offset, uint32_t length, bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    data_.replace(offset, length, std::string(length, '\0'));
    return Status();
  }
  Status Flush() override { return Status(); }

  // Every later Write()/WriteZeroes() (Read()) returns `st` until set back to OK.
  void FailWrites(Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_writes_ = std::move(st);
  }
  void FailReads(Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_reads_ = std::move(st);
  }
  std::string data() {
    std::lock_guard<std::mutex> lock(mu_);
    return data_;
  }

 private:
  std::mutex mu_;
  std::string data_;
  const size_t size_ = data_.size();
  Status fail_writes_;
  Status fail_reads_;
};

}  // namespace novadt::nbd
