#include "agent/core/device_state_codec.h"

#include <zstd.h>

namespace novadt::core {
namespace {

// Fast: the sender compresses after the guest resumed, on the epoch thread.
constexpr int kZstdLevel = 1;

void XorInto(std::string& out, const std::string& a, const std::string& b) {
  out.resize(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<char>(a[i] ^ b[i]);
}

}  // namespace

void DeviceStateEncoder::CCtxFree::operator()(void* cctx) const {
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(cctx));
}

DeviceStateEncoder::DeviceStateEncoder() : cctx_(ZSTD_createCCtx()) {
  if (cctx_) {
    auto* c = static_cast<ZSTD_CCtx*>(cctx_.get());
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, kZstdLevel);
    // The decoder refuses frames without it: a flipped bit must not become a wrong CPU state.
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  }
}

DeviceStateEncoder::~DeviceStateEncoder() = default;

EncodedDeviceState DeviceStateEncoder::Encode(const std::string& state) {
  EncodedDeviceState out;
  if (cctx_ && !prev_.empty() && prev_.size() == state.size()) {
    XorInto(xored_, state, prev_);
    std::string frame(ZSTD_compressBound(xored_.size()), '\0');
    const size_t n = ZSTD_compress2(static_cast<ZSTD_CCtx*>(cctx_.get()), frame.data(),
                                    frame.size(), xored_.data(), xored_.size());
    if (!ZSTD_isError(n) && n < state.size()) {
      frame.resize(n);
      out.encoding = DeviceStateEncoding::kXorZstd;
      out.data = std::move(frame);
    }
  }
  if (out.encoding == DeviceStateEncoding::kRaw) out.data = state;
  prev_ = state;
  return out;
}

StatusOr<std::string> DeviceStateDecoder::Decode(DeviceStateEncoding encoding,
                                                 const std::string& data) {
  switch (encoding) {
    case DeviceStateEncoding::kRaw:
      prev_ = data;
      return data;
    case DeviceStateEncoding::kXorZstd: {
      if (prev_.empty()) {
        return absl::InvalidArgumentError(
            "delta-encoded device state without a previous state on this stream");
      }
      const unsigned long long size = ZSTD_getFrameContentSize(data.data(), data.size());
      if (size != prev_.size()) {
        return absl::InvalidArgumentError(
            "delta-encoded device state of " +
            (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN
                 ? std::string("unknown size")
                 : std::to_string(size) + " bytes") +
            " against a previous state of " + std::to_string(prev_.size()) + " bytes");
      }
      // RFC 8878 3.1.1: 4-byte magic, then the frame header descriptor, whose bit 2 is the
      // Content_Checksum_flag.
      if (data.size() < 5 || (static_cast<unsigned char>(data[4]) & 0x04) == 0) {
        return absl::InvalidArgumentError(
            "delta-encoded device state without a zstd content checksum");
      }
      std::string xored(prev_.size(), '\0');
      const size_t n = ZSTD_decompress(xored.data(), xored.size(), data.data(), data.size());
      if (ZSTD_isError(n) || n != xored.size()) {
        return absl::InvalidArgumentError(
            std::string("corrupt delta-encoded device state: ") +
            (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame"));
      }
      std::string state;
      XorInto(state, xored, prev_);
      prev_ = state;
      return state;
    }
  }
  return absl::InvalidArgumentError("unknown device-state encoding " +
                                    std::to_string(static_cast<uint32_t>(encoding)));
}

}  // namespace novadt::core
