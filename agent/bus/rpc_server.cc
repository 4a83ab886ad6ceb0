#include "agent/bus/rpc_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <optional>
#include <utility>

namespace novadt::bus {
namespace {

// An exception of oslo's RPC dispatcher (oslo_messaging/rpc/dispatcher.py), rebuilt by clients
// from one positional argument.
RpcFailure DispatcherFailure(const std::string& exception_class, const std::string& message,
                             const std::string& arg) {
  RpcFailure f;
  f.exception_module = "oslo_messaging.rpc.dispatcher";
  f.exception_class = exception_class;
  f.message = message;
  f.args = Json::array({arg});
  return f;
}

}  // namespace

RpcServer::RpcServer(RpcServerOptions options, std::map<std::string, RpcMethod> methods)
    : options_(std::move(options)),
      methods_(std::move(methods)),
      fanout_queue_(options_.topic + "_fanout_" + NewUniqueId()) {
  ConnectionLoopHooks hooks;
  hooks.setup = [this](AmqpConnection& c) { return Setup(c); };
  hooks.on_delivery = [this](AmqpConnection& c, AmqpDelivery& d) { OnDelivery(c, d); };
  hooks.on_tick = [this](AmqpConnection& c) { return OnTick(c); };
  // Replies are published from the tick: while a call is in flight the loop wakes every
  // millisecond, otherwise only for deliveries and heartbeats.
  hooks.slice = [this] {
    return pending_.empty() ? std::chrono::milliseconds(200) : std::chrono::milliseconds(1);
  };
  loop_ = std::make_unique<ConnectionLoop>("rpc", options_.transport, options_.connection_name,
                                           std::chrono::milliseconds(200), std::move(hooks));
}

RpcServer::~RpcServer() { Stop(); }

void RpcServer::Start() {
  worker_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "bus:rpc-worker");
    Worker();
  });
  loop_->Start();
}

void RpcServer::Stop() {
  loop_->Stop();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

bool RpcServer::connected() const { return loop_->connected(); }
uint64_t RpcServer::reconnects() const { return loop_->reconnects(); }
std::string RpcServer::last_error() const { return loop_->last_error(); }

RpcCounters RpcServer::counters() const {
  return {requests_.load(), replies_.load(), failures_.load(), malformed_.load(),
          keepalives_.load()};
}

RpcFailure RpcServer::FailureFor(const Status& st) {
  RpcFailure f;
  f.message = std::string(st.message());
  f.args = Json::array({f.message});
  switch (st.code()) {
    case absl::StatusCode::kNotFound:
      f.exception_module = "nova_dt.exception";
      f.exception_class = "ServerNotFound";
      break;
    case absl::StatusCode::kInvalidArgument:
      f.exception_module = "builtins";
      f.exception_class = "ValueError";
      break;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      f.exception_module = "nova_dt.exception";
      f.exception_class = "InvalidState";
      break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      f.exception_module = "nova_dt.exception";
      f.exception_class = "AgentUnavailable";
      break;
    default:
      f.exception_module = "builtins";
      f.exception_class = "RuntimeError";
  }
  return f;
}

Status RpcServer::Setup(AmqpConnection& conn) {
  // As oslo's AMQPDriverBase.listen(): topic exchange, the shared and the per-server queue,
  // and a transient queue on the fanout exchange.
  const bool durable = options_.durable || options_.quorum;
  NOVA_DT_RETURN_IF_ERROR(conn.DeclareExchange(options_.exchange, "topic", durable, false));
  AmqpTable topic_args;
  if (options_.quorum) topic_args["x-queue-type"] = std::string("quorum");
  if (options_.ha_queues) topic_args["x-ha-policy"] = std::string("all");
  for (const std::string& name : {options_.topic, options_.topic + "." + options_.server}) {
    NOVA_DT_RETURN_IF_ERROR(conn.DeclareQueue(name, durable, false, false, topic_args).status());
    NOVA_DT_RETURN_IF_ERROR(conn.BindQueue(name, options_.exchange, name));
  }
  const std::string fanout = options_.topic + "_fanout";
  NOVA_DT_RETURN_IF_ERROR(conn.DeclareExchange(fanout, "fanout", false, true));
  AmqpTable fanout_args;
  fanout_args["x-expires"] =
      static_cast<int64_t>(options_.transient_queue_ttl.count()) * int64_t{1000};
  NOVA_DT_RETURN_IF_ERROR(
      conn.DeclareQueue(fanout_queue_, false, false, true, fanout_args).status());
  NOVA_DT_RETURN_IF_ERROR(conn.BindQueue(fanout_queue_, fanout, options_.topic));
  // One request at a time per consumer keeps a slow method from hoarding the shared queue.
  NOVA_DT_RETURN_IF_ERROR(conn.SetPrefetch(1));
  for (const std::string& name :
       {options_.topic, options_.topic + "." + options_.server, fanout_queue_}) {
    NOVA_DT_RETURN_IF_ERROR(conn.Consume(name).status());
  }
  return absl::OkStatus();
}

void RpcServer::OnDelivery(AmqpConnection& conn, AmqpDelivery& d) {
  (void)conn.Ack(d.delivery_tag);
  ++requests_;
  StatusOr<Json> message = DecodeOsloBody(d.body, options_.max_body_bytes);
  if (!message.ok()) {
    ++malformed_;
    spdlog::warn("rpc request refused (message id {}, routing key {}, {} bytes): {}",
                 d.message_id.empty() ? "-" : d.message_id, d.routing_key, d.body.size(),
                 std::string(message.status().message()));
    return;
  }
  StatusOr<RpcRequest> request = ParseRpcRequest(*message);
  if (!request.ok()) {
    ++malformed_;
    // A call we can still answer gets the reason; anything else is only logged.
    const Json& m = *message;
    const bool answerable = m.contains("_msg_id") && m["_msg_id"].is_string() &&
                            m.contains("_reply_q") && m["_reply_q"].is_string();
    spdlog::warn("rpc request refused (unique id {}, routing key {}): {}",
                 m.value("_unique_id", Json("-")).is_string()
                     ? m.value("_unique_id", std::string("-"))
                     : std::string("-"),
                 d.routing_key, std::string(request.status().message()));
    if (answerable) {
      ++failures_;
      ++replies_;
      (void)conn.Publish("", m["_reply_q"].get<std::string>(),
                         EncodeOsloBody(RpcReply(m["_msg_id"].get<std::string>(), nullptr,
                                                 FailureFor(request.status()), true)));
    }
    return;
  }
  if (request->is_call()) {
    Pending p;
    p.reply_q = *request->reply_q;
    p.msg_id = *request->msg_id;
    if (request->call_monitor_timeout && *request->call_monitor_timeout > 0) {
      // As oslo's RPC server (_watchdog): every int(timeout) / 2 seconds.
      p.keepalive_every = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(std::trunc(*request->call_monitor_timeout) / 2));
      p.next_keepalive = std::chrono::steady_clock::now() + p.keepalive_every;
    }
    pending_[p.msg_id] = p;
  }
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(Job{*std::move(request)});
  }
  cv_.notify_all();
}

