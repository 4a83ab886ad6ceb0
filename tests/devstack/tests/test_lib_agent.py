"""lib/nova-dt's compute-host functions: the agent's and the controller's configuration, the
peer certificates, the libvirt hook, vhost_net — checked with the real readers: the agent
itself (it starts on the file and reports what it read), nova-dt-status's loader, openssl,
oslo.config with nova_dt's options, and nova-dt-host-check on a host tree built by the
functions."""
import json
import os
import shutil
import signal
import subprocess
import time

from tests import base

AGENT = os.path.join(base.BUILD, 'agent', 'daemon', 'nova-dt-agent')
STATUS = os.path.join(base.BUILD, 'agent', 'tools', 'nova-dt-status')


def need_binaries(test):
    for b in (AGENT, STATUS):
        if not os.access(b, os.X_OK):
            test.fail('%s not built: build the agent first (scripts/build, or NOVA_DT_BUILD=<dir>)'
                      % b)


class TestAgentConf(base.TempDirTestCase):
    def write_conf(self, env, name='agent.conf', check=True):
        conf = self.path(name)
        p = base.lib('nova_dt_write_agent_conf %s' % conf, env=base.clean_env(**env),
                     check=check)
        return conf, p

    def test_debian_defaults(self):
        conf, _ = self.write_conf({'NOVA_DT_HOST': 'compute-1'})
        ini = base.read_ini(conf)
        self.assertEqual({
            'DEFAULT': {'host': 'compute-1', 'state_path': '/var/lib/nova-dt',
                        'control_address': 'unix:/run/nova-dt/agent.sock', 'log_level': 'info'},
            'oslo_messaging_notifications': {'driver': 'messagingv2'},
            'libvirt': {'connection_uri': 'qemu:///system',
                        'instances_path': '/var/lib/nova/instances',
                        'qemu_user': 'libvirt-qemu', 'qemu_group': 'libvirt-qemu'},
            'peer': {'listen_address': '0.0.0.0:7070',
                     'tls_ca_file': '/etc/nova-dt/tls/ca.pem',
                     'tls_cert_file': '/etc/nova-dt/tls/compute-1.pem',
                     'tls_key_file': '/etc/nova-dt/tls/compute-1.key'},
            'witness': {'key_prefix': '/nova-dt'},
            'replication': {'replica_path': '/var/lib/libvirt/qemu/ram/nova-dt'},
        }, {s: dict(ini[s]) for s in ini.sections()})
        self.assertEqual(0o600, os.stat(conf).st_mode & 0o777)

    def test_host_defaults_to_the_hostname(self):
        conf, _ = self.write_conf({})
        host = subprocess.run(['hostname'], capture_output=True, text=True).stdout.strip()
        self.assertEqual(host, base.read_ini(conf)['DEFAULT']['host'])

    def test_every_option_is_documented_in_the_sample(self):
        env = {
            'NOVA_DT_HOST': 'compute-1', 'NOVA_DT_TRANSPORT_URL': 'rabbit://a:b@h:5672/nova_dt',
            'NOVA_DT_NOTIFICATION_TRANSPORT_URL': 'rabbit://a:b@h:5672/',
            'NOVA_DT_RESTORE_FILE_DIRS': '/srv/a,/srv/b', 'NOVA_DT_PEERS': 'compute-2',
            'NOVA_DT_ETCD_ENDPOINTS': 'https://e:2379', 'NOVA_DT_ETCD_CA_FILE': '/x/ca.pem',
            'NOVA_DT_ETCD_CERT_FILE': '/x/c.pem', 'NOVA_DT_ETCD_KEY_FILE': '/x/c.key',
            'NOVA_DT_EPOCH_MS': '50', 'NOVA_DT_DEFAULT_BACKUP_HOST': 'compute-2',
            'NOVA_DT_REPROTECT_HOSTS': 'compute-2', 'NOVA_DT_LOG_LEVEL': 'debug'}
        conf, _ = self.write_conf(env)
        lab, _ = self.write_conf({'NOVA_DT_HOST': 'h', 'NOVA_DT_PEER_TLS': 'False',
                                  'NOVA_DT_WITNESS_ALLOW_NONE': 'True'}, name='lab.conf')
        documented = base.sample_options()
        for path in (conf, lab):
            ini = base.read_ini(path)
            for section in ini.sections():
                self.assertIn(section, documented)
                for key in ini[section]:
                    self.assertIn(key, documented[section], '[%s] %s' % (section, key))
        ini = base.read_ini(conf)
        self.assertEqual('50', ini['replication']['epoch_ms'])
        self.assertEqual('/x/c.key', ini['witness']['tls_key_file'])
        lab_ini = base.read_ini(lab)
        self.assertEqual('true', lab_ini['peer']['allow_insecure'])
        self.assertNotIn('tls_cert_file', lab_ini['peer'])
        self.assertEqual('true', lab_ini['witness']['allow_none'])

    def test_peers(self):
        cases = [
            ('compute-2=10.0.0.2:7070, compute-3=[fd00::3]:7070',
             'compute-2=10.0.0.2:7070,compute-3=[fd00::3]:7070'),
            ('compute-1 compute-2 compute-3', 'compute-2=compute-2:7070,compute-3=compute-3:7070'),
            ('compute-1', None),
        ]
        for value, expected in cases:
            with self.subTest(value):
                conf, _ = self.write_conf({'NOVA_DT_HOST': 'compute-1', 'NOVA_DT_PEERS': value})
                self.assertEqual(expected, base.read_ini(conf)['peer'].get('peers'))
        for value, reason in [('-bad=1.2.3.4:7070', 'bad host name'),
                              ('compute-2=', 'bad address'),
                              ('a=1.1.1.1:1 a=1.1.1.2:1', "host 'a' appears twice"),
                              ('a=1.1.1.1:1 b=1.1.1.1:1', 'appears twice')]:
            with self.subTest(value):
                self.write('agent.conf', 'old\n')
                _, p = self.write_conf({'NOVA_DT_HOST': 'compute-1', 'NOVA_DT_PEERS': value},
                                       check=False)
                self.assertEqual(1, p.returncode)
                self.assertIn(reason, p.stderr)
                self.assertEqual('old\n', self.read('agent.conf'))

    def test_refusals_write_nothing(self):
        for env, reason in [
                ({'NOVA_DT_HOST': 'bad host'}, 'bad host name'),
                ({'NOVA_DT_PEER_TLS': 'maybe'}, 'True or False'),
                ({'NOVA_DT_WITNESS_ALLOW_NONE': 'True', 'NOVA_DT_ETCD_ENDPOINTS': 'http://e:1'},
                 'only without NOVA_DT_ETCD_ENDPOINTS'),
                ({'NOVA_DT_ETCD_ENDPOINTS': 'http://e:1', 'NOVA_DT_ETCD_CA_FILE': '/ca'},
                 'https:// etcd endpoints only'),
                ({'NOVA_DT_ETCD_ENDPOINTS': 'https://e:1', 'NOVA_DT_ETCD_CERT_FILE': '/c'},
                 'go together'),
                ({'NOVA_DT_TRANSPORT_URL': 'rabbit://a\nb'}, 'line break')]:
            with self.subTest(env):
                self.write('agent.conf', 'old\n')
                _, p = self.write_conf(dict({'NOVA_DT_HOST': 'h'}, **env), check=False)
                self.assertEqual(1, p.returncode, p.stderr)
                self.assertIn(reason, p.stderr)
                self.assertEqual('old\n', self.read('agent.conf'))
                self.assertEqual(['agent.conf'], os.listdir(self.tmp))

    def test_dollar_is_doubled(self):
        conf, _ = self.write_conf({'NOVA_DT_HOST': 'h',
                                   'NOVA_DT_TRANSPORT_URL': 'rabbit://u:pa$w@h:5672/'})
        self.assertEqual('rabbit://u:pa$$w@h:5672/', base.read_ini(conf)['DEFAULT']['transport_url'])


