// End to end on the two-host rig with a RabbitMQ broker in the rig's switch namespace, reachable
// from both hosts: Nova (the real oslo.messaging Notifier, with a payload made by nova's own
// notification objects) announces a new DT server on host a; the agent on a protects it to its
// default backup b by itself; host a dies; b fails the server over. Everything the agents
// announced on exchange nova_dt is read back from the broker: protect.start and protect.end from
// a, failover.start and failover.end from b, in that order, with the facts of the pair.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <sstream>

#include "nova_dt/v1/control.grpc.pb.h"
#include "tests/support/rabbitmq_server.h"
#include "tests/support/rig.h"
#include "tests/support/test_util.h"

namespace novadt {
namespace {

using novadt::testing::RabbitMqServer;
using novadt::testing::Rig;
using novadt::testing::WaitFor;
using std::chrono::seconds;

constexpr char kGuestUuid[] = "3f2e1d0c-9b8a-4765-8432-10fedcba9876";
const std::string kSupport = std::string(NOVA_DT_SOURCE_DIR) + "/tests/support/";

std::optional<nova_dt::v1::AgentStatus> Status(const Rig& rig, const std::string& host) {
  auto stub = nova_dt::v1::Control::NewStub(
      grpc::CreateChannel(rig.AgentControlAddress(host), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
  nova_dt::v1::AgentStatus s;
  if (!stub->Status(&ctx, {}, &s).ok()) return std::nullopt;
  return s;
}

std::optional<nova_dt::v1::ProtectedServer> Server(const Rig& rig, const std::string& host) {
  auto s = Status(rig, host);
  if (!s) return std::nullopt;
  for (const auto& v : s->protected_servers()) {
    if (v.instance_uuid() == kGuestUuid) return v;
  }
  return std::nullopt;
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
  const std::vector<std::string> bus = {"DEFAULT.transport_url=" + url,
                                        "oslo_messaging_notifications.driver=messagingv2"};
  std::vector<std::string> on_a = bus;
  on_a.push_back("replication.default_backup_host=rig-b");
  ASSERT_TRUE(rig.StartAgent("a", on_a).ok());
  ASSERT_TRUE(rig.StartAgent("b", bus).ok());
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

  // Nova: the server was created on rig-a with a DT flavor.
  std::string out;
  ASSERT_EQ(in_net({"/usr/bin/python3", kSupport + "nova_emit.py", url, "instance.create.end",
                    kGuestUuid, "rig-a", "--state", "active", "--spec", "dt:enabled=true"},
                   &out),
            0)
      << out;
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
  std::vector<std::string> seen;
  for (const auto& e : events) {
    const auto& data = e["payload"]["nova_object.data"];
    if (data.value("instance_uuid", "") != kGuestUuid) continue;
    seen.push_back(e["event_type"].get<std::string>() + "@" +
                   e["publisher_id"].get<std::string>());
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
  }
  // Info and error priorities are separate queues: compare per agent, in order.
  auto from = [&](const std::string& publisher) {
    std::vector<std::string> r;
    for (const auto& s : seen) {
      if (s.ends_with("@" + publisher)) r.push_back(s.substr(0, s.find('@')));
    }
    return r;
  };
  EXPECT_EQ(from("nova-dt-agent:rig-a"),
            (std::vector<std::string>{"dt.pair.protect.start", "dt.pair.protect.end"}));
  auto b_events = from("nova-dt-agent:rig-b");
  std::sort(b_events.begin(), b_events.end());
  EXPECT_EQ(b_events,
            (std::vector<std::string>{"dt.pair.failover.end", "dt.pair.failover.start"}));

  ASSERT_TRUE(rig.StopAgent("b").ok());
  ASSERT_TRUE(broker.Stop().ok());
  ASSERT_TRUE(rig.Down().ok());
  EXPECT_TRUE(rig.VerifyGone().ok());
}

}  // namespace
}  // namespace novadt
