"""DTPairWeigher, after DTPairFilter, through nova's own filter and weight handlers."""

import json
import math
import os

import fixtures

from nova.scheduler import filters
from nova.scheduler import weights
from nova import test

from nova_dt.scheduler import filters as dt_filters
from nova_dt.scheduler import link_stats
from nova_dt.scheduler import weights as dt_weights
from nova_dt.tests.unit.scheduler import fakes

MU = 125000000.0  # default_link_capacity, bytes/s
S = 65536  # replication_message_bytes
IDLE_MS = 1000.0 * S / MU  # M/M/1 delay of an idle default link: 0.524288 ms


def queue_ms(rate, capacity=MU, size=S):
    return 1000.0 * size / (capacity - rate)


def link(source, target, rtt_us, **fields):
    return dict(source=source, target=target, rtt_us=rtt_us, **fields)


class TestLinkDelay(test.NoDBTestCase):

    def test_rtt_plus_mm1_sojourn_time(self):
        stats = link_stats.LinkStats(rtt_us=1500, rate_bytes_per_s=25e6,
                                     capacity_bytes_per_s=125e6)
        # 1.5 ms + 65536 B / (100e6 B/s) = 1.5 + 0.65536 ms
        self.assertAlmostEqual(2.15536, dt_weights.link_delay_ms(stats, 65536))

    def test_delay_grows_without_bound_near_capacity(self):
        delays = [dt_weights.link_delay_ms(link_stats.LinkStats(0, rho * MU, MU), S)
                  for rho in (0.0, 0.5, 0.9, 0.99, 0.999)]
        self.assertEqual(sorted(delays), delays)
        self.assertAlmostEqual(IDLE_MS * 1000, delays[-1], places=6)

    def test_saturated(self):
        for rate in (MU, 2 * MU):
            self.assertEqual(math.inf, dt_weights.link_delay_ms(
                link_stats.LinkStats(10, rate, MU), S))


