#include "agent/bus/connection_loop.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace novadt::bus {

BusTransport MakeBusTransport(const config::TransportUrl& url,
                              const config::RabbitSection& rabbit) {
  BusTransport t;
  t.hosts = config::EffectiveRabbitHosts(url);
  // The rabbit driver: no virtual host or an empty one means the broker's default, "/".
  t.virtual_host = url.virtual_host.empty() ? "/" : url.virtual_host;
  t.tls.enabled = rabbit.ssl;
  t.tls.ca_file = rabbit.ssl_ca_file;
  t.tls.cert_file = rabbit.ssl_cert_file;
  t.tls.key_file = rabbit.ssl_key_file;
  t.heartbeat = std::chrono::seconds(rabbit.heartbeat_timeout_threshold);
  t.retry_interval = std::chrono::seconds(rabbit.rabbit_retry_interval);
  t.retry_backoff = std::chrono::seconds(rabbit.rabbit_retry_backoff);
  t.interval_max = std::chrono::seconds(rabbit.rabbit_interval_max);
  return t;
}

ConnectionLoop::ConnectionLoop(std::string name, BusTransport transport,
                               std::string connection_name, std::chrono::milliseconds slice,
                               ConnectionLoopHooks hooks)
    : name_(std::move(name)),
      transport_(std::move(transport)),
      connection_name_(std::move(connection_name)),
      slice_(slice),
      hooks_(std::move(hooks)) {}

ConnectionLoop::~ConnectionLoop() { Stop(); }

void ConnectionLoop::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), ("bus:" + name_).substr(0, 15).c_str());
    Run();
  });
}

void ConnectionLoop::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string ConnectionLoop::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

bool ConnectionLoop::SleepUnlessStopping(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void ConnectionLoop::Run() {
  if (transport_.hosts.empty()) {
    spdlog::error("bus {}: no broker host configured", name_);
    return;
  }
  size_t next_host = 0;
  unsigned failures = 0;
  bool ever_connected = false;
  auto fail = [&](const Status& st) {
    {
      std::lock_guard lock(mu_);
      last_error_ = std::string(st.message());
    }
    const auto wait = std::min(transport_.interval_max,
                               transport_.retry_interval + failures * transport_.retry_backoff);
    ++failures;
    spdlog::warn("bus {}: {}; retrying in {} ms", name_, std::string(st.message()),
                 wait.count());
    return SleepUnlessStopping(wait);
  };
  while (SleepUnlessStopping(std::chrono::milliseconds(0))) {
    AmqpOptions options;
    options.host = transport_.hosts[next_host];
    next_host = (next_host + 1) % transport_.hosts.size();
    options.virtual_host = transport_.virtual_host;
    options.tls = transport_.tls;
    options.heartbeat = transport_.heartbeat;
    options.connection_name = connection_name_;
    StatusOr<std::unique_ptr<AmqpConnection>> conn = AmqpConnection::Open(options);
    if (!conn.ok()) {
      if (!fail(conn.status())) break;
      continue;
    }
    if (Status st = hooks_.setup(**conn); !st.ok()) {
      if (!fail(st)) break;
      continue;
    }
    spdlog::info("bus {}: connected to {}:{} vhost '{}'", name_, options.host.hostname,
                 options.host.port, options.virtual_host);
    if (ever_connected) ++reconnects_;
    ever_connected = true;
    failures = 0;
    {
      std::lock_guard lock(mu_);
      last_error_.clear();
    }
    connected_ = true;
    Status lost;
    while (SleepUnlessStopping(std::chrono::milliseconds(0))) {
      StatusOr<std::optional<AmqpDelivery>> d =
          (*conn)->Next(hooks_.slice ? hooks_.slice() : slice_);
      if (!d.ok()) {
        lost = d.status();
        break;
      }
      if (*d) hooks_.on_delivery(**conn, **d);
      if (Status st = hooks_.on_tick(**conn); !st.ok()) {
        lost = st;
        break;
      }
    }
    connected_ = false;
    if (lost.ok()) break;  // stopping
    // Reconnect to the same host first: a lost connection is usually a restarted broker.
    next_host = (next_host + transport_.hosts.size() - 1) % transport_.hosts.size();
    spdlog::warn("bus {}: connection lost: {}", name_, std::string(lost.message()));
    if (!fail(lost)) break;
  }
}

}  // namespace novadt::bus
