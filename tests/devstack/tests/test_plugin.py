"""devstack/settings and devstack/plugin.sh, run phase by phase by tests/devstack/plugin-harness
with stand-ins for DevStack's functions (errexit and nounset on): which services are enabled,
which lib/nova-dt functions and DevStack functions each phase calls, and what it leaves."""
import os
import shutil
import subprocess

from tests import base

ALL_IN_ONE = 'n-api,n-cpu,n-sch,n-cond,n-super-cond,rabbit,placement-api,mysql'
STACK = ['stack:pre-install', 'stack:install', 'stack:post-config', 'stack:extra',
         'stack:test-config']
SOURCES = [os.path.join(base.REPO, 'devstack', p) for p in ('plugin.sh', 'settings', 'lib/nova-dt')] + [
    os.path.join(base.HERE, p) for p in ('ini-functions', 'plugin-harness', 'lib-scenario')]


def run_harness(workdir, mode, phases, env_extra=None, check=True):
    os.makedirs(workdir, exist_ok=True)
    env = base.clean_env(NOVA_DT_PYTHON='/usr/bin/python3')
    env.update(env_extra or {})
    p = subprocess.run([base.HARNESS, workdir, mode] + phases, env=env, capture_output=True,
                       text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError('plugin-harness %s %s failed (%d):\n%s\n%s'
                             % (mode, phases, p.returncode, p.stdout, p.stderr))
    return p


def by_phase(calls):
    """{phase: [argv...]} from calls.log."""
    out, cur = {}, None
    for argv in calls:
        if argv[0] == 'phase':
            cur = argv[1]
            out.setdefault(cur, [])
        else:
            out[cur].append(argv)
    return out


def names(argvs):
    return [a[0] for a in argvs]


class TestSyntax(base.TempDirTestCase):
    def test_bash_n(self):
        for f in SOURCES:
            with self.subTest(f):
                subprocess.run(['bash', '-n', f], check=True)

    def test_shellcheck(self):
        sc = shutil.which('shellcheck')
        self.assertIsNotNone(sc, 'shellcheck is not installed (scripts/install-deps installs it)')
        p = subprocess.run([sc, '-s', 'bash', '-x'] + [os.path.relpath(f, base.REPO) for f in SOURCES],
                           cwd=base.REPO, capture_output=True, text=True)
        self.assertEqual(0, p.returncode, p.stdout + p.stderr)

    def test_lib_sourcing_has_no_side_effects(self):
        # Sourcing lib/nova-dt defines functions and its constants only: no other variable, no
        # shell option, no output (DevStack sources it into stack.sh's shell).
        p = base.bash('before=$(compgen -v | sort)\n'
                      'opts=$(set +o)\n'
                      'out=$(source %s; compgen -v | sort >/tmp/.nova-dt-vars.$$; '
                      '[[ "$opts" == "$(set +o)" ]] || echo OPTIONS CHANGED)\n'
                      'echo "out:$out"\n'
                      'comm -13 <(echo "$before") /tmp/.nova-dt-vars.$$; rm -f /tmp/.nova-dt-vars.$$'
                      % base.LIB)
        lines = p.stdout.splitlines()
        self.assertEqual('out:', lines[0])
        self.assertEqual({'_NOVA_DT_LIB_LOADED', '_NOVA_DT_LIB_DIR', '_NOVA_DT_ZED_FILTERS',
                          '_NOVA_DT_HOST_RE', 'NOVA_DT_FILTER_CLASS', 'NOVA_DT_WEIGHER_CLASS'},
                         {v for v in lines[1:] if v not in ('out', 'opts', 'before', '_')
                          and not v.startswith(('BASH', 'PIPESTATUS', 'COLUMNS', 'LINES'))})


class TestSettings(base.TempDirTestCase):
    def settings(self, **env):
        run_harness(self.tmp, 'shim', [], env)
        v = base.harness_vars(self.tmp)
        shutil.rmtree(self.tmp)
        os.makedirs(self.tmp)
        return v

    def test_all_in_one(self):
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE)
        services = v['ENABLED_SERVICES'].split(',')
        for s in ('n-dt-agent', 'n-dt-ctl', 'etcd3'):
            self.assertIn(s, services)
        self.assertEqual('http://10.0.0.1:2379', v['NOVA_DT_ETCD_ENDPOINTS'])
        self.assertEqual('10.0.0.11:7070', v['NOVA_DT_PEER_ADDRESS'])
        self.assertEqual('debug', v['NOVA_DT_LOG_LEVEL'])
        self.assertEqual(base.REPO, v['NOVA_DT_DIR'])
        self.assertTrue(v['NOVA_DT_STATE_DIR'].endswith('/opt/stack/data/nova-dt/agent'))
        self.assertTrue(v['NOVA_DT_CONTROLLER_CONF'].endswith('/etc/nova/nova-dt.conf'))
        # Not known before post-config (RabbitMQ's password).
        self.assertEqual('<unset>', v['NOVA_DT_TRANSPORT_URL'])

    def test_compute_subnode(self):
        v = self.settings(ENABLED_SERVICES='n-cpu,placement-client,q-agt')
        services = v['ENABLED_SERVICES'].split(',')
        self.assertIn('n-dt-agent', services)
        self.assertNotIn('n-dt-ctl', services)
        self.assertNotIn('etcd3', services)
        # The witness runs on the controller node, SERVICE_HOST.
        self.assertEqual('http://10.0.0.1:2379', v['NOVA_DT_ETCD_ENDPOINTS'])

    def test_controller_only(self):
        v = self.settings(ENABLED_SERVICES='n-api,n-sch,n-cond,rabbit')
        services = v['ENABLED_SERVICES'].split(',')
        self.assertNotIn('n-dt-agent', services)
        self.assertIn('n-dt-ctl', services)

    def test_other_virt_driver_gets_no_agent(self):
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE, VIRT_DRIVER='fake')
        self.assertNotIn('n-dt-agent', v['ENABLED_SERVICES'].split(','))

    def test_operator_choices_win(self):
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE, DISABLED_SERVICES='n-dt-ctl,etcd3')
        services = v['ENABLED_SERVICES'].split(',')
        self.assertNotIn('n-dt-ctl', services)
        self.assertNotIn('etcd3', services)
        self.assertEqual('<unset>', v['NOVA_DT_ETCD_ENDPOINTS'])   # no witness to point at
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE, NOVA_DT_WITNESS='none')
        self.assertEqual('<unset>', v['NOVA_DT_ETCD_ENDPOINTS'])
        self.assertNotIn('etcd3', v['ENABLED_SERVICES'].split(','))
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE, HARNESS_NO_ETCD3='1')
        self.assertEqual('<unset>', v['NOVA_DT_ETCD_ENDPOINTS'])
        v = self.settings(ENABLED_SERVICES=ALL_IN_ONE,
                          NOVA_DT_ETCD_ENDPOINTS='https://etcd-1:2379', ENABLE_DEBUG_LOG_LEVEL='False')
        self.assertEqual('https://etcd-1:2379', v['NOVA_DT_ETCD_ENDPOINTS'])
        self.assertEqual('info', v['NOVA_DT_LOG_LEVEL'])


