"""The helpers DTPairFilter and DTPairWeigher share."""

from nova import objects
from nova import test

from nova_dt import extra_specs
from nova_dt.scheduler import pairing
from nova_dt.tests.unit.scheduler import fakes


class TestRequestedSpecs(test.NoDBTestCase):

    def test_dt_request(self):
        spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az2', 'dt:epoch_ms': '20'})
        self.assertEqual(extra_specs.DTSpecs(True, 20, 'az2', None),
                         pairing.requested_specs(spec_obj))

    def test_not_dt(self):
        for spec_obj in (None, objects.RequestSpec(), fakes.request(),
                         fakes.request({'dt:enabled': 'false'}),
                         fakes.request({'dt:enabled': 'true', 'dt:max_failover_ms': '1'})):
            self.assertIsNone(pairing.requested_specs(spec_obj))


class TestHostAZ(test.NoDBTestCase):

    def test_from_aggregate_or_default(self):
        self.flags(default_availability_zone='dflt')
        self.assertEqual('az7', pairing.host_az(fakes.host('h', az='az7')))
        self.assertEqual('dflt', pairing.host_az(fakes.host('h', az=None)))
        self.assertEqual('dflt', pairing.host_az(fakes.host('h', az=None, capable=None)))

    def test_two_zones_deterministic(self):
        host = fakes.host('h', aggregates=[fakes.aggregate(['h'], az='b'),
                                           fakes.aggregate(['h'], az='a')])
        self.assertEqual('a', pairing.host_az(host))


class TestPartners(test.NoDBTestCase):

    def test_container(self):
        partners = pairing.Partners([frozenset({'b', 'a'}), None, frozenset(), frozenset({'c'})])
        self.assertEqual(['a', 'b', 'c'], list(partners))
        self.assertEqual(3, len(partners))
        self.assertIn('c', partners)
        self.assertNotIn('d', partners)
        self.assertEqual('Partners(a, b, c)', repr(partners))
        self.assertFalse(pairing.Partners())

    def test_pool_groups_capable_hosts_with_room_by_zone(self):
        hosts = [fakes.host('a1', az='az1'), fakes.host('a2', az='az1', free_ram_mb=0),
                 fakes.host('b1', az='az2'), fakes.host('b2', az='az2', capable=False)]
        pool = pairing.PartnerPool(hosts, fakes.dt_request())
        self.assertEqual({'az1': frozenset({'a1'}), 'az2': frozenset({'b1'})}, pool.by_az)
        self.assertEqual(['b1'], list(pool.partners_for(hosts[1])))
        self.assertEqual(['a1'], list(pool.partners_for(hosts[3])))
        self.assertEqual([], list(pool.partners_for(hosts[0], peer_az='az1')))
        self.assertEqual(['b1'], list(pool.partners_for(hosts[0], peer_az='az2')))
