// The phi accrual failure detector on a manual clock: sharp on a steady link, tolerant after a
// lossy one, bounded on an erratic one, and back to sharp once the link is steady again.
#include "agent/core/failure_detector.h"

#include <gtest/gtest.h>

namespace novadt::core {
namespace {

using std::chrono::milliseconds;

class FailureDetectorTest : public ::testing::Test {
 protected:
  // `n` arrivals `gap` apart.
  void Beat(int n, milliseconds gap) {
    for (int i = 0; i < n; ++i) {
      clock_.Advance(gap);
      fd_.Heartbeat(clock_.Now());
    }
  }
  // Is the primary suspected after `silence` without arrivals? (The clock goes back afterwards
  // only in the sense that the next Beat() continues from the suspect check's time.)
  bool SuspectAfter(milliseconds silence) {
    return fd_.Suspect(clock_.Now() + std::chrono::duration_cast<Clock::Duration>(silence));
  }

  ManualClock clock_;
  AccrualFailureDetector fd_{FailureDetectorOptions{}};  // 100 ms / 500 ms / phi 8 / 5 s
};

TEST_F(FailureDetectorTest, NothingIsSuspectedBeforeTheFirstArrival) {
  clock_.Advance(std::chrono::seconds(60));
  EXPECT_FALSE(fd_.Suspect(clock_.Now()));
  EXPECT_EQ(fd_.Phi(clock_.Now()), 0.0);
}

TEST_F(FailureDetectorTest, SteadyLinkIsSuspectedAtTheMinimumSilence) {
  Beat(100, milliseconds(100));
  EXPECT_FALSE(SuspectAfter(milliseconds(200)));
  EXPECT_FALSE(SuspectAfter(milliseconds(499)));
  EXPECT_TRUE(SuspectAfter(milliseconds(500)));
  EXPECT_NEAR(fd_.mean_ms(), 100, 1);
  EXPECT_EQ(fd_.stddev_ms(), 50);  // the floor
  // phi grows with the silence.
  EXPECT_LT(fd_.Phi(clock_.Now() + milliseconds(150)), fd_.Phi(clock_.Now() + milliseconds(300)));
}

TEST_F(FailureDetectorTest, AfterALossyLinkAShortSilenceIsNotSuspectedButALongOneIs) {
  // Every tenth arrival comes late (a retransmission after a lost segment: +350 ms).
  for (int i = 0; i < 20; ++i) {
    Beat(9, milliseconds(100));
    Beat(1, milliseconds(450));
  }
  EXPECT_FALSE(SuspectAfter(milliseconds(500)));  // a fixed 500 ms timeout would fail over here
  EXPECT_FALSE(SuspectAfter(milliseconds(600)));
  EXPECT_TRUE(SuspectAfter(milliseconds(1500)));
}

TEST_F(FailureDetectorTest, AnErraticLinkIsStillSuspectedAtTheMaximumSilence) {
  for (int i = 0; i < 50; ++i) {
    Beat(1, milliseconds(50));
    Beat(1, milliseconds(3000));
  }
  EXPECT_FALSE(SuspectAfter(milliseconds(4000)));
  EXPECT_TRUE(SuspectAfter(milliseconds(5000)));
}

TEST_F(FailureDetectorTest, TheWindowForgetsAnOldLossyPeriod) {
  for (int i = 0; i < 20; ++i) {
    Beat(9, milliseconds(100));
    Beat(1, milliseconds(450));
  }
  ASSERT_FALSE(SuspectAfter(milliseconds(600)));
  Beat(200, milliseconds(100));  // a full window of steady arrivals
  EXPECT_TRUE(SuspectAfter(milliseconds(600)));
  EXPECT_NEAR(fd_.mean_ms(), 100, 1);
}

}  // namespace
}  // namespace novadt::core
