"""The controller's link stats collector: agent reports in, the weigher's file out."""

import json
import os
from unittest import mock

import fixtures

from nova import test

from nova_dt.controller import link_stats_writer
from nova_dt.controller import planner
from nova_dt.scheduler import link_stats


def report(host, *links):
    return {'nova_object.name': 'DTLinkStatsPayload', 'nova_object.namespace': 'nova_dt',
            'nova_object.version': '1.0',
            'nova_object.data': {'host': host, 'links': list(links)}}


def link(source, target, rtt_us=420, rate=1500000, capacity=1250000000):
    return {'source': source, 'target': target, 'rtt_us': rtt_us, 'rate_bytes_per_s': rate,
            'capacity_bytes_per_s': capacity}


class LinkStatsCollectorTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.dir, 'links.json')
        self.now = 1000.0
        self.collector = link_stats_writer.LinkStatsCollector(
            self.path, max_age=60, clock=lambda: self.now)

    def read(self):
        with open(self.path) as f:
            return json.load(f)

    def test_reports_become_the_file_the_weigher_reads(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b'), link('a', 'c', 900)))
        self.collector.handle('dt.link.stats', report('b', link('b', 'a', 400, 0)))
        doc = self.read()
        self.assertEqual(1, doc['version'])
        self.assertEqual(['a->b', 'a->c', 'b->a'],
                         ['%s->%s' % (x['source'], x['target']) for x in doc['links']])
        # The scheduler's own reader accepts every entry.
        links = link_stats.JSONFileLinkStats(self.path, max_age=0).links()
        self.assertEqual(link_stats.LinkStats(420.0, 1500000.0, 1250000000.0), links['a']['b'])
        self.assertEqual(link_stats.LinkStats(400.0, 0.0, 1250000000.0), links['b']['a'])
        self.assertEqual(900.0, links['a']['c'].rtt_us)

    def test_missing_directory_is_made_at_start(self):
        # Seen in the cloud: a link_stats_file in a directory nobody had made failed every
        # report with FileNotFoundError from the temporary file.
        path = os.path.join(self.dir, 'not', 'yet', 'links.json')
        collector = link_stats_writer.LinkStatsCollector(path)
        self.assertEqual(0o755, os.stat(os.path.dirname(path)).st_mode & 0o777)
        collector.handle('dt.link.stats', report('a', link('a', 'b')))
        with open(path) as f:
            self.assertEqual([link('a', 'b')], json.load(f)['links'])

    def test_newest_report_of_a_host_replaces_its_links(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b'), link('a', 'c')))
        self.collector.handle('dt.link.stats', report('a', link('a', 'c', rate=7)))
        self.assertEqual([link('a', 'c', rate=7)], self.read()['links'])

    def test_link_without_a_measured_rtt_is_left_out(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b', rtt_us=-1),
                                                      link('a', 'c')))
        self.assertEqual(['c'], [x['target'] for x in self.read()['links']])

    def test_host_that_stopped_reporting_is_dropped(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b')))
        self.now += 61
        self.collector.handle('dt.link.stats', report('b', link('b', 'a')))
        self.assertEqual(['b'], [x['source'] for x in self.read()['links']])
        self.now += 61
        self.assertEqual([], self.collector.document()['links'])

    def test_other_agent_notifications_are_ignored(self):
        self.collector.handle('dt.pair.protect.end', {'anything': 1})
        self.assertFalse(os.path.exists(self.path))

    def test_malformed_reports_are_refused_and_change_nothing(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b')))
        before = self.read()
        bad = [
            {'no': 'object'},
            report(''),
            {'nova_object.data': {'host': 'a', 'links': {'a': 1}}},
            report('a', 'not an object'),
            report('a', link('x', 'b')),                       # someone else's link
            report('a', link('a', '')),
            report('a', dict(link('a', 'b'), rtt_us='420')),
            report('a', dict(link('a', 'b'), rate_bytes_per_s=1.5)),
            report('a', dict(link('a', 'b'), capacity_bytes_per_s=True)),
            report('a', link('a', 'b', rate=-1)),
            report('a', link('a', 'b', capacity=0)),
        ]
        for payload in bad:
            self.assertRaises(planner.BadEvent, self.collector.handle, 'dt.link.stats', payload)
        self.assertEqual(before, self.read())

    def test_failed_write_keeps_the_old_file_and_no_temporary(self):
        self.collector.handle('dt.link.stats', report('a', link('a', 'b')))
        with mock.patch('os.replace', side_effect=OSError(28, 'No space left on device')):
            self.assertRaises(OSError, self.collector.handle, 'dt.link.stats',
                              report('b', link('b', 'a')))
        self.assertEqual(['a'], [x['source'] for x in self.read()['links']])
        self.assertEqual(['links.json'], os.listdir(self.dir))
        # The report was kept: the next write has it.
        self.collector.handle('dt.link.stats', report('c', link('c', 'a')))
        self.assertEqual(['a', 'b', 'c'], [x['source'] for x in self.read()['links']])
