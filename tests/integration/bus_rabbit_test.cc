// The bus components on a private rabbitmq-server: the RPC server's keep-alive replies (seen on
// the wire, and by the real oslo.messaging client's call monitor), failures and reconnects; the
// notifier keeping notifications through a broker outage; the consumer moving to the next host
// of the transport URL.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "agent/bus/amqp.h"
#include "agent/bus/notification_consumer.h"
#include "agent/bus/notifier.h"
#include "agent/bus/rpc_server.h"
#include "tests/support/rabbitmq_server.h"
#include "tests/support/test_util.h"

namespace novadt::bus {
namespace {

using novadt::testing::RabbitMqServer;
using novadt::testing::WaitFor;
using std::chrono::milliseconds;
using std::chrono::seconds;

BusTransport TransportTo(int port) {
  BusTransport t;
  t.hosts = {{"127.0.0.1", static_cast<uint16_t>(port), "guest", "guest"}};
  t.heartbeat = seconds(10);
  t.retry_interval = milliseconds(200);
  t.retry_backoff = milliseconds(200);
  t.interval_max = milliseconds(1000);
  return t;
}

std::unique_ptr<AmqpConnection> Connect(int port) {
  AmqpOptions o;
  o.host = {"127.0.0.1", static_cast<uint16_t>(port), "guest", "guest"};
  auto c = AmqpConnection::Open(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

class BusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new RabbitMqServer();
    start_status_ = new absl::Status(server_->Start());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete start_status_;
  }
  void SetUp() override { ASSERT_TRUE(start_status_->ok()) << *start_status_; }

  std::unique_ptr<RpcServer> StartRpc(const std::string& topic) {
    RpcServerOptions o;
    o.transport = TransportTo(server_->port());
    o.connection_name = "bus_test";
    o.topic = topic;
    o.server = "h1";
    std::map<std::string, RpcMethod> methods;
    methods["echo"] = [](const Json& args) -> StatusOr<Json> { return args; };
    methods["sleep"] = [](const Json& args) -> StatusOr<Json> {
      std::this_thread::sleep_for(milliseconds(args.value("ms", 0)));
      return Json{{"slept_ms", args.value("ms", 0)}};
    };
    methods["missing"] = [](const Json&) -> StatusOr<Json> {
      return absl::NotFoundError("no such server");
    };
    auto rpc = std::make_unique<RpcServer>(std::move(o), std::move(methods));
    rpc->Start();
    EXPECT_TRUE(WaitFor([&] { return rpc->connected(); }, seconds(10)));
    return rpc;
  }

  static RabbitMqServer* server_;
  static absl::Status* start_status_;
};
RabbitMqServer* BusTest::server_ = nullptr;
absl::Status* BusTest::start_status_ = nullptr;

// What a caller's reply queue receives for one call, in order.
std::vector<Json> CallRaw(AmqpConnection& c, const std::string& exchange,
                          const std::string& routing_key, Json request, milliseconds wait) {
  auto q = c.DeclareQueue("", false, true, true);
  EXPECT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(c.Consume(*q, /*auto_ack=*/true).ok());
  request["_msg_id"] = NewUniqueId();
  request["_reply_q"] = *q;
  request["_unique_id"] = NewUniqueId();
  EXPECT_TRUE(c.Publish(exchange, routing_key, EncodeOsloBody(request)).ok());
  std::vector<Json> replies;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    auto d = c.Next(milliseconds(100));
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) break;
    if (!*d) continue;
    auto m = DecodeOsloBody((*d)->body);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) break;
    EXPECT_EQ((*m)["_msg_id"], request["_msg_id"]);
    replies.push_back(*m);
    if ((*m)["ending"] == true) break;
  }
  return replies;
}

