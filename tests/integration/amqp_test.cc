// AmqpConnection (librabbitmq-c) against a real, private rabbitmq-server: logins and their
// failures, declare/bind/publish/consume/ack, dead-lettering, channel errors that leave the
// connection usable, heartbeats, TLS, and a broker restart with a durable queue.
//
// One broker (plain + TLS listeners) serves every test of this file; each test uses its own
// exchange and queue names.
#include "agent/bus/amqp.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "tests/support/rabbitmq_server.h"
#include "tests/support/test_util.h"

namespace novadt::bus {
namespace {

using novadt::testing::RabbitMqServer;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

class AmqpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RabbitMqServer::Options o;
    o.tls = true;
    server_ = new RabbitMqServer(o);
    start_status_ = new Status(server_->Start());
    if (start_status_->ok()) {
      std::printf("[ broker  ] %s started in %lld ms\n", server_->node_name().c_str(),
                  static_cast<long long>(server_->last_start_duration().count()));
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete start_status_;
    start_status_ = nullptr;
  }
  void SetUp() override {
    // A broker that cannot start fails every test; nothing is skipped.
    ASSERT_TRUE(start_status_->ok()) << *start_status_;
    if (!server_->running()) {
      ASSERT_TRUE(server_->Start().ok()) << "an earlier test left the broker stopped";
    }
  }

  static AmqpOptions Plain() {
    AmqpOptions o;
    o.host.hostname = "127.0.0.1";
    o.host.port = static_cast<uint16_t>(server_->port());
    o.host.username = "guest";
    o.host.password = "guest";
    o.connect_timeout = milliseconds(3000);
    return o;
  }

  static AmqpOptions Tls() {
    AmqpOptions o = Plain();
    o.host.hostname = "localhost";
    o.host.port = static_cast<uint16_t>(server_->tls_port());
    o.tls.enabled = true;
    o.tls.ca_file = server_->ca_file();
    return o;
  }

  static std::unique_ptr<AmqpConnection> MustOpen(const AmqpOptions& o) {
    StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // "<durable>\t<ready>\t<unacked>" of `queue` as the broker reports it, "" when absent.
  static std::string QueueRow(const std::string& queue) {
    std::string out;
    Status s = server_->Ctl({"list_queues", "--no-table-headers", "name", "durable",
                             "messages_ready", "messages_unacknowledged"},
                            &out);
    EXPECT_TRUE(s.ok()) << s;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(queue + "\t", 0) == 0) return line.substr(queue.size() + 1);
    }
    return "";
  }

  // Waits for the next delivery, failing the test on error or timeout.
  static std::optional<AmqpDelivery> Receive(AmqpConnection& c, milliseconds timeout = seconds(5)) {
    StatusOr<std::optional<AmqpDelivery>> d = c.Next(timeout);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return std::nullopt;
    EXPECT_TRUE(d->has_value()) << "no delivery within " << timeout.count() << " ms";
    return *d;
  }

  static RabbitMqServer* server_;
  static Status* start_status_;
};

RabbitMqServer* AmqpTest::server_ = nullptr;
Status* AmqpTest::start_status_ = nullptr;

TEST_F(AmqpTest, OpensAndLogsIn) {
  AmqpOptions o = Plain();
  o.connection_name = "nova-dt-agent:amqp-test";
  auto c = MustOpen(o);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->alive());
  EXPECT_EQ(c->options().host.port, server_->port());
  // The broker sees the connection under its name.
  std::string out;
  ASSERT_TRUE(server_->Ctl({"list_connections", "--no-table-headers", "user", "client_properties"},
                           &out)
                  .ok());
  EXPECT_NE(out.find("nova-dt-agent:amqp-test"), std::string::npos) << out;
}

TEST_F(AmqpTest, WrongPasswordIsPermissionDeniedWithoutThePassword) {
  AmqpOptions o = Plain();
  o.host.password = "Sup3r-s3cret-pw";
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied) << c.status();
  EXPECT_NE(c.status().message().find("403"), std::string::npos) << c.status();
  EXPECT_EQ(c.status().message().find("Sup3r-s3cret-pw"), std::string::npos) << c.status();
}

TEST_F(AmqpTest, UnknownVhostIsPermissionDenied) {
  AmqpOptions o = Plain();
  o.virtual_host = "no-such-vhost";
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied) << c.status();
  EXPECT_NE(c.status().message().find("no-such-vhost"), std::string::npos) << c.status();
}

