"""Python handle on the two-host test rig (tests/rig/rig and tests/rig/rig-agent).

    with Rig("py1") as rig:          # rig up (+ observer); rig down on exit, whatever happened
        rig.start_agent("a")
        rig.agent_status("a")["peers"]

Every call runs the rig's own scripts, so the C++ tests, these Python tests and the demo share
one implementation. Needs root.
"""
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class RigError(Exception):
    """A rig command failed; the message carries its output."""


class Rig:
    def __init__(self, name, build_dir=None):
        self.name = name
        self.dir = "/tmp/nova-dt-rig-%s" % name
        build = build_dir or os.environ.get("NOVA_DT_BUILD") or os.path.join(REPO, "build")
        self._env = dict(os.environ, RIG_NAME=name, RIG_DIR=self.dir, NOVA_DT_BUILD=build,
                         RIG_GUEST_DIR=os.path.join(build, "guest"))

    def _run(self, script, *args, timeout=120, check=True):
        proc = subprocess.run([os.path.join(HERE, script)] + [str(a) for a in args],
                              env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RigError("%s %s failed (exit %d):\n%s"
                           % (script, " ".join(map(str, args)), proc.returncode, proc.stdout))
        return proc

    # Bring-up and teardown.
    def up(self, netem=None):
        self._run("rig", "up", *(["--netem", netem] if netem else []), timeout=90)
        self._run("rig", "observer", "start")

    def down(self):
        self._run("rig", "down", timeout=60)

    def leftovers(self):
        """What `down` left behind (namespaces, mounts, the state directory); empty if nothing."""
        found = []
        netns = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
        names = {line.split()[0] for line in netns.splitlines() if line.strip()}
        found += sorted(names & {self.name + s for s in ("-a", "-b", "-net")})
        with open("/proc/self/mountinfo") as f:
            if self.dir in f.read():
                found.append("mounts under " + self.dir)
        if os.path.exists(self.dir):
            found.append(self.dir)
        return found

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    # Inside the hosts.
    def exec(self, host, *argv, check=True):
        return self._run("rig", "exec", host, *argv, check=check)

    def netem(self, host, params):
        """Impair host's link ("delay 50ms 20ms loss 5%", "loss 100%") or "clear" it."""
        self._run("rig", "netem", host, params)

    def boot_guest(self, host, name, uuid):
        self._run("rig", "boot-guest", host, name, uuid)

    def observer_values(self):
        out = self._run("rig", "observer", "values").stdout
        return [int(v) for v in out.split() if v.isdigit()]

    # Agents.
    def start_agent(self, host, **overrides):
        """Starts nova-dt-agent in host; overrides are section__key=value."""
        args = ["%s=%s" % (k.replace("__", ".", 1), v) for k, v in overrides.items()]
        self._run("rig-agent", "start", host, *args)

    def stop_agent(self, host, signal="TERM"):
        """Stops the agent (SIGTERM, or SIGKILL with signal="KILL"); returns its exit code."""
        out = self._run("rig-agent", "stop" if signal == "TERM" else "kill", host).stdout
        return int(out.strip().splitlines()[-1])

    def agent_status(self, host):
        """The agent's status as nova-dt-status --json prints it (proto field names)."""
        return json.loads(self._run("rig-agent", "status", host, "--json").stdout)
