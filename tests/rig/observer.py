#!/usr/bin/python3
"""UDP observer of the nova-dt test rig: the "client outside the guest" that sees its output.

Listens on ADDR:PORT (by default 198.18.0.100:5000 inside the rig's switch namespace, started by
`rig observer start`) and appends every received line to the log as

    <receive time, unix seconds with microseconds> <source ip>:<port> <line>

flushing after each datagram, so tests can read the log while it grows. Lines of the test guest's
dtcounter look like `seq=<n> boot=<id>` and `MISMATCH mem=<n-1> disk=<x>`.
Stdlib only. Ends on SIGTERM/SIGINT.
"""
import argparse
import os
import signal
import socket
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="198.18.0.100")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--log", required=True, help="file the received lines are appended to")
    ap.add_argument("--ready", help="file created once the socket is bound")
    args = ap.parse_args()

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.bind, args.port))
    sock.settimeout(0.5)  # so a signal is noticed within half a second

    with open(args.log, "a", encoding="utf-8", errors="replace") as log:
        if args.ready:
            with open(args.ready, "w") as f:
                f.write(f"{os.getpid()}\n")
        while not stop:
            try:
                data, (host, port) = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            now = time.time()
            text = data.decode("utf-8", errors="replace")
            for line in text.splitlines() or [""]:
                line = line.strip()
                if line:
                    log.write(f"{now:.6f} {host}:{port} {line}\n")
            log.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