Status RpcServer::OnTick(AmqpConnection& conn) {
  std::deque<Done> done;
  {
    std::lock_guard lock(mu_);
    done.swap(done_);
  }
  for (Done& r : done) {
    const std::string msg_id = r.reply.value("_msg_id", std::string());
    pending_.erase(msg_id);
    ++replies_;
    AmqpPublishProps props;
    props.mandatory = true;  // as oslo: an unroutable reply is reported, not silently lost
    NOVA_DT_RETURN_IF_ERROR(conn.Publish("", r.reply_q, EncodeOsloBody(r.reply), props));
  }
  const auto now = std::chrono::steady_clock::now();
  for (auto& [msg_id, p] : pending_) {
    if (p.keepalive_every.count() == 0 || now < p.next_keepalive) continue;
    ++keepalives_;
    p.next_keepalive = now + p.keepalive_every;
    NOVA_DT_RETURN_IF_ERROR(conn.Publish("", p.reply_q, EncodeOsloBody(RpcKeepAlive(msg_id))));
  }
  return absl::OkStatus();
}

void RpcServer::Worker() {
  while (true) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    Json reply = Dispatch(job.request);
    if (!job.request.is_call()) continue;
    std::lock_guard lock(mu_);
    done_.push_back(Done{*job.request.reply_q, std::move(reply)});
  }
}

Json RpcServer::Dispatch(const RpcRequest& request) {
  const std::string msg_id = request.msg_id.value_or("");
  auto fail = [&](RpcFailure f) {
    ++failures_;
    spdlog::warn("rpc {} (unique id {}) failed: {}.{}: {}", request.method, request.unique_id,
                 f.exception_module, f.exception_class, f.message);
    return RpcReply(msg_id, nullptr, f, true);
  };
  const std::optional<std::pair<int, int>> version = ParseRpcVersion(request.version);
  if (!version || version->first != options_.version_major ||
      version->second > options_.version_minor) {
    return fail(DispatcherFailure("UnsupportedVersion",
                                  "Endpoint does not support RPC version " + request.version +
                                      ". Attempted method: " + request.method,
                                  request.version));
  }
  if (!request.namespace_.empty()) {
    return fail(DispatcherFailure("UnsupportedVersion",
                                  "Endpoint does not support namespace " + request.namespace_,
                                  request.version));
  }
  auto it = methods_.find(request.method);
  if (it == methods_.end()) {
    return fail(DispatcherFailure("NoSuchMethod",
                                  "Endpoint does not support RPC method " + request.method,
                                  request.method));
  }
  StatusOr<Json> result = it->second(request.args);
  if (!result.ok()) return fail(FailureFor(result.status()));
  spdlog::info("rpc {} (unique id {}) done", request.method, request.unique_id);
  return RpcReply(msg_id, *result, std::nullopt, true);
}

}  // namespace novadt::bus
