// Mutual TLS on the peer link over real gRPC (port 0) with certificates made by the openssl CLI:
// a pair with certificates from the same CA greets and streams; a peer with a certificate from
// another CA, a certificate for another host than it claims, a callee whose certificate does not
// name the configured peer host, and a plaintext caller are all refused — and nothing reaches the
// handlers or the replica.
#include "agent/rpc/peer_tls.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <future>
#include <mutex>

#include "agent/rpc/agent_server.h"
#include "agent/rpc/grpc_peer_link.h"
#include "agent/rpc/grpc_replication.h"
#include "nova_dt/v1/peer.grpc.pb.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_util.h"

namespace novadt::rpc {
namespace {

using novadt::testing::TestPki;
using novadt::testing::ScratchDir;
using std::chrono::seconds;

class PeerTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki({"host-a", "host-b", "host-c"}); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  // The agent of host-b, serving with `cert` (a file name of the PKI).
  void StartB(const std::string& cert = "host-b",
              std::shared_ptr<const PeerCredentials> credentials = nullptr) {
    ServiceHandlers h;
    h.host = "host-b";
    h.version = "1";
    h.status = [] { return core::AgentStatusSnapshot{}; };
    h.hello_received = [this](const std::string& host, const std::string&, const std::string&) {
      std::lock_guard<std::mutex> lock(mu_);
      hellos_.push_back(host);
    };
    h.open_replica = novadt::testing::FakeSinkFactory(replica_);
    h.peer_credentials = credentials ? credentials : Credentials(cert);
    auto s = StartAgentServer("unix:" + dir_.path() + "/b.sock", "127.0.0.1:0", std::move(h));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }

  // Certificate `name` trusting CA `ca`, accepting callers that claim to be one of `peers`.
  static std::shared_ptr<const PeerCredentials> Credentials(
      const std::string& name, const std::string& ca = "ca",
      const std::vector<std::string>& peers = {"host-a", "host-b", "host-c", "rig-a"}) {
    config::PeerSection section = pki_->Peer(name, ca);
    for (const auto& p : peers) section.peers.push_back({p, "127.0.0.1:1"});
    auto c = PeerCredentials::Load(section);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : PeerCredentials::Insecure({});
  }

  // A hello from an agent calling itself `claimed` with credentials `creds`, expecting host-b.
  StatusOr<core::HelloResult> Hello(const std::string& claimed,
                                    std::shared_ptr<const PeerCredentials> creds,
                                    const std::string& expected = "host-b") {
    auto link = MakeGrpcPeerLink({claimed, "1", ""}, std::move(creds),
                                 {{server_->peer_address(), expected}});
    std::promise<StatusOr<core::HelloResult>> got;
    link->Hello(server_->peer_address(), seconds(5),
                [&](StatusOr<core::HelloResult> r) { got.set_value(std::move(r)); });
    return got.get_future().get();
  }
  std::vector<std::string> Hellos() {
    std::lock_guard<std::mutex> lock(mu_);
    return hellos_;
  }

