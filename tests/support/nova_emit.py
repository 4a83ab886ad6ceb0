#!/usr/bin/python3
"""Emits one Nova versioned notification with the real oslo.messaging Notifier, as nova-compute
would: exchange "nova", topic "versioned_notifications", publisher "nova-compute:<host>".

    nova_emit.py URL EVENT_TYPE INSTANCE_UUID HOST [--state S] [--spec KEY=VALUE]...

The payload is the sample that tests/unit/bus/samples/make_samples.py made with nova's own
notification objects (create.* events: InstanceCreatePayload, others: InstanceActionPayload),
with the server's uuid, host, state and the flavor's extra specs replaced.
"""
import argparse

import oslo_messaging
from oslo_config import cfg

from nova_payloads import instance_payload

NOVA_EXCHANGE = "nova"


def declare_nova_exchange(url, durable=False):
    """Makes Nova's exchange as Nova's notifier (oslo.messaging's rabbit driver) does before it
    publishes: topic, durable as [oslo_messaging_rabbit] amqp_durable_queues, not auto-deleted.
    Run it before starting an agent, as a running Nova would have: the agent only checks that the
    exchange exists (a passive declare) and waits until it does. `url` is a rabbit:// URL whose
    user may configure "nova" (e.g. the test broker's guest)."""
    import kombu
    with kombu.Connection(url.replace("rabbit://", "amqp://", 1)) as conn:
        kombu.Exchange(NOVA_EXCHANGE, type="topic", durable=durable,
                       auto_delete=False)(conn.default_channel).declare()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("event_type")
    p.add_argument("uuid")
    p.add_argument("host")
    p.add_argument("--state")
    p.add_argument("--spec", action="append", default=[])
    a = p.parse_args()
    payload = instance_payload(a.event_type, a.uuid, a.host,
                               dict(spec.split("=", 1) for spec in a.spec), a.state)
    cfg.CONF([], project="nova-emit")
    oslo_messaging.set_transport_defaults("nova")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=a.url)
    notifier = oslo_messaging.Notifier(transport, publisher_id="nova-compute:" + a.host,
                                       driver="messagingv2", topics=["versioned_notifications"])
    notifier.info({}, a.event_type, payload)
    transport.cleanup()


if __name__ == "__main__":
    main()
