#include "agent/bus/notification_consumer.h"

#include <spdlog/spdlog.h>

namespace novadt::bus {

NotificationConsumer::NotificationConsumer(NotificationConsumerOptions options,
                                           NovaEventHandler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {
  ConnectionLoopHooks hooks;
  hooks.setup = [this](AmqpConnection& c) { return Setup(c); };
  hooks.on_delivery = [this](AmqpConnection& c, AmqpDelivery& d) { OnDelivery(c, d); };
  hooks.on_tick = [](AmqpConnection&) { return absl::OkStatus(); };
  // Deliveries wake the loop at once; the slice only bounds heartbeat servicing and Stop().
  loop_ = std::make_unique<ConnectionLoop>("nova-notif", options_.transport,
                                           options_.connection_name,
                                           std::chrono::milliseconds(200), std::move(hooks));
}

NotificationConsumer::~NotificationConsumer() { Stop(); }
void NotificationConsumer::Start() { loop_->Start(); }
void NotificationConsumer::Stop() { loop_->Stop(); }
bool NotificationConsumer::connected() const { return loop_->connected(); }
uint64_t NotificationConsumer::reconnects() const { return loop_->reconnects(); }
std::string NotificationConsumer::last_error() const { return loop_->last_error(); }

ConsumerCounters NotificationConsumer::counters() const {
  return {received_.load(), handled_.load(), malformed_.load(), requeued_.load()};
}

Status NotificationConsumer::Setup(AmqpConnection& conn) {
  const bool durable = options_.durable || options_.quorum;
  // Nova's exchange is Nova's: only check that it exists (a passive declare needs no RabbitMQ
  // right, while an active one needs "configure", which also allows deleting it). Nova creates
  // it; until then the set-up fails here and the connection loop retries with its back-off.
  if (Status s = conn.DeclareExchange(options_.exchange, "topic", durable, false,
                                      /*passive=*/true);
      !s.ok()) {
    if (!absl::IsNotFound(s)) return s;
    return absl::NotFoundError("Nova's exchange '" + options_.exchange + "' does not exist yet" +
                               " in this vhost (Nova creates it; the agent only checks that it" +
                               " exists): " + std::string(s.message()));
  }
  AmqpTable args;
  if (options_.quorum) args["x-queue-type"] = std::string("quorum");
  if (!options_.dead_letter_exchange.empty()) {
    args["x-dead-letter-exchange"] = options_.dead_letter_exchange;
  }
  StatusOr<std::string> q = conn.DeclareQueue(options_.queue, durable, false, false, args);
  if (!q.ok()) return q.status();
  for (const std::string& topic : options_.topics) {
    for (const char* priority : {"info", "error"}) {
      NOVA_DT_RETURN_IF_ERROR(conn.BindQueue(*q, options_.exchange, topic + "." + priority));
    }
  }
  NOVA_DT_RETURN_IF_ERROR(conn.SetPrefetch(options_.prefetch));
  return conn.Consume(*q).status();
}

void NotificationConsumer::OnDelivery(AmqpConnection& conn, AmqpDelivery& d) {
  ++received_;
  auto refuse = [&](const Status& why) {
    ++malformed_;
    const bool dead_letter = !options_.dead_letter_exchange.empty();
    spdlog::warn("nova notification refused (message id {}, routing key {}, {} bytes): {}; {}",
                 d.message_id.empty() ? "-" : d.message_id, d.routing_key, d.body.size(),
                 std::string(why.message()),
                 dead_letter ? "dead-lettered to " + options_.dead_letter_exchange : "dropped");
    // Acking or rejecting the same tag: the connection loop notices a failure at the next call.
    if (dead_letter) {
      (void)conn.Reject(d.delivery_tag, /*requeue=*/false);
    } else {
      (void)conn.Ack(d.delivery_tag);
    }
  };
  StatusOr<Json> message = DecodeOsloBody(d.body, options_.max_body_bytes);
  if (!message.ok()) return refuse(message.status());
  StatusOr<NovaEvent> event = ParseNovaNotification(*message);
  if (!event.ok()) {
    // The envelope's message_id is more useful than the (unset) AMQP property.
    if (d.message_id.empty() && message->contains("message_id") &&
        (*message)["message_id"].is_string()) {
      d.message_id = (*message)["message_id"].get<std::string>();
    }
    return refuse(event.status());
  }
  ++handled_;
  if (handler_(*event) == HandleResult::kRetry) {
    ++requeued_;
    (void)conn.Reject(d.delivery_tag, /*requeue=*/true);
    return;
  }
  (void)conn.Ack(d.delivery_tag);
}

}  // namespace novadt::bus
