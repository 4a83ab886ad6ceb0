// Consumes Nova's versioned notifications from the agent's own queue (bound to Nova's exchange
// with "<topic>.info" and "<topic>.error") and hands each parsed event to a handler, acking only
// after the handler returned. A malformed message is logged with its message id and acked, or
// rejected into the dead-letter exchange when one is configured: it never stops the queue.
//
// Nova's exchange is declared passively: the consumer never creates, changes or needs the right
// to delete it (docs/bus.md, "RabbitMQ users and permissions"). While it does not exist, every
// connection attempt fails with NotFound "Nova's exchange '<name>' does not exist yet ..."
// (last_error(), and a warning in the log) and is retried with the transport's back-off; Nova's
// notifications published before the queue is bound are not seen.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/bus/connection_loop.h"
#include "agent/bus/nova_events.h"

namespace novadt::bus {

struct NotificationConsumerOptions {
  BusTransport transport;
  std::string connection_name;  // "nova-dt-agent:<host>"
  std::string exchange = "nova";
  std::vector<std::string> topics = {"versioned_notifications"};
  std::string queue;
  bool durable = false;  // the queue; must match the deployment
  bool quorum = false;   // x-queue-type: quorum (implies durable)
  uint16_t prefetch = 64;
  size_t max_body_bytes = kDefaultMaxBodyBytes;
  std::string dead_letter_exchange;  // empty: malformed messages are acked
};

// What happened to a delivery, for counters and tests.
struct ConsumerCounters {
  uint64_t received = 0;
  uint64_t handled = 0;    // parsed and given to the handler
  uint64_t malformed = 0;  // refused (logged; acked or dead-lettered)
  uint64_t requeued = 0;   // handler asked to retry later
};

// The handler's verdict: kDone acks; kRetry rejects with requeue (e.g. the agent's loop did not
// answer in time), so the event comes again.
enum class HandleResult { kDone, kRetry };
using NovaEventHandler = std::function<HandleResult(const NovaEvent&)>;

class NotificationConsumer {
 public:
  NotificationConsumer(NotificationConsumerOptions options, NovaEventHandler handler);
  ~NotificationConsumer();
  void Start();
  void Stop();
  bool connected() const;
  uint64_t reconnects() const;
  std::string last_error() const;
  ConsumerCounters counters() const;

 private:
  Status Setup(AmqpConnection& conn);
  void OnDelivery(AmqpConnection& conn, AmqpDelivery& d);

  const NotificationConsumerOptions options_;
  const NovaEventHandler handler_;
  std::atomic<uint64_t> received_{0}, handled_{0}, malformed_{0}, requeued_{0};
  std::unique_ptr<ConnectionLoop> loop_;
};

}  // namespace novadt::bus
