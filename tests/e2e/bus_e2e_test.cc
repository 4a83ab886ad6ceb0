// End to end on the two-host rig, agents talking mutual TLS, with a RabbitMQ broker in the rig's
// switch namespace, reachable from both hosts: Nova (the real oslo.messaging Notifier, with a payload made by nova's own
// notification objects) announces a new DT server on host a; the agent on a protects it to its
// default backup b by itself; the backup stalls and a degrades and re-seeds; Nova pauses and
// unpauses it (protection suspended and resumed); the controller unprotects it over RPC and
// Nova's power_on.end makes a protect it again; host a dies; b fails the server over. Everything the agents announced on exchange nova_dt is read back from the
// broker, per agent and priority, in order, with the facts of the pair.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <algorithm>
#include <sstream>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/rabbitmq_server.h"
#include "tests/support/agent_control.h"
#include "tests/support/rig.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::RabbitMqServer;
using novadt::testing::Rig;
using novadt::testing::TestPki;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "3f2e1d0c-9b8a-4765-8432-10fedcba9876";
const std::string kSupport = std::string(NOVA_DT_SOURCE_DIR) + "/tests/support/";

std::optional<nova_dt::v1::AgentStatus> Status(const Rig& rig, const std::string& host) {
  return novadt::testing::AgentStatusAt(rig.AgentControlAddress(host));
}

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  return novadt::testing::ProtectedServerAt(rig.AgentControlAddress(host), kGuestUuid);
}

