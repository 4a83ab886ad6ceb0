"""The helpers DTPairFilter and DTPairWeigher share."""

import gc

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


class TestRequestHosts(test.NoDBTestCase):

    def test_first_pass_hosts_for_every_later_pass(self):
        requests = pairing.RequestHosts()
        hosts = (fakes.host('a1'), fakes.host('b1', az='az2'), fakes.host('a2'))
        spec_obj = fakes.dt_request()
        self.assertEqual(hosts, requests.first_pass(list(hosts), spec_obj))
        self.assertEqual(hosts, requests.first_pass(hosts[::2], spec_obj))
        self.assertEqual(hosts, requests.first_pass([], spec_obj))
        self.assertEqual(1, len(requests))
        # A host that is not one of the first pass's HostState objects: a new request.
        again = (fakes.host('a1'),)
        self.assertEqual(again, requests.first_pass(again, spec_obj))
        self.assertEqual(again, requests.first_pass((), spec_obj))
        self.assertEqual(1, len(requests))

    def test_at_most_limit_requests_least_recently_used_dropped(self):
        requests = pairing.RequestHosts(limit=2)
        specs = [fakes.dt_request() for _ in range(3)]
        hosts = [(fakes.host('a%d' % i), fakes.host('b%d' % i, az='az2')) for i in range(3)]
        requests.first_pass(hosts[0], specs[0])
        requests.first_pass(hosts[1], specs[1])
        requests.first_pass(hosts[0][:1], specs[0])  # request 0 used again: 1 is the oldest
        requests.first_pass(hosts[2], specs[2])
        self.assertEqual(2, len(requests))
        self.assertIn('More than 2 DT requests kept: dropped the least recently scheduled',
                      self.stdlog.logger.output)
        self.assertEqual(hosts[0], requests.first_pass(hosts[0][:1], specs[0]))
        self.assertEqual(hosts[2], requests.first_pass(hosts[2][:1], specs[2]))
        # Request 1 was pushed out: its later pass is paired among what it is offered.
        self.assertEqual(hosts[1][:1], requests.first_pass(hosts[1][:1], specs[1]))

    def test_dropped_with_the_request_spec(self):
        requests = pairing.RequestHosts()
        spec_obj = fakes.dt_request()
        requests.first_pass([fakes.host('a1')], spec_obj)
        self.assertEqual(1, len(requests))
        del spec_obj
        # A RequestSpec with scheduler_hints is in a reference cycle (oslo's CoercedDict points
        # back at it), so it is freed by the garbage collector, not at once.
        gc.collect()
        self.assertEqual(0, len(requests))

    def test_what_cannot_be_held_weakly_is_not_kept(self):
        requests = pairing.RequestHosts()
        hosts = (fakes.host('a1'),)
        self.assertEqual(hosts, requests.first_pass(list(hosts), {'not': 'a RequestSpec'}))
        self.assertEqual(0, len(requests))
