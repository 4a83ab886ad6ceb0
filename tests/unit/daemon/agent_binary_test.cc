// nova-dt-agent and nova-dt-status as programs: arguments, configuration errors, signals, and two
// agents finding each other over loopback. libvirt is the in-process test driver.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <mutex>

#include "agent/rpc/grpc_replication.h"
#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/fake_replica_sink.h"
#include "tests/support/test_util.h"
#include "tests/unit/libvirt/domain_fixtures.h"

namespace novadt {
namespace {

using novadt::testing::RunCommand;
using novadt::testing::ScratchDir;
using novadt::testing::Subprocess;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kAgent = std::string(NOVA_DT_BINARY_DIR) + "/agent/daemon/nova-dt-agent";
const std::string kStatus = std::string(NOVA_DT_BINARY_DIR) + "/agent/tools/nova-dt-status";

std::string AgentConfig(const ScratchDir& dir, const std::string& host, int port,
                        const std::string& peers = "") {
  return "[DEFAULT]\nhost = " + host + "\nstate_path = " + dir.path() + "/" + host +
         "\ncontrol_address = unix:" + dir.path() + "/" + host + ".sock\n"
         "[libvirt]\nconnection_uri = test:///default\n"
         // In the scratch directory, not the agent's system default.
         "[replication]\nreplica_path = " + dir.path() + "/" + host + "/replicas\n"
         // [peer] last: tests append options of that section.
         "[peer]\nlisten_address = 127.0.0.1:" + std::to_string(port) + "\n"
         // Loopback between test agents; agent_security_test covers the TLS default.
         "allow_insecure = true\n"
         "hello_interval_ms = 100\n" + (peers.empty() ? "" : "peers = " + peers + "\n");
}

// The agent's status over its control socket; nullopt while it does not answer.
std::optional<nova_dt::v1::AgentStatus> StatusOf(const std::string& sock) {
  auto stub = nova_dt::v1::Control::NewStub(
      grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(500));
  nova_dt::v1::AgentStatus s;
  if (!stub->Status(&ctx, {}, &s).ok()) return std::nullopt;
  return s;
}

bool PeerReachable(const nova_dt::v1::AgentStatus& s, const std::string& host) {
  for (const auto& p : s.peers()) {
    if (p.host() == host && p.reachable()) return true;
  }
  return false;
}

TEST(AgentBinaryTest, BadValueExitsWith2AndOneLineNamingFileSectionKey) {
  ScratchDir dir;
  const std::string good = dir.Write("good.conf", AgentConfig(dir, "a", 0));
  const std::string bad = dir.Write("bad.conf", "[replication]\nepoch_ms = fast\n");
  std::string out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file", good, "--config-file", bad}, &out), 2);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find(bad), std::string::npos) << out;
  EXPECT_NE(out.find("[replication] epoch_ms"), std::string::npos) << out;
}

TEST(AgentBinaryTest, UnreadablePeerTlsFilesExitWith2) {
  ScratchDir dir;
  const std::string pem = dir.Write("x.pem", "not checked here\n");
  const std::string conf = dir.Write(
      "a.conf", AgentConfig(dir, "a", 0) + "tls_cert_file = " + pem + "\ntls_key_file = " + pem +
                    "\ntls_ca_file = " + pem + "\n");
  std::string out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file", conf}, &out), 2);
  EXPECT_NE(out.find("[peer] tls_cert_file"), std::string::npos) << out;
}

// Who QEMU runs as is looked up at start: replica images and capture sockets go to that user.
TEST(AgentBinaryTest, AnUnknownQemuUserOrGroupExitsWith2NamingIt) {
  ScratchDir dir;
  const std::string conf = dir.Write("a.conf", AgentConfig(dir, "a", 0));
  std::string out;
  const std::string user = dir.Write("user.conf", "[libvirt]\nqemu_user = no-such-user-nova-dt\n");
  EXPECT_EQ(RunCommand({kAgent, "--config-file", conf, "--config-file", user}, &out), 2);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("[libvirt] qemu_user"), std::string::npos) << out;
  EXPECT_NE(out.find("no such user 'no-such-user-nova-dt'"), std::string::npos) << out;
  const std::string group =
      dir.Write("group.conf", "[libvirt]\nqemu_group = no-such-group-nova-dt\n");
  EXPECT_EQ(RunCommand({kAgent, "--config-file", conf, "--config-file", group}, &out), 2);
  EXPECT_NE(out.find("no such group 'no-such-group-nova-dt'"), std::string::npos) << out;
}

TEST(AgentBinaryTest, MissingConfigFileAndBadArgumentsExitWith2) {
  std::string out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file", "/nonexistent/agent.conf"}, &out), 2);
  EXPECT_NE(out.find("/nonexistent/agent.conf"), std::string::npos) << out;
  EXPECT_EQ(RunCommand({kAgent, "--frobnicate"}, &out), 2);
  EXPECT_NE(out.find("--frobnicate"), std::string::npos) << out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file"}, &out), 2);
  EXPECT_EQ(RunCommand({kAgent, "--version"}, &out), 0);
  EXPECT_NE(out.find("nova-dt-agent "), std::string::npos);
}

TEST(AgentBinaryTest, PeerPortInUseExitsWith1AndSaysWhy) {
  ScratchDir dir;
  const int port = novadt::testing::FreeTcpPort();
  Subprocess first({kAgent, "--config-file", dir.Write("a.conf", AgentConfig(dir, "a", port))},
                   dir.path() + "/a.log");
  ASSERT_TRUE(WaitFor([&] { return StatusOf(dir.path() + "/a.sock").has_value(); }, seconds(10)))
      << novadt::testing::ReadFile(dir.path() + "/a.log");
  std::string out;
  EXPECT_EQ(RunCommand({kAgent, "--config-file", dir.Write("b.conf", AgentConfig(dir, "b", port))}, &out),
            1);
  EXPECT_NE(out.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << out;
}

class AgentSignalTest : public ::testing::TestWithParam<int> {};

TEST_P(AgentSignalTest, ShutsDownInOrderWithinFiveSeconds) {
  ScratchDir dir;
  Subprocess agent({kAgent, "--config-file", dir.Write("a.conf", AgentConfig(dir, "a", 0))},
                   dir.path() + "/a.log");
  ASSERT_TRUE(WaitFor([&] { return StatusOf(dir.path() + "/a.sock").has_value(); }, seconds(10)))
      << novadt::testing::ReadFile(dir.path() + "/a.log");
  const auto start = std::chrono::steady_clock::now();
  agent.Signal(GetParam());
  auto rc = agent.Wait(seconds(5));
  ASSERT_TRUE(rc.has_value()) << "still running 5 s after the signal";
  EXPECT_EQ(*rc, 0) << novadt::testing::ReadFile(dir.path() + "/a.log");
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  const std::string log = novadt::testing::ReadFile(dir.path() + "/a.log");
  EXPECT_NE(log.find("shutting down"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(Signals, AgentSignalTest, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& info) {
                           return std::string(info.param == SIGTERM ? "SIGTERM" : "SIGINT");
                         });

TEST(AgentBinaryTest, TwoAgentsSeeEachOtherAndTheStatusToolShowsIt) {
  ScratchDir dir;
  const int pa = novadt::testing::FreeTcpPort(), pb = novadt::testing::FreeTcpPort();
  Subprocess a({kAgent, "--config-file",
                dir.Write("a.conf", AgentConfig(dir, "a", pa, "b=127.0.0.1:" + std::to_string(pb)))},
               dir.path() + "/a.log");
  // b starts later: a keeps greeting until b answers.
  std::this_thread::sleep_for(milliseconds(300));
  Subprocess b({kAgent, "--config-file",
                dir.Write("b.conf", AgentConfig(dir, "b", pb, "a=127.0.0.1:" + std::to_string(pa)))},
               dir.path() + "/b.log");

  std::string out;
  ASSERT_EQ(RunCommand({kStatus, "--address", "unix:" + dir.path() + "/a.sock", "--wait-peer", "b",
                 "--timeout", "15"},
                &out),
            0)
      << out << novadt::testing::ReadFile(dir.path() + "/a.log");
  EXPECT_NE(out.find("host:        a"), std::string::npos) << out;
  EXPECT_NE(out.find("reachable"), std::string::npos) << out;
  EXPECT_NE(out.find("test:///default connected"), std::string::npos) << out;

  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = StatusOf(dir.path() + "/b.sock");
        return s && PeerReachable(*s, "a");
      },
      seconds(10)));
  // The round trip is known once a's own greeting was answered (b's greeting alone marks b
  // reachable but measures nothing).
  std::optional<nova_dt::v1::AgentStatus> sa;
  ASSERT_TRUE(WaitFor(
      [&] {
        sa = StatusOf(dir.path() + "/a.sock");
        return sa && sa->peers_size() == 1 && sa->peers(0).rtt_us() > 0;
      },
      seconds(5)));
  EXPECT_TRUE(sa->peers(0).configured());

  ASSERT_EQ(RunCommand({kStatus, "--address", "unix:" + dir.path() + "/b.sock", "--json"}, &out), 0);
  EXPECT_NE(out.find("\"host\":\"b\""), std::string::npos) << out;

  // When b goes away, a reports it unreachable within three hello intervals (+ slack).
  b.Signal(SIGKILL);
  b.Wait(seconds(5));
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s = StatusOf(dir.path() + "/a.sock");
        return s && !PeerReachable(*s, "b");
      },
      seconds(3)));
}