TEST_F(AmqpTest, NothingListeningIsUnavailableQuickly) {
  AmqpOptions o = Plain();
  o.host.port = static_cast<uint16_t>(novadt::testing::FreeTcpPort());
  const auto t0 = Clock::now();
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
  EXPECT_NE(c.status().message().find("127.0.0.1:" + std::to_string(o.host.port)),
            std::string::npos)
      << c.status();
  EXPECT_LT(took, seconds(1));
}

TEST_F(AmqpTest, PublishConsumeAck) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->DeclareExchange("pca.ex", "topic", false, false).ok());
  StatusOr<std::string> q = c->DeclareQueue("pca.q", false, false, false);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(*q, "pca.q");
  ASSERT_TRUE(c->BindQueue("pca.q", "pca.ex", "dt_agent.*").ok());
  ASSERT_TRUE(c->SetPrefetch(10).ok());
  StatusOr<std::string> tag = c->Consume("pca.q");
  ASSERT_TRUE(tag.ok()) << tag.status();

  AmqpPublishProps props;
  props.message_id = "m-1";
  ASSERT_TRUE(c->Publish("pca.ex", "dt_agent.compute-1", R"({"oslo.version":"2.0"})", props).ok());
  ASSERT_TRUE(c->Publish("pca.ex", "other.key", "not routed here").ok());

  std::optional<AmqpDelivery> d = Receive(*c);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, R"({"oslo.version":"2.0"})");
  EXPECT_EQ(d->exchange, "pca.ex");
  EXPECT_EQ(d->routing_key, "dt_agent.compute-1");
  EXPECT_EQ(d->consumer_tag, *tag);
  EXPECT_EQ(d->content_type, "application/json");
  EXPECT_EQ(d->content_encoding, "utf-8");
  EXPECT_EQ(d->message_id, "m-1");
  EXPECT_TRUE(d->correlation_id.empty());
  EXPECT_FALSE(d->redelivered);
  EXPECT_EQ(QueueRow("pca.q"), "false\t0\t1");  // delivered, not yet acked
  ASSERT_TRUE(c->Ack(d->delivery_tag).ok());
  // The unroutable one never arrives; the ack empties the queue.
  StatusOr<std::optional<AmqpDelivery>> none = c->Next(milliseconds(200));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(QueueRow("pca.q"), "false\t0\t0");
}

TEST_F(AmqpTest, ServerNamedQueueAndUnsetProperties) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  StatusOr<std::string> q = c->DeclareQueue("", false, true, true, {{"x-expires", int64_t{60000}}});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->rfind("amq.gen-", 0), 0u) << *q;
  ASSERT_TRUE(c->Consume(*q, /*auto_ack=*/true).ok());
  AmqpPublishProps bare;
  bare.content_type.clear();
  bare.content_encoding.clear();
  ASSERT_TRUE(c->Publish("", *q, "plain", bare).ok());
  std::optional<AmqpDelivery> d = Receive(*c);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, "plain");
  EXPECT_EQ(d->exchange, "");
  EXPECT_TRUE(d->content_type.empty());
  EXPECT_TRUE(d->content_encoding.empty());
  EXPECT_TRUE(d->message_id.empty());
}

TEST_F(AmqpTest, RejectWithoutRequeueDeadLetters) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->DeclareExchange("dlx.ex", "fanout", false, false).ok());
  ASSERT_TRUE(c->DeclareQueue("dlx.dead", false, false, false).ok());
  ASSERT_TRUE(c->BindQueue("dlx.dead", "dlx.ex", "").ok());
  StatusOr<std::string> work =
      c->DeclareQueue("dlx.work", false, false, false,
                      {{"x-dead-letter-exchange", std::string("dlx.ex")},
                       {"x-message-ttl", int64_t{600000}},
                       {"x-queue-type", std::string("classic")}});
  ASSERT_TRUE(work.ok()) << work.status();
  ASSERT_TRUE(c->Consume("dlx.work").ok());
  ASSERT_TRUE(c->Publish("", "dlx.work", "poison").ok());
  std::optional<AmqpDelivery> d = Receive(*c);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->routing_key, "dlx.work");
  ASSERT_TRUE(c->Reject(d->delivery_tag, /*requeue=*/false).ok());

  StatusOr<std::string> dead_tag = c->Consume("dlx.dead");
  ASSERT_TRUE(dead_tag.ok()) << dead_tag.status();
  std::optional<AmqpDelivery> dead = Receive(*c);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->body, "poison");
  EXPECT_EQ(dead->consumer_tag, *dead_tag);
  EXPECT_EQ(dead->exchange, "dlx.ex");
  EXPECT_EQ(dead->routing_key, "dlx.work");  // dead-lettering keeps the original key
  ASSERT_TRUE(c->Ack(dead->delivery_tag).ok());
  EXPECT_EQ(QueueRow("dlx.work"), "false\t0\t0");
}

