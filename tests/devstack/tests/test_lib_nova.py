"""lib/nova-dt's nova.conf functions, checked by reading the results the way Nova does: oslo.config
with every option Nova and oslo.messaging define (and nova_dt's [nova_dt]), and Nova's own
scheduler handlers loading the configured filter and weigher classes."""
import os

from tests import base

DEVSTACK_FILTERS = ('ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,'
                    'ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,SameHostFilter,'
                    'DifferentHostFilter')
URL = 'rabbit://stackrabbit:secret@10.0.0.1:5672/'

# What DevStack's create_nova_conf and the libvirt hypervisor plugin leave that nova-dt touches.
DEVSTACK_NOVA_CONF = """[DEFAULT]
debug = True
transport_url = %(url)s

[filter_scheduler]
enabled_filters = %(filters)s

[scheduler]
workers = 2

[oslo_messaging_notifications]
transport_url = %(url)s
driver = messagingv2

[notifications]
notification_format = unversioned

[libvirt]
virt_type = kvm
""" % {'url': URL, 'filters': DEVSTACK_FILTERS}

FILTER = 'nova_dt.scheduler.filters.DTPairFilter'
WEIGHER = 'nova_dt.scheduler.weights.DTPairWeigher'


class TestNovaConf(base.TempDirTestCase):
    def configure_all(self, conf, mb='8192', stats='/opt/stack/data/nova-dt/link-stats.json'):
        base.lib('nova_dt_configure_nova_notifications %(c)s\n'
                 'nova_dt_configure_nova_scheduler %(c)s %(s)s\n'
                 'nova_dt_configure_nova_compute %(c)s %(mb)s\n'
                 % {'c': conf, 's': stats, 'mb': mb})

    def test_devstack_nova_conf(self):
        conf = self.write('nova.conf', DEVSTACK_NOVA_CONF)
        self.configure_all(conf)
        c = base.nova_conf(conf)
        self.assertEqual('versioned', c.notifications.notification_format)
        self.assertEqual(['messagingv2'], c.oslo_messaging_notifications.driver)
        self.assertEqual(URL, c.oslo_messaging_notifications.transport_url)
        self.assertEqual(['versioned_notifications'],
                         c.notifications.versioned_notifications_topics)
        self.assertEqual(DEVSTACK_FILTERS.split(',') + ['DTPairFilter'],
                         c.filter_scheduler.enabled_filters)
        self.assertEqual(['nova.scheduler.filters.all_filters', FILTER],
                         c.filter_scheduler.available_filters)
        self.assertEqual(['nova.scheduler.weights.all_weighers', WEIGHER],
                         c.filter_scheduler.weight_classes)
        self.assertEqual(8192, c.libvirt.file_backed_memory)
        self.assertEqual(1.0, c.ram_allocation_ratio)
        self.assertEqual(0, c.reserved_host_memory_mb)
        self.assertFalse(c.workarounds.handle_virt_lifecycle_events)
        self.assertEqual(60, c.sync_power_state_interval)
        self.assertEqual('/opt/stack/data/nova-dt/link-stats.json', c.nova_dt.link_stats_file)
        self.assertEqual(2, c.scheduler.workers)   # DevStack's own settings stay

    def test_nova_scheduler_loads_the_configured_classes(self):
        # What nova-scheduler does at start (SchedulerManager: HostManager._choose_host_filters
        # and the weight handler): every enabled filter must be among the available classes.
        from nova.scheduler import filters as nova_filters
        from nova.scheduler import weights as nova_weights
        from nova_dt.scheduler import filters as dt_filters
        from nova_dt.scheduler import weights as dt_weights
        conf = self.write('nova.conf', DEVSTACK_NOVA_CONF)
        self.configure_all(conf)
        c = base.nova_conf(conf)
        classes = nova_filters.HostFilterHandler().get_matching_classes(
            c.filter_scheduler.available_filters)
        by_name = {cls.__name__: cls for cls in classes}
        for name in c.filter_scheduler.enabled_filters:
            self.assertIn(name, by_name)
        self.assertIs(dt_filters.DTPairFilter, by_name['DTPairFilter'])
        weighers = nova_weights.HostWeightHandler().get_matching_classes(
            c.filter_scheduler.weight_classes)
        self.assertIn(dt_weights.DTPairWeigher, weighers)
        self.assertIn('RAMWeigher', [w.__name__ for w in weighers])

    def test_idempotent(self):
        conf = self.write('nova.conf', DEVSTACK_NOVA_CONF)
        self.configure_all(conf)
        first = self.read('nova.conf')
        self.configure_all(conf)
        self.assertEqual(first, self.read('nova.conf'))

    def test_no_nova_conf_gives_novas_defaults_plus_ours(self):
        conf = self.path('nova.conf')
        self.configure_all(conf, stats='')
        c = base.nova_conf(conf)
        import nova.conf.scheduler
        default = [o for o in nova.conf.scheduler.filter_scheduler_opts
                   if o.name == 'enabled_filters'][0].default
        # lib/nova-dt's built-in default is the installed Nova's (Zed's) default.
        self.assertEqual(list(default) + ['DTPairFilter'], c.filter_scheduler.enabled_filters)
        self.assertEqual(['nova.scheduler.filters.all_filters', FILTER],
                         c.filter_scheduler.available_filters)
        self.assertIsNone(c.nova_dt.link_stats_file)
        self.assertEqual('versioned', c.notifications.notification_format)
        self.assertEqual(['messagingv2'], c.oslo_messaging_notifications.driver)

    def test_keeps_what_is_there(self):
        conf = self.write('nova.conf', """[DEFAULT]
ram_allocation_ratio=1.5
[filter_scheduler]
available_filters = nova.scheduler.filters.all_filters
available_filters = my_filters.MyFilter
enabled_filters=ComputeFilter, DTPairFilter ,MyFilter
weight_classes = nova.scheduler.weights.ram.RAMWeigher
[notifications]
notification_format = both
[oslo_messaging_notifications]
driver = log
""")
        self.configure_all(conf, mb='2048')
        c = base.nova_conf(conf)
        self.assertEqual(['ComputeFilter', 'MyFilter', 'DTPairFilter'],
                         c.filter_scheduler.enabled_filters)
        self.assertEqual(['nova.scheduler.filters.all_filters', 'my_filters.MyFilter', FILTER],
                         c.filter_scheduler.available_filters)
        self.assertEqual(['nova.scheduler.weights.ram.RAMWeigher', WEIGHER],
                         c.filter_scheduler.weight_classes)
        self.assertEqual('both', c.notifications.notification_format)
        self.assertEqual(['log', 'messagingv2'], c.oslo_messaging_notifications.driver)
        self.assertEqual(1.0, c.ram_allocation_ratio)

    def test_messaging_driver_counts(self):
        conf = self.write('nova.conf', '[oslo_messaging_notifications]\ndriver = messaging\n')
        base.lib('nova_dt_configure_nova_notifications %s' % conf)
        self.assertEqual(['messaging'], base.nova_conf(conf).oslo_messaging_notifications.driver)

    def test_cell_conductor_gets_the_notification_bus(self):
        conf = self.write('nova_cell1.conf', '[DEFAULT]\ntransport_url = rabbit://u:p@h:5672/nova_cell1\n')
        url = 'rabbit://u:pa$ss@h:5672/'
        base.lib("nova_dt_configure_nova_notifications %s 'rabbit://u:pa$ss@h:5672/'" % conf)
        c = base.nova_conf(conf)
        self.assertEqual(url, c.oslo_messaging_notifications.transport_url)
        self.assertEqual('rabbit://u:p@h:5672/nova_cell1', c.transport_url)
        self.assertEqual(['messagingv2'], c.oslo_messaging_notifications.driver)
        self.assertEqual('versioned', c.notifications.notification_format)

    def test_compute_refusals_change_nothing(self):
        for text, reason in [
                ('[libvirt]\nvirt_type = lxc\n', 'virt_type = lxc'),
                ('[libvirt]\nrx_queue_size = 512\n', 'rx_queue_size'),
                ('[libvirt]\nvirt_type = kvm\nrx_queue_size = 512\n', 'rx_queue_size')]:
            with self.subTest(text):
                conf = self.write('nova.conf', text)
                p = base.lib('nova_dt_configure_nova_compute %s 1024' % conf, check=False)
                self.assertEqual(1, p.returncode)
                self.assertIn(reason, p.stderr)
                self.assertEqual(text, self.read('nova.conf'))
        # rx_queue_size is ignored with qemu (Nova writes driver name='qemu' there).
        conf = self.write('nova.conf', '[libvirt]\nvirt_type = qemu\nrx_queue_size = 512\n')
        base.lib('nova_dt_configure_nova_compute %s 1024' % conf)
        for mb in ('0', '-1', 'abc', '1.5', "''"):
            with self.subTest(mb=mb):
                conf = self.write('nova.conf', '')
                p = base.lib('nova_dt_configure_nova_compute %s %s' % (conf, mb), check=False)
                self.assertEqual(1, p.returncode)
                self.assertIn('positive number of MiB', p.stderr)
                self.assertEqual('', self.read('nova.conf'))

    def test_usage_errors(self):
        for call in ('nova_dt_configure_nova_compute', 'nova_dt_configure_nova_scheduler',
                     'nova_dt_configure_nova_notifications'):
            p = base.lib(call, check=False)
            self.assertNotEqual(0, p.returncode)
            self.assertIn('usage: ' + call, p.stderr)
        self.assertFalse(os.listdir(self.tmp))