TEST_F(BusTest, SlowCallGetsKeepAlivesEveryHalfTimeoutThenTheResult) {
  auto rpc = StartRpc("kt1");
  auto c = Connect(server_->port());
  ASSERT_TRUE(c);
  auto replies = CallRaw(*c, "nova_dt", "kt1.h1",
                         {{"method", "sleep"}, {"args", {{"ms", 3300}}}, {"version", "1.0"},
                          {"_timeout", 2}},
                         seconds(10));
  ASSERT_GE(replies.size(), 2u);
  const Json& last = replies.back();
  EXPECT_EQ(last["ending"], true);
  EXPECT_EQ(last["result"]["slept_ms"], 3300);
  EXPECT_TRUE(last["failure"].is_null());
  // As oslo: one keep-alive every int(_timeout) / 2 s, so three in 3.3 s (allow one either way
  // for scheduling). A _timeout below 2 gets none, as from oslo's own server.
  const size_t keepalives = replies.size() - 1;
  EXPECT_GE(keepalives, 2u);
  EXPECT_LE(keepalives, 4u);
  for (size_t i = 0; i + 1 < replies.size(); ++i) {
    EXPECT_EQ(replies[i]["ending"], false);
    EXPECT_TRUE(replies[i]["result"].is_null());
    EXPECT_TRUE(replies[i]["failure"].is_null());
  }
  EXPECT_GE(rpc->counters().keepalives, 2u);

  // Without _timeout: no keep-alive, one reply.
  replies = CallRaw(*c, "nova_dt", "kt1.h1",
                    {{"method", "sleep"}, {"args", {{"ms", 1200}}}, {"version", "1.0"}},
                    seconds(10));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]["ending"], true);
}

TEST_F(BusTest, RealOsloClientCallMonitorIsSatisfiedByKeepAlives) {
  auto rpc = StartRpc("kt2");
  // oslo raises MessagingTimeout when no keep-alive arrives within call_monitor_timeout (2 s),
  // so a 4.5 s call only succeeds with them.
  const std::string script =
      "import sys, oslo_messaging\n"
      "from oslo_config import cfg\n"
      "cfg.CONF([], project='bus_test')\n"
      "t = oslo_messaging.get_rpc_transport(cfg.CONF, url=sys.argv[1])\n"
      "c = oslo_messaging.get_rpc_client(t, oslo_messaging.Target(exchange='nova_dt', "
      "topic='kt2', server='h1', version='1.0'), timeout=30, call_monitor_timeout=2)\n"
      "print('RESULT', c.call({}, 'sleep', ms=4500))\n"
      "try:\n"
      "    c.call({}, 'missing')\n"
      "except oslo_messaging.RemoteError as e:\n"
      "    print('ERROR', e.exc_type, e.value)\n"
      // Control: with call_monitor_timeout=1 a server sends no keep-alives (as oslo's own: an
      // interval below 1 s is refused), so the monitor must give up long before the 30 s.
      "m = c.prepare(call_monitor_timeout=1)\n"
      "try:\n"
      "    m.call({}, 'sleep', ms=4500)\n"
      "except oslo_messaging.MessagingTimeout:\n"
      "    print('MONITOR TIMEOUT')\n"
      "t.cleanup()\n";
  std::string out;
  const int rc = novadt::testing::RunCommand({"/usr/bin/python3", "-c", script, server_->url()},
                                             &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("RESULT {'slept_ms': 4500}"), std::string::npos) << out;
  EXPECT_NE(out.find("ERROR ServerNotFound no such server"), std::string::npos) << out;
  EXPECT_NE(out.find("MONITOR TIMEOUT"), std::string::npos) << out;
  EXPECT_GE(rpc->counters().keepalives, 3u);
  EXPECT_EQ(rpc->counters().failures, 1u);
}

