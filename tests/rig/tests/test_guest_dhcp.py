"""The test guest's dt.ip=dhcp (tests/guest/init, tests/guest/udhcpc.script) on the rig.

As a Nova server the guest gets its address from Neutron's DHCP agent (dnsmasq) and its kernel
command line from the Glance image, the same for every server. Here a dnsmasq in the rig's switch
namespace plays Neutron's: one dhcp-host entry (MAC -> address) per guest, as Neutron writes one
per port. The guests boot with the rig's usual `dt.ip=198.18.0.50/24 ...` followed by the
appended `dt.ip=dhcp`: init takes the last dt.ip=, so a guest that ignored DHCP would show up at
the observer as 198.18.0.50.

Needs root and /usr/sbin/dnsmasq (dnsmasq-base). Builds the guest with scripts/build-test-guest
into $RIG_GUEST_DIR (else $NOVA_DT_BUILD/guest, else build/guest; nothing is done when it is up to
date), brings up its own rig named "pydhcp" and always tears it down. Every wait is bounded and
generous (TCG guests on a loaded machine); nothing asserts a speed.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rig import HERE as RIG_HERE, REPO, Rig  # noqa: E402

DNSMASQ = "/usr/sbin/dnsmasq"
RIG_NAME = "pydhcp"
OBSERVER_IP = "198.18.0.100"


def guest_dir():
    if os.environ.get("RIG_GUEST_DIR"):
        return os.environ["RIG_GUEST_DIR"]
    return os.path.join(os.environ.get("NOVA_DT_BUILD") or os.path.join(REPO, "build"), "guest")


def wait_for(pred, timeout, interval=0.5):
    """pred()'s first true value within timeout seconds, else its last (false) value."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class GuestDhcpTest(unittest.TestCase):
    """One rig for the class; each test boots its own guest and destroys it at the end."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise RuntimeError("the rig needs root (network and mount namespaces, libvirtd)")
        if not os.access(DNSMASQ, os.X_OK):
            raise RuntimeError("%s is missing: install dnsmasq-base (scripts/install-deps)"
                               % DNSMASQ)
        cls.guest_dir = guest_dir()
        build = subprocess.run([os.path.join(REPO, "scripts", "build-test-guest"), cls.guest_dir],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=900)
        if build.returncode != 0:
            raise RuntimeError("scripts/build-test-guest %s failed:\n%s"
                               % (cls.guest_dir, build.stdout))
        cls.rig = Rig(RIG_NAME)
        cls.rig.__enter__()  # rig up + observer; downs the rig itself when that fails

    @classmethod
    def tearDownClass(cls):
        cls.rig.down()
        assert cls.rig.leftovers() == [], cls.rig.leftovers()

    # --- helpers --------------------------------------------------------------------------------
    def rig_cmd(self, *args, timeout=120, check=True):
        return self.rig._run("rig", *args, timeout=timeout, check=check)

    def console_path(self, name):
        return os.path.join(self.rig.dir, "a", "log", name + "-console.log")

    def console(self, name):
        return read(self.console_path(name))

    def wait_console(self, name, pattern, timeout):
        """The first match of pattern in the guest's console log within timeout seconds."""
        m = wait_for(lambda: re.search(pattern, self.console(name), re.M), timeout)
        self.assertTrue(m, "no /%s/ on %s's console within %d s; console:\n%s"
                        % (pattern, name, timeout, self.console(name)[-4000:]))
        return m

    def observer_lines(self, boot):
        """(time, source ip, seq) of every observer line of the guest's boot id, in order."""
        out = []
        for line in read(os.path.join(self.rig.dir, "observer.log")).splitlines():
            m = re.match(r"(\S+) ([0-9.]+):\d+ seq=(\d+) boot=(\S+)$", line)
            if m and m.group(4) == boot:
                out.append((float(m.group(1)), m.group(2), int(m.group(3))))
        return out

    def start_dnsmasq(self, hosts, lease):
        """dnsmasq (DHCP only) on the switch's br0, as Neutron's DHCP agent runs it: one
        dhcp-host entry per (mac, ip). Returns (process, its log path, its lease file path)."""
        tmp = tempfile.mkdtemp(prefix="nova-dt-dhcp-test.")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        log = os.path.join(tmp, "dnsmasq.log")
        leases = os.path.join(tmp, "leases")
        argv = [os.path.join(RIG_HERE, "rig"),
                "exec", "net", DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--port=0",
                "--interface=br0", "--bind-interfaces", "--user=root", "--log-dhcp",
                "--log-facility=-", "--pid-file=" + os.path.join(tmp, "dnsmasq.pid"),
                "--dhcp-leasefile=" + leases,
                "--dhcp-range=198.18.0.150,198.18.0.199,255.255.255.0,%s" % lease]
        argv += ["--dhcp-host=%s,%s" % (mac, ip) for mac, ip in hosts]
        with open(log, "w") as out:
            # `rig exec` execs nsenter, which execs dnsmasq: proc is dnsmasq itself.
            proc = subprocess.Popen(argv, env=self.rig._env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop, proc)
        self.assertTrue(wait_for(lambda: "DHCP, sockets bound" in read(log)
                                 or proc.poll() is not None, 30),
                        "dnsmasq did not start within 30 s:\n" + read(log))
        self.assertIsNone(proc.poll(), "dnsmasq exited:\n" + read(log))
        return proc, log, leases

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def boot_dhcp_guest(self, name, mac):
        self.rig_cmd("boot-guest", "a", name, "--mac", mac, "--guest-dir", self.guest_dir,
                     "--append", "dt.ip=dhcp")
        self.addCleanup(self.rig_cmd, "virsh", "a", "destroy", name, timeout=60, check=False)

    def boot_id(self, name):
        return self.wait_console(name, r"^dtcounter: start .* boot=([0-9a-f]+)", 180).group(1)

    def assert_counts_from(self, boot, ip, at_least, timeout, after=0.0):
        """At least `at_least` values of boot received after `after` (unix time), all from ip,
        every value one more than the one before. Returns the lines."""
        got = wait_for(lambda: len([x for x in self.observer_lines(boot) if x[0] > after])
                       >= at_least, timeout)
        lines = self.observer_lines(boot)
        self.assertTrue(got, "fewer than %d values of boot %s at the observer after %.0f within "
                        "%d s: %s" % (at_least, boot, after, timeout, lines[-5:]))
        self.assertEqual({src for _, src, _ in lines}, {ip}, "values from other addresses")
        seqs = [seq for _, _, seq in lines]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))),
                         "values do not increase by 1")
        return lines

    # --- tests ----------------------------------------------------------------------------------
    def test_1_guest_takes_the_address_dnsmasq_assigns_also_from_a_late_server(self):
        name, mac, ip = "dhcp1", "52:54:00:d4:c0:01", "198.18.0.160"
        self.boot_dhcp_guest(name, mac)
        # The server comes up only once the guest is already asking (as a DHCP agent may).
        self.wait_console(name, r"^init: dt\.ip=dhcp: asking", 180)
        _, log, leases = self.start_dnsmasq([(mac, ip)], "12h")

        bound = self.wait_console(name, r"^udhcpc\.script: bound eth0 (\S+) router (\S+) "
                                        r"lease (\d+)s server (\S+)", 120)
        self.assertEqual(bound.group(1), ip + "/24")
        self.assertEqual(bound.group(2), OBSERVER_IP)  # dnsmasq offers itself as the router
        self.assertEqual(bound.group(4), OBSERVER_IP)
        self.wait_console(name, r"^init: eth0 %s/24" % re.escape(ip), 60)
        boot = self.boot_id(name)
        self.assert_counts_from(boot, ip, 50, 120)

        self.assertRegex(read(log), r"DHCPACK\(br0\) %s %s" % (re.escape(ip), mac))
        self.assertRegex(read(leases), r"%s %s" % (mac, re.escape(ip)))

    def test_2_address_outlives_its_lease_with_the_server_gone(self):
        # dnsmasq's shortest lease is 2 minutes. The guest never renews (udhcpc -q exited after
        # binding): once the server is gone and the lease has run out, the address is still
        # there and the values keep coming from it.
        name, mac, ip = "dhcp2", "52:54:00:d4:c0:02", "198.18.0.161"
        lease = 120
        proc, _, _ = self.start_dnsmasq([(mac, ip)], "%ds" % lease)
        self.boot_dhcp_guest(name, mac)
        bound = self.wait_console(name, r"^udhcpc\.script: bound eth0 (\S+) .*lease (\d+)s", 180)
        bound_by = time.time()  # the lease started before this moment
        self.assertEqual(bound.group(1), ip + "/24")
        self.assertEqual(int(bound.group(2)), lease)
        boot = self.boot_id(name)
        self.assert_counts_from(boot, ip, 20, 120)
        self.stop(proc)

        expired = bound_by + lease + 15  # past T1 (60 s), T2 (105 s) and the end of the lease
        time.sleep(max(0.0, expired - time.time()))
        self.assert_counts_from(boot, ip, 50, 120, after=expired)
        after_bound = self.console(name).split(bound.group(0), 1)[1]
        self.assertNotIn("udhcpc", after_bound, "a DHCP client ran again after binding")
        self.assertEqual(self.rig_cmd("virsh", "a", "domstate", name).stdout.strip(), "running")

    def test_3_without_a_dhcp_server_the_guest_says_so_and_carries_on(self):
        name, mac = "dhcp3", "52:54:00:d4:c0:03"
        self.boot_dhcp_guest(name, mac)
        self.wait_console(name, r"^init: dt\.ip=dhcp: asking", 180)
        # udhcpc gives up after 60 s (killed at 75 s at the latest): 240 s is generous.
        self.wait_console(name, r"^init: dt\.ip=dhcp: no DHCP lease within 60 s, eth0 has no "
                                r"address", 240)
        self.wait_console(name, r"^init: eth0 , uptime", 30)
        boot = self.boot_id(name)
        # PID 1 went on: the workload runs (it logs every 500th value) and the domain lives.
        self.wait_console(name, r"^dtcounter: value=500$", 120)
        self.assertEqual(self.rig_cmd("virsh", "a", "domstate", name).stdout.strip(), "running")
        self.assertEqual(self.observer_lines(boot), [], "a guest without an address sent values")


if __name__ == "__main__":
    unittest.main()
