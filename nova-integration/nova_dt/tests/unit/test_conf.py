"""The [nova_dt] options."""

import io

from oslo_config import cfg
from oslo_config import generator

import nova.conf
from nova import test

from nova_dt import conf as dt_conf
from nova_dt.tests import fixtures as dt_fixtures

NAMES = {'capable_metadata_key', 'link_stats_file', 'link_stats_max_age',
         'default_link_capacity', 'replication_message_bytes', 'weight_multiplier',
         # nova-dt-controller
         'state_dir', 'agent_transport_url', 'agent_notification_transport_url',
         'agent_exchange', 'agent_topic', 'agent_call_timeout', 'agent_notification_topics',
         'notification_pool', 'step_attempts', 'retry_interval', 'resume_interval'}


class TestConf(test.NoDBTestCase):

    def test_register_opts_is_idempotent_and_sets_defaults(self):
        conf = cfg.ConfigOpts()
        dt_conf.register_opts(conf)
        dt_conf.register_opts(conf)
        conf([])
        self.assertEqual('nova_dt:capable', conf.nova_dt.capable_metadata_key)
        self.assertIsNone(conf.nova_dt.link_stats_file)
        self.assertEqual(300, conf.nova_dt.link_stats_max_age)
        self.assertEqual(125000000.0, conf.nova_dt.default_link_capacity)
        self.assertEqual(65536, conf.nova_dt.replication_message_bytes)
        self.assertEqual(1.0, conf.nova_dt.weight_multiplier)

    def test_list_opts(self):
        [(group, opts)] = dt_conf.list_opts()
        self.assertEqual('nova_dt', group.name)
        self.assertEqual(NAMES, {o.name for o in opts})

    def test_registered_on_nova_conf_by_the_scheduler_plugins(self):
        from nova_dt.scheduler import filters  # noqa: F401
        from nova_dt.scheduler import weights  # noqa: F401
        self.flags(link_stats_file='/x.json', group='nova_dt')
        self.assertEqual('/x.json', nova.conf.CONF.nova_dt.link_stats_file)

    def test_bounds(self):
        conf = cfg.ConfigOpts()
        dt_conf.register_opts(conf)
        conf([])
        self.assertRaises(ValueError, conf.set_override, 'replication_message_bytes', 0,
                          group='nova_dt')
        self.assertRaises(ValueError, conf.set_override, 'link_stats_max_age', -1,
                          group='nova_dt')

    def test_oslo_config_generator_finds_them_through_the_entry_point(self):
        self.useFixture(dt_fixtures.EntryPoints())
        conf = cfg.ConfigOpts()
        generator.register_cli_opts(conf)
        conf(['--namespace', 'nova_dt'])
        out = io.StringIO()
        generator.generate(conf, output_file=out)
        sample = out.getvalue()
        self.assertIn('[nova_dt]', sample)
        for name in NAMES:
            self.assertIn('#%s = ' % name, sample)
