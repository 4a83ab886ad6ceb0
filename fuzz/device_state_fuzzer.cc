// The device-state codec of the replication stream (agent/core/device_state_codec.h). Two
// halves, chosen by the input's first byte:
//   - odd, hostile deltas: u16 (little-endian) length of a previous state, that state, one byte
//     of encoding, then the wire bytes a peer sent, decoded against it as a backup does. A
//     decoded delta always has the previous state's size.
//   - even, round trip: a state and a series of small patches to it, encoded as a primary does
//     and decoded as the backup does: every state must come back exactly.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/core/device_state_codec.h"
#include "fuzz/fuzz_check.h"

using namespace novadt::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  DeviceStateDecoder decoder;
  if (data[0] & 1) {
    const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    const size_t prev_len = input.size() >= 2 ? (uint8_t(input[0]) | uint8_t(input[1]) << 8) : 0;
    if (input.size() < 3 + prev_len) return 0;
    const std::string prev(input.substr(2, prev_len));
    auto base = decoder.Decode(DeviceStateEncoding::kRaw, prev);
    FUZZ_CHECK(base.ok() && *base == prev, "a raw state does not decode to itself");
    const auto encoding = static_cast<DeviceStateEncoding>(uint8_t(input[2 + prev_len]) % 3);
    const std::string wire(input.substr(3 + prev_len));
    auto state = decoder.Decode(encoding, wire);
    if (state.ok() && encoding == DeviceStateEncoding::kXorZstd) {
      FUZZ_CHECK(state->size() == prev.size(), "a delta decoded to %zu bytes, previous %zu",
                 state->size(), prev.size());
    }
    // The decoder keeps working after a refusal.
    (void)decoder.Decode(DeviceStateEncoding::kXorZstd, wire);
    return 0;
  }
  FuzzedDataProvider in(data + 1, size - 1);
  DeviceStateEncoder encoder;
  std::string state = in.ConsumeRandomLengthString(8192);
  for (int epoch = 0; epoch < 8; ++epoch) {
    const EncodedDeviceState sent = encoder.Encode(state);
    auto got = decoder.Decode(sent.encoding, sent.data);
    FUZZ_CHECK(got.ok(), "epoch %d: own encoding refused: %s", epoch,
               got.status().ToString().c_str());
    FUZZ_CHECK(*got == state, "epoch %d: state changed on the way", epoch);
    if (in.remaining_bytes() == 0) break;
    if (in.ConsumeIntegralInRange(0, 15) == 0) {
      state = in.ConsumeRandomLengthString(8192);  // a new size: sent raw
      continue;
    }
    const int patches = in.ConsumeIntegralInRange(0, 8);
    for (int i = 0; i < patches && !state.empty(); ++i) {
      state[in.ConsumeIntegralInRange<size_t>(0, state.size() - 1)] = in.ConsumeIntegral<char>();
    }
  }
  return 0;
}
