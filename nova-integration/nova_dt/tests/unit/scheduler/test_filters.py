"""DTPairFilter, on nova's FakeHostState and RequestSpec, through nova's own filter handler."""

import gc
import weakref

from oslo_utils import uuidutils

from nova.scheduler import filters
from nova import test

from nova_dt.scheduler import filters as dt_filters
from nova_dt.scheduler import pairing
from nova_dt.tests.unit.scheduler import fakes


def names(host_states):
    return sorted(h.host for h in host_states)


class _DropHosts(filters.BaseHostFilter):
    """Stands for any filter listed before DTPairFilter that removes some hosts."""

    drop = ()

    def host_passes(self, host_state, spec_obj):
        return host_state.host not in self.drop


class TestDTPairFilter(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.filt = dt_filters.DTPairFilter()

    def _passing(self, hosts, spec_obj):
        """What nova's HostFilterHandler returns with DTPairFilter enabled."""
        return filters.HostFilterHandler().get_filtered_objects([self.filt], hosts, spec_obj)

    def test_loaded_by_import_path(self):
        classes = filters.HostFilterHandler().get_matching_classes(
            ['nova.scheduler.filters.all_filters', 'nova_dt.scheduler.filters.DTPairFilter'])
        self.assertIn(dt_filters.DTPairFilter, classes)

    def test_non_dt_flavor_always_passes(self):
        hosts = [fakes.host('h1', capable=False), fakes.host('h2', capable=None, az=None),
                 fakes.host('h3', free_ram_mb=0)]
        for extra_specs in ({}, {'dt:enabled': 'false'}, {'hw:cpu_policy': 'dedicated'},
                            {'dt:enabled': 'no', 'dt:peer_az': 'az9'}):
            spec_obj = fakes.request(extra_specs)
            self.assertEqual(['h1', 'h2', 'h3'], names(self._passing(hosts, spec_obj)))
            for h in hosts:
                self.assertTrue(self.filt.host_passes(h, spec_obj))
                self.assertIsNone(pairing.get_partners(h))

    def test_flavor_the_agent_refuses_is_not_dt(self):
        hosts = [fakes.host('h1', capable=False)]
        for extra_specs in ({'dt:enabled': 'maybe'},
                            {'dt:enabled': 'true', 'dt:epoch_ms': '5'}):
            self.assertEqual(['h1'], names(self._passing(hosts, fakes.request(extra_specs))))

    def test_partner_in_other_az_passes_both_ways(self):
        h1, h2 = fakes.host('h1', az='az1'), fakes.host('h2', az='az2')
        self.assertEqual(['h1', 'h2'], names(self._passing([h1, h2], fakes.dt_request())))
        self.assertEqual(['h2'], list(pairing.get_partners(h1)))
        self.assertEqual(['h1'], list(pairing.get_partners(h2)))

    def test_no_partner_in_same_az_only(self):
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az1')]
        self.assertEqual([], names(self._passing(hosts, fakes.dt_request())))
        self.assertFalse(pairing.get_partners(hosts[0]))

    def test_single_host_fails(self):
        self.assertEqual([], names(self._passing([fakes.host('h1')], fakes.dt_request())))

    def test_not_capable_host_fails_and_is_no_partner(self):
        h1 = fakes.host('h1', az='az1', capable=False)
        h2 = fakes.host('h2', az='az2')
        h3 = fakes.host('h3', az='az1', capable=None)
        self.assertEqual([], names(self._passing([h1, h2, h3], fakes.dt_request())))
        self.assertFalse(self.filt.host_passes(h1, fakes.dt_request()))
        self.assertFalse(self.filt.host_passes(h3, fakes.dt_request()))

    def test_capability_false_on_any_aggregate_wins(self):
        aggs = [fakes.aggregate(['h1'], az='az1', **{'nova_dt:capable': 'true'}),
                fakes.aggregate(['h1'], **{'nova_dt:capable': 'false'})]
        h1 = fakes.host('h1', aggregates=aggs)
        h2 = fakes.host('h2', az='az2')
        self.assertEqual([], names(self._passing([h1, h2], fakes.dt_request())))

    def test_capability_on_a_separate_aggregate(self):
        aggs = [fakes.aggregate(['h1'], az='az1'),
                fakes.aggregate(['h1'], **{'nova_dt:capable': 'True'})]
        h1 = fakes.host('h1', aggregates=aggs)
        h2 = fakes.host('h2', az='az2')
        self.assertEqual(['h1', 'h2'], names(self._passing([h1, h2], fakes.dt_request())))

    def test_capable_metadata_key_is_configurable(self):
        self.flags(capable_metadata_key='site:dt', group='nova_dt')
        h1 = fakes.host('h1', az='az1', aggregates=[
            fakes.aggregate(['h1'], az='az1', **{'site:dt': 'yes'})])
        h2 = fakes.host('h2', az='az2')  # marked with the default key only
        h3 = fakes.host('h3', az='az2', aggregates=[
            fakes.aggregate(['h3'], az='az2', **{'site:dt': '1'})])
        self.assertEqual(['h1', 'h3'], names(self._passing([h1, h2, h3], fakes.dt_request())))

    def test_host_without_az_aggregate_is_in_default_az(self):
        self.flags(default_availability_zone='nova')
        h1 = fakes.host('h1', az=None)
        h2 = fakes.host('h2', az='nova')
        h3 = fakes.host('h3', az='az2')
        self.assertEqual(['h1', 'h2', 'h3'],
                         names(self._passing([h1, h2, h3], fakes.dt_request())))
        self.assertEqual(['h3'], list(pairing.get_partners(h1)))
        self.assertEqual(['h1', 'h2'], sorted(pairing.get_partners(h3)))

    def test_partner_without_capacity_fails(self):
        spec_obj = fakes.dt_request(memory_mb=4096, vcpus=4, root_gb=20)
        for lacking in ({'free_ram_mb': 4095}, {'ram_mb': 2048},
                        {'vcpus_used': 13}, {'vcpus': 2},
                        {'free_disk_gb': 19}, {'disk_gb': 10},
                        {'vcpus': 0}):
            h1 = fakes.host('h1', az='az1')
            h2 = fakes.host('h2', az='az2', **lacking)
            self.assertEqual(['h2'], names(self._passing([h1, h2], spec_obj)), lacking)

    def test_partner_with_exactly_enough_passes(self):
        spec_obj = fakes.dt_request(memory_mb=4096, vcpus=4, root_gb=20, ephemeral_gb=5,
                                    swap=1024)
        h1 = fakes.host('h1', az='az1')
        h2 = fakes.host('h2', az='az2', free_ram_mb=4096, vcpus_used=12, free_disk_gb=26)
        self.assertEqual(['h1', 'h2'], names(self._passing([h1, h2], spec_obj)))
        h3 = fakes.host('h3', az='az2', free_ram_mb=4096, vcpus_used=12, free_disk_gb=25)
        self.assertEqual(['h3'], names(self._passing([h1, h3], spec_obj)))

    def test_allocation_ratios_count(self):
        spec_obj = fakes.dt_request(memory_mb=4096, vcpus=4)
        h1 = fakes.host('h1', az='az1')
        full = dict(free_ram_mb=0, vcpus_used=16)
        h2 = fakes.host('h2', az='az2', **full)
        self.assertEqual(['h2'], names(self._passing([h1, h2], spec_obj)))
        h2 = fakes.host('h2', az='az2', ram_allocation_ratio=1.5, cpu_allocation_ratio=4.0,
                        **full)
        self.assertEqual(['h1', 'h2'], names(self._passing([h1, h2], spec_obj)))

    def test_boot_from_volume_needs_no_root_disk_on_partner(self):
        h1 = fakes.host('h1', az='az1')
        h2 = fakes.host('h2', az='az2', free_disk_gb=1)
        self.assertEqual(['h2'], names(self._passing([h1, h2], fakes.dt_request(root_gb=20))))
        self.assertEqual(['h1', 'h2'], names(self._passing(
            [h1, h2], fakes.dt_request(root_gb=20, is_bfv=True))))

    def test_peer_az_respected(self):
        h1 = fakes.host('h1', az='az1')
        h2 = fakes.host('h2', az='az2')
        h3 = fakes.host('h3', az='az3')
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az3'})
        self.assertEqual(['h1', 'h2'], names(self._passing([h1, h2, h3], spec_obj)))
        self.assertEqual(['h3'], list(pairing.get_partners(h1)))
        self.assertEqual(['h3'], list(pairing.get_partners(h2)))
        self.assertFalse(pairing.get_partners(h3))
        self.assertFalse(self.filt.host_passes(h3, spec_obj))

    def test_peer_az_without_room_fails_everywhere(self):
        h1 = fakes.host('h1', az='az1')
        h2 = fakes.host('h2', az='az2')
        h3 = fakes.host('h3', az='az3', free_ram_mb=0)
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az3'})
        self.assertEqual([], names(self._passing([h1, h2, h3], spec_obj)))

    def test_peer_az_unknown_fails_everywhere(self):
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2')]
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az9'})
        self.assertEqual([], names(self._passing(hosts, spec_obj)))

    def test_partners_are_only_the_hosts_left_by_earlier_filters(self):
        h1, h2, h3 = (fakes.host('h1', az='az1'), fakes.host('h2', az='az2'),
                      fakes.host('h3', az='az1'))
        handler = filters.HostFilterHandler()
        self.assertEqual(['h1', 'h2', 'h3'], names(handler.get_filtered_objects(
            [self.filt], [h1, h2, h3], fakes.dt_request())))
        earlier = _DropHosts()
        earlier.drop = ('h2',)
        self.assertEqual([], names(handler.get_filtered_objects(
            [earlier, self.filt], [h1, h2, h3], fakes.dt_request())))

    def test_zone_scoped_request_explained(self):
        # With an availability zone in the request nova asks Placement for that zone's hosts
        # only, so DTPairFilter sees no partner.
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az1')]
        self.assertEqual([], names(self._passing(
            hosts, fakes.dt_request(availability_zone='az1'))))
        self.assertIn('DT request scoped to availability zone az1',
                      self.stdlog.logger.output)

    def test_rebuild_is_not_filtered(self):
        hosts = [fakes.host('h1', capable=False)]
        spec_obj = fakes.dt_request(scheduler_hints={'_nova_check_type': ['rebuild']})
        self.assertEqual(['h1'], names(self._passing(hosts, spec_obj)))

    def test_partners_reset_on_each_run(self):
        h1, h2 = fakes.host('h1', az='az1'), fakes.host('h2', az='az2')
        spec_obj = fakes.dt_request()
        self._passing([h1, h2], spec_obj)
        self.assertTrue(pairing.get_partners(h1))
        h2.free_ram_mb = 0  # e.g. consumed by an earlier instance of the same request
        self.assertEqual(['h2'], names(self._passing([h1, h2], spec_obj)))
        self.assertFalse(pairing.get_partners(h1))


class _DropChosen(filters.BaseHostFilter):
    """Stands for a filter before DTPairFilter that removes the hosts already chosen by the
    request (as ServerGroupAntiAffinityFilter does within a multi-create request)."""

    def __init__(self):
        super().__init__()
        self.chosen = set()

    def host_passes(self, host_state, spec_obj):
        return host_state.host not in self.chosen


class TestDTPairFilterMultiCreate(test.NoDBTestCase):
    """One request for several servers, filtered as nova's SchedulerManager._schedule does."""

    def setUp(self):
        super().setUp()
        self.filt = dt_filters.DTPairFilter()

    def _schedule(self, hosts, spec_obj, count, earlier=(), choose=min):
        """Nova's loop: one filter pass per server, each pass over the hosts that passed the
        previous one (nova/scheduler/manager.py, ``hosts = self._get_sorted_hosts(spec_obj,
        hosts, num)``), the same RequestSpec object with the server's uuid, the chosen host's
        HostState consuming the server. Returns the names that passed each pass."""
        handler = filters.HostFilterHandler()
        spec_obj.pci_requests = None
        spec_obj.numa_topology = None
        passes = []
        for index in range(count):
            spec_obj.instance_uuid = uuidutils.generate_uuid()
            hosts = handler.get_filtered_objects(list(earlier) + [self.filt], hosts, spec_obj,
                                                 index)
            passes.append(names(hosts))
            if not hosts:
                break
            chosen = choose(hosts, key=lambda h: h.host)
            chosen.consume_from_request(spec_obj)
            for f in earlier:
                if isinstance(f, _DropChosen):
                    f.chosen.add(chosen.host)
        return passes

    def test_peer_az_every_server_finds_its_partner(self):
        # host2, the only partner, never passes as a primary (it is in dt:peer_az), so from
        # the second pass on nova no longer offers it.
        h1, h2, h3 = (fakes.host('h1', az='az1'), fakes.host('h2', az='az2'),
                      fakes.host('h3', az='az1'))
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az2'})
        self.assertEqual([['h1', 'h3']] * 3, self._schedule([h1, h2, h3], spec_obj, 3))
        self.assertEqual(['h2'], list(pairing.get_partners(h1)))
        self.assertEqual(['h2'], list(pairing.get_partners(h3)))

    def test_without_peer_az_every_server_finds_its_partner(self):
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2'),
                 fakes.host('h3', az='az1')]
        self.assertEqual([['h1', 'h2', 'h3']] * 3,
                         self._schedule(hosts, fakes.dt_request(), 3))
        self.assertEqual(['h2'], list(pairing.get_partners(hosts[0])))
        self.assertEqual(['h1', 'h3'], list(pairing.get_partners(hosts[1])))

    def test_partner_out_of_the_running_still_counts_with_its_room_now(self):
        # h1 takes the first server and is then removed by an earlier filter; it is still h2's
        # partner while it has room for another server, judged on its HostState as consumed.
        spec_obj = fakes.dt_request(memory_mb=4096)
        h1 = fakes.host('h1', az='az1', free_ram_mb=8192)
        h2 = fakes.host('h2', az='az2')
        self.assertEqual([['h1', 'h2'], ['h2']],
                         self._schedule([h1, h2], spec_obj, 2, earlier=[_DropChosen()]))
        self.assertEqual(4096, h1.free_ram_mb)
        self.assertEqual(['h1'], list(pairing.get_partners(h2)))

    def test_partner_filled_by_an_earlier_server_is_no_partner(self):
        spec_obj = fakes.dt_request(memory_mb=4096)
        h1 = fakes.host('h1', az='az1', free_ram_mb=4096)
        h2 = fakes.host('h2', az='az2')
        self.assertEqual([['h1', 'h2'], []],
                         self._schedule([h1, h2], spec_obj, 2, earlier=[_DropChosen()]))
        self.assertFalse(pairing.get_partners(h2))
        # The same without the earlier filter: h1 (full) still passes as a primary, since its
        # own room is nova's filters' and Placement's to judge, but is nobody's partner.
        spec_obj = fakes.dt_request(memory_mb=4096)
        h1 = fakes.host('h1', az='az1', free_ram_mb=4096)
        h2 = fakes.host('h2', az='az2')
        self.assertEqual([['h1', 'h2'], ['h1']], self._schedule([h1, h2], spec_obj, 2))

    def test_another_request_on_the_same_hosts_starts_anew(self):
        # Keyed on the request: a different RequestSpec offered the second pass's hosts of
        # another request is a first pass of its own (without h2 it has no partner).
        h1, h2, h3 = (fakes.host('h1', az='az1'), fakes.host('h2', az='az2'),
                      fakes.host('h3', az='az1'))
        peer_az2 = {'dt:peer_az': 'az2'}
        first = fakes.dt_request(extra_specs=peer_az2)
        self.assertEqual(['h1', 'h3'], names(self.filt.filter_all([h1, h2, h3], first)))
        other = fakes.dt_request(extra_specs=peer_az2)
        self.assertEqual([], names(self.filt.filter_all([h1, h3], other)))
        # ... while the first request's own later pass still sees h2.
        self.assertEqual(['h1', 'h3'], names(self.filt.filter_all([h1, h3], first)))

    def test_same_request_spec_with_new_host_states_is_a_new_request(self):
        # nova builds fresh HostStates for every request: hosts that are not the remembered
        # ones mean a new request even if the RequestSpec object is the same.
        spec_obj = fakes.dt_request()
        self.assertEqual(['h1', 'h2'], names(self.filt.filter_all(
            [fakes.host('h1', az='az1'), fakes.host('h2', az='az2')], spec_obj)))
        self.assertEqual([], names(self.filt.filter_all(
            [fakes.host('h1', az='az1'), fakes.host('h3', az='az1')], spec_obj)))

    def test_interleaved_requests_keep_their_own_hosts(self):
        # nova-scheduler serves requests concurrently (green threads): passes interleave.
        peer_az2 = {'dt:peer_az': 'az2'}
        a_hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2')]
        b_hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2', free_ram_mb=0)]
        a, b = fakes.dt_request(extra_specs=peer_az2), fakes.dt_request(extra_specs=peer_az2)
        self.assertEqual(['h1'], names(self.filt.filter_all(a_hosts, a)))
        self.assertEqual([], names(self.filt.filter_all(b_hosts, b)))
        self.assertEqual(['h1'], names(self.filt.filter_all(a_hosts[:1], a)))
        self.assertEqual([], names(self.filt.filter_all(b_hosts[:1], b)))

    def test_nothing_kept_once_the_request_is_gone(self):
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2'),
                 fakes.host('h3', az='az1')]
        host_refs = [weakref.ref(h) for h in hosts]
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az2'})
        self.assertEqual([['h1', 'h3']] * 2, self._schedule(hosts, spec_obj, 2))
        self.assertEqual(1, len(self.filt._requests))
        del hosts, spec_obj
        gc.collect()
        self.assertEqual(0, len(self.filt._requests))
        self.assertEqual([None] * 3, [ref() for ref in host_refs])

    def test_non_dt_and_rebuild_requests_are_not_kept(self):
        hosts = [fakes.host('h1', az='az1'), fakes.host('h2', az='az2')]
        not_dt = fakes.request()
        rebuild = fakes.dt_request(scheduler_hints={'_nova_check_type': ['rebuild']})
        self.assertEqual(['h1', 'h2'], names(self.filt.filter_all(hosts, not_dt)))
        self.assertEqual(['h1', 'h2'], names(self.filt.filter_all(hosts, rebuild)))
        self.assertEqual(0, len(self.filt._requests))
