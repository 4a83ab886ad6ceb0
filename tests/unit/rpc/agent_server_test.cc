// The control and peer APIs over real gRPC (port 0 and a unix socket), with the standard
// health service, and the gRPC PeerLink against them.
#include "agent/rpc/agent_server.h"

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>
#include <mutex>

#include "agent/rpc/grpc_peer_link.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nova_dt/v1/control.grpc.pb.h"
#include "nova_dt/v1/peer.grpc.pb.h"
#include "tests/support/test_util.h"

namespace novadt::rpc {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

class AgentServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceHandlers h;
    h.host = "compute-a";
    h.version = "9.9.9";
    h.status = [this]() -> StatusOr<core::AgentStatusSnapshot> {
      if (fail_status_) return absl::UnavailableError("loop stuck");
      core::AgentStatusSnapshot s;
      s.host = "compute-a";
      s.version = "9.9.9";
      s.hypervisor_uri = "test:///default";
      s.hypervisor_connected = true;
      core::PeerView p;
      p.host = "compute-b";
      p.address = "198.18.0.2:7070";
      p.configured = true;
      p.reachable = true;
      p.rtt = std::chrono::microseconds(1500);
      s.peers.push_back(p);
      return s;
    };
    h.hello_received = [this](const std::string& host, const std::string& address,
                              const std::string& version) {
      std::lock_guard<std::mutex> lock(mu_);
      hellos_.push_back(host + "|" + address + "|" + version);
    };
    h.peer_credentials = PeerCredentials::Insecure({"compute-b"});
    control_address_ = "unix:" + dir_.path() + "/sub/agent.sock";
    auto server = StartAgentServer(control_address_, "127.0.0.1:0", std::move(h));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::shared_ptr<grpc::Channel> Control() {
    return grpc::CreateChannel(server_->control_address(), grpc::InsecureChannelCredentials());
  }
  std::shared_ptr<grpc::Channel> Peer() {
    return grpc::CreateChannel(server_->peer_address(), grpc::InsecureChannelCredentials());
  }

