"""A private RabbitMQ node for Python tests; the twin of tests/support/rabbitmq_server.h.

    with RabbitMQ() as rmq:          # started; stopped and its directory removed on exit
        connect(rmq.url)             # rabbit://guest:guest@127.0.0.1:<port>/
        rmq.ctl("list_queues", "--no-table-headers", "name", "durable")
        rmq.restart()                # same ports and data: durable queues survive

It never touches the system service: its own epmd, node name, ports (127.0.0.1 only), Erlang
cookie, config, data and logs under a temporary directory. If the test process dies without
stopping it, a watchdog kills the node and epmd within about a second. Standard library only.
"""
import itertools
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # /usr/sbin's wrapper would `su rabbitmq`
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
STOP_TIMEOUT = 30
_counter = itertools.count()

_WATCHDOG = """parent=$1; dir=$2
while read -r _ _ _ ppid _ < /proc/$$/stat && [ "$ppid" = "$parent" ]; do sleep 1; done
for g in $(cat "$dir/pgids" 2>/dev/null); do kill -KILL "-$g" 2>/dev/null; done
rm -rf "$dir"
"""


class RabbitMQError(Exception):
    """The node did not start or a rabbitmqctl command failed; the message has the log tail."""


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers_amqp(port):
    """True when the port answers the AMQP 0-9-1 header with a method frame (connection.start)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"
    except OSError:
        return False


class RabbitMQ:
    def __init__(self, start_timeout=60):
        self.start_timeout = start_timeout
        self.dir = tempfile.mkdtemp(prefix="nova-dt-rabbitmq.")
        self.node_name = "novadt-py%d-%d@localhost" % (os.getpid(), next(_counter))
        self.port, self.dist_port, self.epmd_port = _free_ports(3)
        self._node = self._epmd = self._watchdog = None
        d = self.dir
        for sub in ("home", "mnesia"):
            os.makedirs(os.path.join(d, sub))
        cookie = os.path.join(d, "home", ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("".join(random.choice(string.ascii_uppercase) for _ in range(20)))
        os.chmod(cookie, 0o400)
        with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\nlog.console = true\nlog.file = false\n"
                    % self.port)
        with open(os.path.join(d, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        open(os.path.join(d, "rabbitmq-env.conf"), "w").close()
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        self.env = dict(
            os.environ,
            HOME=os.path.join(d, "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=os.path.join(d, "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(d, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(d, "log"),
            RABBITMQ_PID_FILE=os.path.join(d, "rabbitmq.pid"),
            ERL_CRASH_DUMP=os.path.join(d, "erl_crash.dump"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback_dist,
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
        )

    @property
    def url(self):
        return "rabbit://guest:guest@127.0.0.1:%d/" % self.port

    @property
    def running(self):
        return self._node is not None

    def _spawn(self, argv, log_name):
        with open(os.path.join(self.dir, log_name), "ab") as log:
            return subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _record_groups(self):
        tmp = os.path.join(self.dir, "pgids.tmp")
        with open(tmp, "w") as f:
            f.write("".join("%d\n" % p.pid for p in (self._epmd, self._node) if p))
        os.replace(tmp, os.path.join(self.dir, "pgids"))

    def log_tail(self, lines=40):
        try:
            with open(os.path.join(self.dir, "server.out"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def start(self):
        """Starts epmd and the node; waits until it speaks AMQP and `await_startup` passes."""
        if self._node:
            raise RabbitMQError("RabbitMQ node already running")
        if not self._watchdog:
            self._watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "rabbitmq-watchdog", str(os.getpid()), self.dir],
                stdin=subprocess.DEVNULL, start_new_session=True)
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = self._spawn(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"], "epmd.log")
        begin = time.monotonic()
        self._node = self._spawn([SERVER], "server.out")
        self._record_groups()
        deadline = begin + self.start_timeout
        while not _answers_amqp(self.port):
            if self._node.poll() is not None:
                self._fail("exited during start-up")
            if time.monotonic() > deadline:
                self._fail("did not accept AMQP on 127.0.0.1:%d within %d s"
                           % (self.port, self.start_timeout))
            time.sleep(0.1)
        try:
            self.ctl("await_startup", "--timeout", "30")
        except RabbitMQError as e:
            self._fail("await_startup failed: %s" % e)
        self.start_duration = time.monotonic() - begin

    def _fail(self, what):
        tail = self.log_tail()
        self.kill()
        raise RabbitMQError("RabbitMQ node %s %s; server log tail:\n%s"
                            % (self.node_name, what, tail))

    def _stop_node(self):
        node, self._node = self._node, None
        if node is None:
            return
        node.terminate()  # the start script forwards SIGTERM to the VM: an orderly shutdown
        try:
            node.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        self._killpg(node)

    @staticmethod
    def _killpg(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop(self):
        """Stops the node gracefully, then epmd. Idempotent."""
        self._stop_node()
        if self._epmd:
            self._killpg(self._epmd)
            self._epmd = None

    def restart(self):
        """Stops the node and starts it again on the same ports and data directory."""
        self._stop_node()
        self.start()

    def kill(self):
        """SIGKILLs the node (abrupt broker loss); start() brings it back on the same data."""
        node, self._node = self._node, None
        if node:
            self._killpg(node)

    def ctl(self, *args, timeout=60):
        """Runs `rabbitmqctl -q -n <node> <args>`; returns its output, raises on failure."""
        proc = subprocess.run([CTL, "-q", "-n", self.node_name] + [str(a) for a in args],
                              env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RabbitMQError("rabbitmqctl %s exited %d: %s"
                                % (args[0] if args else "", proc.returncode, proc.stdout))
        return proc.stdout

    def close(self):
        """stop(), then removes the directory."""
        self.stop()
        if self._watchdog:
            self._killpg(self._watchdog)
            self._watchdog = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
