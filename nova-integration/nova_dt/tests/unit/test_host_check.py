"""nova-dt-host-check: each compute-host check's PASS/WARN/FAIL, its readers and the CLI.

Every test builds a compute host's files under a temporary root (nova.conf, qemu.conf, the
agent's config, the libvirt hook, /proc/modules, modprobe.d, /dev/vhost-net, the guest-RAM
directory, /etc/passwd and /etc/group, the peer link's certificates) and reads it with the real
readers: nova.conf through oslo.config with nova's own option definitions, certificates made by
the real deploy/nova-dt-make-certs and read by the real openssl. Nothing under the real /etc,
/proc or /dev is read.
"""

import atexit
import io
import json
import os
import shutil
import subprocess
import tempfile
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
REPO_DIR = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..')
# Read at import, before nova's test base class points tempfile at a per-test directory.
_TMP_ROOT = tempfile.gettempdir()

GOOD_NOVA_CONF = """\
[DEFAULT]
# As Debian's nova.conf (nova-common): instances_path is then /var/lib/nova/instances.
state_path = /var/lib/nova
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

[peer]
tls_ca_file = /etc/nova-dt/tls/ca.pem
tls_cert_file = /etc/nova-dt/tls/compute-1.pem
tls_key_file = /etc/nova-dt/tls/compute-1.key

[witness]
etcd_endpoints = https://etcd-1:2379,https://[fd00::3]:2379
tls_ca_file = /etc/nova-dt/etcd/ca.pem
tls_cert_file = /etc/nova-dt/etcd/client.pem
tls_key_file = /etc/nova-dt/etcd/client.key
"""

# Debian's libvirt-daemon-system: user and group libvirt-qemu (64055), kvm as in udev.
PASSWD = 'root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:64055::/var/lib/libvirt:' \
         '/usr/sbin/nologin\n'
GROUP = 'root:x:0:\nkvm:x:104:libvirt-qemu\nlibvirt-qemu:x:64055:libvirt-qemu\n'

_certs_dir = None


def certificates():
    """A directory of certificates, made once per test process and removed at its exit.

    ca.pem, compute-1.pem/.key and compute-2.pem/.key by deploy/nova-dt-make-certs;
    cn-only.pem/.key (CN=compute-1, no subjectAltName) and ip-san.pem/.key (CN=compute-1,
    subjectAltName IP:10.0.0.1 only), self-signed by openssl.
    """
    global _certs_dir
    if _certs_dir is None:
        d = tempfile.mkdtemp(prefix='nova-dt-hostcheck-certs.', dir=_TMP_ROOT)
        atexit.register(shutil.rmtree, d, True)
        subprocess.run(['bash', os.path.join(REPO_DIR, 'deploy', 'nova-dt-make-certs'), d,
                        'compute-1', 'compute-2'], check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        for stem, extra in (('cn-only', []),
                            ('ip-san', ['-addext', 'subjectAltName=IP:10.0.0.1'])):
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                            'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj',
                            '/CN=compute-1', '-keyout', os.path.join(d, stem + '.key'), '-out',
                            os.path.join(d, stem + '.pem')] + extra,
                           check=True, timeout=60, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        _certs_dir = d
    return _certs_dir


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

    def copy(self, src, host_path, mode=0o600):
        with open(src) as f:
            self.write(host_path, f.read(), mode)

    def good(self):
        self.nova_conf()
        self.write('/etc/libvirt/qemu.conf', '# memory_backing_dir = "/dev/shm"\n'
                                             '#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n')
        self.write('/etc/passwd', PASSWD)
        self.write('/etc/group', GROUP)
        self.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF)
        certs = certificates()
        for name in ('ca.pem', 'compute-1.pem', 'compute-1.key'):
            self.copy(os.path.join(certs, name), '/etc/nova-dt/tls/' + name)
        self.copy(os.path.join(certs, 'ca.pem'), '/etc/nova-dt/etcd/ca.pem')
        self.copy(os.path.join(certs, 'compute-2.pem'), '/etc/nova-dt/etcd/client.pem')
        self.copy(os.path.join(certs, 'compute-2.key'), '/etc/nova-dt/etcd/client.key')
        self.copy(os.path.join(REPO_DIR, 'deploy', 'libvirt-hooks', 'qemu'),
                  '/etc/libvirt/hooks/qemu', mode=0o755)
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
             'memory_backing_dir', 'replica_path', 'libvirt_hook', 'qemu_user',
             'instances_path', 'vhost_net', 'vif_rx_queue_size', 'notification_format',
             'notification_driver', 'notification_topics', 'notification_transport',
             'peer_tls', 'witness'],
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


