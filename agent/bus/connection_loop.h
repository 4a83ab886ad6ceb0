// One broker connection kept alive by one named thread: it dials the hosts of a transport URL in
// turn with oslo's back-off, runs the owner's set-up (declares, consumers) after every connect,
// then waits for deliveries in short slices (which also services heartbeats) and gives the owner
// a tick after each slice to publish what it has queued. The connection never leaves the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/bus/amqp.h"
#include "agent/common/status.h"
#include "agent/config/config.h"

namespace novadt::bus {

// Where and how to connect: every host of one transport URL, and the rabbit options.
struct BusTransport {
  std::vector<config::TransportHost> hosts;  // dialled in order, round-robin
  std::string virtual_host = "/";
  AmqpTls tls;
  std::chrono::seconds heartbeat{60};
  // oslo: first retry after `retry_interval`, growing by `retry_backoff` per failed attempt, at
  // most `interval_max`.
  std::chrono::milliseconds retry_interval{1000};
  std::chrono::milliseconds retry_backoff{2000};
  std::chrono::milliseconds interval_max{30000};
};

// The transport of `url` with [oslo_messaging_rabbit]'s options (heartbeat, back-off, TLS).
BusTransport MakeBusTransport(const config::TransportUrl& url, const config::RabbitSection& rabbit);

struct ConnectionLoopHooks {
  // After every (re)connect: declare and start consuming. An error drops the connection and
  // retries after the back-off (e.g. a 406 on a mismatched exchange is logged each time).
  std::function<Status(AmqpConnection&)> setup;
  // One delivery, on the loop's thread. The hook acks/rejects it.
  std::function<void(AmqpConnection&, AmqpDelivery&)> on_delivery;
  // After every wait slice while connected (publish queued work). An error drops the connection.
  std::function<Status(AmqpConnection&)> on_tick;
  // Optional: the next wait slice (e.g. short while work is in flight); default: the loop's.
  std::function<std::chrono::milliseconds()> slice;
};

class ConnectionLoop {
 public:
  // `name` names the thread and log lines ("nova notifications", "rpc", "notifier"). `slice` is
  // the longest wait for a delivery; it must be below heartbeat/2.
  ConnectionLoop(std::string name, BusTransport transport, std::string connection_name,
                 std::chrono::milliseconds slice, ConnectionLoopHooks hooks);
  ~ConnectionLoop();  // Stop()
  ConnectionLoop(const ConnectionLoop&) = delete;
  ConnectionLoop& operator=(const ConnectionLoop&) = delete;

  void Start();
  // Ends the thread within one slice (or one connect timeout) and joins it. Idempotent.
  void Stop();

  bool connected() const { return connected_.load(); }
  // Successful connects after the first one.
  uint64_t reconnects() const { return reconnects_.load(); }
  // The last connection or set-up error, empty when none since the last connect.
  std::string last_error() const;

 private:
  void Run();
  // Sleeps up to `d`, returns early (false) when stopping.
  bool SleepUnlessStopping(std::chrono::milliseconds d);

  const std::string name_;
  const BusTransport transport_;
  const std::string connection_name_;
  const std::chrono::milliseconds slice_;
  const ConnectionLoopHooks hooks_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> reconnects_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::string last_error_;
  std::thread thread_;
};

}  // namespace novadt::bus
