"""The RabbitMQ rights of docs/bus.md ("RabbitMQ users and permissions") on a real broker.

The users are made by running the page's own rabbitmqctl commands (tests/support/
rabbitmq_permissions.py) on a private rabbitmq-server: an agent user for HOST (and one for
OTHER, whose agent does not run) and the controller's user; the agents' RPC in vhost nova_dt,
Nova's and the agents' notifications in vhost /. One nova-dt-agent (libvirt's test:///default)
runs with its own user only. Python plays the controller with the controller's user (oslo RPC
client, notification listeners in the controller's pools) and Nova with the broker's admin
user. Checked: everything the agent and the controller do on the bus works with those rights,
and the rights keep an agent to its own queues, keys and exchanges (raw AMQP as that agent).
"""
import json
import os
import shutil
import sys
import tempfile
import time
import unittest
import uuid

import amqp
import oslo_messaging
import oslo_messaging.opts
from oslo_config import cfg

SRC = os.environ.get("NOVA_DT_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
BUILD = os.environ.get("NOVA_DT_BUILD", os.path.join(SRC, "build"))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))

from nova_dt_agent import AgentClassTestCase, AgentProcess, bus_test_config  # noqa: E402
from nova_emit import declare_nova_exchange  # noqa: E402
from nova_payloads import instance_payload  # noqa: E402
from rabbitmq import RabbitMQ  # noqa: E402
from rabbitmq_permissions import apply_documented_permissions  # noqa: E402

HOST = "dt-perm-a.example"   # a dot: the documented commands escape it in their patterns
OTHER = "dt-perm-b"
RPC_VHOST = "nova_dt"
NOTIFY_VHOST = "/"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
CONTROLLER_POOL = "nova-dt-controller"   # [nova_dt] notification_pool


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


def global_conf():
    """oslo's RPC client needs options that it registers on the global CONF only."""
    if not getattr(cfg.CONF, "_nova_dt_parsed", False):
        cfg.CONF([], project="nova-dt-bus-test")
        cfg.CONF._nova_dt_parsed = True
        for group, opts in oslo_messaging.opts.list_opts():
            if group == "oslo_messaging_rabbit":
                cfg.CONF.register_opts(opts, group=group)
    return cfg.CONF


class Recorder:
    def __init__(self, name, events):
        self.name, self.events = name, events

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.events.append((self.name, event_type, payload))

    error = info


