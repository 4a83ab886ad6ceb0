#!/usr/bin/python3
"""Prints, one JSON object per line, every message waiting in the given queues (acking them):
{"queue", "event_type", "priority", "publisher_id", "payload"} for oslo notifications.

    bus_drain.py URL QUEUE...
"""
import json
import sys

import kombu


def main():
    url, queues = sys.argv[1].replace("rabbit://", "amqp://", 1), sys.argv[2:]
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        for q in queues:
            while True:
                m = channel.basic_get(q, no_ack=True)
                if m is None:
                    break
                body = json.loads(m.body)
                if "oslo.message" in body:
                    body = json.loads(body["oslo.message"])
                print(json.dumps({"queue": q, "event_type": body.get("event_type"),
                                  "priority": body.get("priority"),
                                  "publisher_id": body.get("publisher_id"),
                                  "payload": body.get("payload")}), flush=True)


if __name__ == "__main__":
    main()