TEST_F(AmqpTest, ChannelErrorIsReportedAndTheConnectionStaysUsable) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->DeclareExchange("ch.ex", "topic", /*durable=*/true, false).ok());
  ASSERT_TRUE(c->DeclareQueue("ch.q", false, false, false).ok());
  ASSERT_TRUE(c->BindQueue("ch.q", "ch.ex", "k").ok());
  ASSERT_TRUE(c->Consume("ch.q").ok());
  ASSERT_TRUE(c->Publish("ch.ex", "k", "first").ok());
  std::optional<AmqpDelivery> first = Receive(*c);
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->redelivered);

  // Same name, different durable flag: the broker closes the channel with 406.
  Status s = c->DeclareExchange("ch.ex", "topic", /*durable=*/false, false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("406"), std::string::npos) << s;
  EXPECT_NE(s.message().find("exchange.declare ch.ex"), std::string::npos) << s;
  EXPECT_TRUE(c->alive());

  // The channel was reopened: new declarations work...
  EXPECT_TRUE(c->DeclareExchange("ch.other", "direct", false, true).ok());
  // ...the unacked delivery went back to the queue and its old tag is refused...
  Status stale = c->Ack(first->delivery_tag);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  // ...and the consumer was restored, so it comes again, marked redelivered.
  std::optional<AmqpDelivery> again = Receive(*c);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body, "first");
  EXPECT_TRUE(again->redelivered);
  EXPECT_NE(again->delivery_tag, first->delivery_tag);
  ASSERT_TRUE(c->Ack(again->delivery_tag).ok());
  ASSERT_TRUE(c->Publish("ch.ex", "k", "second").ok());
  std::optional<AmqpDelivery> second = Receive(*c);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->body, "second");
  ASSERT_TRUE(c->Ack(second->delivery_tag).ok());
  EXPECT_EQ(QueueRow("ch.q"), "false\t0\t0");

  // A 404 (passive declare of a missing exchange) is NotFound, and recovers the same way.
  Status missing = c->DeclareExchange("ch.missing", "topic", false, false, /*passive=*/true);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_TRUE(c->DeclareQueue("ch.q2", false, false, true).ok());
}

TEST_F(AmqpTest, PublishToMissingExchangeSurfacesInNext) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Publish("no-such-exchange", "k", "lost").ok());  // asynchronous
  StatusOr<std::optional<AmqpDelivery>> d = c->Next(seconds(5));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound) << d.status();
  EXPECT_NE(d.status().message().find("no-such-exchange"), std::string::npos) << d.status();
  EXPECT_TRUE(c->alive());
  EXPECT_TRUE(c->DeclareQueue("pme.q", false, false, true).ok());
}

TEST_F(AmqpTest, DeletedQueueCancelsTheConsumerLoudly) {
  auto c = MustOpen(Plain());
  auto other = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(c->DeclareQueue("dq.q", false, false, false).ok());
  StatusOr<std::string> tag = c->Consume("dq.q");
  ASSERT_TRUE(tag.ok()) << tag.status();
  ASSERT_TRUE(other->DeleteQueue("dq.q").ok());
  StatusOr<std::optional<AmqpDelivery>> d = c->Next(seconds(5));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kAborted) << d.status();
  EXPECT_NE(d.status().message().find("dq.q"), std::string::npos) << d.status();
  EXPECT_NE(d.status().message().find(*tag), std::string::npos) << d.status();
  EXPECT_TRUE(c->alive());
  EXPECT_TRUE(c->DeclareQueue("dq.q", false, false, true).ok());
}

TEST_F(AmqpTest, MandatoryUnroutableIsReturnedNotDelivered) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  AmqpPublishProps props;
  props.mandatory = true;
  ASSERT_TRUE(c->Publish("", "reply_nobody_listens", "{}", props).ok());
  // basic.return is logged and swallowed; Next keeps waiting and reports no delivery.
  StatusOr<std::optional<AmqpDelivery>> d = c->Next(milliseconds(500));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->has_value());
  EXPECT_TRUE(c->alive());
  EXPECT_TRUE(c->DeclareQueue("mur.q", false, false, true).ok());
}