TEST_F(BusTest, MalformedCallWithAReplyQueueGetsAFailure) {
  auto rpc = StartRpc("kt3");
  auto c = Connect(server_->port());
  ASSERT_TRUE(c);
  // "method" is not a string: refused, and the caller learns why instead of timing out.
  auto replies = CallRaw(*c, "nova_dt", "kt3", {{"method", 7}, {"version", "1.0"}}, seconds(5));
  ASSERT_EQ(replies.size(), 1u);
  ASSERT_TRUE(replies[0]["failure"].is_string());
  auto failure = Json::parse(replies[0]["failure"].get<std::string>());
  EXPECT_EQ(failure["class"], "ValueError");
  EXPECT_EQ(failure["module"], "builtins");
  EXPECT_EQ(rpc->counters().malformed, 1u);
}

TEST_F(BusTest, NotifierKeepsNotificationsThroughABrokerOutage) {
  NotifierOptions o;
  o.transport = TransportTo(server_->port());
  o.connection_name = "bus_test:notifier";
  o.exchange = "nt_exchange";
  o.topics = {"nt"};
  o.publisher_id = "nova-dt-agent:h1";
  o.durable = true;
  Notifier notifier(o);
  notifier.Start();
  ASSERT_TRUE(WaitFor([&] { return notifier.connected(); }, seconds(10)));
  core::PairEvent e;
  e.event_type = "dt.pair.protect.start";
  e.instance_uuid = "u-1";
  notifier.Publish(e);
  ASSERT_TRUE(WaitFor([&] { return notifier.counters().published == 1; }, seconds(5)));

  ASSERT_TRUE(server_->Stop().ok());
  ASSERT_TRUE(WaitFor([&] { return !notifier.connected(); }, seconds(10)));
  for (int i = 2; i <= 4; ++i) {
    e.instance_uuid = "u-" + std::to_string(i);
    notifier.Publish(e);
  }
  EXPECT_EQ(notifier.counters().queued, 3u);
  ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  ASSERT_TRUE(WaitFor([&] { return notifier.counters().published == 4; }, seconds(20)));
  EXPECT_EQ(notifier.counters().queued, 0u);
  EXPECT_GE(notifier.reconnects(), 1u);

  // All four wait in the default queue "nt.info", in order, in oslo's envelope.
  auto c = Connect(server_->port());
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Consume("nt.info").ok());
  std::vector<std::string> uuids;
  while (uuids.size() < 4) {
    auto d = c->Next(seconds(5));
    ASSERT_TRUE(d.ok() && d->has_value()) << "only " << uuids.size() << " notifications";
    auto m = DecodeOsloBody((*d)->body);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)["event_type"], "dt.pair.protect.start");
    EXPECT_EQ((*m)["publisher_id"], "nova-dt-agent:h1");
    EXPECT_EQ((*m)["payload"]["nova_object.name"], "DTPairPayload");
    uuids.push_back((*m)["payload"]["nova_object.data"]["instance_uuid"]);
    ASSERT_TRUE(c->Ack((*d)->delivery_tag).ok());
  }
  EXPECT_EQ(uuids, (std::vector<std::string>{"u-1", "u-2", "u-3", "u-4"}));
}

TEST_F(BusTest, ConsumerSkipsADeadHostOfTheTransportUrl) {
  NotificationConsumerOptions o;
  o.transport = TransportTo(server_->port());
  // First a host where nothing listens, then the broker.
  o.transport.hosts.insert(o.transport.hosts.begin(),
                           config::TransportHost{"127.0.0.1",
                                                 static_cast<uint16_t>(
                                                     novadt::testing::FreeTcpPort()),
                                                 "guest", "guest"});
  o.connection_name = "bus_test:consumer";
  o.exchange = "nova_ct";
  o.queue = "ct_queue";
  {
    // Nova's exchange exists (Nova made it): the consumer only checks that.
    auto nova = Connect(server_->port());
    ASSERT_TRUE(nova);
    ASSERT_TRUE(nova->DeclareExchange("nova_ct", "topic", false, false).ok());
  }
  std::atomic<int> handled{0};
  NotificationConsumer consumer(o, [&](const NovaEvent&) {
    ++handled;
    return HandleResult::kDone;
  });
  consumer.Start();
  ASSERT_TRUE(WaitFor([&] { return consumer.connected(); }, seconds(10)));
  auto c = Connect(server_->port());
  ASSERT_TRUE(c);
  const Json note = NotificationMessage("nova-compute:h1", "instance.create.end", "INFO",
                                        {{"nova_object.data", {{"uuid", "u"}, {"host", "h1"}}}});
  ASSERT_TRUE(c->Publish("nova_ct", "versioned_notifications.info", EncodeOsloBody(note)).ok());
  ASSERT_TRUE(
      c->Publish("nova_ct", "versioned_notifications.error", EncodeOsloBody(note)).ok());
  EXPECT_TRUE(WaitFor([&] { return handled == 2; }, seconds(10)));
  EXPECT_EQ(consumer.counters().malformed, 0u);
}