class TestAgentReadsIt(base.TempDirTestCase):
    """The real agent and its loader on files nova_dt_write_agent_conf wrote."""

    def loopback_env(self, **extra):
        env = {
            'NOVA_DT_HOST': 'compute-1', 'NOVA_DT_TLS_DIR': self.path('tls'),
            'NOVA_DT_STATE_DIR': self.path('state'),
            'NOVA_DT_CONTROL_SOCKET': self.path('run', 'agent.sock'),
            'NOVA_DT_PEER_ADDRESS': '127.0.0.1:0', 'NOVA_DT_LIBVIRT_URI': 'test:///default',
            'NOVA_DT_REPLICA_PATH': self.path('state', 'replicas'),
            'NOVA_DT_PEERS': 'compute-2=127.0.0.1:9',
            # Nothing listens there: the agent keeps retrying, which is what a host whose
            # broker or etcd is not up yet does.
            'NOVA_DT_TRANSPORT_URL': 'rabbit://agent:pw@127.0.0.1:1/nova_dt',
            'NOVA_DT_NOTIFICATION_TRANSPORT_URL': 'rabbit://agent:pw@127.0.0.1:1/',
            'NOVA_DT_ETCD_ENDPOINTS': 'http://127.0.0.1:1',
        }
        env.update(extra)
        return base.clean_env(**env)

    def test_agent_runs_on_it(self):
        need_binaries(self)
        env = self.loopback_env()
        conf = self.path('agent.conf')
        base.lib('nova_dt_make_certs "$NOVA_DT_TLS_DIR" compute-1 compute-2\n'
                 'nova_dt_write_agent_conf %s' % conf, env=env)
        log = open(self.path('agent.log'), 'wb')
        proc = subprocess.Popen([AGENT, '--config-file', conf], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            status = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                p = subprocess.run([STATUS, '--config-file', conf, '--json', '--timeout', '2'],
                                   capture_output=True, text=True)
                if p.returncode == 0:
                    status = json.loads(p.stdout)
                    break
                self.assertIsNone(proc.poll(), self.read('agent.log'))
                time.sleep(0.2)
            self.assertIsNotNone(status, self.read('agent.log'))
            self.assertEqual('compute-1', status['host'])
            self.assertEqual('test:///default', status['hypervisor']['connection_uri'])
            self.assertEqual([('compute-2', '127.0.0.1:9', True)],
                             [(x['host'], x['address'], x['configured']) for x in status['peers']])
            self.assertEqual([], status.get('security_warnings', []))
            self.assertTrue(status['bus']['rpc']['enabled'])
            self.assertTrue(status['bus']['nova_notifications']['enabled'])
            self.assertTrue(status['bus']['notifier']['enabled'])
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=15)
            log.close()
        text = self.read('agent.log')
        self.assertEqual(0, rc, text)
        self.assertIn('(mutual TLS)', text)
        self.assertIn('witness: etcd at http://127.0.0.1:1', text)
        self.assertNotIn('unknown option', text)

    def test_loader_accepts_every_variant(self):
        # nova-dt-status reads the file with the agent's own loader (agent/config): exit 2 is a
        # refused configuration; 1 only means no agent answers.
        need_binaries(self)
        base.lib('nova_dt_make_certs %s compute-1' % self.path('tls'),
                 env=base.clean_env(NOVA_DT_HOST='compute-1'))
        tls = self.path('tls')
        variants = {
            'tls+https-witness': dict(
                NOVA_DT_ETCD_ENDPOINTS='https://127.0.0.1:1,https://127.0.0.2:1',
                NOVA_DT_ETCD_CA_FILE=tls + '/ca.pem', NOVA_DT_ETCD_CERT_FILE=tls + '/compute-1.pem',
                NOVA_DT_ETCD_KEY_FILE=tls + '/compute-1.key', NOVA_DT_EPOCH_MS='50',
                NOVA_DT_RESTORE_FILE_DIRS='/srv/a,/srv/b', NOVA_DT_LOG_LEVEL='debug'),
            'lab': dict(NOVA_DT_PEER_TLS='False', NOVA_DT_ETCD_ENDPOINTS='',
                        NOVA_DT_WITNESS_ALLOW_NONE='True', NOVA_DT_PEERS='',
                        NOVA_DT_TRANSPORT_URL='', NOVA_DT_NOTIFICATION_TRANSPORT_URL=''),
            'no-controller': dict(NOVA_DT_DEFAULT_BACKUP_HOST='compute-2',
                                  NOVA_DT_REPROTECT_HOSTS='compute-2'),
            'ipv6-peers': dict(NOVA_DT_PEERS='compute-2=[fd00::2]:7070,compute-3=[fd00::3]:7070',
                               NOVA_DT_PEER_ADDRESS='[::1]:0'),
        }
        for name, extra in variants.items():
            with self.subTest(name):
                conf = self.path(name + '.conf')
                base.lib('nova_dt_write_agent_conf %s' % conf, env=self.loopback_env(**extra))
                p = subprocess.run([STATUS, '--config-file', conf, '--timeout', '1'],
                                   capture_output=True, text=True)
                self.assertEqual(1, p.returncode, p.stderr)

    def test_agent_reports_the_lab_settings(self):
        need_binaries(self)
        env = self.loopback_env(NOVA_DT_PEER_TLS='False', NOVA_DT_ETCD_ENDPOINTS='',
                                NOVA_DT_WITNESS_ALLOW_NONE='True')
        conf = self.path('agent.conf')
        base.lib('nova_dt_write_agent_conf %s' % conf, env=env)
        with open(self.path('agent.log'), 'wb') as log:
            proc = subprocess.Popen([AGENT, '--config-file', conf], stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                p = subprocess.run([STATUS, '--config-file', conf, '--json', '--timeout', '2'],
                                   capture_output=True, text=True)
                if p.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(0, p.returncode, self.read('agent.log'))
            warnings = ' '.join(json.loads(p.stdout).get('security_warnings', []))
            self.assertIn('allow_insecure', warnings)
            self.assertIn('allow_none', warnings)
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(0, proc.wait(timeout=15))


class TestControllerConf(base.TempDirTestCase):
    def test_read_with_nova_conf(self):
        nova = self.write('nova.conf', '[DEFAULT]\ntransport_url = rabbit://n:p@h:5672/\n')
        conf = self.path('nova-dt.conf')
        base.lib('nova_dt_write_controller_conf %s' % conf, env=base.clean_env(
            NOVA_DT_CONTROLLER_STATE_DIR='/opt/stack/data/nova-dt/controller',
            NOVA_DT_TRANSPORT_URL='rabbit://c:p$x@h:5672/nova_dt',
            NOVA_DT_NOTIFICATION_TRANSPORT_URL='rabbit://c:px@h:5672/',
            NOVA_DT_LINK_STATS_FILE='/opt/stack/data/nova-dt/controller/link-stats.json'))
        c = base.nova_conf(nova, conf)
        self.assertEqual('/opt/stack/data/nova-dt/controller', c.nova_dt.state_dir)
        self.assertEqual('rabbit://c:p$x@h:5672/nova_dt', c.nova_dt.agent_transport_url)
        self.assertEqual('rabbit://c:px@h:5672/', c.nova_dt.agent_notification_transport_url)
        self.assertEqual('/opt/stack/data/nova-dt/controller/link-stats.json',
                         c.nova_dt.link_stats_file)
        self.assertEqual('rabbit://n:p@h:5672/', c.transport_url)
        self.assertEqual(0o600, os.stat(conf).st_mode & 0o777)

    def test_defaults(self):
        conf = self.path('nova-dt.conf')
        base.lib('nova_dt_write_controller_conf %s' % conf)
        c = base.nova_conf(conf)
        self.assertEqual('/var/lib/nova-dt', c.nova_dt.state_dir)
        self.assertIsNone(c.nova_dt.agent_transport_url)
        self.assertIsNone(c.nova_dt.agent_notification_transport_url)
        self.assertIsNone(c.nova_dt.link_stats_file)


class TestHostPieces(base.TempDirTestCase):
    def openssl(self, *args):
        return subprocess.run(['openssl'] + list(args), capture_output=True, text=True,
                              check=True).stdout

    def test_make_certs(self):
        d = self.path('tls')
        base.lib('nova_dt_make_certs %s compute-1' % d)
        ca_before = self.read('tls', 'ca.pem')
        base.lib('nova_dt_make_certs %s compute-1 compute-2' % d)
        self.assertEqual(ca_before, self.read('tls', 'ca.pem'))   # the CA is kept
        for host in ('compute-1', 'compute-2'):
            pem = os.path.join(d, host + '.pem')
            self.assertIn('OK', self.openssl('verify', '-CAfile', os.path.join(d, 'ca.pem'), pem))
            self.assertIn('DNS:' + host, self.openssl('x509', '-in', pem, '-noout', '-ext',
                                                      'subjectAltName'))
            self.assertEqual(0o600, os.stat(os.path.join(d, host + '.key')).st_mode & 0o777)
        p = base.lib('nova_dt_make_certs %s' % d, check=False)
        self.assertEqual(1, p.returncode)

    def test_libvirt_hook(self):
        etc = self.path('etc', 'libvirt')
        base.lib('nova_dt_install_libvirt_hook %s' % etc)
        hook = os.path.join(etc, 'hooks', 'qemu')
        st = os.stat(hook)
        self.assertEqual((0o755, 0, 0), (st.st_mode & 0o7777, st.st_uid, st.st_gid))
        with open(os.path.join(base.REPO, 'deploy', 'libvirt-hooks', 'qemu')) as f:
            self.assertEqual(f.read(), self.read('etc', 'libvirt', 'hooks', 'qemu'))
        base.lib('nova_dt_install_libvirt_hook %s' % etc)   # ours: replaced
        with open(hook, 'w') as f:
            f.write('#!/bin/sh\n# someone else\n')
        p = base.lib('nova_dt_install_libvirt_hook %s' % etc, check=False)
        self.assertEqual(1, p.returncode)
        self.assertIn("not nova-dt's hook", p.stderr)
        self.assertEqual('#!/bin/sh\n# someone else\n', self.read('etc', 'libvirt', 'hooks', 'qemu'))

    def test_vhost_net(self):
        d = self.path('modprobe.d')
        base.lib('nova_dt_disable_vhost_net %s' % d)
        text = self.read('modprobe.d', 'nova-dt-vhost-net.conf')
        self.assertIn('\ninstall vhost_net /bin/false\n', text)
        self.assertEqual(0o644, os.stat(os.path.join(d, 'nova-dt-vhost-net.conf')).st_mode & 0o777)

    def test_az_hosts(self):
        p = base.lib('nova_dt_parse_az_hosts "az1=c1,c2 az2=c3"; nova_dt_aggregate_name az1')
        self.assertEqual('az1 c1\naz1 c2\naz2 c3\ndt-az1\n', p.stdout)
        for bad in ('az1', 'az1=', '=c1', 'a:b=c1', 'az1=-x'):
            with self.subTest(bad):
                self.assertEqual(1, base.lib('nova_dt_parse_az_hosts %s' % bad, check=False).returncode)


class TestHostCheck(base.TempDirTestCase):
    """nova-dt-host-check (nova-integration) on a compute host's tree that lib/nova-dt's
    functions built: every check that reads what they write passes."""

    def build_host(self, env_extra):
        root = self.path('root')
        for d in ('etc/nova', 'etc/nova-dt', 'etc/libvirt', 'etc/modprobe.d', 'proc', 'dev',
                  'var/lib/libvirt/qemu/ram/nova-dt'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy('/etc/passwd', os.path.join(root, 'etc/passwd'))
        shutil.copy('/etc/group', os.path.join(root, 'etc/group'))
        open(os.path.join(root, 'proc/modules'), 'w').close()
        # Debian's nova.conf sets state_path; DevStack's transport_url.
        self.write('root/etc/nova/nova.conf',
                   '[DEFAULT]\nstate_path = /var/lib/nova\n'
                   'transport_url = rabbit://stackrabbit:secret@10.0.0.1:5672/\n'
                   '[libvirt]\nvirt_type = kvm\n')
        env = dict(NOVA_DT_HOST='compute-1',
                   NOVA_DT_TRANSPORT_URL='rabbit://agent:pw@10.0.0.1:5672/nova_dt',
                   NOVA_DT_NOTIFICATION_TRANSPORT_URL='rabbit://agent:pw@10.0.0.1:5672/')
        env.update(env_extra)
        base.lib('R=%s\n'
                 'nova_dt_configure_nova_compute $R/etc/nova/nova.conf 1024\n'
                 'nova_dt_make_certs $R/etc/nova-dt/tls compute-1\n'
                 'nova_dt_write_agent_conf $R/etc/nova-dt/nova-dt-agent.conf\n'
                 'nova_dt_install_libvirt_hook $R/etc/libvirt\n'
                 'nova_dt_disable_vhost_net $R/etc/modprobe.d\n' % root, env=base.clean_env(**env))
        return root

    def host_check(self, root):
        p = subprocess.run(
            ['/usr/bin/python3', '-m', 'nova_dt.cmd.host_check', '--root', root,
             '--config-file', '/etc/nova/nova.conf', '--format', 'json'],
            cwd=base.NOVA_INTEGRATION, env=base.clean_env(PYTHONPATH=base.NOVA_INTEGRATION),
            capture_output=True, text=True, timeout=120)
        report = json.loads(p.stdout)
        return p.returncode, {c['name']: c for c in report['checks']}

    def test_passes(self):
        root = self.build_host({'NOVA_DT_ETCD_ENDPOINTS': 'https://10.0.0.1:2379',
                                'NOVA_DT_ETCD_CA_FILE': '/etc/nova-dt/tls/ca.pem',
                                'NOVA_DT_ETCD_CERT_FILE': '/etc/nova-dt/tls/compute-1.pem',
                                'NOVA_DT_ETCD_KEY_FILE': '/etc/nova-dt/tls/compute-1.key'})
        rc, checks = self.host_check(root)
        for name in ('file_backed_memory', 'ram_allocation_ratio', 'reserved_host_memory_mb',
                     'replica_path', 'libvirt_hook', 'qemu_user', 'instances_path', 'vhost_net',
                     'vif_rx_queue_size', 'notification_format', 'notification_driver',
                     'notification_topics', 'notification_transport', 'peer_tls', 'witness'):
            with self.subTest(name):
                self.assertEqual('PASS', checks[name]['status'], checks[name])
        self.assertEqual(0, rc)

    def test_devstack_witness_is_a_warning(self):
        # DevStack's etcd3 speaks plain http: the checker warns, as it should.
        root = self.build_host({'NOVA_DT_ETCD_ENDPOINTS': 'http://10.0.0.1:2379'})
        rc, checks = self.host_check(root)
        self.assertEqual('WARN', checks['witness']['status'])
        self.assertEqual('PASS', checks['peer_tls']['status'])
        self.assertEqual(0, rc)
