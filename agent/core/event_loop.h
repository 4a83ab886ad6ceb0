// The agent's single event-loop thread (Envoy's Dispatcher, in small). The loop thread owns all
// replication and pair state and takes no locks over it; other threads (libvirt events, gRPC
// handlers, AMQP) only translate their input into closures and Post() them here.
//
// Thread safety: Post(), Stop() and the timer calls are safe from any thread. Closures run on
// the loop thread, in Post() order; timers run when due, after already-posted closures.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "agent/common/clock.h"

namespace novadt::core {

class EventLoop {
 public:
  using Task = std::function<void()>;
  using TimerId = uint64_t;

  explicit EventLoop(const Clock& clock) : clock_(clock) {}
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Queues `task` to run on the loop thread. Tasks posted after Stop() are dropped.
  void Post(Task task);

  // Runs `task` once, `delay` from now. Returns an id for Cancel().
  TimerId RunAfter(Clock::Duration delay, Task task);
  // Runs `task` every `period`, first after one period. Returns an id for Cancel().
  TimerId RunEvery(Clock::Duration period, Task task);
  // Cancels a timer; no-op when it already ran (one-shot) or was cancelled.
  void Cancel(TimerId id);

  // Runs the loop on the calling thread until Stop(). REQUIRES: called once at a time.
  void Run();
  // Makes Run() return after the task it is executing, if any.
  void Stop();

  // Runs every task and due timer that is ready now, without blocking; returns how many ran.
  // For tests driving the loop with a ManualClock.
  int RunReady();

  // True on the thread currently inside Run()/RunReady().
  bool IsLoopThread() const { return loop_thread_ == std::this_thread::get_id(); }

 private:
  struct Timer {
    Clock::TimePoint due;
    Clock::Duration period;  // zero: one-shot
    Task task;
  };

  // Pops one runnable task (queued, or a due timer, re-armed when periodic). Caller holds mu_.
  bool PopReadyLocked(Task* out);

  const Clock& clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::map<TimerId, Timer> timers_;
  TimerId next_timer_id_ = 1;
  bool stopped_ = false;
  std::atomic<std::thread::id> loop_thread_{};
};

}  // namespace novadt::core
