#include "agent/rpc/grpc_peer_link.h"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/peer.grpc.pb.h"

namespace novadt::rpc {
namespace {

// Everything one in-flight Hello needs; kept alive by its completion callback and inflight_.
struct HelloCall {
  grpc::ClientContext ctx;
  nova_dt::v1::HelloRequest req;
  nova_dt::v1::HelloReply reply;
  std::chrono::steady_clock::time_point started;
  std::function<void(StatusOr<core::HelloResult>)> done;
};

class GrpcPeerLink final : public core::PeerLink {
 public:
  explicit GrpcPeerLink(PeerIdentity self) : self_(std::move(self)) {}

  // Cancels the calls still in flight and waits for their callbacks, so no `done` runs after
  // the link (and whoever it calls back) is gone.
  ~GrpcPeerLink() override {
    std::vector<std::shared_ptr<HelloCall>> calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls.assign(inflight_.begin(), inflight_.end());
    }
    // Outside the lock: gRPC may run a completion inline from TryCancel().
    for (auto& call : calls) call->ctx.TryCancel();
    calls.clear();
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [this] { return inflight_.empty(); });
  }

  void Hello(const std::string& address, std::chrono::milliseconds timeout,
             std::function<void(StatusOr<core::HelloResult>)> done) override {
    auto call = std::make_shared<HelloCall>();
    call->req.set_host(self_.host);
    call->req.set_version(self_.version);
    call->req.set_listen_address(self_.listen_address);
    call->ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    call->done = std::move(done);
    call->started = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_.insert(call);
    }
    Stub(address)->async()->Hello(
        &call->ctx, &call->req, &call->reply, [this, call, address](grpc::Status st) {
          if (!st.ok()) {
            call->done(absl::UnavailableError("hello to " + address + " failed: " +
                                              st.error_message()));
          } else {
            call->done(core::HelloResult{
                call->reply.host(), call->reply.version(),
                std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - call->started)});
          }
          std::lock_guard<std::mutex> lock(mu_);
          inflight_.erase(call);
          if (inflight_.empty()) idle_.notify_all();
        });
  }

 private:
  nova_dt::v1::Peer::Stub* Stub(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& stub = stubs_[address];
    if (!stub) {
      stub = nova_dt::v1::Peer::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    }
    return stub.get();
  }

  PeerIdentity self_;
  std::mutex mu_;
  std::condition_variable idle_;
  std::map<std::string, std::unique_ptr<nova_dt::v1::Peer::Stub>> stubs_;  // guarded by mu_
  std::set<std::shared_ptr<HelloCall>> inflight_;                             // guarded by mu_
};

}  // namespace

std::unique_ptr<core::PeerLink> MakeGrpcPeerLink(PeerIdentity self) {
  return std::make_unique<GrpcPeerLink>(std::move(self));
}

}  // namespace novadt::rpc
