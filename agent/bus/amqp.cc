#include "agent/bus/amqp.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace novadt::bus {
namespace {

constexpr amqp_channel_t kChannel = 1;
constexpr int kFrameMax = 131072;
// Bounds every synchronous method (declare, bind, consume...). A broker that does not answer in
// this time is treated as lost; heartbeats are serviced while waiting.
constexpr std::chrono::seconds kRpcTimeout{30};
// Bounds the polite channel.close / connection.close of the destructor.
constexpr std::chrono::seconds kCloseTimeout{2};
// rabbitmq-c 0.11 does not load OpenSSL's default verify paths; Debian's bundle stands in for
// "the system's default store" when no CA file is configured.
constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

struct ConnectionDeleter {
  void operator()(amqp_connection_state_t_* c) const { amqp_destroy_connection(c); }
};
using ConnectionPtr = std::unique_ptr<amqp_connection_state_t_, ConnectionDeleter>;

struct EnvelopeGuard {
  amqp_envelope_t* e;
  ~EnvelopeGuard() { amqp_destroy_envelope(e); }
};
struct MessageGuard {
  amqp_message_t* m;
  ~MessageGuard() { amqp_destroy_message(m); }
};

// Views a std::string as amqp_bytes_t; valid while the string lives and is not modified.
amqp_bytes_t Bytes(const std::string& s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

std::string Str(amqp_bytes_t b) {
  return b.bytes ? std::string(static_cast<const char*>(b.bytes), b.len) : std::string();
}

timeval ToTimeval(std::chrono::microseconds d) {
  if (d.count() < 0) d = std::chrono::microseconds(0);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(d.count() / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(d.count() % 1000000);
  return tv;
}

std::string LibraryError(int status) { return amqp_error_string2(status); }

// The abseil code for an AMQP reply code (channel.close / connection.close).
absl::StatusCode CodeForReply(int reply_code) {
  switch (reply_code) {
    case AMQP_ACCESS_REFUSED:
    case AMQP_NOT_ALLOWED:
      return absl::StatusCode::kPermissionDenied;
    case AMQP_NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case AMQP_RESOURCE_LOCKED:
    case AMQP_PRECONDITION_FAILED:
      return absl::StatusCode::kFailedPrecondition;
    case AMQP_RESOURCE_ERROR:
      return absl::StatusCode::kResourceExhausted;
    case AMQP_NOT_IMPLEMENTED:
      return absl::StatusCode::kUnimplemented;
    case AMQP_CONNECTION_FORCED:
      return absl::StatusCode::kUnavailable;
    default:  // frame, syntax and command errors: a bug on this side
      return absl::StatusCode::kInternal;
  }
}

// x-arguments as an AMQP field table. Integers go out as 32-bit when they fit, as py-amqp
// encodes them, so the broker's equivalence checks see the same values Python clients declare.
class FieldTable {
 public:
  explicit FieldTable(const AmqpTable& table) {
    entries_.reserve(table.size());
    for (const auto& [key, value] : table) {
      amqp_table_entry_t e{};
      e.key = Bytes(key);
      if (const auto* i = std::get_if<int64_t>(&value)) {
        if (*i >= INT32_MIN && *i <= INT32_MAX) {
          e.value.kind = AMQP_FIELD_KIND_I32;
          e.value.value.i32 = static_cast<int32_t>(*i);
        } else {
          e.value.kind = AMQP_FIELD_KIND_I64;
          e.value.value.i64 = *i;
        }
      } else if (const auto* s = std::get_if<std::string>(&value)) {
        e.value.kind = AMQP_FIELD_KIND_UTF8;
        e.value.value.bytes = Bytes(*s);
      } else {
        e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
        e.value.value.boolean = std::get<bool>(value) ? 1 : 0;
      }
      entries_.push_back(e);
    }
  }
  amqp_table_t get() {
    return amqp_table_t{static_cast<int>(entries_.size()),
                        entries_.empty() ? nullptr : entries_.data()};
  }

 private:
  std::vector<amqp_table_entry_t> entries_;
};

}  // namespace

struct AmqpConnection::Impl {
  struct Consumer {
    std::string tag;
    std::string queue;
    bool auto_ack;
  };

  AmqpOptions options;
  ConnectionPtr conn;
  bool alive = false;
  bool channel_open = false;
  std::string dead_reason;
  std::vector<Consumer> consumers;  // restarted when channel 1 is reopened
  uint16_t prefetch = 0;
  // Delivery tags handed out are tag_base + the broker's tag, so that tags of a channel that
  // was closed (and whose unacked messages the broker requeued) are never confused with the
  // tags of its successor, which restart at 1.
  uint64_t tag_base = 0;
  uint64_t max_broker_tag = 0;
  bool reopening = false;

  Status Dead(const std::string& op) const {
    return absl::UnavailableError(op + ": the AMQP connection was lost earlier (" + dead_reason +
                                  ")");
  }

  Status MarkDead(absl::StatusCode code, std::string message) {
    if (alive) dead_reason = message;
    alive = false;
    channel_open = false;
    return Status(code, std::move(message));
  }

  // Turns the reply of the last synchronous method into a Status. A channel exception closes
  // channel 1: it is acknowledged and reopened, and the broker's error is returned. A connection
  // exception or a library/socket error makes the connection dead.
  Status Check(const std::string& op, amqp_rpc_reply_t r) {
    switch (r.reply_type) {
      case AMQP_RESPONSE_NORMAL:
        return absl::OkStatus();
      case AMQP_RESPONSE_NONE:
        return MarkDead(absl::StatusCode::kInternal, op + ": no RPC reply (library misuse)");
      case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return MarkDead(absl::StatusCode::kUnavailable,
                        op + ": " + LibraryError(r.library_error));
      case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
      return ConnectionClosed(op, m->reply_code, Str(m->reply_text));
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
      return ChannelClosed(op, m->reply_code, Str(m->reply_text));
    }
    return MarkDead(absl::StatusCode::kInternal,
                    fmt::format("{}: unexpected method {:#010x} from the broker", op, r.reply.id));
  }

  Status ConnectionClosed(const std::string& op, int code, const std::string& text) {
    amqp_connection_close_ok_t ok{};
    amqp_send_method(conn.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    // After login a closed connection is always a lost one; during login the code says why.
    const absl::StatusCode sc = alive ? absl::StatusCode::kUnavailable : CodeForReply(code);
    return MarkDead(sc, op + ": " + std::to_string(code) + " " + text);
  }

  Status ChannelClosed(const std::string& op, int code, const std::string& text) {
    amqp_channel_close_ok_t ok{};
    const int sent = amqp_send_method(conn.get(), kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    channel_open = false;
    std::string message = op + ": " + std::to_string(code) + " " + text;
    if (sent != AMQP_STATUS_OK) {
      return MarkDead(absl::StatusCode::kUnavailable, message + "; then " + LibraryError(sent));
    }
    if (Status re = ReopenChannel(&message); !re.ok()) {
      message += "; reopening the channel failed: " + std::string(re.message());
    }
    return Status(CodeForReply(code), message);
  }

  // channel.open on channel 1, then its prefetch.
  Status OpenChannel() {
    amqp_channel_open(conn.get(), kChannel);
    NOVA_DT_RETURN_IF_ERROR(Check("channel.open", amqp_get_rpc_reply(conn.get())));
    channel_open = true;
    if (prefetch != 0) {
      amqp_basic_qos(conn.get(), kChannel, 0, prefetch, 0);
      NOVA_DT_RETURN_IF_ERROR(Check("basic.qos", amqp_get_rpc_reply(conn.get())));
    }
    return absl::OkStatus();
  }

  // Drops what the library queued for the closed channel (deliveries whose tags the broker no
  // longer knows), opens channel 1 again and restarts its consumers. A consumer that cannot be
  // restarted (e.g. its auto-delete queue went away with it) is dropped and named in *notes.
  Status ReopenChannel(std::string* notes) {
    if (reopening) return absl::InternalError("channel closed again while reopening it");
    reopening = true;
    struct Reset {
      bool& b;
      ~Reset() { b = false; }
    } reset{reopening};

    while (amqp_frames_enqueued(conn.get())) {
      amqp_frame_t f;
      if (amqp_simple_wait_frame(conn.get(), &f) != AMQP_STATUS_OK) break;
    }
    tag_base += max_broker_tag;
    max_broker_tag = 0;

    NOVA_DT_RETURN_IF_ERROR(OpenChannel());
    std::vector<Consumer> old;
    old.swap(consumers);
    for (const Consumer& c : old) {
      amqp_basic_consume(conn.get(), kChannel, Bytes(c.queue), Bytes(c.tag), 0, c.auto_ack, 0,
                         amqp_empty_table);
      amqp_rpc_reply_t r = amqp_get_rpc_reply(conn.get());
      if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        consumers.push_back(c);
        continue;
      }
      if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
          r.reply.id != AMQP_CHANNEL_CLOSE_METHOD) {
        return Check("basic.consume " + c.queue, r);
      }
      const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
      *notes += "; consumer " + c.tag + " on queue '" + c.queue + "' is gone: " +
                std::to_string(m->reply_code) + " " + Str(m->reply_text);
      amqp_channel_close_ok_t ok{};
      if (int st = amqp_send_method(conn.get(), kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
          st != AMQP_STATUS_OK) {
        return MarkDead(absl::StatusCode::kUnavailable, "channel.close-ok: " + LibraryError(st));
      }
      channel_open = false;
      NOVA_DT_RETURN_IF_ERROR(OpenChannel());
    }
    return absl::OkStatus();
  }

  // Checks the int result of an asynchronous method (publish, ack, reject): any failure there
  // is on the socket, so the connection is lost.
  Status CheckSend(const std::string& op, int status) {
    if (status == AMQP_STATUS_OK) return absl::OkStatus();
    return MarkDead(absl::StatusCode::kUnavailable, op + ": " + LibraryError(status));
  }

  // Starts a method: fails when the connection is dead, and lets rabbitmq-c reuse the memory of
  // earlier replies (they were copied out), so a connection that never calls Next() does not
  // grow.
  Status Begin(const std::string& op) {
    if (!alive) return Dead(op);
    amqp_maybe_release_buffers(conn.get());
    return absl::OkStatus();
  }

  // Handles one frame that is not a delivery, read while waiting for deliveries. Returns an
  // error when the frame ends the channel or the connection.
  Status HandleFrame(const amqp_frame_t& frame) {
    if (frame.frame_type != AMQP_FRAME_METHOD) return absl::OkStatus();  // stray content
    switch (frame.payload.method.id) {
      case AMQP_BASIC_RETURN_METHOD: {
        const auto* m = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
        const std::string exchange = Str(m->exchange);
        const std::string routing_key = Str(m->routing_key);
        const int code = m->reply_code;
        const std::string text = Str(m->reply_text);
        amqp_message_t message;
        amqp_rpc_reply_t r = amqp_read_message(conn.get(), frame.channel, &message, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) return Check("basic.return", r);
        MessageGuard guard{&message};
        spdlog::warn("AMQP: broker returned an unroutable message ({} bytes) published to "
                     "exchange '{}' with routing key '{}': {} {}",
                     message.body.len, exchange, routing_key, code, text);
        return absl::OkStatus();
      }
      case AMQP_BASIC_CANCEL_METHOD: {
        const auto* m = static_cast<const amqp_basic_cancel_t*>(frame.payload.method.decoded);
        const std::string tag = Str(m->consumer_tag);
        std::string queue;
        std::erase_if(consumers, [&](const Consumer& c) {
          if (c.tag == tag) queue = c.queue;
          return c.tag == tag;
        });
        return absl::AbortedError("basic.cancel: the broker cancelled consumer " + tag +
                                  " on queue '" + queue + "' (queue deleted?)");
      }
      case AMQP_CHANNEL_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
        return ChannelClosed("channel closed by broker", m->reply_code, Str(m->reply_text));
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        const auto* m = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
        return ConnectionClosed("connection closed by broker", m->reply_code,
                                Str(m->reply_text));
      }
      default:  // basic.ack/nack (no confirms are requested), connection.blocked...
        spdlog::debug("AMQP: ignoring method 0x{:08x} on channel {}", frame.payload.method.id,
                      frame.channel);
        return absl::OkStatus();
    }
  }

  void Close() {
    if (!alive) return;
    const timeval tv = ToTimeval(kCloseTimeout);
    amqp_set_rpc_timeout(conn.get(), &tv);
    if (channel_open) amqp_channel_close(conn.get(), kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn.get(), AMQP_REPLY_SUCCESS);
    alive = false;
    channel_open = false;
  }
};

AmqpConnection::AmqpConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AmqpConnection::~AmqpConnection() {
  if (impl_) impl_->Close();
}

bool AmqpConnection::alive() const { return impl_->alive; }

const AmqpOptions& AmqpConnection::options() const { return impl_->options; }

StatusOr<std::unique_ptr<AmqpConnection>> AmqpConnection::Open(const AmqpOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const AmqpTls& tls = options.tls;
  const std::string host = options.host.hostname.empty() ? "localhost" : options.host.hostname;
  const int port = options.host.port != 0 ? options.host.port : (tls.enabled ? 5671 : 5672);
  const std::string where =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  const std::string user = options.host.username.empty() ? "guest" : options.host.username;
  const std::string vhost = options.virtual_host.empty() ? "/" : options.virtual_host;
  const std::string password = options.host.username.empty() && options.host.password.empty()
                                   ? "guest"
                                   : options.host.password;

  impl->conn.reset(amqp_new_connection());
  if (!impl->conn) return absl::ResourceExhaustedError("amqp_new_connection failed");
  amqp_connection_state_t conn = impl->conn.get();

  amqp_socket_t* socket = nullptr;  // owned by the connection state
  if (tls.enabled) {
    socket = amqp_ssl_socket_new(conn);
    if (!socket) return absl::InternalError("TLS socket for " + where + ": cannot create");
    // rabbitmq-c only says "a SSL error occurred" for a file it cannot use; name the usual
    // reason first.
    for (const std::string* f : {&tls.ca_file, &tls.cert_file, &tls.key_file}) {
      if (!f->empty() && access(f->c_str(), R_OK) != 0) {
        return absl::InvalidArgumentError("TLS file " + *f + ": " + std::strerror(errno));
      }
    }
    std::string ca = tls.ca_file;
    if (ca.empty() && access(kSystemCaBundle, R_OK) == 0) ca = kSystemCaBundle;
    if (!ca.empty()) {
      if (int st = amqp_ssl_socket_set_cacert(socket, ca.c_str()); st != AMQP_STATUS_OK) {
        return absl::InvalidArgumentError("TLS CA file " + ca + ": " + LibraryError(st));
      }
    }
    if (tls.cert_file.empty() != tls.key_file.empty()) {
      return absl::InvalidArgumentError(
          "TLS client certificate and key must be given together (ssl_cert_file, ssl_key_file)");
    }
    if (!tls.cert_file.empty()) {
      if (int st = amqp_ssl_socket_set_key(socket, tls.cert_file.c_str(), tls.key_file.c_str());
          st != AMQP_STATUS_OK) {
        return absl::InvalidArgumentError("TLS client certificate " + tls.cert_file +
                                          " / key " + tls.key_file + ": " + LibraryError(st));
      }
    }
    amqp_ssl_socket_set_verify_peer(socket, 1);
    amqp_ssl_socket_set_verify_hostname(socket, tls.verify_hostname ? 1 : 0);
  } else {
    socket = amqp_tcp_socket_new(conn);
    if (!socket) return absl::InternalError("TCP socket for " + where + ": cannot create");
  }

  const timeval connect_tv =
      ToTimeval(std::chrono::duration_cast<std::chrono::microseconds>(options.connect_timeout));
  if (int st = amqp_socket_open_noblock(socket, host.c_str(), port, &connect_tv);
      st != AMQP_STATUS_OK) {
    return absl::UnavailableError(std::string(tls.enabled ? "TLS connect " : "connect ") + where +
                                  ": " + LibraryError(st));
  }
  amqp_set_handshake_timeout(conn, &connect_tv);
  const timeval rpc_tv = ToTimeval(kRpcTimeout);
  amqp_set_rpc_timeout(conn, &rpc_tv);

  // Client properties: the connection name for the management UI, and consumer cancel
  // notifications so a deleted queue stops its consumer loudly (merged with rabbitmq-c's
  // default capabilities).
  amqp_table_entry_t capability{};
  capability.key = amqp_cstring_bytes("consumer_cancel_notify");
  capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  capability.value.value.boolean = 1;
  std::vector<amqp_table_entry_t> props(1);
  props[0].key = amqp_cstring_bytes("capabilities");
  props[0].value.kind = AMQP_FIELD_KIND_TABLE;
  props[0].value.value.table = amqp_table_t{1, &capability};
  if (!options.connection_name.empty()) {
    amqp_table_entry_t name{};
    name.key = amqp_cstring_bytes("connection_name");
    name.value.kind = AMQP_FIELD_KIND_UTF8;
    name.value.value.bytes = Bytes(options.connection_name);
    props.push_back(name);
  }
  const amqp_table_t client_properties{static_cast<int>(props.size()), props.data()};

  const std::string op = "login to " + where + " vhost '" + vhost + "' as " + user;
  const int heartbeat = static_cast<int>(std::max<int64_t>(0, options.heartbeat.count()));
  amqp_rpc_reply_t r = amqp_login_with_properties(
      conn, vhost.c_str(), /*channel_max=*/0, kFrameMax, heartbeat,
      &client_properties, AMQP_SASL_METHOD_PLAIN, user.c_str(), password.c_str());
  if (Status st = impl->Check(op, r); !st.ok()) {
    // The broker does not echo passwords, but make sure its reason never carries one.
    std::string reason(st.message().substr(std::min(op.size(), st.message().size())));
    if (!password.empty()) {
      for (size_t p; (p = reason.find(password)) != std::string::npos;) {
        reason.replace(p, password.size(), "***");
      }
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
      // Brokers without authentication_failure_close drop the socket on a refused login.
      reason += " (login refused, or the broker is shutting down)";
    }
    return Status(st.code(), op + reason);
  }
  impl->alive = true;

  amqp_channel_open(conn, kChannel);
  NOVA_DT_RETURN_IF_ERROR(impl->Check("channel.open", amqp_get_rpc_reply(conn)));
  impl->channel_open = true;
  spdlog::debug("AMQP: connected to {} vhost '{}' as {} (heartbeat {} s, TLS {})", where,
                vhost, user, amqp_get_heartbeat(conn), tls.enabled);
  return std::unique_ptr<AmqpConnection>(new AmqpConnection(std::move(impl)));
}

Status AmqpConnection::DeclareExchange(const std::string& name, const std::string& type,
                                       bool durable, bool auto_delete, bool passive) {
  const std::string op = "exchange.declare " + name;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_exchange_declare(impl_->conn.get(), kChannel, Bytes(name), Bytes(type), passive, durable,
                        auto_delete, /*internal=*/0, amqp_empty_table);
  return impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get()));
}