class TestQemuUser(HostCheckTestCase):

    def agent_conf(self, libvirt):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf',
                        GOOD_AGENT_CONF + '[libvirt]\n' + libvirt)

    def test_pass_on_debians_defaults(self):
        self.assertResult(checks.PASS, 'qemu_user', 'user libvirt-qemu (uid 64055',
                          'group libvirt-qemu (gid 64055', "leaves user unset: Debian's libvirt "
                          'default')

    def test_pass_without_qemu_conf(self):
        self.tree.remove('/etc/libvirt/qemu.conf')
        self.assertResult(checks.PASS, 'qemu_user', "not found: Debian's libvirt default")

    def test_pass_on_numeric_ids_naming_the_same(self):
        # libvirt reads "64055" as a name first, then as a uid; the agent's "+N" is the id.
        self.tree.write('/etc/libvirt/qemu.conf', 'user = "64055"\ngroup = "+64055"\n')
        self.agent_conf('qemu_user = +64055\nqemu_group = libvirt-qemu\n')
        self.assertResult(checks.PASS, 'qemu_user', 'user +64055 (uid 64055',
                          'qemu.conf group = "+64055"')

    def test_fail_when_libvirt_runs_qemu_as_another_user(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'user = "root"\n')
        r = self.assertResult(checks.FAIL, 'qemu_user', 'qemu_user = libvirt-qemu (uid 64055)',
                              'runs QEMU as user root (uid 0', 'failover')
        self.assertIn('Set [libvirt] qemu_user = root and qemu_group = libvirt-qemu', r.fix)

    def test_fail_when_libvirt_runs_qemu_in_another_group(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'group = "kvm"\n')
        r = self.assertResult(checks.FAIL, 'qemu_user', 'qemu_group = libvirt-qemu (gid 64055)',
                              'group kvm (gid 104')
        self.assertIn('qemu_group = kvm', r.fix)

    def test_fail_when_the_agents_user_does_not_exist(self):
        self.tree.write('/etc/passwd', 'root:x:0:0:root:/root:/bin/bash\n')
        r = self.assertResult(checks.FAIL, 'qemu_user', 'qemu_user = libvirt-qemu: no such user',
                              'does not start (exit 2)', '/etc/passwd')
        self.assertIn('Create the user libvirt-qemu', r.fix)

    def test_fail_when_the_agents_group_does_not_exist(self):
        self.agent_conf('qemu_group = qemu\n')
        r = self.assertResult(checks.FAIL, 'qemu_user', 'qemu_group = qemu: no such group')
        self.assertIn('qemu_group = libvirt-qemu', r.fix)

    def test_fail_when_qemu_confs_user_does_not_exist(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'user = "qemu"\n')
        self.assertResult(checks.FAIL, 'qemu_user', 'qemu.conf user = "qemu"',
                          "libvirtd/virtqemud does not", "Failed to parse user 'qemu'")

    def test_fail_on_a_numeric_id_the_agent_refuses(self):
        self.agent_conf('qemu_group = +4294967295\n')
        self.assertResult(checks.FAIL, 'qemu_user', 'malformed numeric group')

    def test_fail_on_a_value_the_agent_refuses(self):
        self.agent_conf('qemu_user = libvirt qemu\n')
        self.assertResult(checks.FAIL, 'qemu_user', 'does not start',
                          "[libvirt] qemu_user: expected a user or group name, or +N, got "
                          "'libvirt qemu'")

    def test_fail_on_a_number_libvirt_refuses(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'user = 0\n')
        self.assertResult(checks.FAIL, 'qemu_user', 'user = 0', 'wants a string')

    def test_fail_on_an_unparsable_qemu_conf(self):
        self.tree.write('/etc/libvirt/qemu.conf', 'user = "root\n')
        self.assertResult(checks.FAIL, 'qemu_user', 'cannot parse')

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'qemu_user', 'not found', '--agent-config')

    def test_users_are_looked_up_through_nss_on_the_real_root(self):
        host = sources.Host('/')
        self.assertEqual(0, host.user_id('root'))
        self.assertEqual(0, host.group_id('root'))
        self.assertIsNone(host.user_id('no-such-user-nova-dt'))