TEST_F(AmqpTest, NextTimesOutWithNullopt) {
  auto c = MustOpen(Plain());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->DeclareQueue("nto.q", false, false, true).ok());
  ASSERT_TRUE(c->Consume("nto.q").ok());
  const auto t0 = Clock::now();
  StatusOr<std::optional<AmqpDelivery>> d = c->Next(milliseconds(300));
  const auto took = Clock::now() - t0;
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->has_value());
  EXPECT_GE(took, milliseconds(280));
  EXPECT_LT(took, milliseconds(1000));
}

TEST_F(AmqpTest, HeartbeatsKeepAnIdleConnectionAlive) {
  AmqpOptions o = Plain();
  o.heartbeat = seconds(2);
  o.connection_name = "hb-serviced";
  auto c = MustOpen(o);
  ASSERT_NE(c, nullptr);
  // The counter-check: a second connection that nobody services misses its heartbeats.
  o.connection_name = "hb-neglected";
  auto neglected = MustOpen(o);
  ASSERT_NE(neglected, nullptr);
  auto connections = [] {
    std::string out;
    EXPECT_TRUE(server_->Ctl({"list_connections", "--no-table-headers", "timeout",
                              "client_properties"},
                             &out)
                    .ok());
    return out;
  };
  const std::string before = connections();
  EXPECT_EQ(before.rfind("2\t", 0), 0u) << "negotiated heartbeat: " << before;
  EXPECT_NE(before.find("hb-neglected"), std::string::npos) << before;

  ASSERT_TRUE(c->DeclareQueue("hb.q", false, false, true).ok());
  ASSERT_TRUE(c->Consume("hb.q").ok());
  const auto until = Clock::now() + seconds(7);
  while (Clock::now() < until) {
    StatusOr<std::optional<AmqpDelivery>> d = c->Next(milliseconds(500));
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_FALSE(d->has_value());
  }
  ASSERT_TRUE(c->alive());
  ASSERT_TRUE(c->Publish("", "hb.q", "still here").ok());
  std::optional<AmqpDelivery> d = Receive(*c);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, "still here");

  // The broker dropped the neglected one (missed heartbeats), and it finds out on its next call.
  const std::string after = connections();
  EXPECT_NE(after.find("hb-serviced"), std::string::npos) << after;
  EXPECT_EQ(after.find("hb-neglected"), std::string::npos) << after;
  StatusOr<std::optional<AmqpDelivery>> lost = neglected->Next(milliseconds(2000));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable) << lost.status();
  EXPECT_FALSE(neglected->alive());
}

TEST_F(AmqpTest, TlsWithTheRightCa) {
  auto c = MustOpen(Tls());
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->DeclareQueue("tls.q", false, false, true).ok());
  ASSERT_TRUE(c->Consume("tls.q", true).ok());
  ASSERT_TRUE(c->Publish("", "tls.q", "over tls").ok());
  std::optional<AmqpDelivery> d = Receive(*c);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, "over tls");
}

TEST_F(AmqpTest, TlsWithAClientCertificate) {
  AmqpOptions o = Tls();
  o.tls.cert_file = server_->client_cert_file();
  o.tls.key_file = server_->client_key_file();
  auto c = MustOpen(o);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->alive());
  std::string out;
  ASSERT_TRUE(
      server_->Ctl({"list_connections", "--no-table-headers", "ssl", "peer_cert_subject"}, &out)
          .ok());
  EXPECT_NE(out.find("nova-dt-test-client"), std::string::npos) << out;
}

TEST_F(AmqpTest, TlsWithTheWrongCaFailsClearly) {
  AmqpOptions o = Tls();
  o.tls.ca_file = server_->other_ca_file();
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
  EXPECT_NE(c.status().message().find("TLS connect localhost:" +
                                      std::to_string(server_->tls_port())),
            std::string::npos)
      << c.status();
  EXPECT_NE(c.status().message().find("verif"), std::string::npos) << c.status();
}

TEST_F(AmqpTest, TlsChecksTheHostName) {
  // The certificate names DNS:localhost and IP:127.0.0.1, but rabbitmq-c 0.11 matches DNS names
  // only: dialing the IP literal fails verification, as would any name not in the certificate.
  AmqpOptions o = Tls();
  o.host.hostname = "127.0.0.1";
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
  EXPECT_NE(c.status().message().find("hostname"), std::string::npos) << c.status();
  o.tls.verify_hostname = false;
  auto unchecked = MustOpen(o);
  EXPECT_NE(unchecked, nullptr);
}

