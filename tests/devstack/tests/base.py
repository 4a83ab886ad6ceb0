"""Helpers of the tests of devstack/ (lib/nova-dt, settings, plugin.sh).

Run with Debian's /usr/bin/python3 (python3-nova, python3-oslo.messaging, python3-stestr), as
root (hook and binary installs are root-owned; the harness's sudo stand-in runs as the caller).
"""
import configparser
import copy
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/devstack
REPO = os.path.dirname(os.path.dirname(HERE))
LIB = os.path.join(REPO, 'devstack', 'lib', 'nova-dt')
INI_FUNCTIONS = os.path.join(HERE, 'ini-functions')
HARNESS = os.path.join(HERE, 'plugin-harness')
SCENARIO = os.path.join(HERE, 'lib-scenario')
NOVA_INTEGRATION = os.path.join(REPO, 'nova-integration')
BUILD = os.environ.get('NOVA_DT_BUILD', os.path.join(REPO, 'build'))
DEVSTACK_DIR = os.environ.get('NOVA_DT_DEVSTACK_DIR', '')

ONLY_SHIM = ("NOVA_DT_DEVSTACK_DIR is not set: only the shim variant (tests/devstack/"
             "ini-functions and the harness's stand-ins for DevStack's functions) ran; the "
             "comparison with DevStack's real function library needs a DevStack checkout "
             "(CI has none: no internet). Run with NOVA_DT_DEVSTACK_DIR=<devstack checkout>.")

# What DevStack's PATH finds: Debian's python3 first, not a developer's pyenv shim.
CLEAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

if NOVA_INTEGRATION not in sys.path:
    sys.path.insert(0, NOVA_INTEGRATION)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('NOVA_DT_') or k in ('NOVA_DT_DEVSTACK_DIR', 'NOVA_DT_BUILD')}
    env['PATH'] = CLEAN_PATH
    env.update(extra)
    return env


def bash(script, env=None, cwd=None, check=True, timeout=300):
    """Runs `script` with bash; returns the CompletedProcess (text)."""
    p = subprocess.run(['/bin/bash', '-c', script], env=env if env is not None else clean_env(),
                       cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError('bash failed (%d):\n--- script\n%s\n--- stdout\n%s\n--- stderr\n%s'
                             % (p.returncode, script, p.stdout, p.stderr))
    return p


def lib(body, env=None, cwd=None, check=True, devstack=False):
    """Runs `body` after sourcing lib/nova-dt with the shim (errexit, nounset) or, with
    devstack=True, with DevStack's real functions (errexit)."""
    if devstack:
        head = 'source %s/functions\nset -o errexit\n' % shlex.quote(DEVSTACK_DIR)
    else:
        head = 'set -o errexit -o nounset\nsource %s\n' % shlex.quote(INI_FUNCTIONS)
    return bash(head + 'source %s\n%s' % (shlex.quote(LIB), body), env=env, cwd=cwd, check=check)


class TempDirTestCase(unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix='nova-dt-devstack-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def read(self, *parts):
        with open(self.path(*parts)) as f:
            return f.read()

    def write(self, rel, text):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'w') as f:
            f.write(text)
        return p


def nova_conf(*files):
    """The files read by oslo.config with every option nova and oslo.messaging define, plus
    nova_dt's [nova_dt] options: what a nova service (or nova-dt-controller) sees."""
    from oslo_config import cfg
    import nova.conf.opts
    import oslo_messaging.opts
    from nova_dt import conf as dt_conf
    conf = cfg.ConfigOpts()
    for group, opts in nova.conf.opts.list_opts() + oslo_messaging.opts.list_opts():
        name = getattr(group, 'name', group)
        for o in opts:
            o = copy.deepcopy(o)
            o.required = False   # keystoneauth's auth-url of [cinder] etc.: not what is checked
            try:
                conf.register_opt(o, group=None if name in (None, 'DEFAULT') else name)
            except cfg.DuplicateOptError:
                pass
    dt_conf.register_opts(conf)
    args = []
    for f in files:
        args += ['--config-file', f]
    conf(args=args, project='nova', default_config_files=[], default_config_dirs=[])
    return conf


def sample_options():
    """{section: {option}} documented in deploy/nova-dt-agent.conf.sample ('#key = ...')."""
    import re
    opts = {}
    section = None
    with open(os.path.join(REPO, 'deploy', 'nova-dt-agent.conf.sample')) as f:
        for line in f:
            m = re.match(r'^\[(\w+)\]\s*$', line)
            if m:
                section = m.group(1)
                opts.setdefault(section, set())
                continue
            m = re.match(r'^#([a-z_]+) =', line)
            if m and section:
                opts[section].add(m.group(1))
    return opts


def read_ini(path):
    """configparser with oslo's basics: no interpolation, repeated keys are an error
    (the agent's file has none), keys case-sensitive, [DEFAULT] a section like the others
    (oslo.config does not inherit its values into other groups)."""
    p = configparser.ConfigParser(interpolation=None, strict=True, delimiters=('=',),
                                  comment_prefixes=('#', ';'), inline_comment_prefixes=None,
                                  default_section='\0none')
    p.optionxform = str
    with open(path) as f:
        p.read_file(f)
    return p


def calls(workdir):
    """The harness's calls.log: a list of argv lists."""
    with open(os.path.join(workdir, 'calls.log')) as f:
        return [shlex.split(line) for line in f if line.strip()]


def harness_vars(workdir):
    out = {}
    with open(os.path.join(workdir, 'vars')) as f:
        for line in f:
            k, _, v = line.rstrip('\n').partition('=')
            out[k] = v
    return out
