// A RAII wrapper of one librabbitmq-c connection with one channel: connect (TCP or TLS) to one
// broker host, log in, then declare, bind, consume, ack and publish. Every failure is a Status
// naming the operation and the broker's answer (e.g. "queue.declare q: 406 PRECONDITION_FAILED -
// inequivalent arg 'durable'..."); after a connection-level failure the object is dead
// (`alive()` false) and the caller opens a new one.
//
// A channel-level error (404, 405, 406... on a declare, or reported asynchronously after a
// publish) closes channel 1 on the broker: the method returns the error, and the channel is
// reopened at once with its prefetch and consumers restored, so the object stays usable. The
// broker requeues what was delivered on the closed channel and not yet acked; acking or rejecting
// such an old delivery tag then fails with FailedPrecondition (tags are never reused).
//
// Threading: rabbitmq-c services heartbeats only inside its own calls, so the owner must call
// Next() with a timeout below heartbeat/2 while idle. One thread per connection: nothing here is
// thread-safe; a second thread that publishes needs its own AmqpConnection.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "agent/common/status.h"
#include "agent/config/transport_url.h"

namespace novadt::bus {

// TLS as oslo's [oslo_messaging_rabbit] ssl, ssl_ca_file, ssl_cert_file, ssl_key_file.
struct AmqpTls {
  bool enabled = false;
  std::string ca_file;    // empty: the system's default store (/etc/ssl/certs/ca-certificates.crt)
  std::string cert_file;  // client certificate (optional, with key_file)
  std::string key_file;
  // The broker's certificate is always verified against the CA. rabbitmq-c 0.11 matches the host
  // name against the certificate's DNS names only, so dial the name it carries, not an IP.
  bool verify_hostname = true;
};

struct AmqpOptions {
  config::TransportHost host;  // port 0 means 5672 (5671 with TLS)
  std::string virtual_host = "/";  // empty: "/"
  AmqpTls tls;
  std::chrono::seconds heartbeat{60};  // 0: no heartbeats
  std::chrono::milliseconds connect_timeout{5000};
  std::string connection_name;  // shown in the broker's management UI ("nova-dt-agent:host")
};

// x-arguments of queue.declare / exchange.declare.
using AmqpTableValue = std::variant<int64_t, std::string, bool>;
using AmqpTable = std::map<std::string, AmqpTableValue>;

struct AmqpDelivery {
  uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  std::string consumer_tag;
  std::string body;
  std::string content_type;     // empty when unset
  std::string content_encoding; // empty when unset
  std::string message_id;       // AMQP message-id property, empty when unset
  std::string correlation_id;
  std::string reply_to;
};

struct AmqpPublishProps {
  std::string content_type = "application/json";
  std::string content_encoding = "utf-8";
  bool persistent = false;   // delivery_mode 2
  std::string expiration;    // per-message TTL in ms, as a decimal string; empty: none
  std::string message_id;
  bool mandatory = false;
};

class AmqpConnection {
 public:
  // Connects, logs in (PLAIN; guest/guest when the host carries no credentials) and opens
  // channel 1. Unavailable for network failures, PermissionDenied for refused logins / vhosts,
  // InvalidArgument for unusable TLS files.
  static StatusOr<std::unique_ptr<AmqpConnection>> Open(const AmqpOptions& options);
  ~AmqpConnection();  // closes channel and connection politely if still alive
  AmqpConnection(const AmqpConnection&) = delete;
  AmqpConnection& operator=(const AmqpConnection&) = delete;

  bool alive() const;
  const AmqpOptions& options() const;

  // type: "topic" | "fanout" | "direct". `passive`: only check that it exists.
  Status DeclareExchange(const std::string& name, const std::string& type, bool durable,
                         bool auto_delete, bool passive = false);
  // Returns the queue name (the broker's when `name` is empty).
  StatusOr<std::string> DeclareQueue(const std::string& name, bool durable, bool exclusive,
                                     bool auto_delete, const AmqpTable& arguments = {});
  Status BindQueue(const std::string& queue, const std::string& exchange,
                   const std::string& routing_key);
  Status DeleteQueue(const std::string& queue);
  // basic.qos on the channel; 0 = unlimited.
  Status SetPrefetch(uint16_t count);
  // Starts a consumer with manual acks (no_ack=false unless `auto_ack`). Returns its tag.
  StatusOr<std::string> Consume(const std::string& queue, bool auto_ack = false);

  // Waits up to `timeout` for the next delivery on any consumer of this connection; std::nullopt
  // when none came in time (heartbeats were serviced meanwhile). Unavailable when the connection
  // is lost, with the broker's reason when it closed it (e.g. "320 CONNECTION_FORCED"); then
  // alive() is false. With alive() still true: a channel error that arrived asynchronously
  // (e.g. NotFound after publishing to a missing exchange; the channel was reopened), or Aborted
  // when the broker cancelled a consumer (its queue was deleted).
  StatusOr<std::optional<AmqpDelivery>> Next(std::chrono::milliseconds timeout);

  // FailedPrecondition for a delivery made before channel 1 was reopened (see above).
  Status Ack(uint64_t delivery_tag);
  // basic.reject; requeue=false dead-letters it when the queue has a dead-letter exchange.
  Status Reject(uint64_t delivery_tag, bool requeue);

  // basic.publish. With `mandatory`, an unroutable message comes back as basic.return; it is
  // reported by the next Next() call as a log line, not as a delivery.
  Status Publish(const std::string& exchange, const std::string& routing_key,
                 const std::string& body, const AmqpPublishProps& props = {});

 private:
  struct Impl;
  explicit AmqpConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace novadt::bus
