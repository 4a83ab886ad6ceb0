"""The rig driven from Python: two hosts, their agents, the link between them and its netem.

Needs root; brings up its own rig named "py1" and always tears it down.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rig import Rig  # noqa: E402


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def peer(status, host):
    return next((p for p in status["peers"] if p["host"] == host), None)


class RigAgentsTest(unittest.TestCase):
    """One rig for the class: bring-up costs seconds."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise RuntimeError("the rig needs root (network and mount namespaces, libvirtd)")
        cls.rig = Rig("py1")
        cls.rig.__enter__()
        try:
            cls.rig.start_agent("a", peer__hello_interval_ms=200)
            cls.rig.start_agent("b", peer__hello_interval_ms=200)
        except BaseException:
            cls.rig.down()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.rig.down()
        assert cls.rig.leftovers() == [], cls.rig.leftovers()

    def reachable(self, host, other):
        p = peer(self.rig.agent_status(host), other)
        return bool(p and p["reachable"])

    def test_1_agents_see_each_other_with_their_libvirtd(self):
        for host, other in (("a", "rig-b"), ("b", "rig-a")):
            self.assertTrue(wait_for(lambda: self.reachable(host, other), 15),
                            self.rig.agent_status(host))
            status = self.rig.agent_status(host)
            self.assertEqual(status["host"], "rig-" + host)
            self.assertTrue(status["hypervisor"]["connected"], status)
            self.assertEqual(status["hypervisor"]["connection_uri"], "qemu:///system")

    def test_2_hosts_have_their_own_network_and_libvirt(self):
        a = self.rig.exec("a", "ip", "-o", "-4", "addr", "show", "br0").stdout
        b = self.rig.exec("b", "ip", "-o", "-4", "addr", "show", "br0").stdout
        self.assertIn("198.18.0.1/24", a)
        self.assertIn("198.18.0.2/24", b)
        # Each host's /run/libvirt is its own: the sockets are different files.
        ino = [self.rig.exec(h, "stat", "-c", "%i", "/run/libvirt/libvirt-sock").stdout
               for h in ("a", "b")]
        self.assertNotEqual(ino[0], ino[1])

    def test_3_partitioned_link_makes_the_peer_unreachable_and_healing_restores_it(self):
        self.assertTrue(wait_for(lambda: self.reachable("a", "rig-b"), 15))
        self.rig.netem("b", "loss 100%")
        try:
            # hello every 200 ms, stale after three intervals.
            self.assertTrue(wait_for(lambda: not self.reachable("a", "rig-b"), 5),
                            self.rig.agent_status("a"))
        finally:
            self.rig.netem("b", "clear")
        self.assertTrue(wait_for(lambda: self.reachable("a", "rig-b"), 10),
                        self.rig.agent_status("a"))

    def test_4_delay_shows_in_the_measured_round_trip(self):
        self.rig.netem("b", "delay 40ms")
        try:
            self.assertTrue(wait_for(
                lambda: int(peer(self.rig.agent_status("a"), "rig-b")["rtt_us"]) >= 40000, 10),
                self.rig.agent_status("a"))
        finally:
            self.rig.netem("b", "clear")

    def test_5_agents_stop_in_order(self):
        self.assertEqual(self.rig.stop_agent("a"), 0)
        self.assertEqual(self.rig.stop_agent("b"), 0)


if __name__ == "__main__":
    unittest.main()
