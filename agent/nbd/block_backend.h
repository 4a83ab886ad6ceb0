// The storage behind an NBD export: what NbdServer calls for each request of its client.
//
// Contract with the server (the synchronous-capture contract of stage I): the server calls a
// backend from one thread, one request at a time, in the order the client's requests arrived,
// and sends the reply to a WRITE or WRITE_ZEROES only after the call returned OK. With QEMU's
// write-blocking mirror, that reply is what completes the guest's write; so once a backend's
// Write() has returned, the guest may see its write completed, and not before.
//
// Errors: a backend reports failures as absl::Status built from errno where there is one
// (absl::ErrnoToStatus); the server maps the code to the NBD error of the reply
// (ResourceExhausted -> ENOSPC, InvalidArgument/OutOfRange -> EINVAL, Unimplemented -> ENOTSUP,
// PermissionDenied -> EPERM, anything else -> EIO).
//
// Thread safety: implementations need not be thread-safe; the server serializes its calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/common/status.h"

namespace novadt::nbd {

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  // Size of the export in bytes; constant for the backend's lifetime.
  virtual uint64_t Size() const = 0;

  // Returns exactly `length` bytes at `offset`. REQUIRES: offset + length <= Size().
  virtual StatusOr<std::string> Read(uint64_t offset, uint32_t length) = 0;

  // Writes `data` at `offset`. When `fua` is true, the data is on stable storage when this
  // returns OK. REQUIRES: offset + data.size() <= Size().
  virtual Status Write(uint64_t offset, std::string_view data, bool fua) = 0;

  // Makes `length` bytes at `offset` read back as zeroes; `fua` as for Write().
  // REQUIRES: offset + length <= Size().
  virtual Status WriteZeroes(uint64_t offset, uint32_t length, bool fua) = 0;

  // Puts every write that returned OK so far on stable storage.
  virtual Status Flush() = 0;
};

// Opens `path` (a regular file or block device) read-write and serves it with pread/pwrite;
// FUA and Flush() use fdatasync. The export size is the file's size at open.
// Returns NotFound/PermissionDenied/... (from errno) when the file cannot be opened.
StatusOr<std::unique_ptr<BlockBackend>> OpenRawFileBackend(const std::string& path);

// One change to the export, as handed to a CapturingBackend's callback.
struct CapturedWrite {
  enum class Kind { kData, kZeroes };
  Kind kind = Kind::kData;
  uint64_t offset = 0;
  uint32_t length = 0;    // bytes changed: data.size() for kData
  std::string_view data;  // kData only; valid during the callback only
  bool fua = false;
};

// Called for every change that the inner backend applied, in request order, on the server's
// thread, before the client is told that the write completed. A non-OK status fails the
// client's write with that status (the inner backend has already applied it). The replication
// stream plugs in here. It must not call back into the backend.
using CaptureCallback = std::function<Status(const CapturedWrite&)>;

// A decorator that forwards every call to `inner` and hands each successful Write() and
// WriteZeroes() to `callback`. Reads and flushes are forwarded only. A failed inner write is
// not captured.
std::unique_ptr<BlockBackend> NewCapturingBackend(std::unique_ptr<BlockBackend> inner,
                                                  CaptureCallback callback);

}  // namespace novadt::nbd
