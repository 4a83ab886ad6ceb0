#include "agent/common/identifiers.h"

#include <gtest/gtest.h>

namespace novadt {
namespace {

constexpr char kUuid[] = "0b4f9c6e-2d3a-4e5f-8a9b-c0d1e2f3a4b5";

TEST(IdentifiersTest, CanonicalUuidIsAccepted) { EXPECT_TRUE(ValidateInstanceUuid(kUuid).ok()); }

TEST(IdentifiersTest, EveryOtherSpellingOfAUuidIsRefused) {
  const std::string u = kUuid;
  for (const std::string& bad :
       {std::string(""), std::string("0B4F9C6E-2D3A-4E5F-8A9B-C0D1E2F3A4B5"), "{" + u + "}",
        "urn:uuid:" + u, std::string("0b4f9c6e2d3a4e5f8a9bc0d1e2f3a4b5"), u + "0", u + "/",
        "./" + u, "../" + u.substr(3), std::string("../../x"), u.substr(0, 35) + "g",
        u.substr(0, 8) + "_" + u.substr(9), std::string(36, '-'), u + std::string(1, '\0'),
        std::string(4096, 'a')}) {
    Status st = ValidateInstanceUuid(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << "accepted '" << bad << "'";
    EXPECT_LT(st.message().size(), 200u) << "the message must stay bounded";
  }
}

TEST(IdentifiersTest, HostNames) {
  for (const char* good : {"compute-1", "rig-a", "node1.example.org", "a", "host_2"}) {
    EXPECT_TRUE(ValidateHostName(good).ok()) << good;
  }
  for (const std::string& bad : {std::string(""), std::string("-x"), std::string(".x"),
                                 std::string("a b"), std::string("a/b"), std::string("../x"),
                                 std::string("a\nb"), std::string(256, 'h')}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateHostName(bad))) << bad;
  }
}

TEST(IdentifiersTest, DiskNames) {
  for (const char* good : {"vda", "sdb", "hd0", "disk.config", "vd_x-1"}) {
    EXPECT_TRUE(ValidateDiskName(good).ok()) << good;
  }
  for (const std::string& bad : {std::string(""), std::string("."), std::string(".."),
                                 std::string("../vda"), std::string("v/da"), std::string(65, 'v')}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateDiskName(bad))) << bad;
  }
}

TEST(IdentifiersTest, PrintableEscapesAndBounds) {
  EXPECT_EQ(Printable("abc"), "abc");
  EXPECT_EQ(Printable(std::string("a\nb\x01\\", 5)), "a\\x0ab\\x01\\x5c");
  const std::string shown = Printable(std::string(1000, 'x'), 10);
  EXPECT_EQ(shown, "xxxxxxxxxx...");
}

}  // namespace
}  // namespace novadt
