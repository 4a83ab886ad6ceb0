#include "agent/replica/replica_format.h"

#include <gtest/gtest.h>

namespace novadt::replica {
namespace {

EpochRecord SampleRecord() {
  EpochRecord r;
  r.epoch = 42;
  r.geometry.ram_size = 1 << 20;
  r.geometry.disks = {{"vda", 1 << 30}, {"vdb.data_1", 12345}};
  r.devstate_slot = 1;
  r.devstate_size = 777;
  r.devstate_hash = 0xdeadbeefcafef00dull;
  return r;
}

TEST(EpochRecordTest, RoundTrips) {
  StatusOr<EpochRecord> r = DecodeEpochRecord(EncodeEpochRecord(SampleRecord()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->epoch, 42u);
  EXPECT_EQ(r->geometry.ram_size, 1u << 20);
  ASSERT_EQ(r->geometry.disks.size(), 2u);
  EXPECT_EQ(r->geometry.disks[1].name, "vdb.data_1");
  EXPECT_EQ(r->geometry.disks[1].size, 12345u);
  EXPECT_EQ(r->devstate_slot, 1u);
  EXPECT_EQ(r->devstate_size, 777u);
  EXPECT_EQ(r->devstate_hash, 0xdeadbeefcafef00dull);
}

TEST(EpochRecordTest, EveryFlippedByteAndEveryTruncationIsDataLoss) {
  const std::string good = EncodeEpochRecord(SampleRecord());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x01;
    EXPECT_EQ(DecodeEpochRecord(bad).status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
    EXPECT_EQ(DecodeEpochRecord(good.substr(0, i)).status().code(), absl::StatusCode::kDataLoss)
        << "length " << i;
  }
}

TEST(CommitMarkTest, RoundTripsAndDetectsDamage) {
  CommitMark m{7, 4096 + 16, 99, 0, 12, 34};
  const std::string good = EncodeCommitMark(m);
  StatusOr<CommitMark> d = DecodeCommitMark(good);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->epoch, 7u);
  EXPECT_EQ(d->journal_size, 4096u + 16);
  EXPECT_EQ(d->journal_hash, 99u);
  EXPECT_EQ(d->devstate_size, 12u);
  EXPECT_EQ(d->devstate_hash, 34u);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x80;
    EXPECT_EQ(DecodeCommitMark(bad).status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
  }
  // A record is not a mark.
  EXPECT_FALSE(DecodeCommitMark(EncodeEpochRecord(SampleRecord())).ok());
}

TEST(GeometryTest, Validation) {
  ReplicaGeometry g;
  g.ram_size = 4096 * 3;
  EXPECT_TRUE(ValidateGeometry(g).ok());
  g.ram_size = 4095;
  EXPECT_EQ(ValidateGeometry(g).code(), absl::StatusCode::kInvalidArgument);
  g.ram_size = 0;
  EXPECT_EQ(ValidateGeometry(g).code(), absl::StatusCode::kInvalidArgument);
  g.ram_size = 4096;
  for (const char* bad : {"", "../etc", "a/b", ".hidden", "sp ace"}) {
    g.disks = {{bad, 10}};
    EXPECT_EQ(ValidateGeometry(g).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  g.disks = {{"vda", 10}, {"vda", 20}};
  EXPECT_EQ(ValidateGeometry(g).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace novadt::replica
