#include "agent/core/event_loop.h"

#include <algorithm>
#include <chrono>

namespace novadt::core {

void EventLoop::Post(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

EventLoop::TimerId EventLoop::RunAfter(Clock::Duration delay, Task task) {
  TimerId id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_timer_id_++;
    timers_.emplace(id, Timer{clock_.Now() + delay, Clock::Duration::zero(), std::move(task)});
  }
  cv_.notify_one();
  return id;
}

EventLoop::TimerId EventLoop::RunEvery(Clock::Duration period, Task task) {
  TimerId id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_timer_id_++;
    timers_.emplace(id, Timer{clock_.Now() + period, period, std::move(task)});
  }
  cv_.notify_one();
  return id;
}

void EventLoop::Cancel(TimerId id) {
  std::lock_guard<std::mutex> lock(mu_);
  timers_.erase(id);
}

bool EventLoop::PopReadyLocked(Task* out) {
  if (!queue_.empty()) {
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  const auto now = clock_.Now();
  auto due = timers_.end();
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.due <= now && (due == timers_.end() || it->second.due < due->second.due)) {
      due = it;
    }
  }
  if (due == timers_.end()) return false;
  if (due->second.period == Clock::Duration::zero()) {
    *out = std::move(due->second.task);
    timers_.erase(due);
  } else {
    *out = due->second.task;
    // Re-arm from the due time, not from now, so a periodic timer does not drift; if the loop
    // fell behind by more than a period, skip the missed ticks instead of bursting.
    due->second.due += due->second.period;
    if (due->second.due <= now) due->second.due = now + due->second.period;
  }
  return true;
}

void EventLoop::Run() {
  loop_thread_ = std::this_thread::get_id();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopped_) {
    Task task;
    if (PopReadyLocked(&task)) {
      lock.unlock();
      task();
      lock.lock();
      continue;
    }
    // Sleep until the earliest timer (bounded, so a ManualClock-driven or drifting clock
    // never parks the loop for long) or until Post()/Stop() wakes us.
    auto wait = std::chrono::duration_cast<Clock::Duration>(std::chrono::milliseconds(100));
    const auto now = clock_.Now();
    for (const auto& [id, t] : timers_) wait = std::min(wait, t.due - now);
    if (wait > Clock::Duration::zero()) cv_.wait_for(lock, wait);
  }
  loop_thread_ = std::thread::id{};
}

void EventLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    queue_.clear();
  }
  cv_.notify_all();
}

int EventLoop::RunReady() {
  loop_thread_ = std::this_thread::get_id();
  int ran = 0;
  std::unique_lock<std::mutex> lock(mu_);
  Task task;
  while (!stopped_ && PopReadyLocked(&task)) {
    lock.unlock();
    task();
    ++ran;
    lock.lock();
  }
  loop_thread_ = std::thread::id{};
  return ran;
}

}  // namespace novadt::core