TEST_F(AmqpTest, UnusableTlsFilesAreInvalidArgument) {
  AmqpOptions o = Tls();
  o.tls.ca_file = server_->dir() + "/no-such-ca.pem";
  StatusOr<std::unique_ptr<AmqpConnection>> c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();

  o = Tls();
  o.tls.cert_file = server_->client_cert_file();  // key missing
  c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();

  o.tls.key_file = server_->ca_file();  // not a key
  c = AmqpConnection::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
}

// Last: it restarts and then kills the shared broker.
TEST_F(AmqpTest, BrokerRestartAndKillKeepPersistentMessagesOnDurableQueues) {
  auto producer = MustOpen(Plain());
  ASSERT_NE(producer, nullptr);
  ASSERT_TRUE(producer->DeclareExchange("rs.ex", "topic", true, false).ok());
  ASSERT_TRUE(producer->DeclareQueue("rs.durable", true, false, false).ok());
  ASSERT_TRUE(producer->BindQueue("rs.durable", "rs.ex", "dt_agent").ok());
  AmqpPublishProps persistent;
  persistent.persistent = true;
  persistent.message_id = "keep";
  ASSERT_TRUE(producer->Publish("rs.ex", "dt_agent", "keep me", persistent).ok());
  AmqpPublishProps transient;
  transient.message_id = "lose";
  ASSERT_TRUE(producer->Publish("rs.ex", "dt_agent", "lose me", transient).ok());

  auto consumer = MustOpen(Plain());
  ASSERT_NE(consumer, nullptr);
  ASSERT_TRUE(consumer->DeclareQueue("rs.watch", false, false, false).ok());
  ASSERT_TRUE(consumer->Consume("rs.watch").ok());
  StatusOr<std::optional<AmqpDelivery>> idle = consumer->Next(milliseconds(100));
  ASSERT_TRUE(idle.ok()) << idle.status();
  ASSERT_TRUE(novadt::testing::WaitFor(
      [] { return QueueRow("rs.durable") == "true\t2\t0"; }, seconds(5)))
      << QueueRow("rs.durable");

  const auto t0 = Clock::now();
  ASSERT_TRUE(server_->Restart().ok()) << server_->LogTail();
  std::printf("[ broker  ] restart took %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count()));

  StatusOr<std::optional<AmqpDelivery>> lost = consumer->Next(seconds(5));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable) << lost.status();
  EXPECT_FALSE(consumer->alive());
  Status after = consumer->DeclareQueue("rs.other", false, false, true).status();
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable) << after;

  auto fresh = MustOpen(Plain());
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(QueueRow("rs.watch"), "");  // transient queue gone
  ASSERT_TRUE(fresh->Consume("rs.durable").ok());
  std::optional<AmqpDelivery> d = Receive(*fresh);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->body, "keep me");
  EXPECT_EQ(d->message_id, "keep");
  ASSERT_TRUE(fresh->Ack(d->delivery_tag).ok());
  StatusOr<std::optional<AmqpDelivery>> more = fresh->Next(milliseconds(500));
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_FALSE(more->has_value()) << "a transient message survived: " << (*more)->body;

  // Abrupt loss: no connection.close, just a dead socket, noticed at once. (Without publisher
  // confirms a SIGKILL may lose recent persistent messages and acks, so only the queue is
  // checked afterwards.)
  server_->Kill();
  const auto t1 = Clock::now();
  StatusOr<std::optional<AmqpDelivery>> killed = fresh->Next(seconds(5));
  ASSERT_FALSE(killed.ok());
  EXPECT_EQ(killed.status().code(), absl::StatusCode::kUnavailable) << killed.status();
  EXPECT_LT(Clock::now() - t1, seconds(1));
  EXPECT_FALSE(fresh->alive());
  ASSERT_TRUE(server_->Start().ok()) << server_->LogTail();
  EXPECT_EQ(QueueRow("rs.durable").rfind("true\t", 0), 0u) << QueueRow("rs.durable");
  auto last = MustOpen(Plain());
  ASSERT_NE(last, nullptr);
  EXPECT_TRUE(last->DeclareQueue("rs.durable", true, false, false).ok());
}

}  // namespace
}  // namespace novadt::bus