TEST(BusE2eTest, NovaAnnouncesAServerAgentsProtectAndFailOverAndSayWhatTheyDid) {
  Rig rig("e2q");
  ASSERT_TRUE(rig.Up().ok());
  RabbitMqServer::Options bo;
  bo.exec_prefix = rig.ExecPrefix("net");
  bo.listen_ip = Rig::kNetAddress;
  RabbitMqServer broker(bo);
  absl::Status started = broker.Start();
  ASSERT_TRUE(started.ok()) << started;
  const std::string url = broker.url();
  auto in_net = [&](std::vector<std::string> argv, std::string* out) {
    return rig.Exec("net", argv, out);
  };

  ASSERT_TRUE(rig.BootGuest("a", "dtguest", kGuestUuid).ok());
  // The agents talk mutual TLS, each with its host's certificate.
  TestPki pki({"rig-a", "rig-b"});
  auto agent_config = [&](const std::string& host) {
    const config::PeerSection tls = pki.Peer("rig-" + host);
    std::vector<std::string> o = {"DEFAULT.transport_url=" + url,
                                  "oslo_messaging_notifications.driver=messagingv2",
                                  "peer.tls_cert_file=" + tls.tls_cert_file,
                                  "peer.tls_key_file=" + tls.tls_key_file,
                                  "peer.tls_ca_file=" + tls.tls_ca_file,
                                  "peer.link_stats_interval_s=1",
                                  "peer.link_capacity_mbit=1000"};
    if (host == "a") o.push_back("replication.default_backup_host=rig-b");
    return o;
  };
  // Nova's exchange exists before the agents come, as in a running cloud: an agent only checks
  // that it does (a passive declare; its RabbitMQ user may not create or delete it).
  std::string declared;
  ASSERT_EQ(in_net({"/usr/bin/python3", "-c",
                    "import sys; sys.path.insert(0, sys.argv[1]); import nova_emit; "
                    "nova_emit.declare_nova_exchange(sys.argv[2])",
                    kSupport, url},
                   &declared),
            0)
      << declared;
  ASSERT_TRUE(rig.StartAgent("a", agent_config("a")).ok());
  ASSERT_TRUE(rig.StartAgent("b", agent_config("b")).ok());
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().size() > 20; }, seconds(60)));
  for (const char* host : {"a", "b"}) {
    ASSERT_TRUE(WaitFor(
        [&] {
          auto s = Status(rig, host);
          return s && s->bus().nova_notifications().connected() && s->bus().notifier().connected();
        },
        seconds(30)))
        << "agent on " << host << " not on the bus:\n"
        << novadt::testing::ReadFile(rig.dir() + "/" + host + "/agent/agent.log");
  }

  // Nova's notification about the server on rig-a (running, DT flavor), from nova-compute.
  auto nova = [&](const std::string& event_type, std::string* out) {
    return in_net({"/usr/bin/python3", kSupport + "nova_emit.py", url, event_type, kGuestUuid,
                   "rig-a", "--state", "active", "--spec", "dt:enabled=true"},
                  out);
  };

  // Nova: the server was created on rig-a with a DT flavor.
  std::string out;
  ASSERT_EQ(nova("instance.create.end", &out), 0) << out;
  std::optional<nova_dt::v1::ProtectedServer> primary;
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "protected" && primary->last_committed_epoch() >= 15;
      },
      seconds(120)))
      << (primary ? primary->DebugString() : "no status") << "\n"
      << novadt::testing::ReadFile(rig.dir() + "/a/agent/agent.log");
  EXPECT_EQ(primary->peer_host(), "rig-b");

  // The backup stalls past the degrade bound (2 s): a degrades, and re-seeds once b is back.
  const std::string b_pid = novadt::testing::ReadFile(rig.dir() + "/b/agent/pid");
  ASSERT_FALSE(b_pid.empty());
  ::kill(std::stoi(b_pid), SIGSTOP);
  const bool degraded = WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "degraded";
      },
      seconds(10));
  ::kill(std::stoi(b_pid), SIGCONT);
  ASSERT_TRUE(degraded) << (primary ? primary->DebugString() : "no status");
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "protected";
      },
      seconds(60)));

  // Nova pauses the server: protection is suspended; unpaused, it resumes towards the same
  // backup.
  ASSERT_EQ(nova("instance.pause.start", &out), 0) << out;
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "unprotected" && primary->peer_host() == "rig-b";
      },
      seconds(20)))
      << (primary ? primary->DebugString() : "no status");
  EXPECT_NE(primary->reason().find("suspended during pause"), std::string::npos)
      << primary->reason();
  ASSERT_EQ(nova("instance.unpause.end", &out), 0) << out;
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "protected";
      },
      seconds(120)))
      << (primary ? primary->DebugString() : "no status");

  // The controller unprotects it over the bus (the real oslo.messaging client)...
  const std::string unprotect =
      "import sys, oslo_messaging\n"
      "from oslo_config import cfg\n"
      "cfg.CONF([], project='e2e')\n"
      "t = oslo_messaging.get_rpc_transport(cfg.CONF, url=sys.argv[1])\n"
      "c = oslo_messaging.get_rpc_client(t, oslo_messaging.Target(exchange='nova_dt', "
      "topic='nova_dt_agent', server='rig-a', version='1.0'), timeout=20)\n"
      "print(c.call({}, 'unprotect', instance_uuid=sys.argv[2]))\n"
      "t.cleanup()\n";
  ASSERT_EQ(in_net({"/usr/bin/python3", "-c", unprotect, url, kGuestUuid}, &out), 0) << out;
  EXPECT_NE(out.find("'state': 'unprotected'"), std::string::npos) << out;
  EXPECT_FALSE(Server(rig, "a").has_value());
  // ...and Nova's next "running again" event makes the agent protect it to its default again.
  ASSERT_EQ(nova("instance.power_on.end", &out), 0) << out;
  ASSERT_TRUE(WaitFor(
      [&] {
        primary = Server(rig, "a");
        return primary && primary->state() == "protected" && primary->last_committed_epoch() >= 15;
      },
      seconds(120)))
      << (primary ? primary->DebugString() : "no status");

  // Host a dies.
  const std::string qemu_pid = novadt::testing::ReadFile(rig.dir() + "/a/run/qemu/dtguest.pid");
  ASSERT_FALSE(qemu_pid.empty());
  ::kill(std::stoi(qemu_pid), SIGKILL);
  ASSERT_TRUE(rig.StopAgent("a", /*kill=*/true).ok());
  const int64_t last_seen = rig.ObserverValues().back();
  ASSERT_TRUE(WaitFor([&] { return rig.ObserverValues().back() > last_seen; }, seconds(20)))
      << novadt::testing::ReadFile(rig.dir() + "/b/agent/agent.log");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto b = Server(rig, "b");
        return b && b->role() == "primary";
      },
      seconds(10)));

  // What the agents said, from the default queues oslo's notifier convention binds.
  std::vector<nlohmann::json> events;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string lines;
        if (in_net({"/usr/bin/python3", kSupport + "bus_drain.py", url, "notifications.info",
                    "notifications.error"},
                   &lines) != 0) {
          return false;
        }
        std::istringstream in(lines);
        for (std::string line; std::getline(in, line);) {
          auto j = nlohmann::json::parse(line, nullptr, false);
          if (!j.is_discarded() && j.contains("event_type")) events.push_back(j);
        }
        for (const auto& e : events) {
          if (e["event_type"] == "dt.pair.failover.end") return true;
        }
        return false;
      },
      seconds(20)))
      << events.size() << " notifications so far";
  // Per agent and per queue (priority), in publication order.
  auto from = [&](const std::string& host, const std::string& queue) {
    std::vector<std::string> r;
    for (const auto& e : events) {
      const auto& data = e["payload"]["nova_object.data"];
      if (data.value("instance_uuid", "") != kGuestUuid || e["queue"] != queue ||
          e["publisher_id"] != "nova-dt-agent:" + host) {
        continue;
      }
      EXPECT_EQ(e["payload"]["nova_object.name"], "DTPairPayload");
      if (e["event_type"] == "dt.pair.protect.end") {
        EXPECT_EQ(data["peer_host"], "rig-b");
        EXPECT_GT(data["duration_ms"].get<int64_t>(), 0);
      }
      if (e["event_type"] == "dt.pair.failover.end") {
        EXPECT_EQ(data["new_host"], "rig-b");
        EXPECT_EQ(data["peer_host"], "rig-a");
        EXPECT_GE(data["committed_epoch"].get<uint64_t>(), 15u);
      }
      r.push_back(e["event_type"]);
    }
    return r;
  };
  // The degrade of b's stall — and only degrades: on a loaded machine a second one was seen
  // (the stall reported twice, or a backup slow to ack for degrade_after_ms), which is the agent
  // saying what happened, not a fault. Each degrade leads to at most one re-seed, and at least
  // one re-seed happened.
  const auto a_errors = from("rig-a", "notifications.error");
  EXPECT_FALSE(a_errors.empty());
  EXPECT_EQ(std::count(a_errors.begin(), a_errors.end(), "dt.pair.degraded"),
            static_cast<std::ptrdiff_t>(a_errors.size()))
      << ::testing::PrintToString(a_errors);
  const std::vector<std::string> a_info = from("rig-a", "notifications.info");
  const std::vector<std::string> after_reseeds = {
      "dt.pair.unprotect.end", "dt.pair.suspended",    // pause.start
      "dt.pair.protect.start", "dt.pair.protect.end",  // unpause.end
      "dt.pair.unprotect.end",                         // RPC unprotect
      "dt.pair.protect.start", "dt.pair.protect.end"};  // power_on.end
  const size_t reseeds = a_info.size() >= 2 + after_reseeds.size()
                             ? (a_info.size() - 2 - after_reseeds.size()) / 2
                             : 0;
  EXPECT_GE(reseeds, 1u);
  EXPECT_LE(reseeds, a_errors.size());
  std::vector<std::string> expected_a = {"dt.pair.protect.start", "dt.pair.protect.end"};  // create.end
  for (size_t i = 0; i < reseeds; ++i) {
    expected_a.insert(expected_a.end(), {"dt.pair.protect.start", "dt.pair.protect.end"});
  }
  expected_a.insert(expected_a.end(), after_reseeds.begin(), after_reseeds.end());
  EXPECT_EQ(a_info, expected_a);
  EXPECT_EQ(from("rig-b", "notifications.info"),
            (std::vector<std::string>{"dt.pair.failover.end"}));
  EXPECT_EQ(from("rig-b", "notifications.error"),
            (std::vector<std::string>{"dt.pair.failover.start"}));

  // Link reports for the scheduler's weigher: a measured the hello RTT to b, and at least one
  // interval carried the pair's replication traffic.
  int reports = 0;
  uint64_t max_rate = 0;
  for (const auto& e : events) {
    if (e["event_type"] != "dt.link.stats" || e["publisher_id"] != "nova-dt-agent:rig-a") continue;
    ++reports;
    EXPECT_EQ(e["payload"]["nova_object.name"], "DTLinkStatsPayload");
    const auto& data = e["payload"]["nova_object.data"];
    EXPECT_EQ(data["host"], "rig-a");
    for (const auto& link : data["links"]) {
      EXPECT_EQ(link["source"], "rig-a");
      EXPECT_EQ(link["target"], "rig-b");
      EXPECT_EQ(link["capacity_bytes_per_s"], 125'000'000);
      if (link["rtt_us"].get<int64_t>() > 0) {
        max_rate = std::max(max_rate, link["rate_bytes_per_s"].get<uint64_t>());
      }
    }
  }
  EXPECT_GE(reports, 10) << "one per second while the test ran";
  EXPECT_GT(max_rate, 100'000u) << "an idle protected guest streams ~9 MB/s of epochs";

  for (const char* host : {"a", "b"}) {
    EXPECT_NE(novadt::testing::ReadFile(rig.dir() + "/" + host + "/agent/agent.log")
                  .find("(mutual TLS)"),
              std::string::npos)
        << "the agent on " << host << " did not serve the peer API with mutual TLS";
  }
  ASSERT_TRUE(rig.StopAgent("b").ok());
  ASSERT_TRUE(broker.Stop().ok());
  ASSERT_TRUE(rig.Down().ok());
  EXPECT_TRUE(rig.VerifyGone().ok());
}

}  // namespace
}  // namespace novadt