class TestDTPairWeigher(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.weigher = dt_weights.DTPairWeigher()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'links.json')
        self.flags(link_stats_file=self.path, link_stats_max_age=0, group='nova_dt')
        # Primaries p* in az1, backups b* in az2 (dt:peer_az), so the weighed hosts are the p*.
        self.spec_obj = fakes.dt_request(extra_specs={'dt:peer_az': 'az2'})
        self.backups = [fakes.host('b1', az='az2'), fakes.host('b2', az='az2')]

    def write_links(self, *links):
        with open(self.path, 'w') as f:
            json.dump({'version': 1, 'links': list(links)}, f)

    def primaries(self, *names):
        return [fakes.host(n, az='az1') for n in names]

    def filtered(self, hosts, spec_obj=None):
        return filters.HostFilterHandler().get_filtered_objects(
            [dt_filters.DTPairFilter()], hosts + self.backups, spec_obj or self.spec_obj)

    def weigh(self, hosts, spec_obj=None):
        """[(host, normalized weight * multiplier)] from nova's handler, best first."""
        spec_obj = spec_obj or self.spec_obj
        weighed = weights.HostWeightHandler().get_weighed_objects(
            [self.weigher], self.filtered(hosts, spec_obj), spec_obj)
        return [(w.obj.host, w.weight) for w in weighed]

    def raw(self, hosts, spec_obj=None):
        """The weigher's raw weights by host name (before nova normalizes them)."""
        spec_obj = spec_obj or self.spec_obj
        objs = [weights.WeighedHost(h, 0.0) for h in self.filtered(hosts, spec_obj)]
        return dict(zip((o.obj.host for o in objs),
                        self.weigher.weigh_objects(objs, spec_obj)))

    def test_loaded_by_import_path(self):
        classes = weights.HostWeightHandler().get_matching_classes(
            ['nova.scheduler.weights.all_weighers', 'nova_dt.scheduler.weights.DTPairWeigher'])
        self.assertIn(dt_weights.DTPairWeigher, classes)

    def test_non_dt_flavor_weighs_zero(self):
        self.write_links(link('p1', 'b1', 100), link('p2', 'b1', 9000))
        hosts = self.primaries('p1', 'p2')
        for extra_specs in ({}, {'dt:enabled': 'false'}):
            spec_obj = fakes.request(extra_specs)
            self.assertEqual({'p1': 0.0, 'p2': 0.0, 'b1': 0.0, 'b2': 0.0},
                             self.raw(hosts, spec_obj))
            self.assertEqual({0.0}, {w for _, w in self.weigh(hosts, spec_obj)})

    def test_prefers_lower_rtt(self):
        self.write_links(link('p1', 'b1', 5000), link('p2', 'b1', 500))
        hosts = self.primaries('p1', 'p2')
        raw = self.raw(hosts)
        self.assertAlmostEqual(-(5.0 + IDLE_MS), raw['p1'])
        self.assertAlmostEqual(-(0.5 + IDLE_MS), raw['p2'])
        self.assertEqual([('p2', 1.0), ('p1', 0.0)], self.weigh(hosts))

    def test_prefers_less_loaded_link(self):
        self.write_links(link('p1', 'b1', 1000, rate_bytes_per_s=0.9 * MU),
                         link('p2', 'b1', 1000, rate_bytes_per_s=0.1 * MU))
        hosts = self.primaries('p1', 'p2')
        raw = self.raw(hosts)
        self.assertAlmostEqual(-(1.0 + queue_ms(0.9 * MU)), raw['p1'])
        self.assertAlmostEqual(-(1.0 + queue_ms(0.1 * MU)), raw['p2'])
        self.assertEqual(['p2', 'p1'], [h for h, _ in self.weigh(hosts)])

    def test_queueing_outweighs_rtt_near_saturation(self):
        self.write_links(link('p1', 'b1', 200, rate_bytes_per_s=0.999 * MU),
                         link('p2', 'b1', 3000))
        self.assertEqual(['p2', 'p1'], [h for h, _ in self.weigh(self.primaries('p1', 'p2'))])

    def test_best_partner_counts(self):
        self.write_links(link('p1', 'b1', 100, rate_bytes_per_s=MU),
                         link('p1', 'b2', 300),
                         link('p2', 'b1', 1000))
        hosts = self.primaries('p1', 'p2')
        self.assertAlmostEqual(-(0.3 + IDLE_MS), self.raw(hosts)['p1'])
        self.assertEqual(['p1', 'p2'], [h for h, _ in self.weigh(hosts)])

    def test_saturated_links_weigh_least(self):
        self.write_links(link('p1', 'b1', 100, rate_bytes_per_s=MU),
                         link('p1', 'b2', 100, rate_bytes_per_s=2 * MU),
                         link('p3', 'b1', 50000),
                         link('p4', 'b2', 1000))
        weighed = self.weigh(self.primaries('p1', 'p2', 'p3', 'p4'))
        # p2 has no figures: neutral, between p4 (best) and p3.
        self.assertEqual(['p4', 'p2', 'p3', 'p1'], [h for h, _ in weighed])
        self.assertEqual(('p1', 0.0), weighed[-1])
        self.assertEqual(('p4', 1.0), weighed[0])
        self.assertGreater(weighed[-2][1], 0.0)

    def test_all_saturated_weigh_the_same(self):
        self.write_links(link('p1', 'b1', 100, rate_bytes_per_s=MU),
                         link('p2', 'b1', 9000, rate_bytes_per_s=MU))
        self.assertEqual({0.0}, {w for _, w in self.weigh(self.primaries('p1', 'p2'))})

    def test_missing_figures_are_neutral(self):
        self.write_links(link('p1', 'b1', 1000), link('p2', 'b1', 3000))
        weighed = dict(self.weigh(self.primaries('p1', 'p2', 'p3')))
        self.assertEqual({'p1': 1.0, 'p3': 0.5, 'p2': 0.0}, weighed)

    def test_no_figures_at_all_weigh_the_same(self):
        hosts = self.primaries('p1', 'p2')
        cases = [('no file', lambda: None),
                 ('malformed', lambda: self._write_raw('{"version": 1, "links": [')),
                 ('other hosts', lambda: self.write_links(link('x', 'y', 1)))]
        for what, prepare in cases:
            prepare()
            self.assertEqual({0.0}, {w for _, w in self.weigh(hosts)}, what)
        self.flags(link_stats_file=None, group='nova_dt')
        self.assertEqual({0.0}, {w for _, w in self.weigh(hosts)})

    def _write_raw(self, text):
        with open(self.path, 'w') as f:
            f.write(text)

    def test_links_to_non_partners_ignored(self):
        # p1 -> p2 is fast but both are in az1; only the az2 backups are partners.
        self.write_links(link('p1', 'p2', 1), link('p1', 'b1', 4000), link('p2', 'b1', 2000))
        self.assertEqual(['p2', 'p1'], [h for h, _ in self.weigh(self.primaries('p1', 'p2'))])

    def test_without_dt_pair_filter_every_host_is_neutral(self):
        self.write_links(link('p1', 'b1', 100), link('p2', 'b1', 9000))
        objs = [weights.WeighedHost(h, 0.0) for h in self.primaries('p1', 'p2')]
        self.assertEqual([0.0, 0.0], self.weigher.weigh_objects(objs, self.spec_obj))

    def test_link_capacity_from_file_or_option(self):
        self.write_links(link('p1', 'b1', 1000, capacity_bytes_per_s=1e7),
                         link('p2', 'b1', 1000))
        hosts = self.primaries('p1', 'p2')
        raw = self.raw(hosts)
        self.assertAlmostEqual(-(1.0 + queue_ms(0, capacity=1e7)), raw['p1'])
        self.assertAlmostEqual(-(1.0 + IDLE_MS), raw['p2'])
        self.flags(default_link_capacity=1e6, group='nova_dt')
        self.assertAlmostEqual(-(1.0 + queue_ms(0, capacity=1e6)), self.raw(hosts)['p2'])
        self.assertEqual(['p1', 'p2'], [h for h, _ in self.weigh(hosts)])

    def test_message_size_option(self):
        self.write_links(link('p1', 'b1', 1000), link('p2', 'b1', 2000))
        self.flags(replication_message_bytes=1048576, group='nova_dt')
        self.assertAlmostEqual(-(1.0 + queue_ms(0, size=1048576)),
                               self.raw(self.primaries('p1', 'p2'))['p1'])

    def test_weight_multiplier(self):
        self.write_links(link('p1', 'b1', 1000), link('p2', 'b1', 2000))
        self.flags(weight_multiplier=3.0, group='nova_dt')
        self.assertEqual([('p1', 3.0), ('p2', 0.0)], self.weigh(self.primaries('p1', 'p2')))
        p1 = fakes.host('p1', aggregates=[fakes.aggregate(
            ['p1'], az='az1', dt_pair_weight_multiplier='0.5', **{'nova_dt:capable': 'true'})])
        self.assertEqual([('p1', 0.5), ('p2', 0.0)],
                         self.weigh([p1] + self.primaries('p2')))
