#include "agent/common/numbers.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace novadt {
namespace {

TEST(ParseIntegerTest, ReadsWholeTextsInRange) {
  EXPECT_EQ(ParseInteger<uint64_t>("0"), 0u);
  EXPECT_EQ(ParseInteger<uint64_t>("007"), 7u);
  EXPECT_EQ(ParseInteger<uint64_t>("18446744073709551615"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ParseInteger<int>("-2147483648"), std::numeric_limits<int>::min());
  EXPECT_EQ(ParseInteger<uint64_t>("7fffffffffff", 16), 0x7fffffffffffull);
}

TEST(ParseIntegerTest, RefusesWhatDoesNotFitOrIsNotOnlyANumber) {
  EXPECT_FALSE(ParseInteger<uint64_t>("18446744073709551616"));
  EXPECT_FALSE(ParseInteger<uint64_t>(std::string(400, '9')));
  EXPECT_FALSE(ParseInteger<int>("2147483648"));
  EXPECT_FALSE(ParseInteger<uint8_t>("256"));
  for (const char* bad : {"", "-", "-1", "+1", " 1", "1 ", "1x", "0x10", "1.0", "1e3", "١"}) {
    EXPECT_FALSE(ParseInteger<uint64_t>(bad)) << "'" << bad << "'";
  }
  EXPECT_FALSE(ParseInteger<int>("+1"));
  EXPECT_FALSE(ParseInteger<int>("--1"));
  // The text's end is where the view ends, not at a NUL or past it.
  EXPECT_FALSE(ParseInteger<int>(std::string_view("12\0", 3)));
  EXPECT_EQ(ParseInteger<int>(std::string_view("123", 2)), 12);
}

TEST(ParseFiniteDoubleTest, ReadsFiniteNumbersOnly) {
  EXPECT_EQ(ParseFiniteDouble("2"), 2.0);
  EXPECT_EQ(ParseFiniteDouble("-0.5"), -0.5);
  EXPECT_EQ(ParseFiniteDouble("1e3"), 1000.0);
  for (const char* bad : {"", "inf", "-inf", "nan", "1e999", "+1", " 1", "1s", "0x1p3", "."}) {
    EXPECT_FALSE(ParseFiniteDouble(bad)) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace novadt
