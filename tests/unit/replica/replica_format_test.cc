#include "agent/replica/replica_format.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

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

TEST(BootRecordTest, RoundTripsAndDetectsDamage) {
  const std::vector<BootRecordEntry> files = {{"kernel", 65906612, 0x1234}, {"ramdisk", 7, 99}};
  const std::string good = EncodeBootRecord(files);
  StatusOr<std::vector<BootRecordEntry>> d = DecodeBootRecord(good);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, files);
  auto none = DecodeBootRecord(EncodeBootRecord({}));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x01;
    EXPECT_EQ(DecodeBootRecord(bad).status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
    EXPECT_EQ(DecodeBootRecord(good.substr(0, i)).status().code(), absl::StatusCode::kDataLoss)
        << "length " << i;
  }
  // Well sealed but not what the store writes: another name, a name twice, three files.
  for (const auto& bad : std::vector<std::vector<BootRecordEntry>>{
           {{"../etc/shadow", 1, 1}}, {{"kernel", 1, 1}, {"kernel", 2, 2}},
           {{"kernel", 1, 1}, {"ramdisk", 1, 1}, {"kernel", 1, 1}}}) {
    EXPECT_EQ(DecodeBootRecord(EncodeBootRecord(bad)).status().code(),
              absl::StatusCode::kDataLoss);
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

// Journals written by hand, record by record, as Commit() lays them out (replica_format.h).
std::string PagesRecord(const std::vector<uint64_t>& pages, char fill) {
  std::string out;
  PutU8(&out, kRecordPages);
  PutU32(&out, static_cast<uint32_t>(pages.size()));
  for (uint64_t p : pages) PutU64(&out, p);
  for (size_t i = 0; i < pages.size(); ++i) out.append(kReplicaPageSize, fill + i);
  return out;
}

std::string DiskRecord(uint32_t disk, uint64_t offset, uint64_t length, char fill) {
  std::string out;
  PutU8(&out, kRecordDiskWrite);
  PutU32(&out, disk);
  PutU64(&out, offset);
  PutU64(&out, length);
  out.append(length, fill);
  return out;
}

// Records what a replay asks for.
struct Recorder final : JournalVisitor {
  Status Page(uint64_t page, std::string_view bytes) override {
    calls.push_back("page " + std::to_string(page) + " " + std::string(1, bytes[0]) + " " +
                    std::to_string(bytes.size()));
    return absl::OkStatus();
  }
  Status DiskBytes(size_t disk, uint64_t offset, std::string_view bytes) override {
    calls.push_back("disk " + std::to_string(disk) + " " + std::to_string(offset) + " " +
                    std::string(1, bytes[0]) + " " + std::to_string(bytes.size()));
    return absl::OkStatus();
  }
  std::vector<std::string> calls;
};

Status Replay(const std::string& journal, Recorder* recorder, uint64_t epoch = 42) {
  MemoryJournalSource src(journal);
  return ReplayJournal(epoch, journal.size(), SampleRecord().geometry, src, *recorder);
}

TEST(JournalTest, ReplaysEveryRecordInOrder) {
  const std::string journal = EncodeJournalHeader(42) + PagesRecord({3, 255}, 'a') +
                              DiskRecord(1, 12340, 5, 'x') + PagesRecord({3}, 'z');
  Recorder r;
  ASSERT_TRUE(Replay(journal, &r).ok());
  EXPECT_EQ(r.calls, (std::vector<std::string>{"page 3 a 4096", "page 255 b 4096",
                                                "disk 1 12340 x 5", "page 3 z 4096"}));
}

// A page count no journal of this size can hold is refused before anything is allocated for it
// (4 Gi pages would have asked for a 32 GiB index array).
TEST(JournalTest, AnImpossiblePageCountIsDataLossNotAHugeAllocation) {
  std::string journal = EncodeJournalHeader(42);
  PutU8(&journal, kRecordPages);
  PutU32(&journal, std::numeric_limits<uint32_t>::max());
  journal.append(64, '\0');
  Recorder r;
  const Status st = Replay(journal, &r);
  EXPECT_TRUE(absl::IsDataLoss(st)) << st;
  EXPECT_TRUE(r.calls.empty());
}

TEST(JournalTest, OutOfRangeRecordsAreDataLoss) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const std::string head = EncodeJournalHeader(42);
  for (const std::string& bad : {
           PagesRecord({256}, 'a'),                // RAM is 256 pages
           PagesRecord({kMax}, 'a'),
           DiskRecord(2, 0, 1, 'x'),               // two disks
           DiskRecord(1, 12345, 1, 'x'),           // vdb is 12345 bytes
           DiskRecord(1, 12000, 346, 'x'),
           std::string(1, '\x03'),                 // unknown record type
       }) {
    Recorder r;
    const Status st = Replay(head + bad, &r);
    EXPECT_TRUE(absl::IsDataLoss(st)) << st;
    EXPECT_TRUE(r.calls.empty());
  }
  // An offset near 2^64 must not wrap around the disk size check.
  std::string wrap;
  PutU8(&wrap, kRecordDiskWrite);
  PutU32(&wrap, 0);
  PutU64(&wrap, kMax);
  PutU64(&wrap, 2);
  Recorder r;
  EXPECT_TRUE(absl::IsDataLoss(Replay(head + wrap + "xx", &r)));
  EXPECT_TRUE(absl::IsDataLoss(Replay(EncodeJournalHeader(41) + DiskRecord(0, 0, 1, 'x'), &r)));
  EXPECT_TRUE(r.calls.empty());
}

// A cut anywhere is DataLoss; a disk record cut short is refused before any of it is applied.
TEST(JournalTest, EveryTruncationIsDataLoss) {
  const std::string head = EncodeJournalHeader(42);
  const std::string journal = head + DiskRecord(0, 0, 3000, 'x') + PagesRecord({1}, 'p');
  for (size_t len = 0; len < journal.size(); ++len) {
    if (len == head.size() || len == head.size() + 21 + 3000) continue;  // whole records
    Recorder r;
    const Status st = Replay(journal.substr(0, len), &r);
    EXPECT_TRUE(absl::IsDataLoss(st)) << "cut at " << len << ": " << st;
    if (len < head.size() + 21 + 3000) {
      EXPECT_TRUE(r.calls.empty()) << "cut at " << len;
    }
  }
}

}  // namespace
}  // namespace novadt::replica
