#include "agent/bus/notifier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

namespace novadt::bus {

Json PairPayload(const core::PairEvent& e) {
  Json data = {{"instance_uuid", e.instance_uuid},
               {"host", e.host},
               {"role", e.role},
               {"state", e.state},
               {"reason", e.reason},
               {"peer_host", e.peer_host},
               {"committed_epoch", e.committed_epoch}};
  if (e.duration_ms) data["duration_ms"] = *e.duration_ms;
  if (!e.new_host.empty()) data["new_host"] = e.new_host;
  return {{"nova_object.name", "DTPairPayload"},
          {"nova_object.namespace", "nova_dt"},
          {"nova_object.version", "1.0"},
          {"nova_object.data", std::move(data)}};
}

Json LinkStatsPayload(const std::string& host, const std::vector<core::LinkFigures>& links) {
  Json list = Json::array();
  for (const auto& l : links) {
    list.push_back({{"source", l.source},
                    {"target", l.target},
                    {"rtt_us", l.rtt_us},
                    {"rate_bytes_per_s", l.rate_bytes_per_s},
                    {"capacity_bytes_per_s", l.capacity_bytes_per_s}});
  }
  return {{"nova_object.name", "DTLinkStatsPayload"},
          {"nova_object.namespace", "nova_dt"},
          {"nova_object.version", "1.0"},
          {"nova_object.data", {{"host", host}, {"links", std::move(list)}}}};
}

Notifier::Notifier(NotifierOptions options) : options_(std::move(options)) {
  ConnectionLoopHooks hooks;
  hooks.setup = [this](AmqpConnection& c) { return Setup(c); };
  hooks.on_delivery = [](AmqpConnection&, AmqpDelivery&) {};  // nothing is consumed
  hooks.on_tick = [this](AmqpConnection& c) { return Flush(c); };
  // The slice bounds how long a notification waits in the queue.
  loop_ = std::make_unique<ConnectionLoop>("notifier", options_.transport,
                                           options_.connection_name,
                                           std::chrono::milliseconds(20), std::move(hooks));
}

Notifier::~Notifier() { Stop(); }
void Notifier::Start() { loop_->Start(); }
void Notifier::Stop() { loop_->Stop(); }
bool Notifier::connected() const { return loop_->connected(); }
uint64_t Notifier::reconnects() const { return loop_->reconnects(); }
std::string Notifier::last_error() const { return loop_->last_error(); }

NotifierCounters Notifier::counters() const {
  std::lock_guard lock(mu_);
  return {published_.load(), dropped_.load(), queue_.size()};
}

void Notifier::Publish(const core::PairEvent& event) {
  Notify(event.event_type, event.priority, PairPayload(event));
}

void Notifier::Notify(const std::string& event_type, const std::string& priority, Json payload) {
  std::string lower = priority;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  Item item{0, lower, EncodeOsloBody(NotificationMessage(options_.publisher_id, event_type,
                                                         priority, payload))};
  std::lock_guard lock(mu_);
  item.seq = next_seq_++;
  if (queue_.size() >= options_.max_queued) {
    queue_.pop_front();
    ++dropped_;
    spdlog::error("notifier: {} notifications queued (broker unreachable?); dropped the oldest",
                  options_.max_queued);
  }
  queue_.push_back(std::move(item));
}

Status Notifier::Setup(AmqpConnection& conn) {
  // As oslo's notifier (_publish_and_creates_default_queue): the exchange and, per topic and
  // priority used, a default queue bound to it so that notifications wait for listeners.
  NOVA_DT_RETURN_IF_ERROR(
      conn.DeclareExchange(options_.exchange, "topic", options_.durable, false));
  for (const std::string& topic : options_.topics) {
    for (const char* priority : {"info", "error"}) {
      const std::string name = topic + "." + priority;
      NOVA_DT_RETURN_IF_ERROR(conn.DeclareQueue(name, options_.durable, false, false).status());
      NOVA_DT_RETURN_IF_ERROR(conn.BindQueue(name, options_.exchange, name));
    }
  }
  return absl::OkStatus();
}

Status Notifier::Flush(AmqpConnection& conn) {
  while (true) {
    Item item;
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) return absl::OkStatus();
      item = queue_.front();
    }
    AmqpPublishProps props;
    props.persistent = true;
    for (const std::string& topic : options_.topics) {
      NOVA_DT_RETURN_IF_ERROR(
          conn.Publish(options_.exchange, topic + "." + item.routing_priority, item.body, props));
    }
    std::lock_guard lock(mu_);
    // Unless a full queue dropped it meanwhile, the item just published is still the front.
    if (!queue_.empty() && queue_.front().seq == item.seq) queue_.pop_front();
    ++published_;
  }
}

}  // namespace novadt::bus
