#include "agent/core/replica_basis.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <map>
#include <string>
#include <vector>

#include "tests/support/test_util.h"

namespace novadt::core {
namespace {

constexpr uint64_t kBlock = kBasisBlockSize;

// Deterministic bytes, different for every seed.
std::string Bytes(uint64_t seed, size_t n) {
  return novadt::testing::PseudoRandomBytes(seed, n);
}

DiskWrite Data(const std::string& disk, uint64_t offset, std::string data) {
  DiskWrite w;
  w.disk = disk;
  w.offset = offset;
  w.data = std::move(data);
  return w;
}

DiskWrite Zeroes(const std::string& disk, uint64_t offset, uint64_t length) {
  DiskWrite w;
  w.disk = disk;
  w.offset = offset;
  w.zeroes = true;
  w.length = length;
  return w;
}

std::string Describe(const DiskWrite& w) {
  return w.disk + " " + std::to_string(w.offset) + "+" +
         std::to_string(w.zeroes ? w.length : w.data.size()) + (w.zeroes ? " zeroes" : "");
}

::testing::AssertionResult SameWrite(const DiskWrite& got, const DiskWrite& want) {
  if (got.disk != want.disk || got.offset != want.offset || got.zeroes != want.zeroes ||
      (got.zeroes && got.length != want.length) || !(got.data == want.data)) {
    return ::testing::AssertionFailure()
           << "got " << Describe(got) << ", expected " << Describe(want)
           << (got.data == want.data ? "" : " (bytes differ)");
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult SameWrites(const std::vector<DiskWrite>& got,
                                      const std::vector<DiskWrite>& want) {
  if (got.size() != want.size()) {
    auto f = ::testing::AssertionFailure();
    f << "got " << got.size() << " writes:";
    for (const auto& w : got) f << " [" << Describe(w) << "]";
    f << "; expected " << want.size() << ":";
    for (const auto& w : want) f << " [" << Describe(w) << "]";
    return f;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    auto r = SameWrite(got[i], want[i]);
    if (!r) return r << " (write " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

// A disk "vda" of 4 whole blocks and a short fifth one (1000 bytes), and a disk "vdb" of one
// short block; block 2 of vda and all of vdb are zeroes in the basis.
class DiskBasisFilterTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kVdaSize = 4 * kBlock + 1000;
  static constexpr uint64_t kVdbSize = 1000;

  DiskBasisFilterTest() {
    vda_ = Bytes(1, kVdaSize);
    vda_.replace(2 * kBlock, kBlock, std::string(kBlock, '\0'));
    vdb_ = std::string(kVdbSize, '\0');
  }
  std::vector<DiskGeometry> Disks() const { return {{"vda", kVdaSize}, {"vdb", kVdbSize}}; }
  static std::vector<ContentHash> BlockHashes(const std::string& image) {
    std::vector<ContentHash> out;
    for (uint64_t off = 0; off < image.size(); off += kBlock) {
      out.push_back(HashContent(std::string_view(image).substr(off, kBlock)));
    }
    return out;
  }
  DiskBasisFilter MakeFilter() const {
    return DiskBasisFilter(Disks(), {{"vda", BlockHashes(vda_)}, {"vdb", BlockHashes(vdb_)}});
  }
  // The basis bytes of vda in [from, to).
  std::string Vda(uint64_t from, uint64_t to) const { return vda_.substr(from, to - from); }
  std::vector<DiskWrite> Run(DiskBasisFilter& f, DiskWrite w) {
    std::vector<DiskWrite> out;
    f.Filter(std::move(w), out);
    return out;
  }

  std::string vda_, vdb_;
};

TEST_F(DiskBasisFilterTest, AWriteWhoseBlocksAllMatchIsDroppedAndCounted) {
  DiskBasisFilter f = MakeFilter();
  EXPECT_EQ(f.skipped_bytes(), 0u);
  EXPECT_TRUE(SameWrites(Run(f, Data("vda", 0, Vda(0, 2 * kBlock))), {}));
  EXPECT_EQ(f.skipped_bytes(), 2 * kBlock);
  // A block left out still holds the basis bytes on the replica: it matches again.
  EXPECT_TRUE(SameWrites(Run(f, Data("vda", kBlock, Vda(kBlock, 2 * kBlock))), {}));
  EXPECT_EQ(f.skipped_bytes(), 3 * kBlock);
}

TEST_F(DiskBasisFilterTest, AWriteOverMatchingAndDifferingBlocksSendsOnlyTheDifferingParts) {
  DiskBasisFilter f = MakeFilter();
  // [1000, 3 * kBlock + 500): block 0 partly (goes), block 1 whole and the same (left out),
  // block 2 whole but different (goes), block 3 partly (goes, joined to block 2's part).
  const uint64_t begin = 1000, end = 3 * kBlock + 500;
  std::string data = Vda(begin, end);
  data.replace(2 * kBlock - begin + 7, 3, "xyz");
  const std::vector<DiskWrite> out = Run(f, Data("vda", begin, data));
  EXPECT_TRUE(SameWrites(out, {Data("vda", begin, data.substr(0, kBlock - begin)),
                               Data("vda", 2 * kBlock, data.substr(2 * kBlock - begin))}));
  EXPECT_EQ(f.skipped_bytes(), kBlock);

  // Alternating: blocks 0 and 2 the same, 1 and 3 different, over the whole blocks 0-3.
  DiskBasisFilter g = MakeFilter();
  std::string alt = Vda(0, 4 * kBlock);
  alt[kBlock + 5] ^= 1;
  alt[3 * kBlock] ^= 1;
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 0, alt)),
                         {Data("vda", kBlock, alt.substr(kBlock, kBlock)),
                          Data("vda", 3 * kBlock, alt.substr(3 * kBlock, kBlock))}));
  EXPECT_EQ(g.skipped_bytes(), 2 * kBlock);
}

TEST_F(DiskBasisFilterTest, NothingMatchingSendsTheWriteWhole) {
  DiskBasisFilter f = MakeFilter();
  const std::string data = Bytes(99, 2 * kBlock);
  EXPECT_TRUE(SameWrites(Run(f, Data("vda", kBlock, data)), {Data("vda", kBlock, data)}));
  EXPECT_EQ(f.skipped_bytes(), 0u);
}

TEST_F(DiskBasisFilterTest, APartialBlockWriteGoesAndInvalidatesItsBlock) {
  DiskBasisFilter f = MakeFilter();
  // Even with the basis's own bytes: a part of a block is never compared.
  const DiskWrite partial = Data("vda", 10, Vda(10, 110));
  EXPECT_TRUE(SameWrites(Run(f, partial), {partial}));
  EXPECT_EQ(f.skipped_bytes(), 0u);
  // Block 0 on the replica is no longer known to be the basis's: the whole block goes.
  const DiskWrite block0 = Data("vda", 0, Vda(0, kBlock));
  EXPECT_TRUE(SameWrites(Run(f, block0), {block0}));
  // A write over blocks 0 and 1 with the basis bytes: only block 1 is left out.
  EXPECT_TRUE(SameWrites(Run(f, Data("vda", 0, Vda(0, 2 * kBlock))), {block0}));
  EXPECT_EQ(f.skipped_bytes(), kBlock);

  // A write straddling a block boundary invalidates both blocks it touches in part.
  DiskBasisFilter g = MakeFilter();
  const DiskWrite straddle = Data("vda", kBlock - 100, Vda(kBlock - 100, kBlock + 100));
  EXPECT_TRUE(SameWrites(Run(g, straddle), {straddle}));
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 0, Vda(0, kBlock))), {Data("vda", 0, Vda(0, kBlock))}));
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", kBlock, Vda(kBlock, 2 * kBlock))),
                         {Data("vda", kBlock, Vda(kBlock, 2 * kBlock))}));
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 3 * kBlock, Vda(3 * kBlock, 4 * kBlock))), {}))
      << "an untouched block still matches";
  EXPECT_EQ(g.skipped_bytes(), kBlock);
}

