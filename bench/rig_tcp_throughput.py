#!/usr/bin/python3
"""Bulk TCP throughput between the rig's hosts, optionally through an impaired link (issue 6).

What one TCP connection carries from host a to host b for SECONDS, for each netem setting given
(`rig netem b ARGS`), on a rig of its own (name `lt`). Prints one line per setting.

    sudo /usr/bin/python3 bench/rig_tcp_throughput.py 8 "delay 50ms 20ms loss 5%" "delay 50ms loss 5%"

The same file, run inside a rig host as `... recv` or `... send HOST SECONDS`, is each end.
"""
import os
import socket
import subprocess
import sys
import time

PORT = 5999


def recv():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", PORT))
    s.listen(1)
    s.settimeout(30)
    c, _ = s.accept()
    n, t0 = 0, time.time()
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        n += len(b)
    dt = time.time() - t0
    print("%.1f MB in %.1f s = %.2f MB/s" % (n / 1e6, dt, n / 1e6 / dt), flush=True)


def send(host, seconds):
    s = socket.create_connection((host, PORT), timeout=30)
    buf, end = b"x" * 65536, time.time() + seconds
    while time.time() < end:
        s.sendall(buf)
    s.close()


def main():
    if sys.argv[1] == "recv":
        return recv()
    if sys.argv[1] == "send":
        return send(sys.argv[2], float(sys.argv[3]))
    seconds, settings = sys.argv[1], sys.argv[2:] or ["clear"]
    here = os.path.dirname(os.path.abspath(__file__))
    rig = [os.path.join(here, "..", "tests", "rig", "rig")]
    env = dict(os.environ, RIG_NAME="lt")
    me = [sys.executable, os.path.abspath(__file__)]
    subprocess.run(rig + ["up"], env=env, check=True, capture_output=True)
    try:
        for args in settings:
            subprocess.run(rig + ["netem", "b", args], env=env, check=True)
            receiver = subprocess.Popen(rig + ["exec", "b"] + me + ["recv"], env=env,
                                        stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            subprocess.run(rig + ["exec", "a"] + me + ["send", "198.18.0.2", seconds], env=env,
                           check=True, timeout=float(seconds) + 60)
            out, _ = receiver.communicate(timeout=60)
            print("netem %-28s %s" % ("'%s':" % args, out.strip()), flush=True)
    finally:
        subprocess.run(rig + ["down"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
