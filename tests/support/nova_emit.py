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