TEST(AgentBinaryTest, KeepsAReplicaOfAStreamedServerAndReportsIt) {
  ScratchDir dir;
  const int port = novadt::testing::FreeTcpPort();
  Subprocess b({kAgent, "--config-file",
                dir.Write("b.conf", AgentConfig(dir, "b", port, "rig-a=127.0.0.1:1"))},
               dir.path() + "/b.log");
  ASSERT_TRUE(WaitFor([&] { return StatusOf(dir.path() + "/b.sock").has_value(); }, seconds(10)))
      << novadt::testing::ReadFile(dir.path() + "/b.log");

  std::mutex mu;
  std::vector<uint64_t> acked;
  core::EpochStreamCallbacks cb;
  cb.on_ack = [&](const core::StreamAck& a) {
    std::lock_guard<std::mutex> lock(mu);
    if (a.kind == core::StreamAck::Kind::kCommitted) acked.push_back(a.epoch);
  };
  auto link = rpc::MakeGrpcReplicationLink();
  core::StreamOpen open = novadt::testing::TestOpen();
  open.instance_uuid = libvirt::fixtures::kNovaUuid;
  open.domain_xml = libvirt::fixtures::kNovaGeneratedXml;  // one the backup would restore
  auto stream = link->Open("127.0.0.1:" + std::to_string(port), open, cb);
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (uint64_t e = 1; e <= 2; ++e) {
    for (const auto& item : novadt::testing::SmallEpoch(e)) ASSERT_TRUE((*stream)->Send(item).ok());
  }
  ASSERT_TRUE(WaitFor([&] { std::lock_guard<std::mutex> l(mu); return acked.size() == 2; },
                      seconds(10)));

  auto s = StatusOf(dir.path() + "/b.sock");
  ASSERT_TRUE(s);
  ASSERT_EQ(s->protected_servers_size(), 1) << s->DebugString();
  const auto& v = s->protected_servers(0);
  EXPECT_EQ(v.instance_uuid(), open.instance_uuid);
  EXPECT_EQ(v.role(), "backup");
  EXPECT_EQ(v.state(), "protected");
  EXPECT_EQ(v.peer_host(), "rig-a");
  EXPECT_EQ(v.last_committed_epoch(), 2u);
  EXPECT_EQ(novadt::testing::ReadFile(dir.path() + "/b/replicas/" + open.instance_uuid + "/ram.img")
                .substr(0, 4096),
            std::string(4096, 'c'));

  // The primary ends protection: the replica is kept, but never failed over.
  ASSERT_TRUE((*stream)->Finish(seconds(5)).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = StatusOf(dir.path() + "/b.sock");
        return st && st->protected_servers_size() == 1 &&
               st->protected_servers(0).state() == "unprotected";
      },
      seconds(5)));
}

TEST(StatusToolTest, UnreachableAgentExitsWith1) {
  std::string out;
  EXPECT_EQ(RunCommand({kStatus, "--address", "unix:/nonexistent/agent.sock", "--timeout", "0.5"}, &out), 1);
  EXPECT_NE(out.find("cannot reach agent"), std::string::npos) << out;
  EXPECT_EQ(RunCommand({kStatus, "--bogus"}, &out), 2);
}

}  // namespace
}  // namespace novadt
