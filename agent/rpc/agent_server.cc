#include "agent/rpc/agent_server.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <system_error>
#include <tuple>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "agent/common/identifiers.h"
#include "agent/common/logging.h"
#include "agent/rpc/convert.h"
#include "agent/rpc/grpc_replication.h"
#include "nova_dt/v1/control.grpc.pb.h"
#include "nova_dt/v1/peer.grpc.pb.h"

namespace novadt::rpc {
namespace {

constexpr char kControlService[] = "nova_dt.v1.Control";
constexpr char kPeerService[] = "nova_dt.v1.Peer";

// Runs one call's handler; an exception it throws becomes INTERNAL for that call only.
template <typename F>
grpc::Status Guarded(const char* call, F&& handler) {
  try {
    return handler();
  } catch (const std::exception& e) {
    spdlog::error("{} failed with an exception: {}", call, e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(call) + " failed: " + e.what());
  }
}

// InvalidArgument for anything but a canonical instance UUID.
grpc::Status CheckUuid(const std::string& uuid) { return ToGrpc(ValidateInstanceUuid(uuid)); }

class ControlService final : public nova_dt::v1::Control::Service {
 public:
  explicit ControlService(const ServiceHandlers& h) : h_(h) {}

  grpc::Status Status(grpc::ServerContext*, const nova_dt::v1::StatusRequest*,
                      nova_dt::v1::AgentStatus* reply) override {
    auto snap = h_.status();
    if (!snap.ok()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(snap.status().message()));
    }
    ToProto(*snap, reply);
    return grpc::Status::OK;
  }

  grpc::Status Protect(grpc::ServerContext*, const nova_dt::v1::ProtectRequest* req,
                       nova_dt::v1::ProtectReply*) override {
    if (!h_.protect) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "protect not available");
    if (req->instance_uuid().empty() || req->backup_host().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "instance_uuid and backup_host are required");
    }
    if (auto bad = CheckUuid(req->instance_uuid()); !bad.ok()) return bad;
    if (absl::Status bad = ValidateHostName(req->backup_host()); !bad.ok()) return ToGrpc(bad);
    return Guarded("Protect", [&] { return ToGrpc(h_.protect(req->instance_uuid(), req->backup_host())); });
  }

  grpc::Status Unprotect(grpc::ServerContext*, const nova_dt::v1::UnprotectRequest* req,
                         nova_dt::v1::UnprotectReply*) override {
    if (!h_.unprotect) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unprotect not available");
    if (auto bad = CheckUuid(req->instance_uuid()); !bad.ok()) return bad;
    return Guarded("Unprotect", [&] { return ToGrpc(h_.unprotect(req->instance_uuid())); });
  }

  grpc::Status Switchover(grpc::ServerContext*, const nova_dt::v1::SwitchoverRequest* req,
                          nova_dt::v1::SwitchoverReply* reply) override {
    if (!h_.switchover) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "switchover not available");
    }
    if (auto bad = CheckUuid(req->instance_uuid()); !bad.ok()) return bad;
    return Guarded("Switchover", [&] {
      auto done = h_.switchover(req->instance_uuid());
      if (!done.ok()) return ToGrpc(done.status());
      reply->set_new_host(done->new_host);
      reply->set_epoch(done->epoch);
      reply->set_paused_ms(done->paused.count());
      return grpc::Status::OK;
    });
  }

 private:
  const ServiceHandlers& h_;
};

class PeerService final : public nova_dt::v1::Peer::Service {
 public:
  explicit PeerService(const ServiceHandlers& h) : h_(h) {}

  grpc::Status Hello(grpc::ServerContext* ctx, const nova_dt::v1::HelloRequest* req,
                     nova_dt::v1::HelloReply* reply) override {
    if (Status who = h_.peer_credentials->Authorize(*ctx, req->host()); !who.ok()) {
      spdlog::warn("hello from {} refused: {}", ctx->peer(), std::string(who.message()));
      return ToGrpc(who);
    }
    // Shown in status only: a greeting proves nothing about the caller's reachability
    // (core::PeerTracker), and the address of a configured peer is its configured one.
    h_.hello_received(req->host(), Printable(req->listen_address(), 128),
                      Printable(req->version(), 64));
    reply->set_host(h_.host);
    reply->set_version(h_.version);
    return grpc::Status::OK;
  }

