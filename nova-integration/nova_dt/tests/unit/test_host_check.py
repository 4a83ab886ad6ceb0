"""nova-dt-host-check: each compute-host check's PASS/WARN/FAIL, its readers and the CLI.

Every test builds a compute host's files under a temporary root (nova.conf, qemu.conf, the
agent's config, the libvirt hook, /proc/modules, modprobe.d, /dev/vhost-net, the guest-RAM
directory) and reads it with the real readers: nova.conf through oslo.config with nova's own
option definitions. Nothing under the real /etc, /proc or /dev is read.
"""

import io
import json
import os
import threading

import fixtures
from oslo_config import cfg

import nova.conf
from nova import test

from nova_dt.cmd import host_check
from nova_dt.controller import service
from nova_dt.hostcheck import checks
from nova_dt.hostcheck import sources
from nova_dt.tests import fixtures as dt_fixtures

CONF = nova.conf.CONF
RELEASE = '6.1.0-test-amd64'
RAM_DIR = '/var/lib/libvirt/qemu/ram'

GOOD_NOVA_CONF = """\
[DEFAULT]
transport_url = rabbit://nova:secret@ctl1:5672,nova:secret@ctl2:5672/
ram_allocation_ratio = 1.0
reserved_host_memory_mb = 0

[libvirt]
virt_type = kvm
file_backed_memory = 1024

[notifications]
notification_format = versioned

[oslo_messaging_notifications]
driver = messagingv2
"""

GOOD_AGENT_CONF = """\
[DEFAULT]
host = compute-1
transport_url = rabbit://dt:pw@ctl2:5672,dt:pw@CTL1/

[replication]
replica_path = /var/lib/libvirt/qemu/ram/nova-dt
"""


class HostTree(fixtures.Fixture):
    """A compute host's files under a temporary root; ``good()`` passes every check."""

    def _setUp(self):
        self.root = self.useFixture(fixtures.TempDir()).path
        self.host = sources.Host(self.root, kernel_release=RELEASE)

    def path(self, host_path):
        return os.path.join(self.root, host_path.lstrip('/'))

    def write(self, host_path, text, mode=0o644):
        p = self.path(host_path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'w') as f:
            f.write(text)
        os.chmod(p, mode)

    def mkdir(self, host_path):
        os.makedirs(self.path(host_path), exist_ok=True)

    def remove(self, host_path):
        os.remove(self.path(host_path))

    def nova_conf(self, extra='', base=GOOD_NOVA_CONF):
        """nova.conf: ``base`` then ``extra`` as /etc/nova/nova.conf.d/zz.conf (later wins)."""
        self.write('/etc/nova/nova.conf', base)
        if extra:
            self.write('/etc/nova/nova.conf.d/zz.conf', extra)

    def good(self):
        self.nova_conf()
        self.write('/etc/libvirt/qemu.conf', '# memory_backing_dir = "/dev/shm"\nuser = "root"\n')
        self.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF)
        with open(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'deploy',
                               'libvirt-hooks', 'qemu')) as f:
            self.write('/etc/libvirt/hooks/qemu', f.read(), mode=0o755)
        self.mkdir(RAM_DIR + '/nova-dt')
        self.write('/proc/sys/kernel/osrelease', RELEASE + '\n')
        self.write('/proc/modules', 'kvm_intel 380928 0 - Live 0x0\nkvm 1142784 1 kvm_intel, '
                                    'Live 0x0\ntun 61440 2 - Live 0x0\n')
        self.write('/lib/modules/%s/modules.builtin' % RELEASE, 'kernel/fs/ext4/ext4.ko\n')
        self.write('/etc/modprobe.d/nova-dt-vhost-net.conf', 'install vhost_net /bin/false\n')
        self.write('/dev/vhost-net', '')
        return self

    def run(self, **kwargs):
        return checks.run(self.host, **kwargs)

    def result(self, name, **kwargs):
        [r] = [r for r in self.run(**kwargs).results if r.name == name]
        return r