StatusOr<std::string> AmqpConnection::DeclareQueue(const std::string& name, bool durable,
                                                   bool exclusive, bool auto_delete,
                                                   const AmqpTable& arguments) {
  const std::string op = "queue.declare " + name;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  FieldTable args(arguments);
  amqp_queue_declare_ok_t* ok = amqp_queue_declare(impl_->conn.get(), kChannel, Bytes(name),
                                                   /*passive=*/0, durable, exclusive,
                                                   auto_delete, args.get());
  NOVA_DT_RETURN_IF_ERROR(impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get())));
  return Str(ok->queue);
}

Status AmqpConnection::BindQueue(const std::string& queue, const std::string& exchange,
                                 const std::string& routing_key) {
  const std::string op = "queue.bind " + queue + " to " + exchange + " key " + routing_key;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_queue_bind(impl_->conn.get(), kChannel, Bytes(queue), Bytes(exchange), Bytes(routing_key),
                  amqp_empty_table);
  return impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get()));
}

Status AmqpConnection::DeleteQueue(const std::string& queue) {
  const std::string op = "queue.delete " + queue;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_queue_delete(impl_->conn.get(), kChannel, Bytes(queue), /*if_unused=*/0, /*if_empty=*/0);
  NOVA_DT_RETURN_IF_ERROR(impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get())));
  std::erase_if(impl_->consumers, [&](const Impl::Consumer& c) { return c.queue == queue; });
  return absl::OkStatus();
}

