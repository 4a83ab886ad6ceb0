#include "agent/rpc/grpc_peer_link.h"

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/peer.grpc.pb.h"

namespace novadt::rpc {
namespace {

// Greetings run as synchronous calls on the link's own worker thread, one at a time (each bounded
// by its timeout): hellos are rare, and this keeps the link off gRPC's process-wide callback
// completion queue, which gRPC 1.51 tears down unsafely when its last user goes away.
class GrpcPeerLink final : public core::PeerLink {
 public:
  GrpcPeerLink(PeerIdentity self, std::shared_ptr<const PeerCredentials> credentials,
               std::map<std::string, std::string> hosts_by_address)
      : self_(std::move(self)),
        credentials_(std::move(credentials)),
        hosts_(std::move(hosts_by_address)) {
    worker_ = std::thread([this] { Work(); });
    pthread_setname_np(worker_.native_handle(), "peer-hello");
  }

  // Cancels the call in flight, fails the queued ones (their callbacks run), and joins the
  // worker, so no `done` runs after the link is gone.
  ~GrpcPeerLink() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      if (inflight_) inflight_->TryCancel();
    }
    cv_.notify_all();
    worker_.join();
  }

  void Hello(const std::string& address, std::chrono::milliseconds timeout,
             std::function<void(StatusOr<core::HelloResult>)> done) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopping_) {
        queue_.push_back({address, timeout, std::move(done)});
        cv_.notify_one();
        return;
      }
    }
    done(absl::CancelledError("peer link is shutting down"));
  }

  StatusOr<core::TakeOverResult> TakeOver(const std::string& address,
                                          const std::string& instance_uuid, uint64_t epoch,
                                          std::chrono::milliseconds timeout) override {
    auto host = hosts_.find(address);
    if (credentials_->tls() && host == hosts_.end()) {
      return absl::InvalidArgumentError("no configured peer host for " + address +
                                        ": cannot verify its certificate");
    }
    nova_dt::v1::TakeOverRequest request;
    request.set_host(self_.host);
    request.set_instance_uuid(instance_uuid);
    request.set_epoch(epoch);
    nova_dt::v1::TakeOverReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    // A channel of its own: the call runs on the caller's thread, off the hello worker.
    auto stub = nova_dt::v1::Peer::NewStub(
        credentials_->Channel(address, host == hosts_.end() ? "" : host->second, {}));
    grpc::Status st = stub->TakeOver(&ctx, request, &reply);
    if (!st.ok()) {
      const std::string what = "take-over by " + address + ": " + st.error_message();
      switch (st.error_code()) {
        case grpc::StatusCode::FAILED_PRECONDITION:
        case grpc::StatusCode::NOT_FOUND:
        case grpc::StatusCode::INVALID_ARGUMENT:
        case grpc::StatusCode::PERMISSION_DENIED:
        case grpc::StatusCode::UNAUTHENTICATED:
        case grpc::StatusCode::UNIMPLEMENTED:
          return absl::FailedPreconditionError(what);
        case grpc::StatusCode::INTERNAL:
          return absl::InternalError(what);
        case grpc::StatusCode::DEADLINE_EXCEEDED:
          return absl::DeadlineExceededError(what);
        default:
          return absl::UnavailableError(what);
      }
    }
    return core::TakeOverResult{reply.epoch(), std::chrono::milliseconds(reply.restore_ms())};
  }

 private:
  struct Request {
    std::string address;
    std::chrono::milliseconds timeout;
    std::function<void(StatusOr<core::HelloResult>)> done;
  };

  void Work() {
    for (;;) {
      Request req;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        req = std::move(queue_.front());
        queue_.pop_front();
        if (stopping_) {
          lock.unlock();
          req.done(absl::CancelledError("peer link is shutting down"));
          continue;
        }
      }
      req.done(Call(req.address, req.timeout));
    }
  }

  StatusOr<core::HelloResult> Call(const std::string& address, std::chrono::milliseconds timeout) {
    auto host = hosts_.find(address);
    if (credentials_->tls() && host == hosts_.end()) {
      return absl::InvalidArgumentError("no configured peer host for " + address +
                                        ": cannot verify its certificate");
    }
    nova_dt::v1::HelloRequest request;
    request.set_host(self_.host);
    request.set_version(self_.version);
    request.set_listen_address(self_.listen_address);
    nova_dt::v1::HelloReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_ = &ctx;
    }
    const auto started = std::chrono::steady_clock::now();
    grpc::Status st =
        Stub(address, host == hosts_.end() ? "" : host->second).Hello(&ctx, request, &reply);
    const auto rtt = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started);
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_ = nullptr;
    }
    if (!st.ok()) {
      return absl::UnavailableError("hello to " + address + " failed: " + st.error_message());
    }
    return core::HelloResult{reply.host(), reply.version(), rtt};
  }

  // Worker thread only.
  nova_dt::v1::Peer::Stub& Stub(const std::string& address, const std::string& host) {
    auto& stub = stubs_[address];
    if (!stub) {
      stub = nova_dt::v1::Peer::NewStub(credentials_->Channel(address, host, {}));
    }
    return *stub;
  }

  const PeerIdentity self_;
  const std::shared_ptr<const PeerCredentials> credentials_;
  const std::map<std::string, std::string> hosts_;
  std::map<std::string, std::unique_ptr<nova_dt::v1::Peer::Stub>> stubs_;  // worker thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;               // guarded by mu_
  grpc::ClientContext* inflight_ = nullptr;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::thread worker_;
};

}  // namespace

std::unique_ptr<core::PeerLink> MakeGrpcPeerLink(
    PeerIdentity self, std::shared_ptr<const PeerCredentials> credentials,
    std::map<std::string, std::string> hosts_by_address) {
  return std::make_unique<GrpcPeerLink>(std::move(self), std::move(credentials),
                                        std::move(hosts_by_address));
}

}  // namespace novadt::rpc
