"""nova-dt-agent on a real RabbitMQ, driven by the real oslo.messaging (Debian python3-oslo.messaging).

A private rabbitmq-server (tests/support/rabbitmq.py) and one agent whose hypervisor is libvirt's
test:///default driver. Python plays Nova and the nova-dt controller: it calls and casts the
agent's RPC API (topic nova_dt_agent), emits Nova-shaped versioned notifications with oslo's own
Notifier (payloads from the samples generated with nova's notification objects,
tests/unit/bus/samples), publishes malformed bodies with kombu, and listens to the agent's
dt.pair.* notifications. What the agent did is read from its status (RPC `status`).
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
import uuid

import kombu
import oslo_messaging
import oslo_messaging.opts
from oslo_config import cfg

SRC = os.environ.get("NOVA_DT_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
BUILD = os.environ.get("NOVA_DT_BUILD", os.path.join(SRC, "build"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))
sys.path.insert(0, os.path.join(SRC, "nova-integration"))

import nova_dt.exception  # noqa: E402  (allowed_remote_exmods)
from nova_dt_agent import AgentClassTestCase, AgentProcess, bus_test_config  # noqa: E402
from nova_emit import declare_nova_exchange  # noqa: E402
from nova_payloads import instance_payload  # noqa: E402
from rabbitmq import RabbitMQ  # noqa: E402

HOST = "dt-bus-a"
BACKUP = "dt-bus-b"
# The running domain of libvirt's test driver.
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
SAMPLES = os.path.join(SRC, "tests", "unit", "bus", "samples")


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


class BusTestBase(AgentClassTestCase):
    agent_extra = ""
    durable = False  # [oslo_messaging_rabbit] amqp_durable_queues, on both sides

    @classmethod
    def _set_up(cls):
        cls.workdir = tempfile.mkdtemp(prefix="nova-dt-bus-test.")
        cls.rabbit = RabbitMQ()
        cls.rabbit.start()
        # Nova runs already: its exchange exists (the agent only checks that it does).
        declare_nova_exchange(cls.rabbit.url, durable=cls.durable)
        cls.agent = AgentProcess(BUILD, cls.workdir,
                                 bus_test_config(HOST, cls.rabbit.url, BACKUP, cls.agent_extra))
        # Nova's side: control exchange "nova" (Nova's), RPC to the agent on "nova_dt".
        # The global CONF, as in a service: oslo.messaging registers some options only there.
        cls.conf = cfg.CONF
        if not getattr(cfg.CONF, "_nova_dt_parsed", False):
            cfg.CONF([], project="nova-dt-bus-test")
            cfg.CONF._nova_dt_parsed = True
            for group, opts in oslo_messaging.opts.list_opts():
                if group == "oslo_messaging_rabbit":
                    cfg.CONF.register_opts(opts, group=group)
        cfg.CONF.set_override("amqp_durable_queues", cls.durable, group="oslo_messaging_rabbit")
        oslo_messaging.set_transport_defaults("nova")
        cls.transport = oslo_messaging.get_rpc_transport(cls.conf, url=cls.rabbit.url)
        cls.notification_transport = oslo_messaging.get_notification_transport(
            cls.conf, url=cls.rabbit.url)
        cls.target = oslo_messaging.Target(exchange="nova_dt", topic="nova_dt_agent",
                                           version="1.0")
        cls.client = oslo_messaging.get_rpc_client(cls.transport, cls.target, timeout=10)
        cls.nova = oslo_messaging.Notifier(cls.notification_transport,
                                           publisher_id="nova-compute:" + HOST,
                                           driver="messagingv2",
                                           topics=["versioned_notifications"])
        wait_for(lambda: cls.status_quiet()["bus"]["nova_notifications"]["connected"] and
                 cls.status_quiet()["bus"]["notifier"]["connected"], 30, "the agent's bus")

    @classmethod
    def status_quiet(cls):
        try:
            return cls.client.prepare(server=HOST, timeout=2).call({}, "status")
        except oslo_messaging.MessagingTimeout:
            return {"bus": {"nova_notifications": {"connected": False},
                            "notifier": {"connected": False}}}

    @classmethod
    def tearDownClass(cls):
        for closer in ("transport", "notification_transport"):
            t = getattr(cls, closer, None)
            if t:
                t.cleanup()
        if getattr(cls, "agent", None):
            cls.agent_rc = cls.agent.stop()
        if getattr(cls, "rabbit", None):
            cls.rabbit.close()
        if getattr(cls, "workdir", None):
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def status(self):
        return self.client.prepare(server=HOST).call({}, "status")

    def server(self, instance_uuid):
        for s in self.status()["protected_servers"]:
            if s["instance_uuid"] == instance_uuid:
                return s
        return None

    def notify(self, event_type, instance_uuid, host=HOST, dt=True, state=None):
        specs = {"dt:enabled": "true"} if dt else {"hw:watchdog_action": "disabled"}
        self.nova.info({}, event_type,
                       instance_payload(event_type, instance_uuid, host, specs, state))

    def publish_raw(self, body, routing_key="versioned_notifications.info"):
        with kombu.Connection(self.rabbit.url.replace("rabbit://", "amqp://")) as conn:
            producer = conn.Producer()
            producer.publish(body, exchange=kombu.Exchange("nova", type="topic", durable=False),
                             routing_key=routing_key, content_type="application/json",
                             content_encoding="utf-8", serializer=None)


class AgentRpcTest(BusTestBase):
    def test_status_call_names_the_host_and_the_bus(self):
        s = self.status()
        self.assertEqual(s["host"], HOST)
        self.assertTrue(s["bus"]["rpc"]["connected"])
        self.assertTrue(s["hypervisor"]["connected"])
        # Any agent answers on the shared topic too.
        self.assertEqual(self.client.call({}, "status")["host"], HOST)

    def test_list_pairs_is_a_list(self):
        self.assertIsInstance(self.client.prepare(server=HOST).call({}, "list_pairs"), list)

    def test_errors_come_back_as_python_exceptions(self):
        # allowed_remote_exmods is per transport: a fresh one that allows nova_dt.exception.
        transport = oslo_messaging.get_rpc_transport(self.conf, url=self.rabbit.url,
                                                     allowed_remote_exmods=["nova_dt.exception"])
        self.addCleanup(transport.cleanup)
        client = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(exchange="nova_dt", topic="nova_dt_agent",
                                             server=HOST, version="1.0"), timeout=10)
        with self.assertRaises(nova_dt.exception.ServerNotFound) as ctx:
            client.call({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        self.assertIn("is not protected here", str(ctx.exception))
        with self.assertRaises(ValueError) as ctx:
            client.call({}, "protect", instance_uuid=5, backup_host=BACKUP)
        self.assertIn("instance_uuid must be a non-empty string", str(ctx.exception))
        with self.assertRaises(ValueError):
            client.call({}, "status", verbose=True)
        with self.assertRaises(ValueError) as ctx:
            client.call({}, "protect", instance_uuid=TEST_DOMAIN_UUID, backup_host="nowhere")
        self.assertIn("not one of this agent's [peer] peers", str(ctx.exception))
        # No committed replica here: nothing to fail over.
        with self.assertRaises(nova_dt.exception.ServerNotFound):
            client.call({}, "failover", instance_uuid=TEST_DOMAIN_UUID)
        # Not protected from here: nothing to switch over (API 1.1).
        with self.assertRaises(nova_dt.exception.ServerNotFound) as ctx:
            client.prepare(version="1.1").call({}, "switchover",
                                               instance_uuid=TEST_DOMAIN_UUID)
        self.assertIn("is not protected from here", str(ctx.exception))
        # Not in allowed_remote_exmods: RemoteError naming the class.
        with self.assertRaises(oslo_messaging.RemoteError) as ctx:
            client.call({}, "no_such_method")
        self.assertEqual(ctx.exception.exc_type, "NoSuchMethod")
        with self.assertRaises(oslo_messaging.RemoteError) as ctx:
            client.prepare(version="1.7").call({}, "status")
        self.assertEqual(ctx.exception.exc_type, "UnsupportedVersion")
        with self.assertRaises(oslo_messaging.RemoteError) as ctx:
            client.prepare(version="2.0").call({}, "status")
        self.assertEqual(ctx.exception.exc_type, "UnsupportedVersion")

    def test_call_with_a_call_monitor_timeout(self):
        # The client's call monitor needs keep-alives only for slow methods; a fast one must
        # simply work with it set.
        client = self.client.prepare(server=HOST, timeout=20, call_monitor_timeout=2)
        self.assertEqual(client.call({}, "status")["host"], HOST)

    def test_casts_are_served_on_every_queue(self):
        before = self.status()["bus"]["rpc"]
        self.client.cast({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        self.client.prepare(server=HOST).cast({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        self.client.prepare(fanout=True).cast({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        after = wait_for(lambda: (lambda r: r if r["failures"] >= before["failures"] + 3
                                  else None)(self.status()["bus"]["rpc"]),
                         what="three casts served")
        self.assertGreaterEqual(after["received"], before["received"] + 3)


class NovaNotificationsTest(BusTestBase):
    def test_a_new_dt_server_is_protected_to_the_default_backup(self):
        listener_events = []
        got = threading.Event()

        class Endpoint:
            def error(self, ctxt, publisher_id, event_type, payload, metadata):
                listener_events.append((publisher_id, event_type, payload))
                got.set()

        listener = oslo_messaging.get_notification_listener(
            self.notification_transport,
            [oslo_messaging.Target(topic="notifications", exchange="nova_dt")],
            [Endpoint()], executor="threading")
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)

        # The test driver's domain has no shared file-backed RAM: automatic protection is tried
        # and fails with the reason, which shows in status and in a dt.pair.protect.error.
        self.notify("instance.create.end", TEST_DOMAIN_UUID)
        s = wait_for(lambda: self.server(TEST_DOMAIN_UUID), what="the server in status")
        self.assertEqual(s["state"], "unprotected")
        self.assertEqual(s["peer_host"], BACKUP)
        self.assertIn("protection after instance.create.end failed", s["reason"])
        self.assertIn("not shared file-backed memory", s["reason"])
        self.assertTrue(got.wait(10), "no dt.pair.protect.error notification")
        publisher, event_type, payload = listener_events[0]
        self.assertEqual(publisher, "nova-dt-agent:" + HOST)
        self.assertEqual(event_type, "dt.pair.protect.error")
        self.assertEqual(payload["nova_object.name"], "DTPairPayload")
        self.assertEqual(payload["nova_object.data"]["instance_uuid"], TEST_DOMAIN_UUID)
        self.assertEqual(payload["nova_object.data"]["peer_host"], BACKUP)

        # Deleted in Nova: the agent forgets it.
        self.notify("instance.delete.end", TEST_DOMAIN_UUID)
        wait_for(lambda: self.server(TEST_DOMAIN_UUID) is None, what="the server forgotten")

    def test_actions_resume_protection_here_and_a_move_forgets_the_server(self):
        self.notify("instance.create.end", TEST_DOMAIN_UUID)
        wait_for(lambda: self.server(TEST_DOMAIN_UUID), what="the server recorded")
        # Powered on again here: protection is tried again, towards the same backup.
        self.notify("instance.power_on.end", TEST_DOMAIN_UUID, state="active")
        s = wait_for(lambda: (lambda v: v if v and "instance.power_on.end" in v["reason"]
                              else None)(self.server(TEST_DOMAIN_UUID)),
                     what="protection retried after power_on.end")
        self.assertEqual(s["peer_host"], BACKUP)
        # Live-migrated away: no longer this agent's business.
        self.notify("instance.live_migration_post_dest.end", TEST_DOMAIN_UUID, host="elsewhere",
                    state="active")
        wait_for(lambda: self.server(TEST_DOMAIN_UUID) is None, what="the server forgotten")

    def service_update(self, host, disabled, forced_down=False):
        with open(os.path.join(SAMPLES, "nova_service_update.json")) as f:
            payload = json.load(f)["oslo_deserialize_msg"]["payload"]
        data = payload["nova_object.data"]
        data.update(host=host, disabled=disabled, forced_down=forced_down,
                    disabled_reason="maintenance" if disabled else None)
        self.nova.info({}, "service.update", payload)

    def test_a_backup_host_disabled_in_nova_is_not_protected_to(self):
        self.service_update(BACKUP, disabled=True)
        self.notify("instance.create.end", TEST_DOMAIN_UUID)
        s = wait_for(lambda: self.server(TEST_DOMAIN_UUID), what="the server recorded")
        self.assertIn("backup host %s is disabled in Nova (maintenance)" % BACKUP, s["reason"])
        # Enabled again: the next resume tries the backup again (and hits the test driver's
        # lack of shared RAM, as in the other tests).
        self.service_update(BACKUP, disabled=False)
        self.notify("instance.power_on.end", TEST_DOMAIN_UUID, state="active")
        s = wait_for(lambda: (lambda v: v if v and "not shared file-backed memory" in v["reason"]
                              else None)(self.server(TEST_DOMAIN_UUID)),
                     what="protection tried once the host is enabled")
        self.notify("instance.delete.end", TEST_DOMAIN_UUID)
        wait_for(lambda: self.server(TEST_DOMAIN_UUID) is None, what="the server forgotten")

    def test_other_servers_and_hosts_are_left_alone(self):
        other = str(uuid.uuid4())
        before = self.status()["bus"]["nova_notifications"]["handled"]
        self.notify("instance.create.end", other, dt=False)           # not a DT flavor
        self.notify("instance.create.end", other, host="elsewhere")   # not this host
        wait_for(lambda: self.status()["bus"]["nova_notifications"]["handled"] >= before + 2,
                 what="both handled")
        self.assertIsNone(self.server(other))

    def test_malformed_messages_are_refused_and_the_queue_goes_on(self):
        before = self.status()["bus"]["nova_notifications"]
        good = instance_payload("instance.create.end", str(uuid.uuid4()), "elsewhere",
                                {"dt:enabled": "true"})
        inner = {"message_id": str(uuid.uuid4()), "publisher_id": "nova-compute:x",
                 "event_type": "instance.create.end", "priority": "INFO",
                 "payload": good, "timestamp": "2026-11-24 19:04:19.031911"}
        bad = [
            b"this is not json",
            b"[1, 2, 3]",
            json.dumps({"oslo.version": "3.0", "oslo.message": json.dumps(inner)}).encode(),
            json.dumps({"oslo.version": "2.0", "oslo.message": 42}).encode(),
            json.dumps({"oslo.version": "2.0", "oslo.message": "{truncated"}).encode(),
            json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
                dict(inner, event_type=None))}).encode(),
            json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
                {k: v for k, v in inner.items() if k != "payload"})}).encode(),
            json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
                dict(inner, payload={"nova_object.data": {"uuid": 7}}))}).encode(),
            b"[" * 100000,
            b'{"oslo.version": "2.0", "oslo.message": "' + b"x" * (2 << 20) + b'"}',
        ]
        for body in bad:
            self.publish_raw(body)
        # An unknown event is valid and simply of no interest.
        self.nova.info({}, "compute.metrics.update", {"anything": 1})
        after = wait_for(lambda: (lambda n: n if n["malformed"] >= before["malformed"] + len(bad)
                                  and n["handled"] >= before["handled"] + 1 else None)(
            self.status()["bus"]["nova_notifications"]), what="all refused, the last handled")
        self.assertEqual(after["malformed"], before["malformed"] + len(bad))
        self.assertIsNone(self.agent.proc.poll(), "the agent died")
        # Nothing left behind in the agent's queue.
        queues = self.rabbit.ctl("list_queues", "--no-table-headers", "name", "messages")
        for line in queues.splitlines():
            name, _, count = line.partition("\t")
            if name.startswith("nova_dt_agent.versioned_notifications."):
                self.assertEqual(count.strip(), "0", line)
        log = self.agent.log_text()
        self.assertIn("nova notification refused", log)
        self.assertIn(inner["message_id"], log)  # named by its message id where it has one


class DurableQueueTest(BusTestBase):
    agent_extra = "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
    durable = True

    def test_broker_restart_mid_stream_loses_nothing(self):
        queue = "nova_dt_agent.versioned_notifications." + HOST
        durable = self.rabbit.ctl("list_queues", "--no-table-headers", "name", "durable")
        self.assertIn(queue + "\ttrue", durable)
        before = self.status()["bus"]["nova_notifications"]
        # The agent is frozen: what Nova sends now waits in the durable queue (persistent).
        self.agent.proc.send_signal(signal.SIGSTOP)
        try:
            servers = [str(uuid.uuid4()) for _ in range(20)]
            for s in servers:
                self.notify("instance.create.end", s, host="elsewhere")
            self.rabbit.restart()
        finally:
            self.agent.proc.send_signal(signal.SIGCONT)
        # The agent notices the lost connection, reconnects, and gets every event.
        after = wait_for(lambda: (lambda n: n if n["connected"] and
                                  n["handled"] >= before["handled"] + len(servers) else None)(
            self.status_or_none()), timeout=60, what="all events after the restart")
        self.assertGreaterEqual(after["reconnects"], before["reconnects"] + 1)

    def status_or_none(self):
        try:
            return self.client.prepare(server=HOST, timeout=3).call({}, "status")[
                "bus"]["nova_notifications"]
        except (oslo_messaging.MessagingTimeout, oslo_messaging.MessageDeliveryFailure):
            return {"connected": False, "handled": -1, "reconnects": 0}


if __name__ == "__main__":
    unittest.main()
