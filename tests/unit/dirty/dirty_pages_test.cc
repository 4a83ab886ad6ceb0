#include "agent/dirty/dirty_pages.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace novadt::dirty {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(DirtyPagesTest, EmptySetIteratesNothing) {
  DirtyPages d(1000);
  EXPECT_EQ(d.page_count(), 1000u);
  EXPECT_EQ(d.count(), 0u);
  EXPECT_TRUE(d.empty());
  EXPECT_THAT(d.ToVector(), IsEmpty());
  EXPECT_TRUE(d.begin() == d.end());
}

TEST(DirtyPagesTest, InsertCountsOnceAndIteratesAscending) {
  DirtyPages d(200);
  for (uint64_t p : {199u, 0u, 64u, 63u, 65u, 128u, 64u}) d.Insert(p);
  EXPECT_EQ(d.count(), 6u);
  EXPECT_TRUE(d.Contains(63));
  EXPECT_FALSE(d.Contains(62));
  EXPECT_THAT(d.ToVector(), ElementsAre(0, 63, 64, 65, 128, 199));
}

TEST(DirtyPagesTest, FromWordsCounts) {
  DirtyPages d = DirtyPages::FromWords(130, {0b101, 0, 0b11});
  EXPECT_EQ(d.count(), 4u);
  EXPECT_THAT(d.ToVector(), ElementsAre(0, 2, 128, 129));
}

TEST(DirtyPagesDeathTest, FromWordsRejectsBitsBeyondTheEnd) {
  EXPECT_DEATH(DirtyPages::FromWords(130, {0, 0, 0b100}), "");
}

}  // namespace
}  // namespace novadt::dirty
