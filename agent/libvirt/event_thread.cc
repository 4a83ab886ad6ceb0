#include "agent/libvirt/event_thread.h"

#include <pthread.h>

#include <cstdlib>
#include <future>
#include <mutex>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

namespace novadt::libvirt {
namespace {

// libvirt prints every error to stderr unless told otherwise; the adapter reports errors itself.
void QuietErrorHandler(void*, virErrorPtr) {}

void RegisterOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, QuietErrorHandler);
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
      spdlog::critical("libvirt: cannot initialise the event implementation: {}",
                       virGetLastErrorMessage());
      std::abort();
    }
  });
}

// A one-shot zero-delay timeout that runs a closure on the event thread.
struct OneShot {
  std::function<void()> fn;
  int timer = -1;
};

void RunOneShot(int timer, void* opaque) {
  auto* shot = static_cast<OneShot*>(opaque);
  virEventRemoveTimeout(timer);  // frees `shot` via FreeOneShot once the loop lets go of it
  if (shot->fn) {
    auto fn = std::move(shot->fn);
    shot->fn = nullptr;
    fn();
  }
}

void FreeOneShot(void* opaque) { delete static_cast<OneShot*>(opaque); }

}  // namespace

std::shared_ptr<EventThread> EventThread::Acquire() {
  static std::mutex mu;
  static std::weak_ptr<EventThread> current;
  std::lock_guard<std::mutex> lock(mu);
  RegisterOnce();
  if (auto existing = current.lock()) return existing;
  std::shared_ptr<EventThread> created(new EventThread());
  current = created;
  return created;
}

EventThread::EventThread() {
  thread_ = std::thread([this] { Loop(); });
  pthread_setname_np(thread_.native_handle(), "libvirt-events");
}

EventThread::~EventThread() {
  running_ = false;
  // Any timeout added from another thread interrupts the loop's poll().
  auto* shot = new OneShot;
  shot->timer = virEventAddTimeout(0, RunOneShot, shot, FreeOneShot);
  if (shot->timer < 0) delete shot;
  thread_.join();
}

void EventThread::Loop() {
  while (running_) {
    if (virEventRunDefaultImpl() < 0) {
      spdlog::error("libvirt event loop: {}", virGetLastErrorMessage());
    }
  }
}

void EventThread::RunSync(const std::function<void()>& fn) {
  if (IsEventThread()) {
    spdlog::critical("EventThread::RunSync called on the event thread");
    std::abort();
  }
  std::promise<void> done;
  auto* shot = new OneShot;
  shot->fn = [&] {
    fn();
    done.set_value();
  };
  shot->timer = virEventAddTimeout(0, RunOneShot, shot, FreeOneShot);
  if (shot->timer < 0) {
    delete shot;
    fn();  // no loop to serialize with: libvirt could not add a timer at all
    return;
  }
  done.get_future().wait();
}

}  // namespace novadt::libvirt
