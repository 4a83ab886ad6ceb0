"""One request for several DT servers (``openstack server create --min 3 --max 3``).

Nova's scheduler filters the hosts once per instance of a request, and from the second instance
on it filters only the hosts that passed the previous instance's filters. With ``dt:peer_az`` the
hosts of that zone never pass as primaries, so without DTPairFilter remembering the request's
partner pool the second server found no partner and the whole request ended in NoValidHost.
"""

import gc
import time

from nova_dt.controller import planner
from nova_dt.scheduler import filters as dt_filters
from nova_dt.tests.functional import base


class TestDTMultiCreate(base.DTFunctionalTestCase):
    """host1 and host3 in az1, host2 in az2."""

    COUNT = 3

    def boot_many(self, flavor_id):
        """One POST /servers with min_count = max_count = COUNT; the servers once built."""
        req = self._build_server(flavor_id=flavor_id, networks='none')
        req.update(min_count=self.COUNT, max_count=self.COUNT, return_reservation_id=True)
        reservation_id = self.api.post_server({'server': req})['reservation_id']
        servers = self.api.get_servers(search_opts={'reservation_id': reservation_id})
        self.assertEqual(self.COUNT, len(servers))
        built = []
        for server in servers:
            server = self._wait_until_built(server)
            self.assertEqual('ACTIVE', server['status'],
                             '%s: %s' % (server['id'], server.get('fault')))
            built.append(server)
        self.notifier.wait_for_versioned_notifications('instance.create.end',
                                                       n_events=self.COUNT)
        self.feed_nova_notifications('instance.create.end')
        # The request is over: the filter holds none of its RequestSpec or HostStates.
        gc.collect()
        self.assertEqual(0, len(self.dt_pair_filter()._requests))
        return built

    def dt_pair_filter(self):
        host_manager = self.scheduler_service.manager.host_manager
        [filt] = [f for f in host_manager.enabled_filters
                  if isinstance(f, dt_filters.DTPairFilter)]
        return filt

    def _wait_until_built(self, server):
        """The server once it has left BUILD (ACTIVE, or ERROR with its fault)."""
        for _ in range(100):
            server = self.api.get_server(server['id'])
            if server['status'] != 'BUILD':
                return server
            time.sleep(0.1)
        return server

    def assert_protected_across_zones(self, servers):
        """Every server protected, its backup (claimed in Placement) in another zone."""
        resources = None
        for server in servers:
            pair = self.pair(server)
            primary = self.host_of(server)
            self.assertEqual((primary, planner.PROTECTED, None),
                             (pair.primary_host, pair.status, pair.job), server['id'])
            self.assertNotEqual(self.HOSTS[pair.primary_host], self.HOSTS[pair.backup_host],
                                (pair.primary_host, pair.backup_host))
            if resources is None:
                resources = self.allocations(server['id'])[self.rp(primary)]
            self.assertEqual({self.rp(pair.backup_host): resources},
                             self.allocations(self.reservation(server)))
        self.assertEqual(sorted(('protect', self.host_of(s), s['id'],
                                 self.pair(s).backup_host) for s in servers),
                         sorted(self.agents.casts))

    def test_peer_az_multi_create_places_every_server(self):
        flavor_id = self.create_dt_flavor(**{'dt:peer_az': 'az2'})
        servers = self.boot_many(flavor_id)
        self.assertEqual(['az1'] * self.COUNT,
                         [self.HOSTS[self.host_of(s)] for s in servers])
        self.assertEqual(['az1'] * self.COUNT,
                         [s['OS-EXT-AZ:availability_zone'] for s in servers])
        self.assert_protected_across_zones(servers)
        self.assertEqual(['host2'] * self.COUNT,
                         [self.pair(s).backup_host for s in servers])
        # host2 holds the three backup claims and no primary.
        flavor = self.admin_api.get_flavor(flavor_id)
        self.assertEqual({k: v * self.COUNT for k, v in
                          self.flavor_resources(flavor).items()}, self.usages('host2'))

    def test_multi_create_without_peer_az_places_every_server(self):
        flavor_id = self.create_dt_flavor()
        servers = self.boot_many(flavor_id)
        self.assert_protected_across_zones(servers)