TEST_F(DiskBasisFilterTest, ASentWholeBlockInvalidatesItsBlock) {
  DiskBasisFilter f = MakeFilter();
  const DiskWrite changed = Data("vda", kBlock, Bytes(7, kBlock));
  EXPECT_TRUE(SameWrites(Run(f, changed), {changed}));
  // The replica's block 1 now holds other bytes: writing the basis's back must go.
  const DiskWrite back = Data("vda", kBlock, Vda(kBlock, 2 * kBlock));
  EXPECT_TRUE(SameWrites(Run(f, back), {back}));
  EXPECT_EQ(f.skipped_bytes(), 0u);

  // Also when the block went as the differing part of a larger write.
  DiskBasisFilter g = MakeFilter();
  std::string data = Vda(0, 2 * kBlock);
  data[kBlock] ^= 1;
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 0, data)),
                         {Data("vda", kBlock, data.substr(kBlock))}));
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 0, Vda(0, 2 * kBlock))),
                         {Data("vda", kBlock, Vda(kBlock, 2 * kBlock))}));
  EXPECT_EQ(g.skipped_bytes(), 2 * kBlock);
}

TEST_F(DiskBasisFilterTest, ZeroWritesAreComparedAsZeroBytes) {
  DiskBasisFilter f = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(f, Zeroes("vda", 2 * kBlock, kBlock)), {}));
  EXPECT_EQ(f.skipped_bytes(), kBlock);

  // Over blocks 1-3: only block 2 is zero in the basis; the parts that go stay zero writes.
  DiskBasisFilter g = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(g, Zeroes("vda", kBlock, 3 * kBlock)),
                         {Zeroes("vda", kBlock, kBlock), Zeroes("vda", 3 * kBlock, kBlock)}));
  EXPECT_EQ(g.skipped_bytes(), kBlock);
  // Blocks 1 and 3 now hold zeroes on the replica, not the basis's bytes.
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 3 * kBlock, Vda(3 * kBlock, 4 * kBlock))),
                         {Data("vda", 3 * kBlock, Vda(3 * kBlock, 4 * kBlock))}));

  // Zeroes from kBlock / 2 to the middle of block 3: parts of blocks 1 and 3 and all of block 2.
  DiskBasisFilter h = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(h, Zeroes("vda", kBlock / 2, 3 * kBlock)),
                         {Zeroes("vda", kBlock / 2, 2 * kBlock - kBlock / 2),
                          Zeroes("vda", 3 * kBlock, kBlock / 2)}));
  EXPECT_EQ(h.skipped_bytes(), kBlock);

  // Zero bytes as data match a zero block like a zero write does.
  DiskBasisFilter d = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(d, Data("vda", 2 * kBlock, std::string(kBlock, '\0'))), {}));
  // A zero write over a block with data goes whole.
  const DiskWrite over_data = Zeroes("vda", 0, kBlock);
  EXPECT_TRUE(SameWrites(Run(d, over_data), {over_data}));
  EXPECT_EQ(d.skipped_bytes(), kBlock);
}