class TestInstancesPath(HostCheckTestCase):

    def test_pass_with_debians_state_path(self):
        self.assertResult(checks.PASS, 'instances_path', '= /var/lib/nova/instances')

    def test_pass_with_both_set_alike(self):
        self.tree.nova_conf('[DEFAULT]\ninstances_path = /srv/nova/instances/\n')
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[libvirt]\ninstances_path = /srv/nova/instances\n')
        self.assertResult(checks.PASS, 'instances_path', '/srv/nova/instances')

    def test_fail_on_novas_own_default_without_state_path(self):
        # nova's default is $state_path/instances with state_path = $pybasedir (its package).
        self.tree.nova_conf(base=GOOD_NOVA_CONF.replace('state_path = /var/lib/nova\n', ''))
        import nova.conf.paths
        pybasedir = nova.conf.paths.ALL_OPTS[0].default
        r = self.assertResult(checks.FAIL, 'instances_path', pybasedir + '/instances',
                              'console.log', 'every server')
        self.assertIn('Set [libvirt] instances_path = %s/instances' % pybasedir, r.fix)

    def test_fail_when_they_differ(self):
        self.tree.nova_conf('[DEFAULT]\ninstances_path = /srv/instances\n')
        self.assertResult(checks.FAIL, 'instances_path', '= /srv/instances',
                          '[libvirt] instances_path = /var/lib/nova/instances')

    def test_fail_on_a_path_nova_would_write_differently(self):
        # os.path.join('/srv//i', uuid) keeps the '//': the agent compares paths as text.
        self.tree.nova_conf('[DEFAULT]\ninstances_path = /srv//i\n')
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[libvirt]\ninstances_path = /srv/i\n')
        self.assertResult(checks.FAIL, 'instances_path', '/srv//i')

    def test_fail_on_a_value_the_agent_refuses(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', GOOD_AGENT_CONF +
                        '[libvirt]\ninstances_path = /var/lib/nova/instances/\n')
        self.assertResult(checks.FAIL, 'instances_path', 'does not start',
                          "without a trailing '/'")

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'instances_path', 'not found', '--agent-config')


