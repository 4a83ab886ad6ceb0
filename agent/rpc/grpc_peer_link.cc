#include "agent/rpc/grpc_peer_link.h"

#include <chrono>
#include <map>
#include <mutex>

#include <grpcpp/grpcpp.h>

#include "nova_dt/v1/peer.grpc.pb.h"

namespace novadt::rpc {
namespace {

// Everything one in-flight Hello needs; deleted by its completion callback.
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

  void Hello(const std::string& address, std::chrono::milliseconds timeout,
             std::function<void(StatusOr<core::HelloResult>)> done) override {
    auto* call = new HelloCall;
    call->req.set_host(self_.host);
    call->req.set_version(self_.version);
    call->req.set_listen_address(self_.listen_address);
    call->ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    call->done = std::move(done);
    call->started = std::chrono::steady_clock::now();
    Stub(address)->async()->Hello(
        &call->ctx, &call->req, &call->reply, [call, address](grpc::Status st) {
          std::unique_ptr<HelloCall> owned(call);
          if (!st.ok()) {
            owned->done(absl::UnavailableError("hello to " + address + " failed: " +
                                               st.error_message()));
            return;
          }
          owned->done(core::HelloResult{
              owned->reply.host(), owned->reply.version(),
              std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - owned->started)});
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
  std::map<std::string, std::unique_ptr<nova_dt::v1::Peer::Stub>> stubs_;
};

}  // namespace

std::unique_ptr<core::PeerLink> MakeGrpcPeerLink(PeerIdentity self) {
  return std::make_unique<GrpcPeerLink>(std::move(self));
}

}  // namespace novadt::rpc
