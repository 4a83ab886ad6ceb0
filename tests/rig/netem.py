#!/usr/bin/python3
"""Userspace stand-in for `tc qdisc ... netem` (delay, jitter, loss) on kernels without sch_netem.

Binds an NFQUEUE (nfnetlink_queue, raw netlink: stdlib only) in the current network namespace and
gives every queued packet its verdict later: ACCEPT after `delay ± jitter` (uniform), or DROP with
probability `loss`. The rig's iptables rules send one link direction's packets to the queue
(see tests/rig/rig, netem_enable). Only metadata is copied to userspace; GSO packets are queued
whole, so bulk TCP keeps most of its throughput.

    netem.py --queue N --params FILE [--ready FILE]

FILE holds the parameters as `delay_ms jitter_ms loss_percent` and is re-read on SIGHUP, so
`rig netem` changes a running link without dropping what is queued; once new parameters are in
force their text is written to FILE.applied (the rig waits for that). Ends on SIGTERM/SIGINT
(packets still queued are then accepted at once, not dropped).
"""
import argparse
import errno
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 4
NF_DROP = 0
NF_ACCEPT = 1
SO_RCVBUFFORCE = 33


def nlattr(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * ((4 - length % 4) % 4)


def nfmsg(msg_type: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def read_params(path: str):
    try:
        with open(path) as f:
            d, j, l = (float(x) for x in f.read().split()[:3])
        return max(d, 0.0) / 1000.0, max(j, 0.0) / 1000.0, min(max(l, 0.0), 100.0) / 100.0
    except (OSError, ValueError) as e:
        print(f"netem: cannot read {path}: {e}", file=sys.stderr)
        return None


class Queue:
    def __init__(self, num: int):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind((0, 0))
        self.config(nlattr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self.config(nlattr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_META)))
        self.config(nlattr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 10000)))
        self.config(nlattr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO)) +
                    nlattr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO)))
        self.sock.setblocking(False)

    def config(self, attrs: bytes):
        self.seq += 1
        self.sock.send(nfmsg(NFQNL_MSG_CONFIG, self.num, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    if err != 0:
                        raise OSError(-err, f"nfqueue config of queue {self.num}: {os.strerror(-err)}")
                    return
                off += (length + 3) & ~3
        raise TimeoutError("no ack from nfnetlink_queue")

    def packets(self):
        """Yields the ids of the packets received so far (non-blocking)."""
        for _ in range(256):
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    print("netem: ENOBUFS, some packets stay queued without verdict", file=sys.stderr)
                    continue
                raise
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + 20  # nlmsghdr + nfgenmsg
                    end = off + length
                    while a + 4 <= end:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if (atype & 0x7FFF) == NFQA_PACKET_HDR:
                            yield struct.unpack_from("!I", data, a + 4)[0]
                            break
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3

    def verdicts(self, items):
        """items: list of (packet_id, verdict); sent as multi-message datagrams."""
        buf = []
        size = 0
        for pid, verdict in items:
            m = nfmsg(NFQNL_MSG_VERDICT, self.num, nlattr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, pid)), 0)
            buf.append(m)
            size += len(m)
            if size > 60000:
                self._send(b"".join(buf))
                buf, size = [], 0
        if buf:
            self._send(b"".join(buf))

    def _send(self, data: bytes):
        for _ in range(100):
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], 0.01)
        print("netem: could not send verdicts", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--ready")
    args = ap.parse_args()

    params = read_params(args.params)
    if params is None:
        return 2
    state = {"stop": False, "reload": False}
    signal.signal(signal.SIGTERM, lambda s, f: state.update(stop=True))
    signal.signal(signal.SIGINT, lambda s, f: state.update(stop=True))
    signal.signal(signal.SIGHUP, lambda s, f: state.update(reload=True))

    wake_r, wake_w = os.pipe()  # signals wake the select() at once
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)

    def applied():
        with open(args.params + ".applied.tmp", "w") as f:
            f.write(" ".join(f"{x:g}" for x in (params[0] * 1000, params[1] * 1000, params[2] * 100)) + "\n")
        os.replace(args.params + ".applied.tmp", args.params + ".applied")

    q = Queue(args.queue)
    applied()
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(f"{os.getpid()}\n")
    rnd = random.Random()
    heap = []  # (release time, arrival order, packet id)
    order = 0
    while not state["stop"]:
        if state["reload"]:
            state["reload"] = False
            params = read_params(args.params) or params
            applied()
        delay, jitter, loss = params
        now = time.monotonic()
        timeout = 0.5 if not heap else max(0.0, heap[0][0] - now)
        try:
            ready, _, _ = select.select([q.sock, wake_r], [], [], min(timeout, 0.5))
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        out = []
        if q.sock in ready:
            now = time.monotonic()
            for pid in q.packets():
                if loss > 0 and rnd.random() < loss:
                    out.append((pid, NF_DROP))
                    continue
                d = delay + (rnd.uniform(-jitter, jitter) if jitter > 0 else 0.0)
                if d <= 0:
                    out.append((pid, NF_ACCEPT))
                else:
                    order += 1
                    heapq.heappush(heap, (now + d, order, pid))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            out.append((heapq.heappop(heap)[2], NF_ACCEPT))
        if out:
            q.verdicts(out)
    q.verdicts([(pid, NF_ACCEPT) for _, _, pid in sorted(heap)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
