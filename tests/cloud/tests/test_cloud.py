"""nova-dt in a real OpenStack cloud (tests/cloud/cloud.py): what a cloud user does, end to end.

One cloud for the class (rig "ndtcloud": hosts a, c in az1 and b in az2, every service from
Debian's packages, nova-dt set up by the DevStack plugin's library); it is always torn down, and
nothing may be left behind. The tests run in order (test_1_ ... ): each leaves the cloud as it
found it. Servers are the test guest (tests/guest) booted from Glance: it counts, writes every
value to its disk and sends it to the observer in the switch namespace, from the address
Neutron's DHCP agent gave its port. Every wait is bounded and generous (TCG guests on a loaded
2-core machine); nothing asserts a speed. Needs root, the packages of scripts/install-deps and
the agent and test guest built (scripts/build; $NOVA_DT_BUILD, default build/).
"""
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cloud as cloudlib  # noqa: E402

NAME = "ndtcloud"
# Flavors boot with disk 0: the root disk is the image's (16 MiB). A backup's replica disk is
# allocated in full in its host's RAM file system (docs/compute-host.md: replicas live there), so
# a 1 GB root disk would cost each replica 1 GiB of the rig's memory.
DT_FLAVOR = "dt.small"
PLAIN_FLAVOR = "m1.small"
AZ_OF = {h: az for az, hosts in cloudlib.ZONES.items() for h in hosts}


def wait_for(what, pred, timeout, interval=1.0):
    """pred()'s first true value within timeout seconds; else fails with what and the last
    value or error."""
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = pred()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - reported below if the wait fails
            last = e
        if time.monotonic() >= end:
            raise AssertionError("%s: not within %d s (last: %r)" % (what, timeout, last))
        time.sleep(interval)


class CloudTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.cloud = cloudlib.Cloud(NAME)
        cls.cloud.up()
        cls._net = cls.cloud.network()
        cls._net.__enter__()
        try:
            from novaclient import client as nova_client
            from neutronclient.v2_0 import client as neutron_client
            cls.sess = cls.cloud.session()
            cls.nova = nova_client.Client("2.86", session=cls.sess)
            cls.neutron = neutron_client.Client(session=cls.sess)
            cls.net_id = cls.neutron.list_networks(name="rig")["networks"][0]["id"]
            cls.image = cls.nova.glance.find_image(cloudlib.GUEST_IMAGE)
            dt = cls.nova.flavors.create(DT_FLAVOR, 256, 1, 0)
            dt.set_keys({"dt:enabled": "true"})
            cls.dt_flavor = dt
            cls.plain_flavor = cls.nova.flavors.create(PLAIN_FLAVOR, 256, 1, 0)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls._net.__exit__(None, None, None)
        finally:
            # $NOVA_DT_CLOUD_LOGS: a directory to copy every service's log to before teardown.
            keep = os.environ.get("NOVA_DT_CLOUD_LOGS")
            if keep and os.path.isdir(cls.cloud.path("log")):
                shutil.copytree(cls.cloud.path("log"), keep, dirs_exist_ok=True)
                shutil.copy(os.path.join(cls.cloud.rig_dir, "observer.log"), keep)
                for h in cloudlib.HOST_IP:  # libvirtd's and QEMU's logs of each host
                    shutil.copytree(os.path.join(cls.cloud.rig_dir, h, "log"),
                                    os.path.join(keep, "libvirt-" + h), dirs_exist_ok=True)
            cls.cloud.down()
            leftovers = [p for p in ("/run/netns/%s-net" % NAME, cls.cloud.rig_dir)
                         if os.path.exists(p)]
            leftovers += [n for n in os.listdir("/run/netns") if n.startswith("qdhcp-")
                          and n[6:] == getattr(cls, "net_id", None)]
            assert not leftovers, "cloud down left %s" % leftovers

    # ---------------------------------------------------------------------------------------
    # helpers

    def boot(self, name, flavor, **kw):
        self._booted_at = time.time()  # the counter values of these servers come after this
        return self.nova.servers.create(name, self.image, flavor, nics=[{"net-id": self.net_id}],
                                        **kw)

    def wait_active(self, server, timeout=300):
        def active():
            s = self.nova.servers.get(server.id)
            self.assertNotEqual("ERROR", s.status, "server %s: %s" % (
                s.name, getattr(s, "fault", None)))
            return s if s.status == "ACTIVE" else None
        return wait_for("server %s ACTIVE" % server.name, active, timeout, 2)

    def delete_and_wait(self, *servers):
        for s in servers:
            self.nova.servers.delete(s)

        def gone():
            ids = {s.id for s in self.nova.servers.list()}
            return not ids & {s.id for s in servers}
        wait_for("servers deleted", gone, 180, 2)

    @staticmethod
    def host_of(server):
        return getattr(server, "OS-EXT-SRV-ATTR:host")

    def address_of(self, server):
        return server.addresses["rig"][0]["addr"]

    def protection(self, host, uuid):
        """The agent on host's entry for the server (role, state, peer_host), or None."""
        for p in self.cloud.agent_status(host).get("protected_servers", []):
            if p["instance_uuid"] == uuid:
                return p
        return None

    def wait_protected(self, server, timeout=300):
        """Waits until the primary's agent reports the server protected; returns the backup."""
        primary = self.host_of(server)

        def protected():
            p = self.protection(primary, server.id)
            return p if p and p["role"] == "primary" and p["state"] == "protected" else None
        p = wait_for("server %s protected by %s's agent" % (server.name, primary), protected,
                     timeout, 2)
        backup = p["peer_host"]
        b = wait_for("server %s held by the backup %s" % (server.name, backup),
                     lambda: self.protection(backup, server.id), 60, 1)
        self.assertEqual("backup", b["role"])
        self.assertEqual(primary, b["peer_host"])
        return backup

    def usages(self):
        """{provider name: usages} from Placement."""
        out = {}
        for rp in self.sess.get("/resource_providers",
                                endpoint_filter={"service_type": "placement"}
                                ).json()["resource_providers"]:
            out[rp["name"]] = self.sess.get(
                "/resource_providers/%s/usages" % rp["uuid"],
                endpoint_filter={"service_type": "placement"}).json()["usages"]
        return out

    def observer_values(self, server):
        """Counter values the observer received from the server's address since the server was
        booted (the address may have been a deleted server's before), in arrival order."""
        return self.cloud.observer_values(self.address_of(server), self._booted_at)

    def wait_counting(self, server, more_than, what, timeout=180):
        """Waits until the observer has more_than + 50 values of the server; returns them."""
        return wait_for("%s: the counter of %s (%s) going on" % (
            what, server.name, self.address_of(server)), lambda: (
                lambda v: v if len(v) >= more_than + 50 else None)(self.observer_values(server)),
            timeout, 2)

    # ---------------------------------------------------------------------------------------
    # tests

    def test_1_flavor_extra_specs_are_validated(self):
        from novaclient import exceptions
        flavor = self.nova.flavors.create("dt.bad", 256, 1, 1)
        try:
            for bad in ({"dt:epoch_ms": "5"}, {"dt:enabled": "maybe"}, {"dt:enable": "true"},
                        {"dt:peer_az": "a:b"}):
                with self.assertRaises(exceptions.BadRequest, msg=str(bad)) as ctx:
                    flavor.set_keys(bad)
                self.assertIn("Validation failed", str(ctx.exception))
            self.assertEqual({}, flavor.get_keys())
            flavor.set_keys({"dt:enabled": "true", "dt:epoch_ms": "100", "dt:peer_az": "az2"})
            self.assertEqual("az2", flavor.get_keys()["dt:peer_az"])
        finally:
            self.nova.flavors.delete(flavor)

    def test_2_multi_create_places_every_server_with_a_backup_in_another_zone(self):
        flavor = self.nova.flavors.create("dt.peer-az2", 256, 1, 0)
        flavor.set_keys({"dt:enabled": "true", "dt:peer_az": "az2"})
        try:
            for peer_az in ("az2", None):
                with self.subTest(peer_az=peer_az):
                    before = self.usages()
                    self.boot("multi", flavor if peer_az else self.dt_flavor, min_count=3,
                              max_count=3)
                    servers = [s for s in self.nova.servers.list() if
                               s.name.startswith("multi")]
                    self.assertEqual(3, len(servers), [s.name for s in servers])
                    try:
                        servers = [self.wait_active(s) for s in servers]
                        for s in servers:
                            primary = self.host_of(s)
                            if peer_az:
                                self.assertEqual("az1", AZ_OF[primary], s.name)
                            backup = self.wait_protected(s)
                            self.assertNotEqual(AZ_OF[primary], AZ_OF[backup], s.name)
                        # Every server holds 256 MiB on its primary and on its backup.
                        after = self.usages()
                        used = sum(after[h]["MEMORY_MB"] - before[h]["MEMORY_MB"]
                                   for h in after)
                        self.assertEqual(3 * 2 * 256, used, after)
                    finally:
                        self.delete_and_wait(*servers)
                    wait_for("claims released", lambda: self.usages() == before, 120, 2)
        finally:
            self.nova.flavors.delete(flavor)

    def test_3_dt_server_is_protected_and_counts_a_plain_server_is_not(self):
        before = self.usages()
        dt = self.wait_active(self.boot("dt1", self.dt_flavor))
        plain = self.wait_active(self.boot("plain1", self.plain_flavor))
        try:
            primary = self.host_of(dt)
            backup = self.wait_protected(dt)
            self.assertNotEqual(AZ_OF[primary], AZ_OF[backup])
            # Placement: the server on its primary, the backup's claim on the backup, the plain
            # server on its host only.
            after = self.usages()
            delta = {h: after[h]["MEMORY_MB"] - before[h]["MEMORY_MB"] for h in after}
            expected = {h: 0 for h in after}
            for h in (primary, backup, self.host_of(plain)):
                expected[h] += 256
            self.assertEqual(expected, delta)
            # The observer receives the counter from the port's address, one by one.
            # (and goes on counting while protected)
            values = self.wait_counting(dt, len(self.observer_values(dt)), "protected")
            self.assertOneCountingGuest(values, failover_at=0)
            # The plain server: running, counting, protected by nobody.
            self.wait_counting(plain, 0, "unprotected")
            for h in cloudlib.HOST_IP:
                self.assertIsNone(self.protection(h, plain.id), h)
        finally:
            self.delete_and_wait(dt, plain)
        # Deleting releases the claims and frees the replica on the backup.
        wait_for("claims released", lambda: self.usages() == before, 120, 2)
        for h in (primary, backup):
            wait_for("agent on %s forgot %s" % (h, dt.id),
                     lambda h=h: self.protection(h, dt.id) is None, 60, 1)
        # (The replicas live in the backup's own tmpfs, seen only inside the host.)
        wait_for("replica of %s removed on %s" % (dt.id, backup), lambda: dt.id not in self.cloud.rig(
            "exec", backup, "ls", "-AR", "/var/lib/libvirt/qemu/ram/").stdout, 60, 1)

    def test_4_primary_host_lost_server_goes_on_from_b_and_nova_follows(self):
        # The backup in az2 (b): the primary is one of az1's hosts (a or c).
        flavor = self.nova.flavors.create("dt.peer-az2-fo", 256, 1, 0)
        flavor.set_keys({"dt:enabled": "true", "dt:peer_az": "az2"})
        before = self.usages()
        dt = self.wait_active(self.boot("dt-failover", flavor))
        lost = None
        try:
            primary = self.host_of(dt)
            domain = getattr(dt, "OS-EXT-SRV-ATTR:instance_name")
            self.assertEqual("az1", AZ_OF[primary])
            self.assertEqual("b", self.wait_protected(dt))
            survivor = ({h for h, az in AZ_OF.items() if az == "az1"} - {primary}).pop()
            address = self.address_of(dt)
            self.wait_counting(dt, len(self.observer_values(dt)), "protected")

            # The primary's host loses power: nova-compute, libvirtd, QEMU, the agents.
            seen_before = len(self.observer_values(dt))
            killed_at = time.time()
            self.cloud.power_off(primary)
            lost = primary

            # The counter goes on from b: nothing a client saw is undone, one guest counts on
            # (assertOneCountingGuest says which values may be missing, and why).
            values = self.wait_counting(dt, seen_before, "after the loss of " + primary)
            self.assertOneCountingGuest(values, failover_at=seen_before)
            print("\nfailover of %s from %s to b: client-visible stall %.0f ms"
                  % (dt.id, primary, self.largest_gap_ms(address, killed_at)), file=sys.stderr)

            # Nova follows within 60 s of the loss: the server ACTIVE on b, its port bound to
            # b, its allocation moved to b.
            def on_b():
                s = self.nova.servers.get(dt.id)
                return s if s.status == "ACTIVE" and self.host_of(s) == "b" else None
            # (nova-dt-controller's steps, in this order: host, port binding, allocations.)
            left = lambda: max(1, killed_at + 60 - time.time())  # noqa: E731
            wait_for("server show: ACTIVE on b", on_b, left(), 1)
            wait_for("the port bound to b", lambda: [p["binding:host_id"] for p in
                     self.neutron.list_ports(device_id=dt.id)["ports"]] == ["b"], left(), 1)
            b_uuid = self.provider_uuid("b")
            wait_for("the allocation on b only",
                     lambda: set(self.allocations(dt.id)) == {b_uuid}, left(), 1)

            # Re-protected by itself, to the surviving host of az1; the backup claim is there.
            self.assertEqual(survivor, self.wait_protected(self.nova.servers.get(dt.id)))
            entries = [p for p in self.cloud.agent_status("b")["protected_servers"]
                       if p["instance_uuid"] == dt.id]
            self.assertEqual(1, len(entries), entries)
            after = self.usages()
            delta = {h: after[h]["MEMORY_MB"] - before[h]["MEMORY_MB"] for h in after}
            self.assertEqual({"b": 256, survivor: 256, primary: 0}, delta)

            # The lost host comes back: its nova-compute completes the evacuation record,
            # removes its copy of the server (domain and instance directory) and starts none.
            self.cloud.power_on(primary)
            lost = None

            def evacuation_completed():
                records = [m for m in self.nova.migrations.list(instance_uuid=dt.id)
                           if m.migration_type == "evacuation"]
                return records and all(m.status == "completed" for m in records)
            wait_for("the evacuation record completed by %s" % primary, evacuation_completed,
                     300, 2)
            domains = self.cloud.rig("virsh", primary, "list", "--all",
                                     "--uuid").stdout
            self.assertNotIn(dt.id, domains)
            instance_dir = os.path.join(self.cloud.rig_dir, primary, "nova", "instances", dt.id)
            self.assertFalse(os.path.exists(instance_dir), instance_dir)
            self.assertIsNone(self.protection(primary, dt.id))
            # Still one guest counting, on b.
            values = self.wait_counting(dt, len(self.observer_values(dt)),
                                        "after %s returned" % primary)
            self.assertOneCountingGuest(values, failover_at=seen_before)
            self.assertEqual("b", self.host_of(self.nova.servers.get(dt.id)))
        finally:
            if lost:
                self.cloud.power_on(lost)
            self.delete_and_wait(dt)
            self.nova.flavors.delete(flavor)
        # Deleting frees the claims, and on every host the replicas (b's: the files the server
        # ran on since the failover) and guest RAM files (libvirt's, named after the domain).
        wait_for("claims released", lambda: self.usages() == before, 120, 2)
        for h in cloudlib.HOST_IP:
            wait_for("agent on %s forgot %s" % (h, dt.id),
                     lambda h=h: self.protection(h, dt.id) is None, 60, 1)

            def no_ram_files(h=h):
                found = [line for line in self.cloud.rig(
                    "exec", h, "find", "/var/lib/libvirt/qemu/ram/").stdout.splitlines()
                    if dt.id in line or domain in line]
                if found:
                    raise AssertionError("left: %s" % found)  # wait_for reports the last one
                return True
            wait_for("files of %s removed from %s's RAM file system" % (dt.id, h),
                     no_ram_files, 60, 1)

    # ---------------------------------------------------------------------------------------
    # checks

    def assertOneCountingGuest(self, values, failover_at):
        """One guest counting (no value twice, none out of order: no second copy), and nothing
        a client saw undone by the failover: the first value after it (index failover_at) is
        beyond every value seen before. Values missing are allowed and printed: the step over
        the last committed epoch's frames the lost primary never released (no client saw them),
        and frames the network dropped — Neutron's Linux bridge agent drops a port's frames for
        a moment whenever it (re)installs the port's MAC anti-spoofing chain (arp_protect.py: the
        jump into the default-DROP chain goes in before the rule that lets the port's MAC
        through; an update deletes that rule and adds it again), which after a failover is when
        it wires the port on the new host while the restored guest already sends. A TCP peer
        would get those frames again from the guest."""
        for i in range(1, len(values)):
            self.assertGreater(values[i], values[i - 1], "value %d after %d at %d (of %d)" % (
                values[i], values[i - 1], i, len(values)))
        if 0 < failover_at < len(values):
            self.assertGreater(values[failover_at], max(values[:failover_at]))
        missing = [(values[i - 1], values[i]) for i in range(1, len(values))
                   if values[i] != values[i - 1] + 1]
        if missing:
            print("\nvalues missing at the observer (after, next): %s" % missing, file=sys.stderr)

    def largest_gap_ms(self, address, since):
        """The largest gap between two arrivals from address after since (unix seconds)."""
        prev, gap = since, 0.0
        for t, _ in self.cloud.observer_values(address, since, times=True):
            gap, prev = max(gap, (t - prev) * 1000), t
        return gap

    def provider_uuid(self, host):
        return self.sess.get("/resource_providers?name=%s" % host,
                             endpoint_filter={"service_type": "placement"}
                             ).json()["resource_providers"][0]["uuid"]

    def allocations(self, consumer):
        """{provider uuid: resources} of the consumer in Placement."""
        return {rp: a["resources"] for rp, a in self.sess.get(
            "/allocations/%s" % consumer, endpoint_filter={"service_type": "placement"}
        ).json()["allocations"].items()}


if __name__ == "__main__":
    unittest.main()
