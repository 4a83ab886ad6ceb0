// An oslo.messaging RPC server in C++: the queues "<topic>" and "<topic>.<server>" on the
// control exchange plus a transient "<topic>_fanout_<id>" queue on the "<topic>_fanout" exchange,
// requests dispatched to a handler on a worker thread, replies (result or an oslo-format
// failure) on the default exchange to the caller's reply queue, and keep-alive replies every
// _timeout/2 seconds while a call with a call-monitor timeout runs. Casts get no reply.
//
// Requests are acked when received, as oslo's RPC server does: a request interrupted by a crash
// is not redelivered (callers time out and retry). Malformed requests are logged with their
// message id and dropped; a call whose reply queue is known gets a failure reply.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agent/bus/connection_loop.h"
#include "agent/bus/oslo_wire.h"

namespace novadt::bus {

struct RpcServerOptions {
  BusTransport transport;
  std::string connection_name;
  std::string exchange = "nova_dt";     // [DEFAULT] control_exchange
  std::string topic = "nova_dt_agent";
  std::string server;                   // this host
  bool durable = false;
  bool quorum = false;
  bool ha_queues = false;
  std::chrono::seconds transient_queue_ttl{1800};
  size_t max_body_bytes = kDefaultMaxBodyBytes;
  // The API version this server implements ("major.minor"): a request for another major, or a
  // newer minor, is refused with oslo's UnsupportedVersion.
  int version_major = 1;
  int version_minor = 0;
};

// A method's answer: a JSON result, or an error turned into an RpcFailure whose class depends on
// the status code (docs/bus.md lists them).
using RpcMethod = std::function<StatusOr<Json>(const Json& args)>;

struct RpcCounters {
  uint64_t requests = 0;
  uint64_t replies = 0;
  uint64_t failures = 0;   // replies carrying a failure
  uint64_t malformed = 0;
  uint64_t keepalives = 0;
};

class RpcServer {
 public:
  RpcServer(RpcServerOptions options, std::map<std::string, RpcMethod> methods);
  ~RpcServer();
  void Start();
  void Stop();  // stops consuming, lets the running method finish, joins
  bool connected() const;
  uint64_t reconnects() const;
  std::string last_error() const;
  RpcCounters counters() const;

  // The failure a Status becomes: NotFound → nova_dt.exception.ServerNotFound, InvalidArgument
  // → builtins.ValueError, FailedPrecondition → nova_dt.exception.InvalidState, Unavailable /
  // DeadlineExceeded → nova_dt.exception.AgentUnavailable, else builtins.RuntimeError.
  static RpcFailure FailureFor(const Status& st);

 private:
  struct Pending {        // a call being worked on
    std::string reply_q;
    std::string msg_id;
    std::chrono::steady_clock::duration keepalive_every{0};  // 0: none
    std::chrono::steady_clock::time_point next_keepalive{};
  };
  struct Job {
    RpcRequest request;
  };
  struct Done {
    std::string reply_q;
    Json reply;
  };
  Status Setup(AmqpConnection& conn);
  void OnDelivery(AmqpConnection& conn, AmqpDelivery& d);
  Status OnTick(AmqpConnection& conn);
  void Worker();
  // The reply message for `request`, running its method.
  Json Dispatch(const RpcRequest& request);

  const RpcServerOptions options_;
  const std::map<std::string, RpcMethod> methods_;
  const std::string fanout_queue_;
  std::atomic<uint64_t> requests_{0}, replies_{0}, failures_{0}, malformed_{0}, keepalives_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<Job> jobs_;
  std::deque<Done> done_;
  std::map<std::string, Pending> pending_;  // by msg_id; connection thread only
  std::thread worker_;
  std::unique_ptr<ConnectionLoop> loop_;
};

}  // namespace novadt::bus
