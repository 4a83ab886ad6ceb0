"""lib/nova-dt's installation functions: the Python package (with a real pip, into a scratch
root), the agent's build (the commands, with recording cmake/ninja: no build is started here)
and its install."""
import os
import re
import subprocess
import sys

from tests import base

PY = '/usr/bin/python3'


def tree(path):
    out = set()
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), path))
    return out


class TestPythonPackage(base.TempDirTestCase):
    def test_externally_managed(self):
        # Debian 12's /usr/bin/python3 carries PEP 668's marker; a virtual environment does not.
        p = base.lib('nova_dt_python_is_externally_managed %s' % PY, check=False)
        marker = os.path.isfile('/usr/lib/python%d.%d/EXTERNALLY-MANAGED' % sys.version_info[:2])
        self.assertEqual(0 if marker else 1, p.returncode)
        venv = self.path('venv')
        subprocess.run([PY, '-m', 'venv', '--without-pip', venv], check=True)
        p = base.lib('nova_dt_python_is_externally_managed %s/bin/python3' % venv, check=False)
        self.assertEqual(1, p.returncode)

    def test_install_into_a_root(self):
        root = self.path('root')
        before = tree(base.NOVA_INTEGRATION)
        p = base.lib('nova_dt_install_python_package', env=base.clean_env(
            NOVA_DT_PYTHON=PY, NOVA_DT_PIP_ARGS='--root %s' % root))
        # Nothing built inside the source tree (other changes there are other people's).
        new = tree(base.NOVA_INTEGRATION) - before
        self.assertEqual([], sorted(x for x in new if x.split('/')[0] == 'build'
                                    or '.egg-info' in x or x.endswith('.whl')))
        scripts = base.lib('nova_dt_python_scripts_dir %s' % PY).stdout.strip()
        purelib = subprocess.run([PY, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                                 capture_output=True, text=True, check=True).stdout.strip()
        site = root + purelib
        for script in ('nova-dt-controller', 'nova-dt-host-check'):
            self.assertTrue(os.access(root + scripts + '/' + script, os.X_OK), p.stdout)
        self.assertFalse(os.path.exists(os.path.join(site, 'nova_dt', 'tests')))
        # What nova-api's validator loader and the console scripts look up: the entry points,
        # read by Debian's python from the installed metadata alone (not the source tree).
        probe = ('import importlib.metadata as m, json, nova_dt\n'
                 'eps = [e for g in ("nova.api.extra_spec_validators", "console_scripts",'
                 ' "oslo.config.opts") for e in m.entry_points(group=g)]\n'
                 'print(json.dumps({"file": nova_dt.__file__, "ep": sorted('
                 '"%s %s=%s" % (e.group, e.name, e.value) for e in eps '
                 'if e.value.startswith("nova_dt"))}))')
        out = subprocess.run([PY, '-c', probe], cwd=self.tmp, capture_output=True, text=True,
                             env=base.clean_env(PYTHONPATH=site), check=True).stdout
        import json
        got = json.loads(out)
        self.assertTrue(got['file'].startswith(site), got)
        self.assertEqual([
            'console_scripts nova-dt-controller=nova_dt.cmd.controller:main',
            'console_scripts nova-dt-host-check=nova_dt.cmd.host_check:main',
            'nova.api.extra_spec_validators dt=nova_dt.extra_specs',
            'oslo.config.opts nova_dt=nova_dt.conf:list_opts'], got['ep'])
        # And nova's own loader registers the dt:* validators from it.
        probe = ('from nova.api.validation.extra_specs import validators as v\n'
                 'v.load_validators()\n'
                 'print(sorted(k for k in v.VALIDATORS if k.startswith("dt:")))')
        out = subprocess.run([PY, '-c', probe], cwd=self.tmp, capture_output=True, text=True,
                             env=base.clean_env(PYTHONPATH=site), check=True).stdout
        self.assertIn("'dt:enabled'", out)
        self.assertIn("'dt:epoch_ms'", out)

    def test_pip_arguments(self):
        # A recording stand-in for the interpreter: what lib/nova-dt asks pip for.
        fake = self.write('bin/python3', '#!/bin/bash\n'
                          'if [[ "$1" == -m ]]; then printf "%%s\\n" "$@" >%s; exit 0; fi\n'
                          'exec %s "$@"\n' % (self.path('argv'), PY))
        os.chmod(fake, 0o755)
        base.lib('nova_dt_install_python_package', env=base.clean_env(
            NOVA_DT_PYTHON=fake, NOVA_DT_PIP_ARGS='--root /x --quiet'))
        argv = self.read('argv').splitlines()
        self.assertEqual(['-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
                          '--force-reinstall'], argv[:6])
        self.assertIn('--root', argv)
        self.assertIn('--quiet', argv)
        # The fake runs Debian's interpreter for the marker check: the flag follows the marker.
        marker = os.path.isfile('/usr/lib/python%d.%d/EXTERNALLY-MANAGED' % sys.version_info[:2])
        self.assertEqual(marker, '--break-system-packages' in argv)
        self.assertTrue(argv[-1].startswith('/tmp') or argv[-1].startswith(os.environ.get(
            'TMPDIR', '/tmp')), argv[-1])
        self.assertFalse(os.path.exists(argv[-1]))   # the scratch copy is removed


class TestAgentBuild(base.TempDirTestCase):
    def recording_tools(self):
        bindir = self.path('bin')
        os.makedirs(bindir)
        for tool in ('cmake', 'ninja'):
            p = os.path.join(bindir, tool)
            with open(p, 'w') as f:
                f.write('#!/bin/bash\nprintf "%%s\\n" "%s $*" >>%s\n' % (tool, self.path('log')))
            os.chmod(p, 0o755)
        return base.clean_env(PATH=bindir + ':' + base.CLEAN_PATH)

    def test_only_the_agent_binaries(self):
        env = self.recording_tools()
        base.lib('nova_dt_build_agent /b', env=env)
        self.assertEqual([
            'cmake -S %s -B /b -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo' % base.REPO,
            'ninja -C /b nova-dt-agent nova-dt-status'], self.read('log').splitlines())
        os.unlink(self.path('log'))
        env.update(NOVA_DT_BUILD_JOBS='2', NOVA_DT_BUILD_TYPE='Release')
        base.lib('nova_dt_build_agent /b', env=env)
        self.assertEqual([
            'cmake -S %s -B /b -G Ninja -DCMAKE_BUILD_TYPE=Release' % base.REPO,
            'ninja -C /b -j 2 nova-dt-agent nova-dt-status'], self.read('log').splitlines())

    def test_targets_and_paths_exist_in_the_build(self):
        ninja = os.path.join(base.BUILD, 'build.ninja')
        if not os.path.exists(ninja):
            self.skipTest('%s not found: no configured build to compare target names with '
                          '(scripts/build makes one)' % ninja)
        with open(ninja) as f:
            text = f.read()
        # The names nova_dt_build_agent asks for, and the files nova_dt_install_agent copies.
        self.assertRegex(text, r'(?m)^build nova-dt-agent: phony agent/daemon/nova-dt-agent$')
        self.assertRegex(text, r'(?m)^build nova-dt-status: phony agent/tools/nova-dt-status$')

    def test_install_agent(self):
        build = self.path('build')
        for rel in ('agent/daemon/nova-dt-agent', 'agent/tools/nova-dt-status'):
            self.write('build/' + rel, '#!/bin/sh\necho ' + rel + '\n')
        base.lib('nova_dt_install_agent %s %s' % (build, self.path('usr/local/bin')))
        for name in ('nova-dt-agent', 'nova-dt-status'):
            st = os.stat(self.path('usr/local/bin', name))
            self.assertEqual((0o755, 0, 0), (st.st_mode & 0o7777, st.st_uid, st.st_gid))

    def test_build_packages_are_install_deps_packages(self):
        with open(os.path.join(base.REPO, 'scripts', 'install-deps')) as f:
            install_deps = set(re.findall(r'[a-z0-9][a-z0-9+.-]+', f.read()))
        pkgs = base.lib('nova_dt_build_packages').stdout.split()
        self.assertIn('cmake', pkgs)
        self.assertIn('libgtest-dev', pkgs)   # CMakeLists.txt finds GTest at configure time
        self.assertEqual(set(), set(pkgs) - install_deps)


class TestPythonPackageAsStackUser(base.TempDirTestCase):
    """As DevStack's STACK_USER (here: nobody), pip into a root-owned Python goes through
    NOVA_DT_SUDO, and so does the removal of what pip built as root."""

    def test_through_sudo(self):
        os.chmod(self.tmp, 0o777)
        log = self.path('sudo.log')
        fake_sudo = self.write('fake-sudo', '#!/bin/bash\nprintf "%%s\\n" "$*" >>%s\n'
                               'if [[ "$1" == rm ]]; then exec "$@"; fi\n' % log)
        os.chmod(fake_sudo, 0o755)
        script = ('source %s; source %s; nova_dt_install_python_package'
                  % (base.INI_FUNCTIONS, base.LIB))
        env = base.clean_env(NOVA_DT_PYTHON=PY, NOVA_DT_SUDO=fake_sudo, TMPDIR=self.tmp,
                             HOME=self.tmp)
        p = subprocess.run(['runuser', '-u', 'nobody', '--', '/bin/bash', '-c', script],
                           env=env, capture_output=True, text=True)
        self.assertEqual(0, p.returncode, p.stderr)
        lines = self.read('sudo.log').splitlines()
        self.assertEqual(2, len(lines), lines)
        self.assertTrue(lines[0].startswith(PY + ' -m pip install --no-deps '), lines[0])
        scratch = lines[0].split()[-1]
        self.assertEqual('rm -rf ' + scratch, lines[1])
        self.assertTrue(scratch.startswith(self.tmp))
        self.assertFalse(os.path.exists(scratch))