class TestPhases(base.TempDirTestCase):
    def stack(self, services, phases=STACK, **env):
        env['ENABLED_SERVICES'] = services
        self.last = run_harness(self.tmp, 'shim', phases, env)
        return by_phase(base.calls(self.tmp))

    def test_all_in_one(self):
        ph = self.stack(ALL_IN_ONE, NOVA_DT_PEERS='compute-1,compute-2=10.0.0.12:7070')
        w = self.tmp
        self.assertEqual(['lib:nova_dt_build_packages', 'install_package'], names(ph['stack:pre-install']))
        self.assertIn('cmake', ph['stack:pre-install'][1])
        install = ph['stack:install']
        self.assertEqual([
            ['lib:nova_dt_build_agent', base.REPO + '/build'],
            ['lib:nova_dt_install_agent', base.REPO + '/build', w + '/usr/local/bin'],
            ['lib:nova_dt_disable_vhost_net', w + '/etc/modprobe.d'],
            ['lib:nova_dt_install_libvirt_hook', w + '/etc/libvirt'],
            ['restart_service', 'libvirtd'],
            ['lib:nova_dt_install_python_package'],
        ], [a for a in install if a[0] != 'sudo'])
        post = ph['stack:post-config']
        conf = w + '/etc/nova/nova.conf'
        lib_calls = [a for a in post if a[0].startswith('lib:') and a[0] != 'lib:nova_dt_peer_list']
        self.assertEqual([
            ['lib:nova_dt_configure_nova_notifications', conf],
            ['lib:nova_dt_configure_nova_notifications', w + '/etc/nova/nova_cell1.conf',
             'rabbit://stackrabbit:secret@10.0.0.1:5672/'],
            ['lib:nova_dt_configure_nova_scheduler', conf,
             w + '/opt/stack/data/nova-dt/controller/link-stats.json'],
            ['lib:nova_dt_configure_nova_compute', conf, '8192'],
            ['lib:nova_dt_configure_nova_notifications', conf],   # from configure_nova_compute
            ['lib:nova_dt_make_certs', w + '/etc/nova-dt/tls', 'compute-1'],
            ['lib:nova_dt_write_agent_conf', w + '/etc/nova-dt/nova-dt-agent.conf'],
            ['lib:nova_dt_write_controller_conf', w + '/etc/nova/nova-dt.conf'],
        ], lib_calls)
        self.assertIn(['rpc_backend_add_vhost', 'nova_dt'], post)
        self.assertIn(['sudo', 'install', '-d', '-o', 'root', '-g', 'root', '-m', '0755',
                       w + '/opt/stack/data/nova-dt/agent'], post)
        extra = ph['stack:extra']
        self.assertEqual(['run_process', 'n-dt-agent',
                          w + '/usr/local/bin/nova-dt-agent --config-file '
                          + w + '/etc/nova-dt/nova-dt-agent.conf', '', 'root'], extra[0])
        self.assertEqual(['sudo', w + '/usr/local/bin/nova-dt-status', '--config-file',
                          w + '/etc/nova-dt/nova-dt-agent.conf', '--health'], extra[1])
        self.assertEqual(['run_process', 'n-dt-ctl',
                          '/usr/local/bin/nova-dt-controller --config-file %s --config-file %s'
                          % (conf, w + '/etc/nova/nova-dt.conf')], extra[-1])
        self.assertEqual([], ph['stack:test-config'])   # nothing asked for

        # What post-config left, read as Nova and the agent read it.
        c = base.nova_conf(conf)
        self.assertEqual('versioned', c.notifications.notification_format)
        self.assertEqual('DTPairFilter', c.filter_scheduler.enabled_filters[-1])
        self.assertEqual(8192, c.libvirt.file_backed_memory)
        cell = base.nova_conf(w + '/etc/nova/nova_cell1.conf')
        self.assertEqual(['messagingv2'], cell.oslo_messaging_notifications.driver)
        agent = base.read_ini(w + '/etc/nova-dt/nova-dt-agent.conf')
        self.assertEqual('compute-1', agent['DEFAULT']['host'])
        self.assertEqual('rabbit://stackrabbit:secret@10.0.0.1:5672/nova_dt',
                         agent['DEFAULT']['transport_url'])
        self.assertEqual('rabbit://stackrabbit:secret@10.0.0.1:5672/',
                         agent['oslo_messaging_notifications']['transport_url'])
        self.assertEqual('compute-2=10.0.0.12:7070', agent['peer']['peers'])
        self.assertEqual('10.0.0.11:7070', agent['peer']['listen_address'])
        self.assertEqual(w + '/etc/nova-dt/tls/compute-1.pem', agent['peer']['tls_cert_file'])
        self.assertEqual('http://10.0.0.1:2379', agent['witness']['etcd_endpoints'])
        self.assertEqual(w + '/opt/stack/data/nova/instances', agent['libvirt']['instances_path'])
        self.assertEqual('debug', agent['DEFAULT']['log_level'])
        self.assertTrue(os.path.exists(w + '/etc/nova-dt/tls/compute-1.key'))
        ctl = base.nova_conf(conf, w + '/etc/nova/nova-dt.conf')
        self.assertEqual(w + '/opt/stack/data/nova-dt/controller', ctl.nova_dt.state_dir)
        self.assertEqual('rabbit://stackrabbit:secret@10.0.0.1:5672/nova_dt',
                         ctl.nova_dt.agent_transport_url)
        self.assertEqual(c.nova_dt.link_stats_file, ctl.nova_dt.link_stats_file)
        hook = os.stat(w + '/etc/libvirt/hooks/qemu')
        self.assertEqual(0o755, hook.st_mode & 0o777)
        self.assertTrue(os.path.exists(w + '/etc/modprobe.d/nova-dt-vhost-net.conf'))

    def test_compute_subnode(self):
        ph = self.stack('n-cpu,placement-client', LIBVIRT_TYPE='qemu', NOVA_DT_RAM_TMPFS_MB='2048')
        install = names(ph['stack:install'])
        self.assertNotIn('lib:nova_dt_disable_vhost_net', install)   # qemu: Nova picks userspace
        self.assertIn('lib:nova_dt_install_libvirt_hook', install)
        self.assertIn(['sudo', 'mount', '-t', 'tmpfs', '-o', 'size=2048m,mode=0711', 'tmpfs',
                       self.tmp + '/var/lib/libvirt/qemu/ram'], ph['stack:install'])
        self.assertIn('lib:nova_dt_install_python_package', install)   # nova-dt-host-check
        post = names(ph['stack:post-config'])
        self.assertNotIn('rpc_backend_add_vhost', post)      # rabbit runs elsewhere
        self.assertNotIn('lib:nova_dt_configure_nova_scheduler', post)
        self.assertNotIn('lib:nova_dt_write_controller_conf', post)
        self.assertIn('lib:nova_dt_configure_nova_compute', post)
        self.assertIn('lib:nova_dt_write_agent_conf', post)
        self.assertEqual(['run_process', 'sudo'], names(ph['stack:extra']))
        self.assertEqual([], ph['stack:test-config'])

    def test_controller_node(self):
        ph = self.stack('n-api,n-sch,n-cond,rabbit', NOVA_DT_AZ_HOSTS='az1=compute-1,compute-3 az2=compute-2',
                        NOVA_DT_FLAVOR='dt.small', NOVA_DT_FLAVOR_EPOCH_MS='50',
                        NOVA_DT_FLAVOR_PEER_AZ='az2', NOVA_DT_FLAVOR_RAM='1024',
                        HARNESS_COMPUTE_HOSTS='compute-1 compute-2')
        self.assertEqual([], ph['stack:pre-install'])
        self.assertEqual(['lib:nova_dt_install_python_package'], names(ph['stack:install']))
        post = names(ph['stack:post-config'])
        self.assertNotIn('lib:nova_dt_write_agent_conf', post)
        self.assertNotIn('lib:nova_dt_configure_nova_compute', post)
        self.assertIn('lib:nova_dt_configure_nova_scheduler', post)
        self.assertIn('lib:nova_dt_write_controller_conf', post)
        self.assertEqual(['lib:nova_dt_python_scripts_dir', 'run_process'], names(ph['stack:extra']))
        openstack = [a[1:] for a in ph['stack:test-config'] if a[0] == 'openstack']
        self.assertEqual([
            ['aggregate', 'show', 'dt-az1'],
            ['aggregate', 'create', '--zone', 'az1', '--property', 'nova_dt:capable=true', 'dt-az1'],
            ['aggregate', 'show', '-f', 'json', '-c', 'hosts', 'dt-az1'],
            ['compute', 'service', 'list', '--service', 'nova-compute', '--host', 'compute-1',
             '-f', 'value', '-c', 'Host'],
            ['aggregate', 'add', 'host', 'dt-az1', 'compute-1'],
            ['aggregate', 'show', 'dt-az1'],
            ['aggregate', 'create', '--zone', 'az1', '--property', 'nova_dt:capable=true', 'dt-az1'],
            ['aggregate', 'show', '-f', 'json', '-c', 'hosts', 'dt-az1'],
            # compute-3 not registered: skipped with a warning
            ['compute', 'service', 'list', '--service', 'nova-compute', '--host', 'compute-3',
             '-f', 'value', '-c', 'Host'],
            ['aggregate', 'show', 'dt-az2'],
            ['aggregate', 'create', '--zone', 'az2', '--property', 'nova_dt:capable=true', 'dt-az2'],
            ['aggregate', 'show', '-f', 'json', '-c', 'hosts', 'dt-az2'],
            ['compute', 'service', 'list', '--service', 'nova-compute', '--host', 'compute-2',
             '-f', 'value', '-c', 'Host'],
            ['aggregate', 'add', 'host', 'dt-az2', 'compute-2'],
            ['flavor', 'show', 'dt.small'],
            ['--os-compute-api-version', '2.86', 'flavor', 'create', '--vcpus', '1', '--ram', '1024',
             '--disk', '1', '--property', 'dt:enabled=true', '--property', 'dt:epoch_ms=50',
             '--property', 'dt:peer_az=az2', 'dt.small'],
        ], openstack)
        self.assertIn('compute host compute-3 is not registered (yet); later: openstack aggregate '
                      'add host dt-az1 compute-3', self.last.stderr)

    def test_no_peer_tls(self):
        ph = self.stack('n-cpu', phases=['stack:post-config'], NOVA_DT_PEER_TLS='False')
        self.assertNotIn('lib:nova_dt_make_certs', names(ph['stack:post-config']))
        agent = base.read_ini(self.tmp + '/etc/nova-dt/nova-dt-agent.conf')
        self.assertEqual('true', agent['peer']['allow_insecure'])
        self.assertFalse(os.path.exists(self.tmp + '/etc/nova-dt/tls'))

    def test_bad_az_hosts_stops_the_stack(self):
        p = run_harness(self.tmp, 'shim', ['stack:test-config'],
                        {'ENABLED_SERVICES': 'n-api', 'NOVA_DT_AZ_HOSTS': 'az1'}, check=False)
        self.assertNotEqual(0, p.returncode)
        self.assertIn('bad AZ=HOST', p.stderr)

    def test_unstack_then_clean(self):
        self.stack(ALL_IN_ONE, phases=['stack:post-config'])
        w = self.tmp
        os.makedirs(w + '/var/lib/libvirt/qemu/ram/nova-dt/some-replica')
        os.makedirs(w + '/run/nova-dt')
        os.remove(w + '/calls.log')
        run_harness(w, 'shim', ['unstack'], {'ENABLED_SERVICES': ALL_IN_ONE})
        self.assertEqual([['stop_process', 'n-dt-ctl'], ['stop_process', 'n-dt-agent']],
                         by_phase(base.calls(w))['unstack'])
        self.assertTrue(os.path.exists(w + '/opt/stack/data/nova-dt/agent'))   # state kept
        run_harness(w, 'shim', ['clean'], {'ENABLED_SERVICES': ALL_IN_ONE})
        for gone in ('/opt/stack/data/nova-dt/agent', '/opt/stack/data/nova-dt/controller',
                     '/var/lib/libvirt/qemu/ram/nova-dt', '/run/nova-dt',
                     '/etc/nova-dt/nova-dt-agent.conf', '/etc/nova/nova-dt.conf'):
            self.assertFalse(os.path.exists(w + gone), gone)
        for kept in ('/etc/nova-dt/tls/ca.pem', '/etc/nova/nova.conf'):
            self.assertTrue(os.path.exists(w + kept), kept)