Status AmqpConnection::SetPrefetch(uint16_t count) {
  const std::string op = "basic.qos " + std::to_string(count);
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_basic_qos(impl_->conn.get(), kChannel, 0, count, 0);
  NOVA_DT_RETURN_IF_ERROR(impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get())));
  impl_->prefetch = count;
  return absl::OkStatus();
}

StatusOr<std::string> AmqpConnection::Consume(const std::string& queue, bool auto_ack) {
  const std::string op = "basic.consume " + queue;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_basic_consume_ok_t* ok =
      amqp_basic_consume(impl_->conn.get(), kChannel, Bytes(queue), amqp_empty_bytes,
                         /*no_local=*/0, auto_ack, /*exclusive=*/0, amqp_empty_table);
  NOVA_DT_RETURN_IF_ERROR(impl_->Check(op, amqp_get_rpc_reply(impl_->conn.get())));
  std::string tag = Str(ok->consumer_tag);
  impl_->consumers.push_back({tag, queue, auto_ack});
  return tag;
}

StatusOr<std::optional<AmqpDelivery>> AmqpConnection::Next(std::chrono::milliseconds timeout) {
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin("next delivery"));
  amqp_connection_state_t conn = impl_->conn.get();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    amqp_maybe_release_buffers(conn);
    const timeval tv = ToTimeval(std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now()));
    amqp_envelope_t envelope;
    amqp_rpc_reply_t r = amqp_consume_message(conn, &envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
      EnvelopeGuard guard{&envelope};
      AmqpDelivery d;
      impl_->max_broker_tag = std::max(impl_->max_broker_tag, envelope.delivery_tag);
      d.delivery_tag = impl_->tag_base + envelope.delivery_tag;
      d.redelivered = envelope.redelivered != 0;
      d.exchange = Str(envelope.exchange);
      d.routing_key = Str(envelope.routing_key);
      d.consumer_tag = Str(envelope.consumer_tag);
      d.body = Str(envelope.message.body);
      const amqp_basic_properties_t& p = envelope.message.properties;
      if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) d.content_type = Str(p.content_type);
      if (p._flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) {
        d.content_encoding = Str(p.content_encoding);
      }
      if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) d.message_id = Str(p.message_id);
      if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) d.correlation_id = Str(p.correlation_id);
      if (p._flags & AMQP_BASIC_REPLY_TO_FLAG) d.reply_to = Str(p.reply_to);
      return std::optional<AmqpDelivery>(std::move(d));
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_TIMEOUT) {
      return std::optional<AmqpDelivery>();
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      // A method other than basic.deliver was put back in the queue; take it and act on it.
      amqp_frame_t frame;
      if (int st = amqp_simple_wait_frame(conn, &frame); st != AMQP_STATUS_OK) {
        return impl_->MarkDead(absl::StatusCode::kUnavailable,
                               "AMQP connection lost: " + LibraryError(st));
      }
      NOVA_DT_RETURN_IF_ERROR(impl_->HandleFrame(frame));
      if (std::chrono::steady_clock::now() >= deadline) return std::optional<AmqpDelivery>();
      continue;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
      // Socket errors, heartbeat timeouts, a broker that vanished.
      return impl_->MarkDead(absl::StatusCode::kUnavailable,
                             "AMQP connection lost: " + LibraryError(r.library_error));
    }
    return impl_->Check("basic.deliver", r);
  }
}