TEST_F(DiskBasisFilterTest, TheShortLastBlockOfADiskIsComparedAsShort) {
  DiskBasisFilter f = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(f, Data("vda", 4 * kBlock, Vda(4 * kBlock, kVdaSize))), {}));
  EXPECT_EQ(f.skipped_bytes(), 1000u);
  // Block 3 differs, the short block 4 matches: only block 3 goes.
  DiskBasisFilter g = MakeFilter();
  std::string data = Vda(3 * kBlock, kVdaSize);
  data[0] ^= 1;
  EXPECT_TRUE(SameWrites(Run(g, Data("vda", 3 * kBlock, data)),
                         {Data("vda", 3 * kBlock, data.substr(0, kBlock))}));
  EXPECT_EQ(g.skipped_bytes(), 1000u);
  // Block 3 matches, the short block differs: block 4 goes.
  DiskBasisFilter h = MakeFilter();
  std::string tail = Vda(3 * kBlock, kVdaSize);
  tail.back() ^= 1;
  EXPECT_TRUE(SameWrites(Run(h, Data("vda", 3 * kBlock, tail)),
                         {Data("vda", 4 * kBlock, tail.substr(kBlock))}));
  EXPECT_EQ(h.skipped_bytes(), kBlock);
  // Part of the short block goes and invalidates it.
  DiskBasisFilter p = MakeFilter();
  const DiskWrite part = Data("vda", 4 * kBlock + 10, Vda(4 * kBlock + 10, kVdaSize));
  EXPECT_TRUE(SameWrites(Run(p, part), {part}));
  const DiskWrite whole = Data("vda", 4 * kBlock, Vda(4 * kBlock, kVdaSize));
  EXPECT_TRUE(SameWrites(Run(p, whole), {whole}));
  // A disk smaller than one block, all zeroes: a zero write and zero data of it are left out.
  DiskBasisFilter z = MakeFilter();
  EXPECT_TRUE(SameWrites(Run(z, Zeroes("vdb", 0, kVdbSize)), {}));
  EXPECT_TRUE(SameWrites(Run(z, Data("vdb", 0, std::string(kVdbSize, '\0'))), {}));
  EXPECT_EQ(z.skipped_bytes(), 2 * kVdbSize);
  const DiskWrite head = Zeroes("vdb", 0, kVdbSize - 1);
  EXPECT_TRUE(SameWrites(Run(z, head), {head}));
}