class TestPeerTls(HostCheckTestCase):

    def agent_conf(self, peer, default='[DEFAULT]\nhost = compute-1\n'):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf', default + '[peer]\n' + peer)

    def use_cert(self, stem):
        certs = certificates()
        self.tree.copy(os.path.join(certs, stem + '.pem'), '/etc/nova-dt/tls/compute-1.pem')
        self.tree.copy(os.path.join(certs, stem + '.key'), '/etc/nova-dt/tls/compute-1.key')

    def test_pass_with_a_certificate_naming_the_host(self):
        self.assertResult(checks.PASS, 'peer_tls', 'mutual TLS',
                          'names [DEFAULT] host compute-1 (DNS subjectAltName)')

    def test_pass_with_the_cn_of_a_certificate_without_sans(self):
        self.use_cert('cn-only')
        self.assertResult(checks.PASS, 'peer_tls', 'compute-1 (CN, no SANs)')

    def test_pass_with_the_hostname_when_host_is_unset(self):
        self.tree.write('/proc/sys/kernel/hostname', 'compute-1\n')
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf',
                        GOOD_AGENT_CONF.replace('host = compute-1\n', ''))
        self.assertResult(checks.PASS, 'peer_tls', "this machine's hostname ([DEFAULT] host "
                                                   "unset) compute-1")

    def test_fail_when_the_certificate_names_another_host(self):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf',
                        GOOD_AGENT_CONF.replace('host = compute-1', 'host = compute-2'))
        r = self.assertResult(checks.FAIL, 'peer_tls', 'names DNS:compute-1, CN=compute-1, not '
                              '[DEFAULT] host compute-2', 'peers refuse')
        self.assertIn('deploy/nova-dt-make-certs', r.fix)
        self.assertIn('docs/security.md', r.fix)

    def test_warn_on_a_cn_hidden_by_other_sans(self):
        self.use_cert('ip-san')
        self.assertResult(checks.WARN, 'peer_tls', "certificate's CN is [DEFAULT] host "
                                                   "compute-1", 'IP Address:10.0.0.1')

    def test_pass_with_a_note_without_openssl(self):
        r = checks.check_peer_tls(sources.load_agent_conf(self.tree.host), self.tree.host,
                                  openssl='no-such-openssl-nova-dt')
        self.assertEqual(checks.PASS, r.status, r)
        self.assertIn('Not checked: whether the certificate names', r.reason)
        self.assertIn('openssl is not installed', r.reason)

    def test_warn_when_openssl_does_not_answer(self):
        self.tree.write('/bin/slow-openssl', '#!/bin/sh\nexec sleep 30\n', mode=0o755)
        self.useFixture(fixtures.MonkeyPatch('nova_dt.hostcheck.sources.OPENSSL_TIMEOUT', 0.2))
        r = checks.check_peer_tls(sources.load_agent_conf(self.tree.host), self.tree.host,
                                  openssl=self.tree.path('/bin/slow-openssl'))
        self.assertEqual(checks.WARN, r.status, r)
        self.assertIn('did not finish within 0.2 s', r.reason)
        self.assertIn('openssl x509 -noout', r.fix)

    def test_fail_when_openssl_cannot_read_the_certificate(self):
        self.tree.copy(self.tree.path('/etc/nova-dt/tls/compute-1.key'),
                       '/etc/nova-dt/tls/compute-1.pem')
        self.assertResult(checks.FAIL, 'peer_tls', 'openssl cannot read a certificate')

    def test_fail_without_tls_files(self):
        self.agent_conf('')
        r = self.assertResult(checks.FAIL, 'peer_tls', 'refuses to start',
                              '[peer] has no TLS certificates')
        self.assertIn('deploy/nova-dt-make-certs', r.fix)

    def test_warn_without_tls_files_when_insecure_is_allowed(self):
        self.agent_conf('allow_insecure = True\n')
        r = self.assertResult(checks.WARN, 'peer_tls', 'plaintext', 'authenticates nobody')
        self.assertIn('remove allow_insecure', r.fix)

    def test_fail_on_a_partial_set(self):
        self.agent_conf('tls_cert_file = /etc/nova-dt/tls/compute-1.pem\n')
        self.assertResult(checks.FAIL, 'peer_tls', 'does not start',
                          '[peer] tls_key_file: the peer TLS files go together')

    def test_fail_on_a_missing_file(self):
        self.tree.remove('/etc/nova-dt/tls/ca.pem')
        self.assertResult(checks.FAIL, 'peer_tls', 'tls_ca_file = /etc/nova-dt/tls/ca.pem',
                          'No such file or directory')

    def test_fail_on_a_file_without_pem(self):
        self.tree.write('/etc/nova-dt/tls/compute-1.key', 'not a key\n')
        self.assertResult(checks.FAIL, 'peer_tls', 'tls_key_file', 'holds no PEM block')

    def test_warn_when_only_this_checks_user_cannot_read_a_file(self):
        self.useFixture(fixtures.MonkeyPatch('os.geteuid', lambda: 1000))
        real_open = os.open

        def open_as_user(path, *args, **kwargs):
            if path.endswith('compute-1.key'):
                raise PermissionError(13, 'Permission denied')
            return real_open(path, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch('os.open', open_as_user))
        r = self.assertResult(checks.WARN, 'peer_tls', 'Permission denied as uid 1000',
                              'reads it as root')
        self.assertEqual('Run nova-dt-host-check as root.', r.fix)

    def test_fail_on_a_directory(self):
        self.tree.remove('/etc/nova-dt/tls/ca.pem')
        self.tree.mkdir('/etc/nova-dt/tls/ca.pem')
        self.assertResult(checks.FAIL, 'peer_tls', 'not a regular file')

    def test_fail_on_a_file_too_large_to_be_a_tls_file(self):
        self.tree.write('/etc/nova-dt/tls/ca.pem', '-----BEGIN CERTIFICATE-----\n' +
                        'A' * sources.MAX_TLS_FILE_BYTES)
        self.assertResult(checks.FAIL, 'peer_tls', 'tls_ca_file', 'not a TLS file')

    def test_fail_on_a_fifo_without_waiting_for_a_writer(self):
        self.tree.remove('/etc/nova-dt/tls/ca.pem')
        os.mkfifo(self.tree.path('/etc/nova-dt/tls/ca.pem'))
        self.assertResult(checks.FAIL, 'peer_tls', 'tls_ca_file', 'not a regular file')

    def test_fail_on_an_allow_insecure_the_agent_refuses(self):
        self.agent_conf('allow_insecure = t\n')
        self.assertResult(checks.FAIL, 'peer_tls', "[peer] allow_insecure: expected a boolean")

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'peer_tls', 'not found', '--agent-config')


