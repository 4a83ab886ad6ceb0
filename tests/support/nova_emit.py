#!/usr/bin/python3
"""Emits one Nova versioned notification with the real oslo.messaging Notifier, as nova-compute
would: exchange "nova", topic "versioned_notifications", publisher "nova-compute:<host>".

    nova_emit.py URL EVENT_TYPE INSTANCE_UUID HOST [--state S] [--spec KEY=VALUE]...

The payload is the sample that tests/unit/bus/samples/make_samples.py made with nova's own
notification objects (create.* events: InstanceCreatePayload, others: InstanceActionPayload),
with the server's uuid, host, state and the flavor's extra specs replaced.
"""
import argparse
import json
import os

import oslo_messaging
from oslo_config import cfg

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit", "bus", "samples")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("event_type")
    p.add_argument("uuid")
    p.add_argument("host")
    p.add_argument("--state")
    p.add_argument("--spec", action="append", default=[])
    a = p.parse_args()
    sample = ("nova_instance_create_end.json" if a.event_type.startswith("instance.create")
              else "nova_instance_delete_end.json")
    with open(os.path.join(SAMPLES, sample)) as f:
        payload = json.load(f)["oslo_deserialize_msg"]["payload"]
    data = payload["nova_object.data"]
    data.update(uuid=a.uuid, host=a.host, node=a.host)
    if a.state:
        data["state"] = a.state
    data["flavor"]["nova_object.data"]["extra_specs"] = dict(s.split("=", 1) for s in a.spec)
    cfg.CONF([], project="nova-emit")
    oslo_messaging.set_transport_defaults("nova")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=a.url)
    notifier = oslo_messaging.Notifier(transport, publisher_id="nova-compute:" + a.host,
                                       driver="messagingv2", topics=["versioned_notifications"])
    notifier.info({}, a.event_type, payload)
    transport.cleanup()


if __name__ == "__main__":
    main()
