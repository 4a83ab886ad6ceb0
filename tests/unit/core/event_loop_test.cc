#include "agent/core/event_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace novadt::core {
namespace {

using std::chrono::milliseconds;

TEST(EventLoopTest, PostedTasksRunInOrderOnTheLoopThread) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<int> ran;
  for (int i = 0; i < 5; ++i) loop.Post([&, i] {
    EXPECT_TRUE(loop.IsLoopThread());
    ran.push_back(i);
  });
  EXPECT_EQ(loop.RunReady(), 5);
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_FALSE(loop.IsLoopThread());
}

TEST(EventLoopTest, TimersFireOnlyWhenDueAndPeriodicOnesRearm) {
  ManualClock clock;
  EventLoop loop(clock);
  int once = 0, every = 0;
  loop.RunAfter(milliseconds(100), [&] { ++once; });
  loop.RunEvery(milliseconds(30), [&] { ++every; });
  EXPECT_EQ(loop.RunReady(), 0);
  clock.Advance(milliseconds(30));
  loop.RunReady();
  EXPECT_EQ(every, 1);
  EXPECT_EQ(once, 0);
  clock.Advance(milliseconds(70));
  loop.RunReady();
  EXPECT_EQ(once, 1);
  EXPECT_EQ(every, 2);  // missed ticks are skipped, not burst
  clock.Advance(milliseconds(1000));
  loop.RunReady();
  EXPECT_EQ(once, 1);
  EXPECT_EQ(every, 3);
}

TEST(EventLoopTest, CancelledTimerNeverRuns) {
  ManualClock clock;
  EventLoop loop(clock);
  int n = 0;
  auto id = loop.RunEvery(milliseconds(10), [&] { ++n; });
  loop.Cancel(id);
  clock.Advance(milliseconds(50));
  loop.RunReady();
  EXPECT_EQ(n, 0);
}

TEST(EventLoopTest, StopFromAnotherThreadEndsRunAndDropsLaterPosts) {
  SystemClock clock;
  EventLoop loop(clock);
  std::atomic<int> ran{0};
  loop.Post([&] { ++ran; });
  std::thread t([&] { loop.Run(); });
  while (ran.load() == 0) std::this_thread::yield();
  loop.Stop();
  t.join();
  loop.Post([&] { ++ran; });
  EXPECT_EQ(loop.RunReady(), 0);
  EXPECT_EQ(ran.load(), 1);
}

TEST(EventLoopTest, RealTimeTimerWakesASleepingLoop) {
  SystemClock clock;
  EventLoop loop(clock);
  const auto start = std::chrono::steady_clock::now();
  loop.RunAfter(milliseconds(30), [&] { loop.Stop(); });
  loop.Run();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, milliseconds(30));
  EXPECT_LT(took, milliseconds(1000));
}

}  // namespace
}  // namespace novadt::core