class PermissionsTest(AgentClassTestCase):

    @classmethod
    def _set_up(cls):
        cls.workdir = tempfile.mkdtemp(prefix="nova-dt-permissions-test.")
        cls.rabbit = RabbitMQ()
        cls.rabbit.start()
        cls.users = apply_documented_permissions(cls.rabbit, HOST, rpc_vhost=RPC_VHOST,
                                                 notify_vhost=NOTIFY_VHOST)
        # A second host's user: the documented commands again (vhost exists already).
        cls.other = apply_documented_permissions(cls.rabbit, OTHER, rpc_vhost=RPC_VHOST,
                                                 notify_vhost=NOTIFY_VHOST, controller=False)
        # Nova runs already: its exchange exists in its vhost, made by Nova's own user (here the
        # broker's administrator). The agent only checks that it exists.
        declare_nova_exchange(cls.rabbit.url)
        # The agent with its own user only: RPC in the agents' vhost, notifications in Nova's.
        config = bus_test_config(
            HOST, cls.users.agent_url(cls.rabbit, RPC_VHOST), OTHER,
            "[oslo_messaging_notifications]\ntransport_url = %s\n"
            % cls.users.agent_url(cls.rabbit, NOTIFY_VHOST))
        cls.agent = AgentProcess(BUILD, cls.workdir, config)

        # The controller's side, with the controller's user.
        conf = global_conf()
        cls.rpc = oslo_messaging.get_rpc_transport(
            conf, url=cls.users.controller_url(cls.rabbit, RPC_VHOST))
        cls.client = oslo_messaging.get_rpc_client(
            cls.rpc, oslo_messaging.Target(exchange="nova_dt", topic="nova_dt_agent",
                                           server=HOST, version="1.0"), timeout=10)
        cls.events = []
        cls.notifications = oslo_messaging.get_notification_transport(
            conf, url=cls.users.controller_url(cls.rabbit, NOTIFY_VHOST))
        cls.listeners = [
            oslo_messaging.get_notification_listener(
                cls.notifications, [oslo_messaging.Target(exchange=exchange, topic=topic)],
                [Recorder(name, cls.events)], executor="threading", pool=pool)
            for name, exchange, topic, pool in (
                ("nova", "nova", "versioned_notifications", CONTROLLER_POOL),
                ("agents", "nova_dt", "notifications", CONTROLLER_POOL + ".agents"),
                ("link-stats", "nova_dt", "notifications",
                 CONTROLLER_POOL + ".link-stats." + cls.users.controller_host))]
        for listener in cls.listeners:
            listener.start()
        # Nova, with the broker's administrator in the notification vhost, on its exchange.
        nova_conf = cfg.ConfigOpts()
        oslo_messaging.get_notification_transport(nova_conf, url=cls.rabbit.url).cleanup()
        nova_conf.set_override("control_exchange", "nova")
        cls.nova_transport = oslo_messaging.get_notification_transport(nova_conf,
                                                                       url=cls.rabbit.url)
        cls.nova = oslo_messaging.Notifier(cls.nova_transport,
                                           publisher_id="nova-compute:" + HOST,
                                           driver="messagingv2",
                                           topics=["versioned_notifications"])
        wait_for(lambda: (lambda s: s and s["bus"]["rpc"]["connected"] and
                          s["bus"]["nova_notifications"]["connected"] and
                          s["bus"]["notifier"]["connected"])(cls.status_quiet()),
                 what="the agent's three bus links connected with its own user")

    @classmethod
    def status_quiet(cls):
        try:
            return cls.client.prepare(timeout=2).call({}, "status")
        except oslo_messaging.MessagingTimeout:
            return None

    @classmethod
    def tearDownClass(cls):
        for listener in getattr(cls, "listeners", []):
            listener.stop()
            listener.wait()
        for name in ("rpc", "notifications", "nova_transport"):
            t = getattr(cls, name, None)
            if t:
                t.cleanup()
        if getattr(cls, "agent", None):
            cls.agent.stop()
        if getattr(cls, "rabbit", None):
            cls.rabbit.close()
        if getattr(cls, "workdir", None):
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def status(self):
        return self.client.call({}, "status")

    def server(self, instance_uuid):
        return next((s for s in self.status()["protected_servers"]
                     if s["instance_uuid"] == instance_uuid), None)

    # -- what works ----------------------------------------------------------------------------

    def test_controller_calls_and_casts_reach_the_agent(self):
        s = self.status()
        self.assertEqual(HOST, s["host"])
        self.assertIsInstance(self.client.call({}, "list_pairs"), list)
        before = s["bus"]["rpc"]["failures"]
        self.client.cast({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        self.client.cast({}, "protect", instance_uuid=str(uuid.uuid4()), backup_host=OTHER)
        wait_for(lambda: self.status()["bus"]["rpc"]["failures"] >= before + 2,
                 what="both casts served (and refused: no such servers)")

    def test_nova_to_agent_and_agent_to_controller(self):
        # Nova says a DT server was created here: the agent (its own queue on Nova's exchange)
        # records it, fails to protect it (test driver) and says so on nova_dt, where the
        # controller's agents' listener gets it; the controller's Nova listener gets Nova's.
        self.nova.info({}, "instance.create.end",
                       instance_payload("instance.create.end", TEST_DOMAIN_UUID, HOST,
                                        {"dt:enabled": "true"}))
        s = wait_for(lambda: self.server(TEST_DOMAIN_UUID), what="the server in status")
        self.assertIn("not shared file-backed memory", s["reason"])
        wait_for(lambda: any(e[:2] == ("agents", "dt.pair.protect.error") for e in self.events),
                 what="dt.pair.protect.error at the controller's agents' listener")
        wait_for(lambda: any(e[:2] == ("nova", "instance.create.end") for e in self.events),
                 what="instance.create.end at the controller's Nova listener")
        error = next(e[2] for e in self.events if e[:2] == ("agents", "dt.pair.protect.error"))
        self.assertEqual(TEST_DOMAIN_UUID, error["nova_object.data"]["instance_uuid"])
        self.assertTrue(any(e[:2] == ("link-stats", "dt.pair.protect.error")
                            for e in self.events))
        self.nova.info({}, "instance.delete.end",
                       instance_payload("instance.delete.end", TEST_DOMAIN_UUID, HOST,
                                        {"dt:enabled": "true"}))
        wait_for(lambda: self.server(TEST_DOMAIN_UUID) is None, what="the server forgotten")

    def test_the_agent_was_refused_nothing(self):
        self.status()
        log = self.agent.log_text()
        self.assertNotIn("ACCESS_REFUSED", log)
        s = self.status()["bus"]
        for link in ("rpc", "nova_notifications", "notifier"):
            self.assertEqual(0, s[link]["reconnects"], (link, s[link]["last_error"]))

    # -- what the rights keep an agent and the controller from -------------------------------

    def connect(self, user, password, vhost):
        conn = amqp.Connection(host="127.0.0.1:%d" % self.rabbit.port, userid=user,
                               password=password, virtual_host=vhost)
        conn.connect()
        self.addCleanup(conn.collect)
        return conn

    def assert_refused(self, user, password, vhost, action, what):
        conn = self.connect(user, password, vhost)
        channel = conn.channel()
        with self.assertRaises(amqp.exceptions.AccessRefused, msg=what) as ctx:
            action(channel)
        self.assertIn("ACCESS_REFUSED", str(ctx.exception), what)
        if "(topic" in what:   # refused by the topic permissions, not the vhost's
            self.assertIn("access to topic", str(ctx.exception), what)

    @staticmethod
    def publish(exchange, key):
        def action(channel):
            channel.basic_publish_confirm(amqp.Message(b'{"forged": true}'), exchange=exchange,
                                          routing_key=key)
        return action

    def test_an_agent_is_held_to_its_own_queues_keys_and_exchanges(self):
        # OTHER's queues exist (as they would with its agent running), made by the admin.
        self.rabbit.ctl("set_permissions", "-p", RPC_VHOST, "guest", ".*", ".*", ".*")
        admin = self.connect("guest", "guest", RPC_VHOST)
        ch = admin.channel()
        ch.queue_declare("nova_dt_agent." + OTHER, auto_delete=False)
        ch.queue_bind("nova_dt_agent." + OTHER, "nova_dt", "nova_dt_agent." + OTHER)
        u, p = self.users.agent, self.users.agent_password
        forbidden = [
            (RPC_VHOST, lambda c: c.basic_consume("nova_dt_agent." + OTHER),
             "read another host's RPC queue"),
            (RPC_VHOST, lambda c: c.queue_declare("nova_dt_agent." + OTHER, passive=False),
             "declare (so delete) another host's RPC queue"),
            (RPC_VHOST, lambda c: c.queue_bind("nova_dt_agent", "nova_dt",
                                               "nova_dt_agent." + OTHER),
             "bind the shared RPC queue to another host's key (topic read)"),
            (RPC_VHOST, lambda c: c.queue_bind("nova_dt_agent." + HOST, "nova_dt", "#"),
             "bind its own queue to every key (topic read)"),
            (RPC_VHOST, self.publish("nova_dt", "nova_dt_agent." + OTHER),
             "send an RPC request on nova_dt"),
            (RPC_VHOST, lambda c: c.queue_declare("reply_" + "0" * 32),
             "declare a reply queue (a caller's)"),
            (NOTIFY_VHOST, self.publish("nova", "versioned_notifications.info"),
             "publish on Nova's exchange"),
            (NOTIFY_VHOST, self.publish("nova_dt", "versioned_notifications.info"),
             "publish on nova_dt with a key other than notifications.* (topic write)"),
            (NOTIFY_VHOST, self.publish("", CONTROLLER_POOL),
             "put a message into the controller's queue of Nova's notifications"),
            (NOTIFY_VHOST, self.publish("", "nova_dt_agent.versioned_notifications." + OTHER),
             "put a message into another agent's queue of Nova's notifications"),
            (NOTIFY_VHOST, lambda c: c.basic_consume(CONTROLLER_POOL + ".agents"),
             "read the controller's queue of the agents' notifications"),
            (NOTIFY_VHOST, lambda c: c.queue_declare(
                "nova_dt_agent.versioned_notifications." + OTHER),
             "declare another host's queue of Nova's notifications"),
            # Nova's exchange is Nova's: the agent declares it passively, so it has no configure
            # right on it — none to delete it or to declare it anew (with other flags).
            (NOTIFY_VHOST, lambda c: c.exchange_delete("nova"), "delete Nova's exchange"),
            (NOTIFY_VHOST, lambda c: c.exchange_declare("nova", "topic", durable=False,
                                                        auto_delete=False),
             "declare Nova's exchange (as it is)"),
            (NOTIFY_VHOST, lambda c: c.exchange_declare("nova", "topic", durable=True,
                                                        auto_delete=False),
             "declare Nova's exchange anew (durable)"),
        ]
        for vhost, action, what in forbidden:
            self.assert_refused(u, p, vhost, action, what)
        self.assertIn("nova\ttopic\tfalse", self.rabbit.ctl(
            "list_exchanges", "-p", NOTIFY_VHOST, "--no-table-headers", "name", "type",
            "durable"), "Nova's exchange is still there, as Nova made it")
        # What the agent does instead: a passive declare (no right needed), then binds its queue.
        self.connect(u, p, NOTIFY_VHOST).channel().exchange_declare("nova", "topic", passive=True)
        # Allowed, for contrast: its notifications, so also a forged dt.pair.failover.end of
        # any server (the controller checks those with the new host's agent).
        inner = {"message_id": str(uuid.uuid4()), "publisher_id": "nova-dt-agent:" + HOST,
                 "event_type": "dt.pair.failover.end", "priority": "INFO",
                 "payload": {"nova_object.data": {"instance_uuid": str(uuid.uuid4()),
                                                  "new_host": HOST, "peer_host": OTHER}},
                 "timestamp": "2026-12-07 10:00:00.000000"}
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)})
        ch = self.connect(u, p, NOTIFY_VHOST).channel()
        ch.basic_publish_confirm(amqp.Message(body, content_type="application/json"),
                                 exchange="nova_dt", routing_key="notifications.info")
        wait_for(lambda: any(e[2] == inner["payload"] for e in self.events),
                 what="the forged event at the controller's listener")

    def test_the_controller_is_held_to_its_part(self):
        u, p = self.users.controller, self.users.controller_password
        for vhost, action, what in (
                (RPC_VHOST, lambda c: c.basic_consume("nova_dt_agent." + HOST),
                 "read an agent's RPC queue"),
                (RPC_VHOST, self.publish("nova_dt", "nova_dt_agent"),
                 "send to the shared RPC queue (any agent)"),
                (RPC_VHOST, self.publish("", "nova_dt_agent." + HOST),
                 "publish through the default exchange"),
                (NOTIFY_VHOST, self.publish("nova_dt", "notifications.info"),
                 "publish an agent's notification"),
                (NOTIFY_VHOST, self.publish("nova", "versioned_notifications.info"),
                 "publish a Nova notification"),
                (NOTIFY_VHOST, lambda c: c.basic_consume(
                    "nova_dt_agent.versioned_notifications." + HOST),
                 "read an agent's queue of Nova's notifications")):
            self.assert_refused(u, p, vhost, action, what)


if __name__ == "__main__":
    unittest.main()