class TestWitness(HostCheckTestCase):

    def agent_conf(self, witness):
        self.tree.write('/etc/nova-dt/nova-dt-agent.conf',
                        GOOD_AGENT_CONF.partition('[witness]')[0] + '[witness]\n' + witness)

    def test_pass_over_https_with_a_client_certificate(self):
        self.assertResult(checks.PASS, 'witness', 'https://etcd-1:2379, https://[fd00::3]:2379',
                          'client certificate (/etc/nova-dt/etcd/client.pem)')

    def test_warn_over_http(self):
        self.agent_conf('etcd_endpoints = http://etcd-1:2379\n')
        r = self.assertResult(checks.WARN, 'witness', 'plain http', 'tests and labs')
        self.assertIn('docs/witness.md', r.fix)

    def test_warn_over_https_without_a_client_certificate(self):
        self.agent_conf('etcd_endpoints = https://etcd-1:2379\ntls_ca_file = '
                        '/etc/nova-dt/etcd/ca.pem\n')
        self.assertResult(checks.WARN, 'witness', 'without a client certificate',
                          '--client-cert-auth')

    def test_warn_without_a_witness_when_allowed(self):
        self.agent_conf('allow_none = yes\n')
        r = self.assertResult(checks.WARN, 'witness', 'allow_none = true',
                              'automatic failover without a witness', 'Without a witness')
        self.assertIn('remove allow_none', r.fix)

    def test_warn_without_a_witness(self):
        self.agent_conf('')
        self.assertResult(checks.WARN, 'witness', 'automatic failover is off',
                          'only an explicit failover request')

    def test_fail_on_an_endpoint_the_agent_refuses(self):
        self.agent_conf('etcd_endpoints = etcd-1:2379\n')
        self.assertResult(checks.FAIL, 'witness', 'does not start',
                          "expected 'http://host:port' or 'https://host:port' items, got "
                          "'etcd-1:2379'")

    def test_fail_on_a_bad_port(self):
        self.agent_conf('etcd_endpoints = https://etcd-1:0\n')
        self.assertResult(checks.FAIL, 'witness', 'the port must be an integer in 1..65535')

    def test_fail_on_mixed_schemes(self):
        self.agent_conf('etcd_endpoints = https://etcd-1:2379, http://etcd-2:2379\n')
        self.assertResult(checks.FAIL, 'witness', 'mixes http:// and https://')

    def test_fail_on_tls_files_with_http(self):
        self.agent_conf('etcd_endpoints = http://etcd-1:2379\ntls_ca_file = '
                        '/etc/nova-dt/etcd/ca.pem\n')
        self.assertResult(checks.FAIL, 'witness', 'TLS files need https://')

    def test_fail_on_a_certificate_without_its_key(self):
        self.agent_conf('etcd_endpoints = https://etcd-1:2379\ntls_cert_file = '
                        '/etc/nova-dt/etcd/client.pem\n')
        self.assertResult(checks.FAIL, 'witness', '[witness] tls_key_file: tls_cert_file and '
                                                  'tls_key_file go together')

    def test_fail_on_an_unreadable_tls_file(self):
        self.tree.remove('/etc/nova-dt/etcd/client.key')
        self.assertResult(checks.FAIL, 'witness', 'tls_key_file = /etc/nova-dt/etcd/client.key',
                          'No such file or directory', 'exit 2')

    def test_warn_without_agent_config(self):
        self.tree.remove('/etc/nova-dt/nova-dt-agent.conf')
        self.assertResult(checks.WARN, 'witness', 'not found', '--agent-config')