class HostCheckTestCase(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.tree = self.useFixture(HostTree()).good()

    def assertResult(self, status, name, *fragments, **kwargs):
        r = self.tree.result(name, **kwargs)
        self.assertEqual(status, r.status, r)
        for fragment in fragments:
            self.assertIn(fragment, r.reason + ' ' + r.fix)
        if status != checks.PASS:
            self.assertTrue(r.fix, 'a %s needs a fix: %s' % (status, r))
        return r


class TestGoodHost(HostCheckTestCase):

    def test_every_check_passes(self):
        report = self.tree.run()
        self.assertEqual(
            ['file_backed_memory', 'ram_allocation_ratio', 'reserved_host_memory_mb',
             'memory_backing_dir', 'replica_path', 'libvirt_hook', 'vhost_net',
             'vif_rx_queue_size', 'notification_format', 'notification_driver',
             'notification_topics', 'notification_transport'],
            [r.name for r in report.results])
        self.assertEqual([], [r for r in report.results if r.status != checks.PASS])
        self.assertEqual(checks.PASS, report.status)
        self.assertEqual([self.tree.path('/etc/nova/nova.conf')], report.sources['nova_config'])


class TestFileBackedMemory(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'file_backed_memory', '1024 MiB', "access mode='shared'")

    def test_fail_when_off(self):
        self.tree.nova_conf('[libvirt]\nfile_backed_memory = 0\n')
        self.assertResult(checks.FAIL, 'file_backed_memory', 'file_backed_memory = 0',
                          'not shared file-backed memory')

    def test_fail_when_unset(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('file_backed_memory = 1024\n', ''))
        self.assertResult(checks.FAIL, 'file_backed_memory', 'file_backed_memory = 0')

    def test_fail_with_other_virt_type(self):
        self.tree.nova_conf('[libvirt]\nvirt_type = lxc\n')
        self.assertResult(checks.FAIL, 'file_backed_memory', 'virt_type = lxc')

    def test_fail_on_a_value_nova_refuses(self):
        self.tree.nova_conf('[libvirt]\nfile_backed_memory = 64G\n')
        self.assertResult(checks.FAIL, 'file_backed_memory', 'nova would refuse')


class TestRamAllocationRatio(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'ram_allocation_ratio')

    def test_fail_when_unset_as_by_default(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('ram_allocation_ratio = 1.0\n', ''))
        self.assertResult(checks.FAIL, 'ram_allocation_ratio', 'unset', 'None != 1.0')

    def test_fail_when_overcommitted(self):
        self.tree.nova_conf('[DEFAULT]\nram_allocation_ratio = 1.5\n')
        self.assertResult(checks.FAIL, 'ram_allocation_ratio', '= 1.5')


class TestReservedHostMemory(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'reserved_host_memory_mb')

    def test_warn_on_nova_default(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('reserved_host_memory_mb = 0\n', ''))
        self.assertResult(checks.WARN, 'reserved_host_memory_mb', '= 512',
                          'reserved_host_memory_mb = 0')

    def test_fail_when_not_below_file_backed_memory(self):
        self.tree.nova_conf('[DEFAULT]\nreserved_host_memory_mb = 1024\n')
        self.assertResult(checks.FAIL, 'reserved_host_memory_mb', '1024 >=')


class TestMemoryBackingDir(HostCheckTestCase):

    def test_pass_with_qemu_conf_leaving_it_unset(self):
        self.assertResult(checks.PASS, 'memory_backing_dir', "unset: libvirt's default",
                          RAM_DIR)

    def test_pass_without_qemu_conf(self):
        self.tree.remove('/etc/libvirt/qemu.conf')
        self.assertResult(checks.PASS, 'memory_backing_dir', 'not found')

    def test_fail_when_set_elsewhere(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'memory_backing_dir = "/dev/shm"\n')
        r = self.assertResult(checks.FAIL, 'memory_backing_dir', '/dev/shm/libvirt/qemu',
                              'mount the backing store')
        self.assertIn('Remove memory_backing_dir', r.fix)

    def test_fail_when_set_to_libvirts_default_too(self):
        # libvirt appends /libvirt/qemu to any value, even its own default.
        self.tree.write('/etc/libvirt/qemu.conf', "memory_backing_dir = '%s'\n" % RAM_DIR)
        self.assertResult(checks.FAIL, 'memory_backing_dir', RAM_DIR + '/libvirt/qemu')

    def test_fail_on_a_list(self):
        self.tree.write('/etc/libvirt/qemu.conf',
                        'memory_backing_dir = [ "/mnt/n0",\n  "/mnt/n1" ]\n')
        self.assertResult(checks.FAIL, 'memory_backing_dir', 'NUMA')

    def test_fail_on_a_syntax_error(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'memory_backing_dir = "/dev/shm\n')
        self.assertResult(checks.FAIL, 'memory_backing_dir', 'cannot parse')

    def test_warn_when_the_directory_is_missing(self):
        os.rename(self.tree.path('/var/lib/libvirt'), self.tree.path('/var/lib/gone'))
        self.assertResult(checks.WARN, 'memory_backing_dir', 'does not exist yet')

    def test_warn_when_its_file_system_is_smaller_than_file_backed_memory(self):
        self.tree.nova_conf('[libvirt]\nfile_backed_memory = %d\n' % (1 << 40))
        self.assertResult(checks.WARN, 'memory_backing_dir', 'less than [libvirt] '
                          'file_backed_memory', 'Lower [libvirt] file_backed_memory')


class TestReplicaPath(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'replica_path', RAM_DIR + '/nova-dt')

    def test_pass_on_the_agents_default(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', '[DEFAULT]\nstate_path = /srv/dt\n')
        self.assertResult(checks.PASS, 'replica_path', RAM_DIR + '/nova-dt')

    def test_fail_on_another_path(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf',
                        '[replication]\nreplica_path = /srv/dt/replicas\n')
        r = self.assertResult(checks.FAIL, 'replica_path', '/srv/dt/replicas')
        self.assertIn('replica_path = %s/nova-dt' % RAM_DIR, r.fix)

    def test_fail_on_another_file_system(self):
        class TwoFileSystems(sources.Host):
            def device_of(self, host_path):
                return 2 if host_path.endswith('/nova-dt') else 1

        r = checks.check_replica_path(sources.load_agent_conf(self.tree.host),
                                      sources.load_qemu_conf(self.tree.host),
                                      TwoFileSystems(self.tree.root, RELEASE))
        self.assertEqual(checks.FAIL, r.status)
        self.assertIn('another file system', r.reason)

    def test_warn_when_the_directory_is_missing(self):
        os.rmdir(self.tree.path(RAM_DIR + '/nova-dt'))
        self.assertResult(checks.WARN, 'replica_path', 'does not exist yet')

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'replica_path', 'not found', '--agent-config')

    def test_fail_on_an_unparsable_agent_config(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', 'host = c1\n')
        self.assertResult(checks.FAIL, 'replica_path', 'cannot read')

    def test_agent_config_path_is_injectable(self):
        self.tree.write('/srv/agent.conf', GOOD_AGENT_CONF)
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.PASS, 'replica_path', agent_conf='/srv/agent.conf')


class TestLibvirtHook(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'libvirt_hook', "nova-dt's hook")

    def test_fail_when_missing(self):
        self.tree.remove('/etc/libvirt/hooks/qemu')
        self.assertResult(checks.FAIL, 'libvirt_hook', 'missing', 'mode 0755')

    def test_fail_when_not_executable(self):
        os.chmod(self.tree.path('/etc/libvirt/hooks/qemu'), 0o644)
        self.assertResult(checks.FAIL, 'libvirt_hook', 'not an executable')

    def test_warn_on_another_hook(self):
        self.tree.write('/etc/libvirt/hooks/qemu', '#!/bin/sh\nexit 0\n', mode=0o755)
        self.assertResult(checks.WARN, 'libvirt_hook', "not nova-dt's hook")

    def test_fail_when_its_ram_dir_differs(self):
        self.tree.write('/etc/nova-dt/hook.env', 'NOVA_DT_RAM_DIR=/dev/shm/libvirt/qemu\n')
        self.assertResult(checks.FAIL, 'libvirt_hook', 'NOVA_DT_RAM_DIR in /etc/nova-dt/hook.env',
                          '/dev/shm/libvirt/qemu')

    def test_pass_when_its_ram_dir_is_set_to_the_same(self):
        self.tree.write('/etc/nova-dt/hook.env', 'export NOVA_DT_RAM_DIR="%s/"\n' % RAM_DIR)
        self.assertResult(checks.PASS, 'libvirt_hook')


class TestVhostNet(HostCheckTestCase):

    def test_pass_when_it_cannot_load(self):
        self.assertResult(checks.PASS, 'vhost_net', 'install vhost_net /bin/false',
                          'userspace virtio-net')

    def test_pass_with_virt_type_qemu_whatever_the_module(self):
        self.tree.nova_conf('[libvirt]\nvirt_type = qemu\n')
        self.tree.write('/proc/modules', 'vhost_net 36864 1 - Live 0x0\n')
        self.assertResult(checks.PASS, 'vhost_net', "<driver name='qemu'/>")

    def test_fail_when_loaded(self):
        self.tree.write('/proc/modules', 'vhost_net 36864 1 - Live 0x0\nvhost 61440 1 '
                                         'vhost_net, Live 0x0\n')
        r = self.assertResult(checks.FAIL, 'vhost_net', 'is loaded', 'Vhost is not supported')
        self.assertIn('modprobe -r vhost_net', r.fix)

    def test_fail_when_built_in(self):
        self.tree.write('/lib/modules/%s/modules.builtin' % RELEASE,
                        'kernel/drivers/vhost/vhost_net.ko\n')
        self.assertResult(checks.FAIL, 'vhost_net', 'built into the kernel', 'CONFIG_VHOST_NET=m')

    def test_fail_when_the_device_node_would_load_it(self):
        self.tree.remove('/etc/modprobe.d/nova-dt-vhost-net.conf')
        self.assertResult(checks.FAIL, 'vhost_net', '/dev/vhost-net exists', 'install vhost_net')

    def test_warn_when_nothing_keeps_it_from_loading_later(self):
        self.tree.remove('/etc/modprobe.d/nova-dt-vhost-net.conf')
        self.tree.remove('/dev/vhost-net')
        self.assertResult(checks.WARN, 'vhost_net', 'is absent')

    def test_warn_on_a_blacklist_only(self):
        self.tree.remove('/etc/modprobe.d/nova-dt-vhost-net.conf')
        self.tree.write('/lib/modprobe.d/bl.conf', '# no vhost\nblacklist vhost-net\n')
        self.assertResult(checks.WARN, 'vhost_net', '/lib/modprobe.d/bl.conf blacklists',
                          'explicit')

    def test_warn_on_an_install_command_it_cannot_judge(self):
        self.tree.write('/etc/modprobe.d/nova-dt-vhost-net.conf',
                        'install vhost_net /sbin/modprobe \\\n  --ignore-install vhost_net\n')
        self.assertResult(checks.WARN, 'vhost_net', '--ignore-install vhost_net')

    def test_etc_hides_a_same_named_file_in_lib(self):
        self.tree.write('/lib/modprobe.d/nova-dt-vhost-net.conf', 'blacklist vhost_net\n')
        rules = self.tree.host.modprobe_rules('vhost-net')
        self.assertEqual([sources.ModprobeRule('/etc/modprobe.d/nova-dt-vhost-net.conf',
                                               'install', '/bin/false')], rules)

    def test_warn_when_module_state_is_unknown(self):
        self.tree.remove('/proc/modules')
        self.assertResult(checks.WARN, 'vhost_net', 'module state unknown', 'lsmod')


class TestVifQueueSize(HostCheckTestCase):

    def test_pass_when_unset(self):
        self.assertResult(checks.PASS, 'vif_rx_queue_size', 'unset', 'hw:vif_multiqueue_enabled')

    def test_fail_with_kvm(self):
        self.tree.nova_conf('[libvirt]\nrx_queue_size = 512\n')
        self.assertResult(checks.FAIL, 'vif_rx_queue_size', "<driver name='vhost'",
                          'Unset [libvirt] rx_queue_size')

    def test_pass_with_qemu(self):
        self.tree.nova_conf('[libvirt]\nrx_queue_size = 512\nvirt_type = qemu\n')
        self.assertResult(checks.PASS, 'vif_rx_queue_size', '= 512 (virt_type qemu)')


class TestNotificationFormat(HostCheckTestCase):

    def test_pass_versioned_or_both(self):
        self.assertResult(checks.PASS, 'notification_format', '= versioned')
        self.tree.nova_conf('[notifications]\nnotification_format = both\n')
        self.assertResult(checks.PASS, 'notification_format', '= both')

    def test_fail_on_nova_default(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace(
            'notification_format = versioned\n', ''))
        self.assertResult(checks.FAIL, 'notification_format', '= unversioned', 'noop')

    def test_deprecated_default_group_counts(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace(
            'notification_format = versioned\n', '') + '[DEFAULT]\nnotification_format = both\n')
        self.assertResult(checks.PASS, 'notification_format', '= both')


class TestNotificationDriver(HostCheckTestCase):

    def test_pass_messagingv2(self):
        self.assertResult(checks.PASS, 'notification_driver', 'messagingv2')

    def test_pass_messaging_v1(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('messagingv2', 'messaging'))
        self.assertResult(checks.PASS, 'notification_driver', '1.0 format')

    def test_values_accumulate_over_files(self):
        # driver is a MultiStrOpt: oslo.config appends the values of every file.
        self.tree.nova_conf('[oslo_messaging_notifications]\ndriver = log\n')
        self.assertResult(checks.PASS, 'notification_driver', 'driver = messagingv2, log')

    def test_pass_with_the_deprecated_name(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('driver = messagingv2\n', '') +
                            '[DEFAULT]\nnotification_driver = messagingv2\n')
        self.assertResult(checks.PASS, 'notification_driver', 'messagingv2')

    def test_warn_on_routing(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('messagingv2', 'routing'))
        self.assertResult(checks.WARN, 'notification_driver', 'routing')

    def test_fail_when_unset(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('driver = messagingv2\n', ''))
        self.assertResult(checks.FAIL, 'notification_driver', '(empty)', 'messagingv2')

    def test_fail_on_noop(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('messagingv2', 'noop'))
        self.assertResult(checks.FAIL, 'notification_driver', '= noop')


class TestNotificationTopics(HostCheckTestCase):

    def test_pass(self):
        self.assertResult(checks.PASS, 'notification_topics', 'versioned_notifications')

    def test_pass_with_the_agents_default_when_its_config_is_missing(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.PASS, 'notification_topics', "the agent's default topics")

    def test_fail_when_nova_publishes_elsewhere(self):
        self.tree.nova_conf('[notifications]\nversioned_notifications_topics = vn_only\n')
        self.assertResult(checks.FAIL, 'notification_topics', '= vn_only',
                          'versioned_notifications.info/.error')

    def test_fail_when_the_agent_binds_another_topic(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[nova_notifications]\ntopics = versioned_notifications, dt_vn\n')
        self.assertResult(checks.FAIL, 'notification_topics', 'receives nothing on dt_vn')

    def test_warn_when_the_agent_does_not_consume(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[nova_notifications]\nenabled = false\n')
        self.assertResult(checks.WARN, 'notification_topics', 'enabled = false')


class TestNotificationTransport(HostCheckTestCase):

    def test_pass_same_brokers_and_vhost(self):
        r = self.assertResult(checks.PASS, 'notification_transport',
                              'rabbit://ctl1:5672,ctl2:5672/%2F')
        self.assertNotIn('secret', r.reason)

    def test_pass_on_a_separate_notification_bus_both_use(self):
        self.tree.nova_conf('[oslo_messaging_notifications]\n'
                            'transport_url = kombu://n:s@notify:5673/dt\n')
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[oslo_messaging_notifications]\n'
                        'transport_url = rabbit://a:b@NOTIFY:5673/dt\n')
        self.assertResult(checks.PASS, 'notification_transport',
                          '[oslo_messaging_notifications] transport_url')

    def test_warn_on_another_vhost(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF.replace(
            'CTL1/', 'CTL1/nova_cell1'))
        self.assertResult(checks.WARN, 'notification_transport', '/nova_cell1',
                          '[oslo_messaging_notifications] transport_url in')

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'notification_transport', 'not compared')

    def test_fail_when_the_agent_has_no_bus(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', '[DEFAULT]\nhost = c1\n')
        self.assertResult(checks.FAIL, 'notification_transport', 'runs without the bus')

    def test_fail_on_a_non_rabbit_bus(self):
        self.tree.nova_conf('[oslo_messaging_notifications]\ntransport_url = kafka://k1:9092\n')
        self.assertResult(checks.FAIL, 'notification_transport', 'kafka://')

    def test_warn_on_olso_messagings_default_bus(self):
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace(
            'transport_url = rabbit://nova:secret@ctl1:5672,nova:secret@ctl2:5672/\n', ''))
        self.assertResult(checks.WARN, 'notification_transport', 'rabbit://localhost:5672/%2F')

    def test_fail_when_nova_has_no_bus(self):
        self.tree.nova_conf('[DEFAULT]\ntransport_url =\n')
        self.assertResult(checks.FAIL, 'notification_transport', 'no transport_url')


class TestNovaConfig(HostCheckTestCase):

    def test_fail_without_nova_conf_and_skip_its_checks(self):
        self.tree.remove('/etc/nova/nova.conf')
        report = self.tree.run()
        self.assertEqual(['nova_config', 'replica_path', 'libvirt_hook'],
                         [r.name for r in report.results])
        self.assertEqual(checks.FAIL, report.results[0].status)
        self.assertIn('/etc/nova/nova.conf', report.results[0].reason)

    def test_fail_on_a_syntax_error(self):
        self.tree.write('/etc/nova/nova.conf', 'file_backed_memory = 1\n')
        self.assertResult(checks.FAIL, 'nova_config', 'Section must be started')

    def test_nova_compute_conf_is_read_after_nova_conf(self):
        self.tree.write('/etc/nova/nova-compute.conf', '[libvirt]\nvirt_type = qemu\n')
        report = self.tree.run()
        self.assertEqual([self.tree.path('/etc/nova/nova.conf'),
                          self.tree.path('/etc/nova/nova-compute.conf')],
                         report.sources['nova_config'])
        [r] = [r for r in report.results if r.name == 'vhost_net']
        self.assertIn('virt_type = qemu', r.reason)

    def test_explicit_files_and_dirs_replace_the_defaults(self):
        self.tree.write('/srv/a.conf', GOOD_NOVA_CONF)
        self.tree.write('/srv/d/b.conf', '[libvirt]\nfile_backed_memory = 0\n')
        self.tree.write('/etc/nova/nova.conf', '[libvirt]\nfile_backed_memory = 7\n')
        r = self.tree.result('file_backed_memory', nova_config_files=['/srv/a.conf'],
                             nova_config_dirs=['/srv/d'])
        self.assertEqual(checks.FAIL, r.status)
        self.assertIn('file_backed_memory = 0', r.reason)


class TestReaders(test.NoDBTestCase):

    def test_parse_virconf(self):
        text = ('# comment = "x"\nuser = "qemu"  # trailing\nmemory_backing_dir = \'/a\'\n'
                'memory_backing_dir = "/b"\nnamespaces = [ "mount",\n "x" ]\nmax_files = 1024\n'
                'empty = []\ntriple = """multi\nline"""\n')
        self.assertEqual({'user': 'qemu', 'memory_backing_dir': '/a',
                          'namespaces': ['mount', 'x'], 'max_files': 1024, 'empty': [],
                          'triple': 'multi\nline'}, sources.parse_virconf(text))
        self.assertRaises(ValueError, sources.parse_virconf, 'a = "x\n')
        self.assertRaises(ValueError, sources.parse_virconf, 'a "x"\n')
        self.assertRaises(ValueError, sources.parse_virconf, 'a = [ b ]\n')

    def test_qemu_conf_ram_dir(self):
        self.assertEqual(RAM_DIR, sources.QemuConf('q').ram_dir)
        self.assertEqual('/dev/shm/libvirt/qemu',
                         sources.QemuConf('q', True, '/dev/shm/').ram_dir)

    def test_transport_endpoint(self):
        e = sources.transport_endpoint('kombu://u:p%40ss@H1,u:p@[::1]:5673/%2Fnova')
        self.assertEqual(sources.Endpoint('rabbit', frozenset({('h1', 5672), ('::1', 5673)}),
                                          '/nova'), e)
        self.assertEqual('rabbit://[::1]:5673,h1:5672/%2Fnova', str(e))
        self.assertEqual('/', sources.transport_endpoint('rabbit://h/').vhost)
        self.assertEqual('/', sources.transport_endpoint('rabbit://h//').vhost)
        self.assertEqual('/', sources.transport_endpoint('rabbit://h').vhost)
        self.assertEqual(frozenset({('localhost', 5672)}),
                         sources.transport_endpoint('rabbit:///').hosts)
        self.assertRaises(ValueError, sources.transport_endpoint, 'ctl1:5672')
        self.assertRaises(ValueError, sources.transport_endpoint, 'rabbit://h:x/')

    def test_agent_conf_defaults(self):
        tree = self.useFixture(HostTree())
        tree.write('/a.conf', '[DEFAULT]\nstate_path = /srv/dt/\n')
        a = sources.load_agent_conf(tree.host, '/a.conf')
        self.assertEqual(('/var/lib/libvirt/qemu/ram/nova-dt', True, ('versioned_notifications',),
                          ''),
                         (a.replica_path, a.nova_notifications_enabled,
                          a.nova_notification_topics, a.notification_transport_url))
        missing = sources.load_agent_conf(tree.host, '/none.conf')
        self.assertFalse(missing.found)
        self.assertEqual('/var/lib/libvirt/qemu/ram/nova-dt', missing.replica_path)
        tree.write('/b.conf', '[nova_notifications]\nenabled = maybe\n')
        self.assertIn('not a boolean', sources.load_agent_conf(tree.host, '/b.conf').error)

    def test_module_state(self):
        tree = self.useFixture(HostTree())
        self.assertIsNone(tree.host.module_state('vhost_net'))
        tree.write('/proc/modules', 'vhost_net 1 0 - Live 0x0\n')
        self.assertEqual('loaded', tree.host.module_state('vhost-net'))
        tree.write('/proc/modules', 'vhost 1 0 - Live 0x0\n')
        self.assertEqual('absent', tree.host.module_state('vhost_net'))
        tree.write('/lib/modules/%s/modules.builtin' % RELEASE,
                   'kernel/drivers/vhost/vhost_net.ko\n')
        self.assertEqual('builtin', tree.host.module_state('vhost_net'))


class TestCli(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.tree = self.useFixture(HostTree()).good()

    def main(self, *args):
        out = io.StringIO()
        code = host_check.main(['--root', self.tree.root] + list(args), stdout=out)
        return code, out.getvalue()

    def test_table_and_exit_0_when_all_pass(self):
        code, out = self.main()
        self.assertEqual(0, code)
        self.assertIn('Result: PASS (12 PASS, 0 WARN, 0 FAIL)', out)
        for line in out.splitlines():
            self.assertLessEqual(len(line), host_check.WIDTH + 10, line)
        self.assertRegex(out, r'\nvhost_net +PASS +vhost_net is not loaded')

    def test_exit_0_with_warnings_only(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        code, out = self.main()
        self.assertEqual(0, code)
        self.assertIn('WARN', out)
        self.assertNotIn(' FAIL ', out)

    def test_exit_1_and_the_fix_on_a_failure(self):
        self.tree.nova_conf('[libvirt]\nfile_backed_memory = 0\n')
        code, out = self.main()
        self.assertEqual(1, code)
        self.assertRegex(out, r'\nfile_backed_memory +FAIL ')
        self.assertIn('Fix: Set [libvirt] file_backed_memory', out)
        self.assertIn('Result: FAIL', out)

    def test_json(self):
        self.tree.nova_conf('[notifications]\nnotification_format = unversioned\n')
        code, out = self.main('--format', 'json')
        self.assertEqual(1, code)
        doc = json.loads(out)
        self.assertEqual('FAIL', doc['result'])
        self.assertEqual({'PASS': 11, 'WARN': 0, 'FAIL': 1}, doc['summary'])
        self.assertEqual({'name', 'status', 'reason', 'fix'}, set(doc['checks'][0]))
        [bad] = [c for c in doc['checks'] if c['status'] == 'FAIL']
        self.assertEqual('notification_format', bad['name'])
        self.assertEqual(self.tree.root, doc['sources']['root'])
        self.assertEqual([self.tree.path('/etc/nova/nova.conf'),
                          self.tree.path('/etc/nova/nova.conf.d/zz.conf')],
                         doc['sources']['nova_config'])

    def test_every_path_is_injectable(self):
        for src, dst in (('/etc/libvirt/qemu.conf', '/x/qemu.conf'),
                         ('/etc/nova-dt/nova-dt-agent.conf', '/x/agent.conf'),
                         ('/etc/libvirt/hooks/qemu', '/x/hook'),
                         ('/etc/nova/nova.conf', '/x/nova.conf')):
            os.makedirs(self.tree.path('/x'), exist_ok=True)
            os.rename(self.tree.path(src), self.tree.path(dst))
        self.tree.write('/x/hook.env', 'NOVA_DT_RAM_DIR=/elsewhere\n')
        code, out = self.main('--format', 'json', '--qemu-conf', '/x/qemu.conf',
                              '--agent-config', '/x/agent.conf', '--libvirt-hook', '/x/hook',
                              '--config-file', '/x/nova.conf', '--hook-env', '/x/hook.env')
        doc = json.loads(out)
        self.assertEqual(['libvirt_hook'], [c['name'] for c in doc['checks']
                                            if c['status'] != 'PASS'])
        self.assertIn('/x/hook.env', [c for c in doc['checks']
                                      if c['name'] == 'libvirt_hook'][0]['reason'])
        self.assertEqual('/x/qemu.conf', doc['sources']['qemu_conf'])

    def test_bad_usage_exits_2(self):
        self.useFixture(fixtures.MonkeyPatch('sys.stderr', io.StringIO()))
        e = self.assertRaises(SystemExit, host_check.main, ['--format', 'xml'])
        self.assertEqual(2, e.code)

    def test_console_script_entry_point(self):
        import importlib.metadata
        self.useFixture(dt_fixtures.EntryPoints())
        [ep] = [e for e in importlib.metadata.entry_points(group='console_scripts')
                if e.name == 'nova-dt-host-check']
        self.assertIs(host_check.main, ep.load())


class TestControllerWarnings(test.NoDBTestCase):

    def nova_conf(self, text):
        tree = self.useFixture(HostTree())
        tree.write('/nova.conf', text)
        conf = cfg.ConfigOpts()
        sources.register_nova_opts(conf)
        conf(['--config-file', tree.path('/nova.conf')], default_config_files=[],
             default_config_dirs=[], use_env=False)
        return conf

    def test_warns_for_each_missing_notification_setting(self):
        logger = self.useFixture(fixtures.FakeLogger(name='nova_dt.test'))
        import logging
        checks.log_notification_warnings(self.nova_conf('[DEFAULT]\n'),
                                         logging.getLogger('nova_dt.test'))
        self.assertIn('notification_format = unversioned', logger.output)
        self.assertIn('driver = (empty)', logger.output)
        self.assertEqual(2, logger.output.count('Fix:'))

    def test_silent_when_set(self):
        logger = self.useFixture(fixtures.FakeLogger(name='nova_dt.test'))
        import logging
        checks.log_notification_warnings(self.nova_conf(GOOD_NOVA_CONF),
                                         logging.getLogger('nova_dt.test'))
        self.assertEqual('', logger.output)

    def test_controller_logs_them_at_start(self):
        logger = self.useFixture(fixtures.FakeLogger(name='nova_dt.controller.service'))
        self.flags(transport_url='fake:/')
        self.flags(notification_format='unversioned', group='notifications')
        self.flags(state_dir=self.useFixture(fixtures.TempDir()).path, resume_interval=3600,
                   group='nova_dt')
        resumed = threading.Event()

        class Reconciler(object):
            store = type('Store', (), {'close': lambda self: None})()

            def resume(self):
                resumed.set()

            def handle_nova_notification(self, event_type, payload):
                pass

            handle_agent_notification = handle_nova_notification

        self.useFixture(fixtures.MockPatch('nova_dt.controller.service.make_reconciler',
                                           return_value=Reconciler()))
        svc = service.ControllerService(CONF)
        svc.start()
        try:
            self.assertTrue(resumed.wait(10))
        finally:
            svc.stop()
        self.assertIn('notification_format = unversioned', logger.output)
        self.assertIn('(docs/compute-host.md)', logger.output)
