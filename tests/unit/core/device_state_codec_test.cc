#include "agent/core/device_state_codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <random>

#include "agent/core/replication_receiver.h"
#include "tests/support/fake_replica_sink.h"

namespace novadt::core {
namespace {

// A device state like QEMU's: a large block that never changes (ROMs) and a small one that does.
std::string State(uint32_t seed, size_t rom = 600000, size_t live = 4000) {
  std::string s(rom + live, '\0');
  std::mt19937 fixed(7), varying(seed);
  for (size_t i = 0; i < rom; ++i) s[i] = static_cast<char>(fixed());
  for (size_t i = rom; i < s.size(); ++i) s[i] = static_cast<char>(varying());
  return s;
}

TEST(DeviceStateCodecTest, FirstStateGoesRawThenDeltasAreSmallAndDecodeExactly) {
  DeviceStateEncoder enc;
  DeviceStateDecoder dec;
  for (uint32_t epoch = 1; epoch <= 5; ++epoch) {
    const std::string state = State(epoch);
    EncodedDeviceState e = enc.Encode(state);
    if (epoch == 1) {
      EXPECT_EQ(e.encoding, DeviceStateEncoding::kRaw);
      EXPECT_TRUE(e.data == state);
    } else {
      EXPECT_EQ(e.encoding, DeviceStateEncoding::kXorZstd);
      EXPECT_LT(e.data.size(), 8000u) << "only the changing 4 KB should cost";
    }
    auto d = dec.Decode(e.encoding, e.data);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(*d == state) << "epoch " << epoch;
  }
}

TEST(DeviceStateCodecTest, SizeChangeOrIncompressibleDeltaGoesRaw) {
  DeviceStateEncoder enc;
  enc.Encode(State(1));
  EXPECT_EQ(enc.Encode(State(2, 600000, 5000)).encoding, DeviceStateEncoding::kRaw);
  // Everything changes: the delta is no smaller than the state.
  enc.Reset();
  enc.Encode(State(1, 0, 20000));
  EXPECT_EQ(enc.Encode(State(2, 0, 20000)).encoding, DeviceStateEncoding::kRaw);
  enc.Reset();
  EXPECT_EQ(enc.Encode(State(3)).encoding, DeviceStateEncoding::kRaw) << "a new stream";
}

TEST(DeviceStateCodecTest, BadDeltasAreRefusedAndTheBaseIsKept) {
  DeviceStateDecoder dec;
  DeviceStateEncoder enc;
  const std::string s1 = State(1), s2 = State(2);
  enc.Encode(s1);
  const EncodedDeviceState delta = enc.Encode(s2);
  ASSERT_EQ(delta.encoding, DeviceStateEncoding::kXorZstd);
  EXPECT_TRUE(absl::IsInvalidArgument(dec.Decode(DeviceStateEncoding::kXorZstd, delta.data).status()))
      << "a delta without a base";
  ASSERT_TRUE(dec.Decode(DeviceStateEncoding::kRaw, s1).ok());
  // A frame claiming another size (e.g. a decompression bomb) is refused before decompressing.
  std::string zeros(1 << 20, '\0');
  std::string other(ZSTD_compressBound(zeros.size()), '\0');
  other.resize(ZSTD_compress(other.data(), other.size(), zeros.data(), zeros.size(), 1));
  auto st = dec.Decode(DeviceStateEncoding::kXorZstd, other).status();
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_NE(std::string(st.message()).find("1048576 bytes"), std::string::npos) << st;
  // The right size, but no checksum (plain ZSTD_compress): refused.
  std::string same(s1.size(), '\0');
  std::string unchecked(ZSTD_compressBound(same.size()), '\0');
  unchecked.resize(ZSTD_compress(unchecked.data(), unchecked.size(), same.data(), same.size(), 1));
  EXPECT_FALSE(dec.Decode(DeviceStateEncoding::kXorZstd, unchecked).ok());
  std::string corrupt = delta.data;
  corrupt[corrupt.size() / 2] ^= 0x55;
  EXPECT_FALSE(dec.Decode(DeviceStateEncoding::kXorZstd, corrupt).ok());
  EXPECT_FALSE(dec.Decode(DeviceStateEncoding::kXorZstd, "not zstd").ok());
  EXPECT_FALSE(dec.Decode(static_cast<DeviceStateEncoding>(9), "x").ok());
  // None of that moved the base: the real delta still decodes.
  auto d = dec.Decode(delta.encoding, delta.data);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(*d == s2);
}

TEST(DeviceStateCodecTest, ReceiverDecodesDeltaChunksAndHandsTheSinkTheWholeState) {
  auto state = std::make_shared<testing::FakeReplicaState>();
  auto r = ReplicationReceiver::Start(testing::TestOpen(), testing::FakeSinkFactory(state));
  ASSERT_TRUE(r.ok()) << r.status();
  DeviceStateEncoder enc;
  std::vector<std::string> states = {State(1), State(2), State(3)};
  for (uint64_t epoch = 1; epoch <= 3; ++epoch) {
    EncodedDeviceState e = enc.Encode(states[epoch - 1]);
    ASSERT_TRUE((*r)->Handle(EpochBegin{epoch}).ok());
    // Two chunks, as a small chunk size would cut it.
    const size_t half = e.data.size() / 2;
    ASSERT_TRUE((*r)->Handle(DeviceStateChunk{e.data.substr(0, half), false, e.encoding}).ok());
    ASSERT_TRUE((*r)->Handle(DeviceStateChunk{e.data.substr(half), true, e.encoding}).ok());
    auto ack = (*r)->Handle(EpochEnd{epoch, 0, 0, e.data.size()});
    ASSERT_TRUE(ack.ok()) << ack.status();
    EXPECT_EQ(**ack, epoch);
    std::lock_guard<std::mutex> lock(state->mu);
    EXPECT_TRUE(state->device_state == states[epoch - 1]) << "epoch " << epoch;
  }
  // Mixed encodings within one epoch are refused.
  ASSERT_TRUE((*r)->Handle(EpochBegin{4}).ok());
  ASSERT_TRUE((*r)->Handle(DeviceStateChunk{"ab", false, DeviceStateEncoding::kRaw}).ok());
  EXPECT_FALSE((*r)->Handle(DeviceStateChunk{"cd", true, DeviceStateEncoding::kXorZstd}).ok());
}

}  // namespace
}  // namespace novadt::core
