"""One nova-dt-agent process for Python tests and benchmarks.

    agent = AgentProcess(build_dir, workdir, config_text)   # started
    ...
    agent.stop()   # SIGTERM, then SIGKILL after 10 s; returns the exit code

`config_text` is INI; the agent also gets a second --config-file that points its control socket,
state and peer listener into `workdir` (loopback, port 0), so tests only write what they test.
"""
import os
import signal
import subprocess
import sys
import unittest


class AgentClassTestCase(unittest.TestCase):
    """A test class whose set-up (``_set_up``) starts servers and an agent (``cls.agent``).

    unittest does not call tearDownClass when setUpClass fails: here a failed set-up prints the
    agent's log tail and cleans up itself, so no broker or agent outlives it. tearDownClass must
    cope with a partial set-up.
    """

    @classmethod
    def setUpClass(cls):
        try:
            cls._set_up()
        except BaseException:
            if getattr(cls, "agent", None):
                sys.stderr.write("agent log:\n" + cls.agent.log_text()[-4000:])
            cls.tearDownClass()
            raise

    @classmethod
    def _set_up(cls):
        raise NotImplementedError


def bus_test_config(host, transport_url, backup_host, extra=""):
    """An agent on libvirt's test:///default driver, on the bus at `transport_url`, publishing
    its notifications, protecting new DT servers to `backup_host` (a peer nobody answers for)."""
    return """[DEFAULT]
host = %(host)s
transport_url = %(url)s
[oslo_messaging_notifications]
driver = messagingv2
[libvirt]
connection_uri = test:///default
[peer]
peers = %(backup)s=127.0.0.1:9
[replication]
default_backup_host = %(backup)s
%(extra)s""" % {"host": host, "url": transport_url, "backup": backup_host, "extra": extra}


class AgentProcess:
    def __init__(self, build_dir, workdir, config_text):
        binary = os.path.join(build_dir, "agent", "daemon", "nova-dt-agent")
        if not os.access(binary, os.X_OK):
            raise RuntimeError("build the agent first: " + binary)
        self.dir = workdir
        os.makedirs(os.path.join(workdir, "state"), exist_ok=True)
        self.conf = os.path.join(workdir, "agent.conf")
        with open(self.conf, "w") as f:
            f.write(config_text)
        self.local_conf = os.path.join(workdir, "local.conf")
        with open(self.local_conf, "w") as f:
            # Replicas in the scratch directory, not the agent's system default.
            f.write("[DEFAULT]\ncontrol_address = unix:%s/agent.sock\nstate_path = %s/state\n"
                    "[peer]\nlisten_address = 127.0.0.1:0\n"
                    # Loopback only, and no peer ever calls: the bus is what these tests test.
                    "allow_insecure = true\n"
                    "[replication]\nreplica_path = %s/state/replicas\n"
                    % (workdir, workdir, workdir))
        self.log_path = os.path.join(workdir, "agent.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--config-file", self.conf, "--config-file", self.local_conf],
            stdout=self._log, stderr=subprocess.STDOUT)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