// Nova's exchange is Nova's: the consumer declares it passively. Until Nova has made it, the
// consumer stays disconnected with a clear error, retries, and never creates it; once it exists
// it connects, whatever durability Nova gave it (an active declare with other flags would fail
// with 406 PRECONDITION_FAILED), and consumes.
TEST_F(BusTest, ConsumerWaitsForNovasExchangeAndNeverCreatesIt) {
  NotificationConsumerOptions o;
  o.transport = TransportTo(server_->port());
  o.connection_name = "bus_test:passive";
  o.exchange = "nova_passive";
  o.queue = "passive_queue";
  o.durable = false;
  std::atomic<int> handled{0};
  NotificationConsumer consumer(o, [&](const NovaEvent&) {
    ++handled;
    return HandleResult::kDone;
  });
  consumer.Start();
  ASSERT_TRUE(WaitFor(
      [&] {
        return consumer.last_error().find("Nova's exchange 'nova_passive' does not exist yet") !=
               std::string::npos;
      },
      seconds(10)))
      << consumer.last_error();
  EXPECT_THAT(consumer.last_error(), ::testing::HasSubstr("404 NOT_FOUND"));
  // Several attempts (200 ms, then 400 ms, ... back-off), none of them connected or created it.
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_FALSE(consumer.connected());
  auto nova = Connect(server_->port());
  ASSERT_TRUE(nova);
  Status missing = nova->DeclareExchange("nova_passive", "topic", false, false, /*passive=*/true);
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  std::string queues;
  ASSERT_TRUE(server_->Ctl({"list_queues", "--no-table-headers", "name"}, &queues).ok());
  EXPECT_EQ(queues.find("passive_queue"), std::string::npos) << queues;

  // Nova makes its exchange, durable although the agent's own queue is not.
  ASSERT_TRUE(nova->DeclareExchange("nova_passive", "topic", /*durable=*/true, false).ok());
  ASSERT_TRUE(WaitFor([&] { return consumer.connected(); }, seconds(10))) << consumer.last_error();
  EXPECT_EQ(consumer.last_error(), "");
  EXPECT_EQ(consumer.reconnects(), 0u) << "the first successful connection";
  const Json note = NotificationMessage("nova-compute:h1", "instance.create.end", "INFO",
                                        {{"nova_object.data", {{"uuid", "u"}, {"host", "h1"}}}});
  ASSERT_TRUE(
      nova->Publish("nova_passive", "versioned_notifications.info", EncodeOsloBody(note)).ok());
  EXPECT_TRUE(WaitFor([&] { return handled == 1; }, seconds(10)));
  std::string exchanges;
  ASSERT_TRUE(
      server_->Ctl({"list_exchanges", "--no-table-headers", "name", "durable"}, &exchanges).ok());
  EXPECT_NE(exchanges.find("nova_passive\ttrue"), std::string::npos)
      << "Nova's exchange as Nova made it:\n"
      << exchanges;
}

}  // namespace
}  // namespace novadt::bus
