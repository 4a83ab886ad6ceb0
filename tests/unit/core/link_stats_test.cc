#include "agent/core/link_stats.h"

#include <gtest/gtest.h>

namespace novadt::core {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

PeerView Peer(const std::string& host, int64_t rtt_us, bool reachable = true,
              bool configured = true) {
  PeerView p;
  p.host = host;
  p.configured = configured;
  p.reachable = reachable;
  p.rtt = microseconds(rtt_us);
  return p;
}

class LinkRateMeterTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  LinkRateMeter meter_{"a", 125'000'000};
};

TEST_F(LinkRateMeterTest, ReachablePeersAreLinksWithTheirRttAndTheConfiguredCapacity) {
  auto links = meter_.Sample(clock_.Now(), {Peer("c", 900), Peer("b", 420), Peer("d", 5, false),
                                            Peer("e", 0, true, /*configured=*/false)},
                             {});
  ASSERT_EQ(links.size(), 2u) << "unreachable d and never-greeted e have no measured link";
  EXPECT_EQ(links[0].source, "a");
  EXPECT_EQ(links[0].target, "b");
  EXPECT_EQ(links[0].rtt_us, 420);
  EXPECT_EQ(links[0].rate_bytes_per_s, 0u);
  EXPECT_EQ(links[0].capacity_bytes_per_s, 125'000'000u);
  EXPECT_EQ(links[1].target, "c");
}

TEST_F(LinkRateMeterTest, RateIsWhatAllServersStreamedToABackupOverTheInterval) {
  const std::vector<PeerView> peers = {Peer("b", 420), Peer("c", 900)};
  // First sample: no interval yet, so whatever was streamed before does not count.
  auto links = meter_.Sample(clock_.Now(), peers, {{"u1", "b", 5'000'000}, {"u2", "b", 1'000}});
  EXPECT_EQ(links[0].rate_bytes_per_s, 0u);

  clock_.Advance(milliseconds(2000));
  links = meter_.Sample(clock_.Now(), peers,
                        {{"u1", "b", 7'000'000}, {"u2", "b", 1'001'000}, {"u3", "c", 400}});
  ASSERT_EQ(links.size(), 2u);
  EXPECT_EQ(links[0].target, "b");
  EXPECT_EQ(links[0].rate_bytes_per_s, 1'500'000u);  // (2,000,000 + 1,000,000) / 2 s
  EXPECT_EQ(links[1].target, "c");
  EXPECT_EQ(links[1].rate_bytes_per_s, 200u) << "a server new since the last sample counts whole";
}

TEST_F(LinkRateMeterTest, RestartedCountsAndGoneServersNeverMakeNegativeRates) {
  const std::vector<PeerView> peers = {Peer("b", 420)};
  meter_.Sample(clock_.Now(), peers, {{"u1", "b", 9'000'000}, {"u2", "b", 9'000'000}});
  clock_.Advance(milliseconds(1000));
  // u1 re-seeded (count restarted at 3000), u2 unprotected (gone).
  auto links = meter_.Sample(clock_.Now(), peers, {{"u1", "b", 3'000}});
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].rate_bytes_per_s, 3'000u);
  clock_.Advance(milliseconds(1000));
  links = meter_.Sample(clock_.Now(), peers, {});
  EXPECT_EQ(links[0].rate_bytes_per_s, 0u);
}

TEST_F(LinkRateMeterTest, BackupNotGreetedHasUnknownRtt) {
  meter_.Sample(clock_.Now(), {}, {{"u1", "z", 0}});
  clock_.Advance(milliseconds(1000));
  auto links = meter_.Sample(clock_.Now(), {Peer("z", 300, /*reachable=*/false)}, {{"u1", "z", 10}});
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].target, "z");
  EXPECT_EQ(links[0].rtt_us, -1);
  EXPECT_EQ(links[0].rate_bytes_per_s, 10u);
}

}  // namespace
}  // namespace novadt::core
