// The device state of consecutive checkpoints differs in a few KB (CPU registers, device queues,
// timers) out of ~660 KB (mostly the ROM/BIOS/ACPI blocks `migrate` with x-ignore-shared keeps,
// which never change). On one replication stream every epoch after the first therefore carries
// it as zstd(state XOR previous state) when that is smaller: ~0.9 MB per idle epoch becomes
// ~0.26 MB (its dirty pages) plus a few KB.
//
// Both ends keep the previous state of the stream: the sender's encoder and the receiver's
// decoder see the same sequence (every epoch of a stream carries a device state, in order), and
// both start empty with a new stream.
//
// Not thread-safe: one per stream.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/common/status.h"

namespace novadt::core {

enum class DeviceStateEncoding : uint32_t {
  kRaw = 0,      // the state itself
  kXorZstd = 1,  // zstd frame of (state XOR previous state); same size as the previous state
};

struct EncodedDeviceState {
  DeviceStateEncoding encoding = DeviceStateEncoding::kRaw;
  std::string data;
};

class DeviceStateEncoder {
 public:
  DeviceStateEncoder();
  ~DeviceStateEncoder();
  // The state to send for this epoch: delta-encoded when there is a previous state of the same
  // size and the result is smaller, else raw. Remembers `state` for the next call.
  EncodedDeviceState Encode(const std::string& state);
  // A new stream: the next state goes raw.
  void Reset() { prev_.clear(); }

 private:
  struct CCtxFree {
    void operator()(void* cctx) const;
  };
  std::unique_ptr<void, CCtxFree> cctx_;  // ZSTD_CCtx, reused: level 1, with a content checksum
  std::string prev_;
  std::string xored_;  // reused scratch
};

class DeviceStateDecoder {
 public:
  // The state an encoded one stands for; remembers it for the next call. InvalidArgument when
  // the data cannot be the sender's: a delta without a previous state, a frame whose content
  // size is not the previous state's (also bounds the memory a hostile frame can claim), a
  // frame without its content checksum, a corrupt frame (checksum mismatch), an unknown
  // encoding. The previous state is kept on error.
  StatusOr<std::string> Decode(DeviceStateEncoding encoding, const std::string& data);

 private:
  std::string prev_;
};

}  // namespace novadt::core