TEST_F(DiskBasisFilterTest, WritesWithNothingToCompareGoUnchanged) {
  std::map<std::string, std::vector<ContentHash>> blocks{{"vda", BlockHashes(vda_)}};
  // vdb has no basis; vdc's hashes do not cover its size (ignored, as no basis).
  std::vector<DiskGeometry> disks = Disks();
  disks.push_back({"vdc", 3 * kBlock});
  blocks["vdc"] = {HashZeroes(kBlock)};
  DiskBasisFilter f(disks, blocks);
  const std::vector<DiskWrite> same = {
      Data("vdb", 0, std::string(kVdbSize, '\0')),       // disk without basis
      Zeroes("vdc", 0, kBlock),                          // basis of the wrong length
      Data("vdz", 0, std::string(kBlock, '\0')),         // unknown disk
      Data("vda", 0, ""),                                // empty write
      Zeroes("vda", 2 * kBlock, 0),                      // empty zero write
      Data("vda", 4 * kBlock, Vda(4 * kBlock, kVdaSize) + "x"),  // one byte beyond the end
      Zeroes("vda", 2 * kBlock, kVdaSize),                        // beyond the end
      Zeroes("vda", kVdaSize + kBlock, kBlock),                   // wholly beyond
      Zeroes("vda", 100, ~uint64_t{0} - 50),                      // its end wraps around
      Data("vda", ~uint64_t{0} - 10, "0123456789abcdef"),         // likewise
  };
  for (const DiskWrite& w : same) {
    SCOPED_TRACE(Describe(w));
    EXPECT_TRUE(SameWrites(Run(f, w), {w}));
  }
  EXPECT_EQ(f.skipped_bytes(), 0u);
  // Filter appends: what `out` already holds stays.
  DiskBasisFilter g(disks, blocks);
  std::vector<DiskWrite> out = {Data("vda", 0, "x")};
  g.Filter(Data("vda", 0, Vda(0, kBlock)), out);
  g.Filter(Data("vdb", 5, "y"), out);
  EXPECT_TRUE(SameWrites(out, {Data("vda", 0, "x"), Data("vdb", 5, "y")}));
  EXPECT_EQ(g.skipped_bytes(), kBlock);
}

TEST_F(DiskBasisFilterTest, ADefaultFilterPassesEverything) {
  DiskBasisFilter f;
  const std::vector<DiskWrite> writes = {Data("vda", 0, Vda(0, 2 * kBlock)),
                                         Zeroes("vda", 2 * kBlock, kBlock),
                                         Data("vdb", 0, std::string(kVdbSize, '\0'))};
  for (const DiskWrite& w : writes) EXPECT_TRUE(SameWrites(Run(f, w), {w}));
  EXPECT_EQ(f.skipped_bytes(), 0u);
}

TEST(ContentHashTest, HashZeroesIsTheHashOfZeroBytes) {
  for (uint64_t n : {kBasisBlockSize, uint64_t{1000}, uint64_t{4096}, uint64_t{1}}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(HashZeroes(n), HashContent(std::string(n, '\0')));
    EXPECT_EQ(HashZeroes(n), HashZeroes(n));  // the cached block hash too
  }
  EXPECT_FALSE(HashZeroes(kBasisBlockSize) == HashZeroes(kBasisBlockSize - 1));
  EXPECT_FALSE(HashContent(std::string(4096, '\0')) == HashContent(std::string(4096, 'a')));
}