Status AmqpConnection::Ack(uint64_t delivery_tag) {
  const std::string op = "basic.ack " + std::to_string(delivery_tag);
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  if (delivery_tag <= impl_->tag_base) {
    return absl::FailedPreconditionError(
        op + ": delivered on a channel that has since been closed; the broker requeued it");
  }
  return impl_->CheckSend(op, amqp_basic_ack(impl_->conn.get(), kChannel,
                                             delivery_tag - impl_->tag_base, /*multiple=*/0));
}

Status AmqpConnection::Reject(uint64_t delivery_tag, bool requeue) {
  const std::string op = "basic.reject " + std::to_string(delivery_tag);
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  if (delivery_tag <= impl_->tag_base) {
    return absl::FailedPreconditionError(
        op + ": delivered on a channel that has since been closed; the broker requeued it");
  }
  return impl_->CheckSend(op, amqp_basic_reject(impl_->conn.get(), kChannel,
                                                delivery_tag - impl_->tag_base, requeue));
}

Status AmqpConnection::Publish(const std::string& exchange, const std::string& routing_key,
                               const std::string& body, const AmqpPublishProps& props) {
  const std::string op = "basic.publish to '" + exchange + "' key " + routing_key;
  NOVA_DT_RETURN_IF_ERROR(impl_->Begin(op));
  amqp_basic_properties_t p{};
  if (!props.content_type.empty()) {
    p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = Bytes(props.content_type);
  }
  if (!props.content_encoding.empty()) {
    p._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
    p.content_encoding = Bytes(props.content_encoding);
  }
  if (props.persistent) {
    p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  }
  if (!props.expiration.empty()) {
    p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
    p.expiration = Bytes(props.expiration);
  }
  if (!props.message_id.empty()) {
    p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p.message_id = Bytes(props.message_id);
  }
  return impl_->CheckSend(
      op, amqp_basic_publish(impl_->conn.get(), kChannel, Bytes(exchange), Bytes(routing_key),
                             props.mandatory, /*immediate=*/0, &p, Bytes(body)));
}

}  // namespace novadt::bus
