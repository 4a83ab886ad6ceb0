"""lib/nova-dt, settings and plugin.sh against DevStack's real function library.

Needs NOVA_DT_DEVSTACK_DIR=<a DevStack checkout> (e.g. openstack/devstack at zed-eom or
unmaintained/zed). Without it every test here is skipped with base.ONLY_SHIM: the rest of
tests/devstack then ran with the shim only (CI has no DevStack checkout: no internet).

With it: the same lib/nova-dt calls (tests/devstack/lib-scenario), the same iniset cases
(test_ini_shim.CASES) and the same plugin phases (tests/devstack/plugin-harness) run once with
the shim and once with DevStack's real functions, and must leave byte-identical files and make
identical calls; every DevStack function plugin.sh and settings use exists in that DevStack; the
phases plugin.sh dispatches are the ones DevStack's stack.sh, unstack.sh and clean.sh run.
"""
import filecmp
import os
import re
import shlex
import subprocess
import unittest

from tests import base
from tests import test_ini_shim
from tests import test_plugin

# DevStack functions devstack/plugin.sh and devstack/settings call, and where DevStack has them.
DEVSTACK_FUNCTIONS = {
    'define_plugin': 'functions-common', 'enable_service': 'functions-common',
    'is_service_enabled': 'functions-common', 'trueorfalse': 'functions-common',
    'install_package': 'functions-common', 'run_process': 'functions-common',
    'stop_process': 'functions-common', 'restart_service': 'functions-common',
    'warn': 'functions-common', 'die': 'functions-common', 'echo_summary': 'functions',
    'iniset': 'inc/ini-config', 'iniset_multiline': 'inc/ini-config',
    'get_transport_url': 'lib/rpc_backend', 'get_notification_url': 'lib/rpc_backend',
    'rpc_backend_add_vhost': 'lib/rpc_backend', 'conductor_conf': 'lib/nova',
}
# DevStack variables plugin.sh and settings read, and the file that sets them.
DEVSTACK_VARIABLES = {
    'ENABLED_SERVICES': 'stackrc', 'SERVICE_HOST': 'stackrc', 'HOST_IP': 'stackrc',
    'DATA_DIR': 'stackrc', 'STACK_USER': 'stackrc', 'VIRT_DRIVER': 'stackrc',
    'CELLSV2_SETUP': 'stackrc', 'ENABLE_DEBUG_LOG_LEVEL': 'stackrc', 'ETCD_PORT': 'stackrc',
    'PYTHON3_VERSION': 'stackrc', 'NOVA_CONF': 'lib/nova', 'NOVA_CONF_DIR': 'lib/nova',
    'NOVA_INSTANCES_PATH': 'lib/nova', 'NOVA_NUM_CELLS': 'lib/nova', 'NOVA_BIN_DIR': 'lib/nova',
    'LIBVIRT_TYPE': 'stackrc',   # kvm; lib/nova's configure_nova falls back to qemu
}


def tree_files(root):
    """Files under root, without the harness's stand-in DevStack tree (shim mode only)."""
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), root)
            if not rel.startswith('devstack/'):
                out.append(rel)
    return sorted(out)