// Both hosts hash with the same function: it is XXH3-128 (low, high), whatever build made it.
TEST(ContentHashTest, HashContentIsXxh3With128Bits) {
  const std::string bytes = Bytes(5, 10000);
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  const ContentHash c = HashContent(bytes);
  EXPECT_EQ(c.low, h.low64);
  EXPECT_EQ(c.high, h.high64);
}

TEST(ContentHashTest, BasisBlockCountRoundsUp) {
  EXPECT_EQ(BasisBlockCount(0), 0u);
  EXPECT_EQ(BasisBlockCount(1), 1u);
  EXPECT_EQ(BasisBlockCount(kBasisBlockSize), 1u);
  EXPECT_EQ(BasisBlockCount(kBasisBlockSize + 1), 2u);
  EXPECT_EQ(BasisBlockCount(10 * kBasisBlockSize), 10u);
}

ReplicaBasis GoodBasis() {
  ReplicaBasis b;
  b.id = 42;
  b.ram_size_bytes = 8 * kGuestPageSize;
  b.disks = {{"vda", kBasisBlockSize + 1}, {"vdb", 1000}};
  b.ram_pages.assign(8, HashZeroes(kGuestPageSize));
  b.disk_blocks["vda"] = {HashZeroes(kBasisBlockSize), HashZeroes(1)};
  b.disk_blocks["vdb"] = {HashZeroes(1000)};
  return b;
}

TEST(ReplicaBasisTest, ValidateChecksIdAndEveryHashVector) {
  EXPECT_TRUE(GoodBasis().Validate().ok()) << GoodBasis().Validate();
  {
    ReplicaBasis b = GoodBasis();
    b.id = 0;
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << "no id";
  }
  for (size_t pages : {7, 9, 0}) {
    ReplicaBasis b = GoodBasis();
    b.ram_pages.resize(pages);
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << pages << " RAM page hashes";
  }
  {
    ReplicaBasis b = GoodBasis();
    b.disk_blocks.erase("vdb");
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << "a disk without hashes";
  }
  {
    ReplicaBasis b = GoodBasis();
    b.disk_blocks["vdc"] = std::move(b.disk_blocks["vdb"]);
    b.disk_blocks.erase("vdb");
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << "hashes of another disk";
  }
  {
    ReplicaBasis b = GoodBasis();
    b.disk_blocks["vdc"] = {};
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << "hashes of an extra disk";
  }
  for (size_t blocks : {1, 3}) {
    ReplicaBasis b = GoodBasis();
    b.disk_blocks["vda"].resize(blocks);
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << blocks << " blocks of vda";
  }
  {
    ReplicaBasis b = GoodBasis();
    b.disk_blocks["vdb"].clear();
    EXPECT_TRUE(absl::IsInvalidArgument(b.Validate())) << "no blocks of vdb";
  }
}

TEST(ReplicaBasisTest, FitsOnlyTheSameShape) {
  const ReplicaBasis b = GoodBasis();
  EXPECT_TRUE(b.Fits(8 * kGuestPageSize, {{"vda", kBasisBlockSize + 1}, {"vdb", 1000}}));
  EXPECT_FALSE(b.Fits(16 * kGuestPageSize, {{"vda", kBasisBlockSize + 1}, {"vdb", 1000}}));
  EXPECT_FALSE(b.Fits(8 * kGuestPageSize, {{"vda", kBasisBlockSize + 1}, {"vdb", 2000}}));
  EXPECT_FALSE(b.Fits(8 * kGuestPageSize, {{"vda", kBasisBlockSize + 1}, {"vdc", 1000}}));
  EXPECT_FALSE(b.Fits(8 * kGuestPageSize, {{"vda", kBasisBlockSize + 1}}));
  EXPECT_FALSE(b.Fits(8 * kGuestPageSize,
                      {{"vda", kBasisBlockSize + 1}, {"vdb", 1000}, {"vdc", 1000}}));
  EXPECT_FALSE(b.Fits(8 * kGuestPageSize, {}));
}

}  // namespace
}  // namespace novadt::core