class TestNovaConfig(HostCheckTestCase):

    def test_fail_without_nova_conf_and_skip_its_checks(self):
        self.tree.remove('/etc/nova/nova.conf')
        report = self.tree.run()
        self.assertEqual(['nova_config', 'replica_path', 'libvirt_hook', 'qemu_user', 'peer_tls',
                          'witness'], [r.name for r in report.results])
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
        self.assertEqual(('', '/var/lib/nova/instances', 'libvirt-qemu', 'libvirt-qemu', '', '',
                          '', False, (), False, {}),
                         (a.host, a.instances_path, a.qemu_user, a.qemu_group,
                          a.peer_tls_cert_file, a.peer_tls_key_file, a.peer_tls_ca_file,
                          a.peer_allow_insecure, a.etcd_endpoints, a.witness_allow_none,
                          a.invalid))

    def test_agent_booleans_are_the_agents(self):
        # config_loader.cc ReadBool: oslo's 't'/'y' are refused by the agent.
        for text, value in (('TRUE', True), ('on', True), ('1', True), ('No', False),
                            ('off', False)):
            self.assertEqual(value, sources._bool(text))
        for text in ('t', 'y', 'enabled', ''):
            self.assertRaises(ValueError, sources._bool, text)

    def test_agent_list_and_address(self):
        self.assertEqual(['a', 'b'], sources.agent_list(' a , b '))
        self.assertEqual([], sources.agent_list('  '))
        self.assertRaises(ValueError, sources.agent_list, 'a,,b')
        self.assertEqual('', sources.address_error('etcd-1:2379'))
        self.assertEqual('', sources.address_error('[::1]:2379'))
        self.assertIn('in brackets', sources.address_error('::1:2379'))
        self.assertIn('IPv6', sources.address_error('[nope]:2379'))
        self.assertIn('1..65535', sources.address_error('h:65536'))
        self.assertIn("expected 'host:port'", sources.address_error('h'))

    def test_parse_certificate_names(self):
        names = sources.parse_certificate_names(
            'X509v3 Subject Alternative Name: \n    DNS:foo, IP Address:10.0.0.1, DNS:bar\n'
            'subject=\n    O=x, y\n    CN=compute-1\n')
        self.assertEqual(sources.CertificateNames(('foo', 'bar'), ('IP Address:10.0.0.1',),
                                                  ('compute-1',)), names)
        self.assertEqual(sources.CertificateNames((), (), ('c',)),
                         sources.parse_certificate_names('subject=\n    CN=c\n'))

    def test_libvirt_and_agent_ids(self):
        tree = self.useFixture(HostTree())
        tree.write('/etc/passwd', PASSWD + '100:x:7:7::/:/bin/false\n')
        host = tree.host
        # libvirt: "+N" is N; a name first, else a number; the agent: "+N" or a name.
        self.assertEqual(64055, sources.libvirt_user_id(host, 'libvirt-qemu'))
        self.assertEqual(7, sources.libvirt_user_id(host, '100'))
        self.assertEqual(100, sources.libvirt_user_id(host, '+100'))
        self.assertEqual(4242, sources.libvirt_user_id(host, '4242'))
        self.assertIsNone(sources.libvirt_user_id(host, 'qemu'))
        self.assertEqual(4242, sources.agent_owner_id('+4242', host.user_id))
        self.assertIsNone(sources.agent_owner_id('4242', host.user_id))
        self.assertIsNone(sources.agent_owner_id('+4294967295', host.user_id))

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
        self.assertIn('Result: PASS (16 PASS, 0 WARN, 0 FAIL)', out)
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
        self.assertEqual({'PASS': 15, 'WARN': 0, 'FAIL': 1}, doc['summary'])
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