  grpc::Status TakeOver(grpc::ServerContext* ctx, const nova_dt::v1::TakeOverRequest* req,
                        nova_dt::v1::TakeOverReply* reply) override {
    if (!h_.take_over) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this agent keeps no replicas");
    }
    if (Status who = h_.peer_credentials->Authorize(*ctx, req->host()); !who.ok()) {
      spdlog::warn("take-over request from {} refused: {}", ctx->peer(),
                   std::string(who.message()));
      return ToGrpc(who);
    }
    if (auto bad = CheckUuid(req->instance_uuid()); !bad.ok()) return bad;
    if (req->epoch() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "TakeOverRequest needs an epoch");
    }
    return Guarded("TakeOver", [&] {
      auto done = h_.take_over(req->host(), req->instance_uuid(), req->epoch());
      if (!done.ok()) return ToGrpc(done.status());
      reply->set_epoch(done->epoch);
      reply->set_restore_ms(done->restore.count());
      return grpc::Status::OK;
    });
  }

  grpc::Status Release(grpc::ServerContext* ctx, const nova_dt::v1::ReleaseRequest* req,
                       nova_dt::v1::ReleaseReply*) override {
    if (!h_.release_replica) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this agent keeps no replicas");
    }
    if (Status who = h_.peer_credentials->Authorize(*ctx, req->host()); !who.ok()) {
      spdlog::warn("release request from {} refused: {}", ctx->peer(), std::string(who.message()));
      return ToGrpc(who);
    }
    if (auto bad = CheckUuid(req->instance_uuid()); !bad.ok()) return bad;
    return Guarded("Release", [&] {
      return ToGrpc(h_.release_replica(req->host(), req->instance_uuid()));
    });
  }

  grpc::Status Basis(grpc::ServerContext* ctx, const nova_dt::v1::BasisRequest* req,
                     grpc::ServerWriter<nova_dt::v1::BasisChunk>* writer) override {
    if (!h_.replica_basis) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this agent keeps no replicas");
    }
    return ServeBasis(ctx, *req, writer, h_.replica_basis, *h_.peer_credentials);
  }

  grpc::Status Replicate(grpc::ServerContext* ctx,
                         grpc::ServerReaderWriter<nova_dt::v1::ReplicationAck,
                                                  nova_dt::v1::ReplicationMessage>* stream) override {
    if (!h_.open_replica) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this agent keeps no replicas");
    }
    return ServeReplicationStream(ctx, stream, h_.open_replica, h_.replication_heartbeat,
                                  *h_.peer_credentials, h_.stream_limits);
  }

 private:
  const ServiceHandlers& h_;
};

