#include "agent/core/peer_tracker.h"

#include <gtest/gtest.h>

namespace novadt::core {
namespace {

using std::chrono::milliseconds;

class PeerTrackerTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  PeerTracker tracker_{clock_, {{"b", "198.18.0.2:7070"}}, milliseconds(3000)};
};

TEST_F(PeerTrackerTest, ConfiguredPeerIsUnreachableUntilItAnswers) {
  auto s = tracker_.Snapshot();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].host, "b");
  EXPECT_TRUE(s[0].configured);
  EXPECT_FALSE(s[0].reachable);
  EXPECT_FALSE(s[0].last_seen.has_value());

  tracker_.OnHelloAnswered({"b", "198.18.0.2:7070"}, "b", "0.1.0", std::chrono::microseconds(420));
  s = tracker_.Snapshot();
  EXPECT_TRUE(s[0].reachable);
  EXPECT_EQ(s[0].rtt.count(), 420);
  EXPECT_EQ(s[0].version, "0.1.0");
}

TEST_F(PeerTrackerTest, PeerGoesStaleAfterTheBound) {
  tracker_.OnHelloAnswered({"b", "x"}, "b", "v", std::chrono::microseconds(1));
  clock_.Advance(milliseconds(3000));
  EXPECT_TRUE(tracker_.Snapshot()[0].reachable);
  clock_.Advance(milliseconds(1));
  EXPECT_FALSE(tracker_.Snapshot()[0].reachable);
}

TEST_F(PeerTrackerTest, AnswerFromAnAgentWithAnotherNameDoesNotCount) {
  tracker_.OnHelloAnswered({"b", "198.18.0.2:7070"}, "c", "v", std::chrono::microseconds(1));
  auto s = tracker_.Snapshot();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_FALSE(s[0].reachable);
  EXPECT_NE(s[0].last_error.find("says it is 'c'"), std::string::npos);
}

// Anyone can send a Hello claiming to be the primary: if that made it "reachable", a forged
// greeting would suppress every failover from it (the backup fails over only from a primary
// that does not answer its own hellos).
TEST_F(PeerTrackerTest, AGreetingFromAPeerNeverMakesItReachable) {
  tracker_.OnHelloReceived("b", "v9");
  auto s = tracker_.Snapshot();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_FALSE(s[0].reachable);
  EXPECT_TRUE(s[0].last_seen.has_value()) << "shown as seen";
  EXPECT_EQ(s[0].address, "198.18.0.2:7070") << "the configured address stays";
  // Answered greetings do, and a later inbound one does not extend them past the bound.
  tracker_.OnHelloAnswered({"b", "198.18.0.2:7070"}, "b", "v", std::chrono::microseconds(1));
  clock_.Advance(milliseconds(2000));
  tracker_.OnHelloReceived("b", "v");
  clock_.Advance(milliseconds(1001));
  EXPECT_FALSE(tracker_.Snapshot()[0].reachable);
}

TEST_F(PeerTrackerTest, GreetingsFromHostsThatAreNotPeersAreNotTracked) {
  for (int i = 0; i < 1000; ++i) tracker_.OnHelloReceived("c" + std::to_string(i), "v");
  auto s = tracker_.Snapshot();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].host, "b");
}

TEST_F(PeerTrackerTest, FailureIsRecordedWithoutForgettingTheLastSighting) {
  tracker_.OnHelloAnswered({"b", "x"}, "b", "v", std::chrono::microseconds(1));
  tracker_.OnHelloFailed({"b", "x"}, "connection refused");
  auto s = tracker_.Snapshot();
  EXPECT_TRUE(s[0].reachable);
  EXPECT_EQ(s[0].last_error, "connection refused");
}

}  // namespace
}  // namespace novadt::core
