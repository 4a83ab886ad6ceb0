#include "agent/core/protection_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace novadt::core {
namespace {

namespace fs = std::filesystem;
using Step = ProtectionTable::SaveStep;

class ProtectionTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/protection_table_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/protection.table";
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& text) {
    fs::create_directories(dir_ + "/state");
    std::ofstream(path_, std::ios::trunc) << text;
  }

  std::string dir_, path_;
  const ProtectionMap old_{{"uuid-1", {"host-b", 0}}, {"uuid-2", {"host-c", 3}}};
  const ProtectionMap new_{{"uuid-1", {"host-b", 1}}, {"uuid-3", {"host-d", 0}}};
};

TEST_F(ProtectionTableTest, AbsentFileIsAnEmptyTable) {
  auto t = ProtectionTable(path_).Load();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->empty());
}

TEST_F(ProtectionTableTest, SaveThenLoadRoundTripsAndCreatesTheDirectory) {
  ProtectionTable table(path_);
  ASSERT_TRUE(table.Save(old_).ok());
  auto t = table.Load();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->size(), 2u);
  EXPECT_EQ(t->at("uuid-2").backup_host, "host-c");
  EXPECT_EQ(t->at("uuid-2").incarnation, 3u);
  ASSERT_TRUE(table.Save({}).ok());
  EXPECT_TRUE(table.Load()->empty());
}

// A crash at each step of Save() leaves the old table or the new one, never garbage; the next
// Save() works over the stale temporary file.
TEST_F(ProtectionTableTest, ACrashAtEveryStepLeavesTheOldOrTheNewTable) {
  for (Step crash_at : {Step::kCreateTemp, Step::kWriteTemp, Step::kSyncTemp, Step::kRename,
                        Step::kSyncDir}) {
    SCOPED_TRACE(static_cast<int>(crash_at));
    ASSERT_TRUE(ProtectionTable(path_).Save(old_).ok());
    ProtectionTable crashing(path_, [&](Step s) { return s != crash_at; });
    Status st = crashing.Save(new_);
    EXPECT_TRUE(absl::IsAborted(st)) << st;
    auto t = ProtectionTable(path_).Load();
    ASSERT_TRUE(t.ok()) << t.status();
    const bool is_old = t->size() == old_.size() && t->count("uuid-2") == 1;
    const bool is_new = t->size() == new_.size() && t->count("uuid-3") == 1 &&
                        t->at("uuid-1").incarnation == 1;
    EXPECT_TRUE(is_old || is_new);
    // Up to the rename the old table stands; from the rename on, the new one.
    EXPECT_EQ(is_new, crash_at == Step::kSyncDir);
    ASSERT_TRUE(ProtectionTable(path_).Save(new_).ok());
    EXPECT_EQ(ProtectionTable(path_).Load()->count("uuid-3"), 1u);
  }
}

TEST_F(ProtectionTableTest, EveryTruncationOfAValidFileIsReportedAsDataLoss) {
  const std::string text = ProtectionTable::Encode(old_);
  for (size_t len = 1; len < text.size(); ++len) {
    Write(text.substr(0, len));
    auto t = ProtectionTable(path_).Load();
    ASSERT_FALSE(t.ok()) << "accepted a table cut at " << len;
    EXPECT_TRUE(absl::IsDataLoss(t.status())) << t.status();
    EXPECT_NE(t.status().message().find(path_), std::string::npos);
  }
}

TEST_F(ProtectionTableTest, GarbageAndEditedFilesAreDataLossNotCrashes) {
  for (const std::string& bad :
       {std::string("\0\0\0\0", 4), std::string("hello\n"), std::string("end 0 0\n"),
        std::string("nova-dt-protection-table 1\nend 5 1\n"), std::string(5000, 'x')}) {
    Write(bad);
    auto t = ProtectionTable(path_).Load();
    EXPECT_TRUE(absl::IsDataLoss(t.status())) << t.status();
  }
  std::string text = ProtectionTable::Encode(old_);
  text[text.find("host-b")] = 'H';  // a flipped byte
  Write(text);
  EXPECT_TRUE(absl::IsDataLoss(ProtectionTable(path_).Load().status()));
  // Moved aside: the path is free for a clean table, the bad file kept for inspection.
  ASSERT_TRUE(ProtectionTable(path_).QuarantineCorrupt().ok());
  EXPECT_TRUE(fs::exists(path_ + ".corrupt"));
  EXPECT_TRUE(ProtectionTable(path_).Load()->empty());
}