  static TestPki* pki_;
  ScratchDir dir_;
  std::mutex mu_;
  std::vector<std::string> hellos_;
  std::shared_ptr<novadt::testing::FakeReplicaState> replica_ =
      std::make_shared<novadt::testing::FakeReplicaState>();
  std::unique_ptr<AgentServer> server_;
};
TestPki* PeerTlsTest::pki_ = nullptr;

TEST_F(PeerTlsTest, PeersWithCertificatesFromTheSameCaGreetEachOther) {
  StartB();
  auto r = Hello("host-a", Credentials("host-a"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->host, "host-b");
  EXPECT_EQ(Hellos(), std::vector<std::string>{"host-a"});
}

TEST_F(PeerTlsTest, CertificateFromAnotherCaIsRefused) {
  StartB();
  // host-a's name, but signed by a CA host-b does not trust (and trusting only that CA itself).
  auto r = Hello("host-a", Credentials("rogue-host-a", "other-ca"));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_TRUE(Hellos().empty());
}

TEST_F(PeerTlsTest, CertificateForAnotherHostThanClaimedIsRefusedAndLogged) {
  StartB();
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  // host-c's valid certificate, claiming to be host-a.
  auto r = Hello("host-a", Credentials("host-c"));
  spdlog::set_default_logger(previous);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();  // the link reports "hello failed"
  EXPECT_NE(r.status().message().find("claims to be host 'host-a' but its certificate names "
                                      "host-c"),
            std::string::npos)
      << r.status();
  EXPECT_TRUE(Hellos().empty());
  bool logged = false;
  for (const auto& line : sink->last_formatted()) {
    logged = logged || line.find("hello from") != std::string::npos;
  }
  EXPECT_TRUE(logged);
}

TEST_F(PeerTlsTest, CalleeWhoseCertificateDoesNotNameTheConfiguredPeerIsRefused) {
  StartB("host-c");  // the agent at host-b's address presents host-c's certificate
  auto r = Hello("host-a", Credentials("host-a"), "host-b");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(Hellos().empty());
}

TEST_F(PeerTlsTest, PlaintextCallerAndUnknownAddressesAreRefused) {
  StartB();
  auto plain = Hello("host-a", PeerCredentials::Insecure({}));
  EXPECT_FALSE(plain.ok());
  // With TLS, a hello to an address no configured peer has cannot be verified.
  auto link = MakeGrpcPeerLink({"host-a", "1", ""}, Credentials("host-a"), {});
  std::promise<StatusOr<core::HelloResult>> got;
  link->Hello(server_->peer_address(), seconds(5),
              [&](StatusOr<core::HelloResult> r) { got.set_value(std::move(r)); });
  auto unknown = got.get_future().get();
  EXPECT_TRUE(absl::IsInvalidArgument(unknown.status())) << unknown.status();
  EXPECT_TRUE(Hellos().empty());
}

TEST_F(PeerTlsTest, ReplicationStreamOnlyFromTheHostTheCertificateNames) {
  StartB();
  struct Done {
    std::promise<Status> done;
    core::EpochStreamCallbacks Callbacks() {
      return {[](const core::StreamAck&) {}, [this](const Status& st) { done.set_value(st); }};
    }
  };
  // TestOpen() says primary_host "rig-a"; host-a's certificate does not name it.
  auto link = MakeGrpcReplicationLink(Credentials("host-a"),
                                      {{server_->peer_address(), "host-b"}});
  Done refused;
  auto s = link->Open(server_->peer_address(), novadt::testing::TestOpen(), refused.Callbacks());
  auto st = refused.done.get_future().get();
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_TRUE(replica_->Calls().empty()) << "the replica was touched";

  core::StreamOpen open = novadt::testing::TestOpen();
  open.primary_host = "host-a";
  Done accepted;
  auto ok = link->Open(server_->peer_address(), open, accepted.Callbacks());
  ASSERT_TRUE(ok.ok()) << ok.status();
  for (const auto& item : novadt::testing::SmallEpoch(1)) ASSERT_TRUE((*ok)->Send(item).ok());
  ASSERT_TRUE(novadt::testing::WaitFor([&] { return !replica_->Committed().empty(); }, seconds(5)));
  EXPECT_TRUE((*ok)->Finish(seconds(5)).ok());
}

// The TLS certificate is from the right CA and names the host it claims, but that host is not
// one of b's [peer] peers: refused (as libvirt's tls_allowed_dn_list would).
TEST_F(PeerTlsTest, ACertificateForAHostThatIsNotAPeerIsRefused) {
  StartB("host-b", Credentials("host-b", "ca", {"host-a"}));
  auto r = Hello("host-c", Credentials("host-c"));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("host 'host-c' is not one of this agent's [peer] peers"),
            std::string::npos)
      << r.status();
  EXPECT_TRUE(Hellos().empty());
  core::StreamOpen open = novadt::testing::TestOpen();
  open.primary_host = "host-c";
  auto link = MakeGrpcReplicationLink(Credentials("host-c"), {{server_->peer_address(), "host-b"}});
  std::promise<Status> done;
  auto s = link->Open(server_->peer_address(), open,
                      {[](const core::StreamAck&) {}, [&](const Status& st) { done.set_value(st); }});
  EXPECT_TRUE(absl::IsPermissionDenied(done.get_future().get()));
  EXPECT_TRUE(replica_->Calls().empty()) << "the replica was touched";
}

// [peer] allow_insecure: nothing is authenticated, but only configured peers' names are taken,
// and a malformed name never reaches a handler.
TEST_F(PeerTlsTest, PlaintextOnlyOnRequestAndStillOnlyFromPeers) {
  StartB("", PeerCredentials::Insecure({"host-a"}));
  auto plain = PeerCredentials::Insecure({});
  EXPECT_TRUE(Hello("host-a", plain).ok());
  for (const std::string& claimed : {std::string("host-c"), std::string("../x"),
                                     std::string("host-a\n"), std::string(300, 'h')}) {
    auto r = Hello(claimed, plain);
    EXPECT_FALSE(r.ok()) << claimed;
  }
  EXPECT_EQ(Hellos(), std::vector<std::string>{"host-a"});
}

TEST(PeerCredentialsTest, WithoutCertificatesTheAgentRefusesUnlessAllowedInsecure) {
  config::PeerSection p;
  p.peers = {{"host-a", "10.0.0.1:7070"}};
  auto refused = PeerCredentials::Load(p);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("allow_insecure"), std::string::npos);
  p.allow_insecure = true;
  auto plain = PeerCredentials::Load(p);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE((*plain)->tls());
}

TEST(PeerCredentialsTest, LoadRefusesUnreadableAndNonPemFiles) {
  ScratchDir dir;
  config::PeerSection p;
  p.tls_cert_file = dir.Write("cert.pem", "not a certificate");
  p.tls_key_file = dir.path() + "/missing.key";
  p.tls_ca_file = dir.Write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  auto c = PeerCredentials::Load(p);
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_EQ(c.status().message(), "[peer] tls_cert_file: " + dir.path() + "/cert.pem holds no PEM block");
  p.tls_cert_file = p.tls_ca_file;
  c = PeerCredentials::Load(p);
  EXPECT_EQ(c.status().message(), "[peer] tls_key_file: cannot read " + dir.path() + "/missing.key");
}

}  // namespace
}  // namespace novadt::rpc
