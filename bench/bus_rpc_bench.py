#!/usr/bin/python3
"""RPC round trip through a real broker: the real oslo.messaging client (as nova-dt-controller
uses it) calling a real nova-dt-agent (libvirt test:///default) over a private rabbitmq-server.

    /usr/bin/python3 bench/bus_rpc_bench.py [CALLS]      (after scripts/build)

Prints the call round trip (p50, p99, mean) of `status` and `list_pairs`, and the cast rate the
agent serves. Bounded: CALLS (default 2000) of each, one client, one agent.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "support"))

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from nova_dt_agent import AgentProcess  # noqa: E402
from rabbitmq import RabbitMQ  # noqa: E402


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workdir = tempfile.mkdtemp(prefix="nova-dt-rpc-bench.")
    rabbit = RabbitMQ()
    rabbit.start()
    agent = AgentProcess(os.environ.get("NOVA_DT_BUILD", os.path.join(SRC, "build")), workdir,
                         "[DEFAULT]\nhost = bench-a\ntransport_url = %s\n"
                         "[libvirt]\nconnection_uri = test:///default\n"
                         "[nova_notifications]\nenabled = false\n" % rabbit.url)
    cfg.CONF([], project="nova-dt-rpc-bench")
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=rabbit.url)
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(exchange="nova_dt", topic="nova_dt_agent",
                                         server="bench-a", version="1.0"), timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.prepare(timeout=2).call({}, "status")
                break
            except oslo_messaging.MessagingTimeout:
                if time.monotonic() > deadline:
                    raise
        print("nova-dt-agent RPC through rabbitmq-server on 127.0.0.1, oslo.messaging client, "
              "%d calls each" % calls)
        for method in ("status", "list_pairs"):
            for _ in range(50):  # warm-up
                client.call({}, method)
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                client.call({}, method)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            print("  call %-10s p50 %.2f ms  p99 %.2f ms  mean %.2f ms  (%.0f calls/s)" % (
                method, times[len(times) // 2], times[int(len(times) * 0.99)],
                statistics.mean(times), calls / (sum(times) / 1000)))
        before = client.call({}, "status")["bus"]["rpc"]["received"]
        t0 = time.perf_counter()
        for _ in range(calls):
            client.cast({}, "unprotect", instance_uuid=str(uuid.uuid4()))
        while client.call({}, "status")["bus"]["rpc"]["received"] < before + calls + 1:
            time.sleep(0.01)
        dt = time.perf_counter() - t0
        print("  cast unprotect   %d served in %.2f s (%.0f casts/s, client send included)" % (
            calls, dt, calls / dt))
    finally:
        transport.cleanup()
        agent.stop()
        rabbit.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