// Prepares a "unix:/path" address: creates the directory, removes a stale socket file.
Status PrepareUnixSocket(const std::string& address) {
  if (address.rfind("unix:", 0) != 0) return absl::OkStatus();
  std::filesystem::path path = address.substr(5);
  std::error_code ec;
  const bool made = !std::filesystem::exists(path.parent_path(), ec);
  std::filesystem::create_directories(path.parent_path(), ec);
  if (!ec && made) {
    std::filesystem::permissions(path.parent_path(), std::filesystem::perms::owner_all, ec);
  }
  if (ec) {
    return absl::UnavailableError("cannot create " + path.parent_path().string() + ": " +
                                  ec.message());
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  return absl::OkStatus();
}

// "host:0" → "host:<port>"; unix addresses unchanged.
std::string ResolvedAddress(const std::string& address, int port) {
  if (address.rfind("unix:", 0) == 0) return address;
  return address.substr(0, address.rfind(':') + 1) + std::to_string(port);
}

// Starts one gRPC server for `service` on `address`; returns it with the address actually bound.
StatusOr<std::pair<std::unique_ptr<grpc::Server>, std::string>> Listen(
    const std::string& address, grpc::Service* service, const std::string& what,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  NOVA_DT_RETURN_IF_ERROR(PrepareUnixSocket(address));
  int port = 0;
  grpc::ServerBuilder builder;
  // gRPC turns SO_REUSEPORT on by default: a second agent would then share the port and
  // silently take half the calls. One agent per address.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(kMaxPeerMessageBytes);
  // A replication stream is one long-lived HTTP/2 stream carrying megabytes per epoch: a fixed
  // 16 MiB receive window (instead of one sized by BDP probes, which noisy RTT samples on a
  // lossy link keep small) keeps flow control from being its bottleneck.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddListeningPort(address, std::move(credentials), &port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || (address.rfind("unix:", 0) != 0 && port == 0)) {
    return absl::UnavailableError("cannot listen on " + what + " address " + address);
  }
  // A unix socket is guarded by its file mode (the control API has no other authentication):
  // root's only, whatever the umask.
  if (address.rfind("unix:", 0) == 0 && ::chmod(address.substr(5).c_str(), 0600) != 0) {
    return absl::UnavailableError("cannot restrict " + what + " socket " + address.substr(5) +
                                  ": " + std::strerror(errno));
  }
  return std::make_pair(std::move(server), ResolvedAddress(address, port));
}

class AgentServerImpl final : public AgentServer {
 public:
  explicit AgentServerImpl(ServiceHandlers h)
      : handlers_(std::move(h)), control_(handlers_), peer_(handlers_) {}

  Status Start(const std::string& control_address, const std::string& peer_address) {
    grpc::EnableDefaultHealthCheckService(true);
    // The control API is local (a unix socket by default): filesystem permissions guard it.
    auto control = Listen(control_address, &control_, "control", grpc::InsecureServerCredentials());
    if (!control.ok()) return control.status();
    std::tie(control_server_, control_address_) = *std::move(control);
    auto peer = Listen(peer_address, &peer_, "peer", handlers_.peer_credentials->ServerCredentials());
    if (!peer.ok()) {
      Shutdown(std::chrono::milliseconds(0));
      return peer.status();
    }
    std::tie(peer_server_, peer_address_) = *std::move(peer);

    for (auto* s : {control_server_.get(), peer_server_.get()}) {
      s->GetHealthCheckService()->SetServingStatus(true);
    }
    control_server_->GetHealthCheckService()->SetServingStatus(kControlService, true);
    peer_server_->GetHealthCheckService()->SetServingStatus(kPeerService, true);
    spdlog::info("control API on {}, peer API on {} ({})", control_address_, peer_address_,
                 handlers_.peer_credentials->tls() ? "mutual TLS" : "plaintext");
    return absl::OkStatus();
  }

  std::string control_address() const override { return control_address_; }
  std::string peer_address() const override { return peer_address_; }

  void Shutdown(std::chrono::milliseconds grace) override {
    const auto deadline = std::chrono::system_clock::now() + grace;
    for (auto* s : {control_server_.get(), peer_server_.get()}) {
      if (s) s->GetHealthCheckService()->Shutdown();
    }
    for (auto* s : {peer_server_.get(), control_server_.get()}) {
      if (s) s->Shutdown(deadline);
    }
    for (auto* s : {peer_server_.get(), control_server_.get()}) {
      if (s) s->Wait();
    }
    control_server_.reset();
    peer_server_.reset();
  }

  ~AgentServerImpl() override { Shutdown(std::chrono::milliseconds(0)); }

 private:
  ServiceHandlers handlers_;
  ControlService control_;
  PeerService peer_;
  std::unique_ptr<grpc::Server> control_server_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::string control_address_;
  std::string peer_address_;
};

}  // namespace

StatusOr<std::unique_ptr<AgentServer>> StartAgentServer(const std::string& control_address,
                                                        const std::string& peer_address,
                                                        ServiceHandlers handlers) {
  auto server = std::make_unique<AgentServerImpl>(std::move(handlers));
  NOVA_DT_RETURN_IF_ERROR(server->Start(control_address, peer_address));
  return server;
}

}  // namespace novadt::rpc