  HealthCheckResponse::ServingStatus Health(std::shared_ptr<grpc::Channel> ch,
                                            const std::string& service, grpc::Status* st) {
    auto stub = grpc::health::v1::Health::NewStub(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    *st = stub->Check(&ctx, req, &resp);
    return resp.status();
  }

  novadt::testing::ScratchDir dir_;
  std::string control_address_;
  std::unique_ptr<AgentServer> server_;
  bool fail_status_ = false;
  std::mutex mu_;
  std::vector<std::string> hellos_;
};

TEST_F(AgentServerTest, PortZeroIsResolvedAndUnixSocketDirectoryCreated) {
  EXPECT_EQ(server_->control_address(), control_address_);
  EXPECT_EQ(server_->peer_address().rfind("127.0.0.1:", 0), 0u);
  EXPECT_NE(server_->peer_address(), "127.0.0.1:0");
  // The control API has no authentication of its own: its socket is root's only.
  struct stat st;
  ASSERT_EQ(::stat(control_address_.substr(5).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_.path() + "/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(AgentServerTest, StatusReturnsTheSnapshot) {
  auto stub = nova_dt::v1::Control::NewStub(Control());
  grpc::ClientContext ctx;
  nova_dt::v1::AgentStatus s;
  ASSERT_TRUE(stub->Status(&ctx, {}, &s).ok());
  EXPECT_EQ(s.host(), "compute-a");
  EXPECT_EQ(s.version(), "9.9.9");
  EXPECT_TRUE(s.hypervisor().connected());
  ASSERT_EQ(s.peers_size(), 1);
  EXPECT_EQ(s.peers(0).host(), "compute-b");
  EXPECT_TRUE(s.peers(0).reachable());
  EXPECT_EQ(s.peers(0).rtt_us(), 1500);
}

TEST_F(AgentServerTest, StatusFailureBecomesUnavailable) {
  fail_status_ = true;
  auto stub = nova_dt::v1::Control::NewStub(Control());
  grpc::ClientContext ctx;
  nova_dt::v1::AgentStatus s;
  grpc::Status st = stub->Status(&ctx, {}, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "loop stuck");
}

TEST_F(AgentServerTest, HealthServiceReportsServingForBothEndpoints) {
  grpc::Status st;
  EXPECT_EQ(Health(Control(), "", &st), HealthCheckResponse::SERVING);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Health(Control(), "nova_dt.v1.Control", &st), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(Peer(), "nova_dt.v1.Peer", &st), HealthCheckResponse::SERVING);
  Health(Peer(), "no.such.Service", &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AgentServerTest, ShutdownStopsServing) {
  server_->Shutdown(std::chrono::milliseconds(500));
  grpc::Status st;
  auto stub = grpc::health::v1::Health::NewStub(Peer());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  HealthCheckResponse resp;
  st = stub->Check(&ctx, {}, &resp);
  EXPECT_FALSE(st.ok());
}

TEST_F(AgentServerTest, PeerLinkHelloReachesTheServerAndMeasuresRtt) {
  auto link = MakeGrpcPeerLink({"compute-b", "1.2.3", "198.18.0.2:7070"});
  std::promise<StatusOr<core::HelloResult>> got;
  link->Hello(server_->peer_address(), std::chrono::seconds(5),
              [&](StatusOr<core::HelloResult> r) { got.set_value(std::move(r)); });
  auto r = got.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->host, "compute-a");
  EXPECT_EQ(r->version, "9.9.9");
  EXPECT_GT(r->rtt.count(), 0);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(hellos_.size(), 1u);
  EXPECT_EQ(hellos_[0], "compute-b|198.18.0.2:7070|1.2.3");
}

TEST_F(AgentServerTest, HelloWithoutHostIsRefused) {
  auto stub = nova_dt::v1::Peer::NewStub(Peer());
  grpc::ClientContext ctx;
  nova_dt::v1::HelloReply reply;
  grpc::Status st = stub->Hello(&ctx, {}, &reply);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(hellos_.empty());
}

TEST(GrpcPeerLinkTest, UnreachablePeerFailsWithinTheTimeout) {
  auto link = MakeGrpcPeerLink({"compute-b", "1", ""});
  std::promise<StatusOr<core::HelloResult>> got;
  const auto start = std::chrono::steady_clock::now();
  link->Hello("127.0.0.1:" + std::to_string(novadt::testing::FreeTcpPort()),
              std::chrono::milliseconds(300),
              [&](StatusOr<core::HelloResult> r) { got.set_value(std::move(r)); });
  auto r = got.get_future().get();
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST(GrpcPeerLinkTest, DestroyingTheLinkCancelsCallsInFlightAndRunsTheirCallbacks) {
  // A listener that accepts connections but never speaks HTTP/2: the call hangs until cancelled.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);

  std::atomic<bool> called{false};
  auto link = MakeGrpcPeerLink({"compute-b", "1", ""});
  link->Hello("127.0.0.1:" + std::to_string(ntohs(a.sin_port)), std::chrono::seconds(60),
              [&](StatusOr<core::HelloResult> r) {
                EXPECT_FALSE(r.ok());
                called = true;
              });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(called);
  const auto start = std::chrono::steady_clock::now();
  link.reset();
  EXPECT_TRUE(called);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  close(fd);
}

TEST(AgentServerStartTest, AddressInUseIsAClearError) {
  ServiceHandlers h;
  h.status = [] { return core::AgentStatusSnapshot{}; };
  h.hello_received = [](auto&&...) {};
  novadt::testing::ScratchDir dir;
  auto first = StartAgentServer("unix:" + dir.path() + "/a.sock", "127.0.0.1:0", h);
  ASSERT_TRUE(first.ok());
  auto second = StartAgentServer("unix:" + dir.path() + "/b.sock", (*first)->peer_address(), h);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find((*first)->peer_address()), std::string::npos);
}

// Every identifier is checked at the edge: a malformed instance UUID never reaches a handler
// (where it could become a path), on the control API as on the peer API; and an exception a
// handler throws ends that call only.
class AgentServerEdgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceHandlers h;
    h.host = "compute-a";
    h.status = [] { return core::AgentStatusSnapshot{}; };
    h.hello_received = [](auto&&...) {};
    h.protect = [this](const std::string&, const std::string&) { return Called(); };
    h.unprotect = [this](const std::string&) { return Called(); };
    h.switchover = [this](const std::string&) -> StatusOr<core::SwitchoverResult> {
      NOVA_DT_RETURN_IF_ERROR(Called());
      return core::SwitchoverResult{};
    };
    h.take_over = [this](const std::string&, const std::string&,
                         uint64_t) -> StatusOr<core::TakeOverResult> {
      NOVA_DT_RETURN_IF_ERROR(Called());
      return core::TakeOverResult{};
    };
    h.replica_basis = [this](const std::string&,
                             const std::string&) -> StatusOr<core::ReplicaBasis> {
      NOVA_DT_RETURN_IF_ERROR(Called());
      return absl::NotFoundError("none");
    };
    h.peer_credentials = PeerCredentials::Insecure({"compute-b"});
    auto server = StartAgentServer("unix:" + dir_.path() + "/agent.sock", "127.0.0.1:0",
                                   std::move(h));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  Status Called() {
    ++calls_;
    if (throw_) throw std::runtime_error("boom");
    return absl::OkStatus();
  }
  // Each API call with `uuid`; their status codes.
  std::vector<grpc::StatusCode> CallAll(const std::string& uuid) {
    auto control = nova_dt::v1::Control::NewStub(
        grpc::CreateChannel(server_->control_address(), grpc::InsecureChannelCredentials()));
    auto peer = nova_dt::v1::Peer::NewStub(
        grpc::CreateChannel(server_->peer_address(), grpc::InsecureChannelCredentials()));
    std::vector<grpc::StatusCode> codes;
    {
      grpc::ClientContext ctx;
      nova_dt::v1::ProtectRequest req;
      req.set_instance_uuid(uuid);
      req.set_backup_host("compute-b");
      nova_dt::v1::ProtectReply reply;
      codes.push_back(control->Protect(&ctx, req, &reply).error_code());
    }
    {
      grpc::ClientContext ctx;
      nova_dt::v1::UnprotectRequest req;
      req.set_instance_uuid(uuid);
      nova_dt::v1::UnprotectReply reply;
      codes.push_back(control->Unprotect(&ctx, req, &reply).error_code());
    }
    {
      grpc::ClientContext ctx;
      nova_dt::v1::SwitchoverRequest req;
      req.set_instance_uuid(uuid);
      nova_dt::v1::SwitchoverReply reply;
      codes.push_back(control->Switchover(&ctx, req, &reply).error_code());
    }
    {
      grpc::ClientContext ctx;
      nova_dt::v1::TakeOverRequest req;
      req.set_host("compute-b");
      req.set_instance_uuid(uuid);
      req.set_epoch(3);
      nova_dt::v1::TakeOverReply reply;
      codes.push_back(peer->TakeOver(&ctx, req, &reply).error_code());
    }
    {
      grpc::ClientContext ctx;
      nova_dt::v1::BasisRequest req;
      req.set_host("compute-b");
      req.set_instance_uuid(uuid);
      auto reader = peer->Basis(&ctx, req);
      nova_dt::v1::BasisChunk c;
      while (reader->Read(&c)) {
      }
      codes.push_back(reader->Finish().error_code());
    }
    return codes;
  }

  novadt::testing::ScratchDir dir_;
  std::unique_ptr<AgentServer> server_;
  std::atomic<int> calls_{0};
  std::atomic<bool> throw_{false};
};

TEST_F(AgentServerEdgeTest, MalformedInstanceUuidsNeverReachAHandler) {
  const std::string u = "0b4f9c6e-2d3a-4e5f-8a9b-c0d1e2f3a4b5";
  for (const std::string& bad :
       {std::string("../x"), std::string("../../etc"), "./" + u, "{" + u + "}",
        std::string("0B4F9C6E-2D3A-4E5F-8A9B-C0D1E2F3A4B5"), u + "0", std::string(5000, 'a'),
        std::string("")}) {
    SCOPED_TRACE(bad.substr(0, 60));
    for (grpc::StatusCode code : CallAll(bad)) {
      EXPECT_EQ(code, grpc::StatusCode::INVALID_ARGUMENT);
    }
  }
  EXPECT_EQ(calls_.load(), 0);
  // The canonical spelling reaches every handler.
  CallAll(u);
  EXPECT_EQ(calls_.load(), 5);
}

TEST_F(AgentServerEdgeTest, AnExceptionInAHandlerEndsThatCallNotTheAgent) {
  throw_ = true;
  for (grpc::StatusCode code : CallAll("0b4f9c6e-2d3a-4e5f-8a9b-c0d1e2f3a4b5")) {
    EXPECT_EQ(code, grpc::StatusCode::INTERNAL);
  }
  throw_ = false;
  auto control = nova_dt::v1::Control::NewStub(
      grpc::CreateChannel(server_->control_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  nova_dt::v1::AgentStatus status;
  EXPECT_TRUE(control->Status(&ctx, {}, &status).ok()) << "still serving";
}

}  // namespace
}  // namespace novadt::rpc
