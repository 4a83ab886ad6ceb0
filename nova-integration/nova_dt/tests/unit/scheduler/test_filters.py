"""DTPairFilter, on nova's FakeHostState and RequestSpec, through nova's own filter handler."""

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
