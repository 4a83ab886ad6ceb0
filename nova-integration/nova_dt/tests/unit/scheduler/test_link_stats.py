"""The link stats JSON file provider."""

import json
import os

import fixtures

from nova import test

from nova_dt.scheduler import link_stats

LinkStats = link_stats.LinkStats


class _Base(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'links.json')
        self.now = 1000000.0

    def write(self, doc, mtime=None):
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))
        os.replace(tmp, self.path)
        mtime = self.now if mtime is None else mtime
        os.utime(self.path, (mtime, mtime))

    def provider(self, max_age=0, default_capacity=1e9):
        return link_stats.JSONFileLinkStats(self.path, max_age, default_capacity,
                                            clock=lambda: self.now)


def link(source, target, **fields):
    return dict(source=source, target=target, **fields)


class TestJSONFileLinkStats(_Base):

    def test_reads_links(self):
        self.write({'version': 1, 'links': [
            link('a', 'b', rtt_us=800, rate_bytes_per_s=1e6, capacity_bytes_per_s=1e8),
            link('a', 'c', rtt_us=1200),
            link('b', 'a', rtt_us=810.5, rate_bytes_per_s=0, future_field='x'),
        ]})
        self.assertEqual(
            {'a': {'b': LinkStats(800.0, 1e6, 1e8), 'c': LinkStats(1200.0, 0.0, 1e9)},
             'b': {'a': LinkStats(810.5, 0.0, 1e9)}},
            self.provider().links())

    def test_missing_file_is_no_data(self):
        provider = self.provider()
        self.assertEqual({}, provider.links())
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]})
        self.assertEqual({'a': {'b': LinkStats(1.0, 0.0, 1e9)}}, provider.links())

    def test_malformed_documents_are_no_data(self):
        provider = self.provider()
        for doc in ('{not json', '[]', {'links': []}, {'version': 2, 'links': []},
                    {'version': 1}, {'version': 1, 'links': {}}, ''):
            self.write(doc)
            self.assertEqual({}, provider.links(), doc)
            self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]},
                       mtime=self.now - 1)
            self.assertIn('a', provider.links())

    def test_malformed_entries_are_skipped(self):
        self.write({'version': 1, 'links': [
            'x', link('', 'b', rtt_us=1), link('a', None, rtt_us=1), link('a', 'b'),
            link('a', 'b', rtt_us=-1), link('a', 'b', rtt_us='5'), link('a', 'b', rtt_us=True),
            link('a', 'b', rtt_us=1, rate_bytes_per_s=-5),
            link('a', 'b', rtt_us=1, capacity_bytes_per_s=0),
            link('a', 'b', rtt_us=1, capacity_bytes_per_s=None),
            link('a', 'b', rtt_us=float('inf')),
            link('a', 'good', rtt_us=3),
        ]})
        self.assertEqual({'a': {'good': LinkStats(3.0, 0.0, 1e9)}}, self.provider().links())

    def test_reloads_when_the_file_changes(self):
        provider = self.provider()
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]})
        self.assertEqual(1.0, provider.links()['a']['b'].rtt_us)
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=2)]}, mtime=self.now + 1)
        self.assertEqual(2.0, provider.links()['a']['b'].rtt_us)

    def test_not_reparsed_while_unchanged(self):
        provider = self.provider()
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]})
        first = provider.links()
        self.useFixture(fixtures.MockPatch('json.load', side_effect=AssertionError))
        self.assertIs(first, provider.links())

    def test_stale_file_ignored_until_rewritten(self):
        provider = self.provider(max_age=60)
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]}, mtime=self.now - 61)
        self.assertEqual({}, provider.links())
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]}, mtime=self.now - 59)
        self.assertIn('a', provider.links())
        self.now += 2
        self.assertEqual({}, provider.links())

    def test_max_age_zero_never_stale(self):
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]}, mtime=1.0)
        self.assertIn('a', self.provider(max_age=0).links())


class TestGetProvider(_Base):

    def test_unset_means_no_stats(self):
        self.flags(link_stats_file=None, group='nova_dt')
        self.assertEqual({}, link_stats.get_provider().links())

    def test_follows_the_options(self):
        self.write({'version': 1, 'links': [link('a', 'b', rtt_us=1)]})
        self.flags(link_stats_file=self.path, link_stats_max_age=0,
                   default_link_capacity=5e6, group='nova_dt')
        provider = link_stats.get_provider()
        self.assertIs(provider, link_stats.get_provider())
        self.assertEqual(5e6, provider.links()['a']['b'].capacity_bytes_per_s)
        self.flags(default_link_capacity=7e6, group='nova_dt')
        self.assertEqual(7e6, link_stats.get_provider().links()['a']['b'].capacity_bytes_per_s)