// The input that crashed the agent at every start (found by fuzzing, fuzz/corpus/
// protection_table/crash-incarnation-overflow): an intact, correctly sealed table whose
// incarnation does not fit in 64 bits. std::stoull threw std::out_of_range out of Load(); now
// it is a corrupt table like any other: DataLoss, moved aside, and the agent starts empty.
TEST_F(ProtectionTableTest, AnIncarnationBeyond64BitsLoadsAsCorruptAndIsQuarantined) {
  const std::string body =
      "nova-dt-protection-table 1\nuuid-1\thost-b\t18446744073709551616\n";
  Write(body + ProtectionTable::Trailer(body, 1));
  ProtectionTable table(path_);
  auto t = table.Load();
  ASSERT_TRUE(absl::IsDataLoss(t.status())) << t.status();
  EXPECT_NE(t.status().message().find("malformed entry"), std::string::npos) << t.status();
  ASSERT_TRUE(table.QuarantineCorrupt().ok());
  EXPECT_TRUE(fs::exists(path_ + ".corrupt"));
  EXPECT_FALSE(fs::exists(path_));
  auto after = table.Load();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->empty());
}

// Every number of the format is read whole, in range, digits only; anything else is DataLoss.
TEST_F(ProtectionTableTest, MalformedNumbersAreDataLossWhereverTheyAre) {
  const std::string head = "nova-dt-protection-table 1\n";
  for (const char* incarnation :
       {"99999999999999999999999999", "-1", "+1", " 1", "1 ", "0x10", "1e3", ""}) {
    const std::string body = head + "uuid-1\thost-b\t" + incarnation + "\n";
    auto t = ProtectionTable::Decode(body + ProtectionTable::Trailer(body, 1));
    EXPECT_TRUE(absl::IsDataLoss(t.status())) << "'" << incarnation << "': " << t.status();
  }
  const std::string body = head + "uuid-1\thost-b\t7\n";
  for (const char* trailer :
       {"end 99999999999999999999999 1\n", "end -1 1\n", "end 1 -1\n",
        "end 1 99999999999999999999999\n", "end 1\n", "end 1 2 3\n", "end  1 2\n"}) {
    auto t = ProtectionTable::Decode(body + trailer);
    EXPECT_TRUE(absl::IsDataLoss(t.status())) << trailer << t.status();
  }
  // Leading zeros are still the number; the largest incarnation is read back exactly.
  const std::string max_body = head + "uuid-1\thost-b\t018446744073709551615\n";
  auto t = ProtectionTable::Decode(max_body + ProtectionTable::Trailer(max_body, 1));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->at("uuid-1").incarnation, 18446744073709551615ull);
}

// A table is up to 16 MiB of whatever is on disk: what an error quotes of it is bounded and
// printable (Printable()), never a raw line of megabytes or control bytes reaching a log.
TEST_F(ProtectionTableTest, ErrorsQuoteTheDamageBoundedAndPrintable) {
  const std::string junk = std::string(1 << 20, 'x') + "\x1b[2J\r\x01";
  auto quoted_ok = [](const Status& st) {
    EXPECT_TRUE(absl::IsDataLoss(st)) << st.ToString().substr(0, 200);
    EXPECT_LT(st.message().size(), 300u);
    for (char c : st.message()) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << static_cast<int>(c);
      if (!(c >= 0x20 && c < 0x7f)) break;
    }
  };
  const std::string head = "nova-dt-protection-table 1\n";
  for (const std::string& body :
       {head + junk + "\n",                                  // a malformed entry
        head + "\x1b" + junk + "\thost-b\t1\n",              // ditto, starting with ESC
        junk + "\n" + "uuid-1\thost-b\t1\n"}) {              // an unknown header
    quoted_ok(ProtectionTable::Decode(body + ProtectionTable::Trailer(body, 1)).status());
  }
  // A duplicate quotes the server's field (valid, but bounded all the same).
  const std::string dup = head + std::string(5000, 'u') + "\thost-b\t1\n" +
                          std::string(5000, 'u') + "\thost-c\t2\n";
  quoted_ok(ProtectionTable::Decode(dup + ProtectionTable::Trailer(dup, 2)).status());
}

TEST_F(ProtectionTableTest, ADuplicateServerIsDataLoss) {
  const std::string body =
      "nova-dt-protection-table 1\nuuid-1\thost-b\t1\nuuid-1\thost-c\t2\n";
  EXPECT_TRUE(absl::IsDataLoss(ProtectionTable::Decode(body + ProtectionTable::Trailer(body, 1))
                                   .status()));
  EXPECT_TRUE(absl::IsDataLoss(ProtectionTable::Decode(body + ProtectionTable::Trailer(body, 2))
                                   .status()));
}

TEST_F(ProtectionTableTest, RefusesEntriesItCouldNotReadBack) {
  ProtectionTable table(path_);
  ASSERT_TRUE(table.Save(old_).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(table.Save({{"uuid 1", {"host-b", 0}}})));
  EXPECT_TRUE(absl::IsInvalidArgument(table.Save({{"uuid-1", {"", 0}}})));
  EXPECT_EQ(table.Load()->size(), 2u);
}

}  // namespace
}  // namespace novadt::core
