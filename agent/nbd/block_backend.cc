#include "agent/nbd/block_backend.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace novadt::nbd {
namespace {

class RawFileBackend final : public BlockBackend {
 public:
  RawFileBackend(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  ~RawFileBackend() override { ::close(fd_); }
  RawFileBackend(const RawFileBackend&) = delete;
  RawFileBackend& operator=(const RawFileBackend&) = delete;

  uint64_t Size() const override { return size_; }

  StatusOr<std::string> Read(uint64_t offset, uint32_t length) override {
    std::string out(length, '\0');
    size_t done = 0;
    while (done < length) {
      ssize_t n = ::pread(fd_, out.data() + done, length - done, offset + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "pread " + path_);
      }
      if (n == 0) break;  // past the end of a file that shrank: the rest reads as zeroes
      done += n;
    }
    return out;
  }

  Status Write(uint64_t offset, std::string_view data, bool fua) override {
    NOVA_DT_RETURN_IF_ERROR(PwriteAll(data.data(), data.size(), offset));
    return fua ? Flush() : Status();
  }

  Status WriteZeroes(uint64_t offset, uint32_t length, bool fua) override {
    if (length > 0 &&
        ::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) != 0) {
      if (errno != EOPNOTSUPP && errno != ENODEV && errno != EINVAL) {
        return absl::ErrnoToStatus(errno, "fallocate " + path_);
      }
      // No ZERO_RANGE here (e.g. tmpfs on older kernels, block devices): write the zeroes.
      static const std::string kZeroes(1 << 20, '\0');
      uint64_t done = 0;
      while (done < length) {
        size_t n = std::min<uint64_t>(kZeroes.size(), length - done);
        NOVA_DT_RETURN_IF_ERROR(PwriteAll(kZeroes.data(), n, offset + done));
        done += n;
      }
    }
    return fua ? Flush() : Status();
  }

  Status Flush() override {
    if (::fdatasync(fd_) != 0) return absl::ErrnoToStatus(errno, "fdatasync " + path_);
    return Status();
  }

 private:
  Status PwriteAll(const char* p, size_t len, uint64_t offset) {
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pwrite(fd_, p + done, len - done, offset + done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "pwrite " + path_);
      }
      done += n;
    }
    return Status();
  }

  const int fd_;
  const uint64_t size_;
  const std::string path_;
};

class CapturingBackend final : public BlockBackend {
 public:
  CapturingBackend(std::unique_ptr<BlockBackend> inner, CaptureCallback callback)
      : inner_(std::move(inner)), callback_(std::move(callback)) {}

  uint64_t Size() const override { return inner_->Size(); }

  StatusOr<std::string> Read(uint64_t offset, uint32_t length) override {
    return inner_->Read(offset, length);
  }

  Status Write(uint64_t offset, std::string_view data, bool fua) override {
    NOVA_DT_RETURN_IF_ERROR(inner_->Write(offset, data, fua));
    CapturedWrite w;
    w.kind = CapturedWrite::Kind::kData;
    w.offset = offset;
    w.length = static_cast<uint32_t>(data.size());
    w.data = data;
    w.fua = fua;
    return callback_(w);
  }

  Status WriteZeroes(uint64_t offset, uint32_t length, bool fua) override {
    NOVA_DT_RETURN_IF_ERROR(inner_->WriteZeroes(offset, length, fua));
    CapturedWrite w;
    w.kind = CapturedWrite::Kind::kZeroes;
    w.offset = offset;
    w.length = length;
    w.fua = fua;
    return callback_(w);
  }

  Status Flush() override { return inner_->Flush(); }

 private:
  std::unique_ptr<BlockBackend> inner_;
  CaptureCallback callback_;
};

}  // namespace

StatusOr<std::unique_ptr<BlockBackend>> OpenRawFileBackend(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open " + path);
  off_t end = ::lseek(fd, 0, SEEK_END);  // works for block devices too, unlike st_size
  if (end < 0) {
    Status st = absl::ErrnoToStatus(errno, "lseek " + path);
    ::close(fd);
    return st;
  }
  return std::unique_ptr<BlockBackend>(new RawFileBackend(fd, static_cast<uint64_t>(end), path));
}

std::unique_ptr<BlockBackend> NewCapturingBackend(std::unique_ptr<BlockBackend> inner,
                                                  CaptureCallback callback) {
  return std::make_unique<CapturingBackend>(std::move(inner), std::move(callback));
}

}  // namespace novadt::nbd
