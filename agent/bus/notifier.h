// The agent's own versioned notifications (dt.pair.*) on its exchange, in oslo's envelope and
// Nova's payload style, published by one thread with its own connection. Notify() never blocks:
// notifications queue while the broker is unreachable, up to a bound beyond which the oldest are
// dropped (counted and logged).
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/bus/connection_loop.h"
#include "agent/bus/oslo_wire.h"
#include "agent/core/link_stats.h"
#include "agent/core/pair_events.h"

namespace novadt::bus {

struct NotifierOptions {
  BusTransport transport;
  std::string connection_name;
  std::string exchange = "nova_dt";
  std::vector<std::string> topics = {"notifications"};
  std::string publisher_id;  // "nova-dt-agent:<host>"
  bool durable = false;      // exchange and the default queues, as oslo's notifier
  size_t max_queued = 10000;
};

struct NotifierCounters {
  uint64_t published = 0;
  uint64_t dropped = 0;
  uint64_t queued = 0;  // now
};

// The payload of a pair event, Nova style: {"nova_object.name": "DTPairPayload",
// "nova_object.namespace": "nova_dt", "nova_object.version": "1.0", "nova_object.data": {...}}.
Json PairPayload(const core::PairEvent& event);

// The payload of `dt.link.stats`, same style ("DTLinkStatsPayload"): {"host": host, "links":
// [{"source", "target", "rtt_us", "rate_bytes_per_s", "capacity_bytes_per_s"}...]}, read by
// nova-dt-controller (nova_dt/controller/link_stats_writer.py).
Json LinkStatsPayload(const std::string& host, const std::vector<core::LinkFigures>& links);

class Notifier final : public core::PairEventSink {
 public:
  explicit Notifier(NotifierOptions options);
  ~Notifier() override;
  void Start();
  void Stop();  // publishes what it can within one slice, then stops
  // Thread-safe, non-blocking.
  void Publish(const core::PairEvent& event) override;
  // Any notification (event_type, "INFO"/"ERROR"..., payload); thread-safe, non-blocking.
  void Notify(const std::string& event_type, const std::string& priority, Json payload);
  bool connected() const;
  uint64_t reconnects() const;
  std::string last_error() const;
  NotifierCounters counters() const;

 private:
  struct Item {
    uint64_t seq = 0;              // order of Notify() calls
    std::string routing_priority;  // lower case
    std::string body;
  };
  Status Setup(AmqpConnection& conn);
  Status Flush(AmqpConnection& conn);

  const NotifierOptions options_;
  mutable std::mutex mu_;
  std::deque<Item> queue_;
  uint64_t next_seq_ = 0;  // guarded by mu_
  std::atomic<uint64_t> published_{0}, dropped_{0};
  std::unique_ptr<ConnectionLoop> loop_;
};

}  // namespace novadt::bus
