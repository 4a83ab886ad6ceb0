// The thread that runs libvirt's event loop (keepalives, close callbacks, domain events).
//
// libvirt's default event implementation is process-wide: it is registered once per process and
// must be run by exactly one thread. EventThread wraps that constraint: Acquire() hands out a
// shared instance that runs the loop while anyone holds it, and stops the thread when the last
// holder lets go (it can be re-acquired later). This is the one process-wide object of the agent,
// owed to libvirt's design.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

namespace novadt::libvirt {

class EventThread {
 public:
  static std::shared_ptr<EventThread> Acquire();
  ~EventThread();
  EventThread(const EventThread&) = delete;
  EventThread& operator=(const EventThread&) = delete;

  // Runs `fn` on the event thread and waits for it. Serializes `fn` with every libvirt callback,
  // so state those callbacks touch can be set up or torn down safely. REQUIRES: not called from
  // the event thread itself (it would deadlock) — checked.
  void RunSync(const std::function<void()>& fn);

  bool IsEventThread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  EventThread();
  void Loop();

  std::atomic<bool> running_{true};
  std::thread thread_;
};

}  // namespace novadt::libvirt