class DevStackTestCase(base.TempDirTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not base.DEVSTACK_DIR:
            raise unittest.SkipTest(base.ONLY_SHIM)
        if not os.path.isfile(os.path.join(base.DEVSTACK_DIR, 'functions')):
            raise AssertionError('NOVA_DT_DEVSTACK_DIR=%s holds no DevStack "functions" file'
                                 % base.DEVSTACK_DIR)

    def devstack_file(self, rel):
        with open(os.path.join(base.DEVSTACK_DIR, rel)) as f:
            return f.read()

    def assert_in_devstack(self, rel, regex):
        """Without dumping a whole DevStack file into the failure message."""
        if not re.search(regex, self.devstack_file(rel), re.M):
            self.fail('%s: no match for %s' % (rel, regex))


class TestSameOutputs(DevStackTestCase):
    def test_lib_scenario(self):
        for mode in ('shim', 'devstack'):
            subprocess.run([base.SCENARIO, self.path(mode), mode], check=True,
                           env=base.clean_env(), capture_output=True)
        files = tree_files(self.path('shim'))
        self.assertEqual(files, tree_files(self.path('devstack')))
        self.assertGreater(len(files), 10)
        _, mismatch, errors = filecmp.cmpfiles(self.path('shim'), self.path('devstack'), files,
                                               shallow=False)
        self.assertEqual(([], []), (mismatch, errors))
        # The scenario's nova.conf files, read by oslo.config with nova's options.
        c = base.nova_conf(self.path('devstack', 'devstack-nova.conf'))
        self.assertEqual('DTPairFilter', c.filter_scheduler.enabled_filters[-1])
        self.assertEqual('versioned', c.notifications.notification_format)
        self.assertEqual(8192, c.libvirt.file_backed_memory)

    def test_ini_cases(self):
        for i, (name, initial, calls, expected) in enumerate(test_ini_shim.CASES):
            with self.subTest(name):
                shim = test_ini_shim.run_case(self.path('s%d' % i), initial, calls)
                real = test_ini_shim.run_case(self.path('d%d' % i), initial, calls, devstack=True)
                self.assertEqual(real, shim)
                self.assertEqual(expected, real)

    def test_refused_values_are_the_ones_devstack_changes(self):
        # What the shim refuses, DevStack's functions would indeed write differently. DevStack
        # after Zed escapes backslashes in iniset ("Fix iniset to escape backslash characters"):
        # there the shim is stricter than needed for them.
        series = re.search(r'(?m)^DEVSTACK_SERIES="([^"]*)"', self.devstack_file('stackrc'))
        zed = series and series.group(1) == 'zed'
        self.write('glob', '')
        for func, value in test_ini_shim.REFUSED:
            if '\\' in value and not zed:
                continue
            with self.subTest(func=func, value=value):
                self.write('f', '[s]\n')
                base.lib('%s f s opt %s' % (func, shlex.quote(value)), cwd=self.tmp,
                         devstack=True)
                self.assertNotEqual('[s]\nopt = %s\n' % value, self.read('f'))


class TestPluginWithDevStack(DevStackTestCase):
    SCENARIOS = {
        'all-in-one': dict(ENABLED_SERVICES=test_plugin.ALL_IN_ONE,
                           NOVA_DT_PEERS='compute-1,compute-2=10.0.0.12:7070'),
        'compute': dict(ENABLED_SERVICES='n-cpu,placement-client', LIBVIRT_TYPE='qemu'),
        'controller': dict(ENABLED_SERVICES='n-api,n-sch,n-cond,rabbit',
                           NOVA_DT_AZ_HOSTS='az1=compute-1 az2=compute-2',
                           NOVA_DT_FLAVOR='dt.small'),
        'etcd3-disabled': dict(ENABLED_SERVICES=test_plugin.ALL_IN_ONE, DISABLED_SERVICES='etcd3'),
    }

    def normalized(self, workdir):
        with open(os.path.join(workdir, 'calls.log')) as f:
            calls = f.read().replace(workdir, 'W')
        with open(os.path.join(workdir, 'vars')) as f:
            variables = f.read().replace(workdir, 'W')
        return calls, variables

    def test_phases_identical(self):
        for name, env in self.SCENARIOS.items():
            with self.subTest(name):
                shim, real = self.path(name, 'shim'), self.path(name, 'devstack')
                for wd, mode in ((shim, 'shim'), (real, 'devstack')):
                    test_plugin.run_harness(wd, mode, test_plugin.STACK, env)
                self.assertEqual(self.normalized(shim), self.normalized(real))
                for rel in tree_files(shim):
                    if rel in ('calls.log', 'vars') or rel.startswith('etc/nova-dt/tls/'):
                        continue   # stand-in tree; certificates differ by nature
                    with open(os.path.join(shim, rel)) as a, open(os.path.join(real, rel)) as b:
                        self.assertEqual(a.read().replace(shim, 'W'), b.read().replace(real, 'W'), rel)
                # unstack.sh and clean.sh: new shells, DevStack's functions again.
                for phase in ('unstack', 'clean'):
                    for wd, mode in ((shim, 'shim'), (real, 'devstack')):
                        os.remove(os.path.join(wd, 'calls.log'))
                        test_plugin.run_harness(wd, mode, [phase], env)
                    self.assertEqual(self.normalized(shim)[0], self.normalized(real)[0])
                    self.assertEqual(tree_files(shim), tree_files(real))

    def test_settings_with_devstacks_service_functions(self):
        test_plugin.run_harness(self.tmp, 'devstack', [], self.SCENARIOS['etcd3-disabled'])
        v = base.harness_vars(self.tmp)
        self.assertNotIn('etcd3', v['ENABLED_SERVICES'].split(','))
        self.assertEqual('<unset>', v['NOVA_DT_ETCD_ENDPOINTS'])


class TestDevStackContract(DevStackTestCase):
    def test_functions_exist(self):
        for func, rel in sorted(DEVSTACK_FUNCTIONS.items()):
            with self.subTest(func):
                self.assert_in_devstack(rel, r'^\s*function %s\b' % re.escape(func))

    def test_plugin_uses_no_other_devstack_function(self):
        # Every command word in plugin.sh and settings is a bash builtin/keyword, an external
        # program, a function plugin.sh or lib/nova-dt defines, or one of DEVSTACK_FUNCTIONS.
        defined = set()
        for rel in ('devstack/plugin.sh', 'devstack/lib/nova-dt'):
            with open(os.path.join(base.REPO, rel)) as f:
                defined |= set(re.findall(r'(?m)^function (\w+)', f.read()))
        devstack_defined = set()
        for d, _, files in os.walk(base.DEVSTACK_DIR):
            if '.git' in d:
                continue
            for fn in files:
                try:
                    with open(os.path.join(d, fn), errors='replace') as f:
                        devstack_defined |= set(re.findall(r'(?m)^\s*function ([\w-]+)', f.read()))
                except OSError:
                    pass
        for rel in ('devstack/plugin.sh', 'devstack/settings'):
            with self.subTest(rel):
                used = self.command_words(os.path.join(base.REPO, rel))
                from_devstack = {w for w in used if w in devstack_defined and w not in defined}
                self.assertEqual(set(), from_devstack - set(DEVSTACK_FUNCTIONS))

    @staticmethod
    def command_words(path):
        """The words in command position of a bash file (a lexical approximation: the first word
        of each line and after ; && || | $( ` then do else ! { and ( )."""
        words = set()
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                for part in re.split(r';|&&|\|\||\||\$\(|`|\bthen\b|\bdo\b|\belse\b|!|\{|\(', line):
                    m = re.match(r'\s*([A-Za-z_][\w-]*)(?=[\s)}`]|$)', part)
                    if m:
                        words.add(m.group(1))
        return words

    def test_phases_match_devstack(self):
        stack = self.devstack_file('stack.sh')
        for phase in ('pre-install', 'install', 'post-config', 'extra', 'test-config'):
            self.assert_in_devstack('stack.sh', r'^run_phase stack %s$' % phase)
        self.assert_in_devstack('unstack.sh', r'^run_phase unstack$')
        self.assert_in_devstack('clean.sh', r'^run_phase clean$')
        # settings is sourced after lib/nova and lib/etcd3 (its defaults use their variables).
        self.assertLess(stack.index('source $TOP_DIR/lib/nova\n'), stack.index('run_phase source'))
        self.assertLess(stack.index('source $TOP_DIR/lib/etcd3'), stack.index('run_phase source'))
        # post-config runs before Nova starts (nova-cpu.conf is copied from nova.conf then) and
        # test-config after the compute hosts are discovered (aggregates take known hosts).
        self.assertLess(stack.index('run_phase stack post-config'), stack.index('start_nova\n'))
        self.assertLess(stack.index('discover_hosts.sh'), stack.index('run_phase stack test-config'))
        self.assert_in_devstack('lib/nova', r'^\s*cp \$compute_cell_conf \$NOVA_CPU_CONF$')
        self.assert_in_devstack('stack.sh', r'^export OS_CLOUD=\$\{OS_CLOUD:-devstack-admin\}$')
        self.assertTrue(os.path.isfile(os.path.join(base.DEVSTACK_DIR, 'lib', 'etcd3')))
        self.assert_in_devstack('stackrc', r'ETCD_PORT=\$\{ETCD_PORT:-2379\}')

    def test_variables_exist(self):
        for var, rel in sorted(DEVSTACK_VARIABLES.items()):
            with self.subTest(var):
                self.assert_in_devstack(rel, r'^\s*(export )?%s=' % var)
