"""What the compute-host checks read: configuration files and kernel state, every path injectable.

Every host path goes through ``Host.path()``, which prefixes ``Host.root`` ("/" in production; a
temporary directory in tests, or a container's view of the host), so nothing here is bound to the
real /etc, /proc or /dev.

nova.conf is read with **oslo.config and nova's own option definitions** (``nova.conf.libvirt``,
``nova.conf.compute``, ``nova.conf.paths``, ``nova.conf.notifications`` and oslo.messaging's
options) on a private ``ConfigOpts``: the same file and directory precedence, deprecated names
(e.g. ``[DEFAULT] notification_driver``), types, bounds and defaults that nova-compute itself
applies. A value nova-compute would refuse fails the check that reads it. configparser would get
each of these wrong.

nova-dt-agent.conf is read with oslo.config's INI parser, which the agent mirrors; the options the
checks look at are validated as agent/config/config_loader.cc validates them. Users and groups
are looked up through NSS under "/", else in the root's /etc/passwd and /etc/group. A
certificate's names are read with ``openssl x509``, bounded by OPENSSL_TIMEOUT.
"""

import copy
import dataclasses
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import urllib.parse

from oslo_config import cfg

# libvirt's guest-RAM directory when qemu.conf does not set memory_backing_dir (privileged
# driver: "<libDir>/ram" with libDir /var/lib/libvirt/qemu; libvirt src/qemu/qemu_conf.c
# virQEMUDriverConfigNew). A memory_backing_dir set in qemu.conf becomes "<value>/libvirt/qemu"
# (virQEMUDriverConfigLoadMemoryEntry).
LIBVIRT_DEFAULT_RAM_DIR = '/var/lib/libvirt/qemu/ram'
# Who libvirt runs QEMU as when qemu.conf sets no user/group: Debian builds libvirt with
# libvirt-qemu for both (libvirt-daemon-system 9.0.0-4+deb12u2 /etc/libvirt/qemu.conf:
# '#user = "libvirt-qemu"', '#group = "libvirt-qemu"'; its postinst creates them).
LIBVIRT_DEFAULT_QEMU_USER = 'libvirt-qemu'
LIBVIRT_DEFAULT_QEMU_GROUP = 'libvirt-qemu'

NOVA_CONFIG_FILES = ('/etc/nova/nova.conf', '/etc/nova/nova-compute.conf')
NOVA_CONFIG_DIRS = ('/etc/nova/nova.conf.d',)
QEMU_CONF = '/etc/libvirt/qemu.conf'
AGENT_CONF = '/etc/nova-dt/nova-dt-agent.conf'
LIBVIRT_HOOK = '/etc/libvirt/hooks/qemu'
HOOK_ENV = '/etc/nova-dt/hook.env'
DEV_VHOST_NET = '/dev/vhost-net'
PROC_MODULES = '/proc/modules'
OSRELEASE = '/proc/sys/kernel/osrelease'
HOSTNAME = '/proc/sys/kernel/hostname'
PASSWD = '/etc/passwd'
GROUP = '/etc/group'
# Reads a certificate's names (peer_tls); looked up in PATH. A run is bounded by
# OPENSSL_TIMEOUT seconds.
OPENSSL = 'openssl'
OPENSSL_TIMEOUT = 10
# A TLS file (certificate chain, key, CA bundle) is read whole; anything larger is not one.
MAX_TLS_FILE_BYTES = 1 << 20
MODULES_DIR = '/lib/modules'
# kmod's search order; a file name found in an earlier directory hides the same name later.
MODPROBE_DIRS = ('/etc/modprobe.d', '/run/modprobe.d', '/usr/local/lib/modprobe.d',
                 '/lib/modprobe.d', '/usr/lib/modprobe.d')


class SourceError(Exception):
    """A configuration file that exists but cannot be read or parsed."""


class ToolTimeout(SourceError):
    """An external tool (openssl) did not answer within its time bound."""


class Host(object):
    """The compute host's file system as the checks see it, under ``root``."""

    def __init__(self, root='/', kernel_release=None, hostname=None):
        self.root = root
        self._kernel_release = kernel_release
        self._hostname = hostname

    def _proc_value(self, host_path, fallback):
        """The stripped text of a /proc file under ``root``, or ``fallback()`` when absent."""
        try:
            text = self.read_text(host_path)
        except SourceError:
            text = None
        return (text or '').strip() or fallback()

    @property
    def hostname(self):
        """The host's name as gethostname() gives it: /proc/sys/kernel/hostname under ``root``."""
        if self._hostname is None:
            self._hostname = self._proc_value(HOSTNAME, socket.gethostname)
        return self._hostname

    def user_id(self, name):
        """The uid of user ``name``, or None when there is none.

        Under "/" through NSS (getpwnam, as nova-dt-agent and libvirtd look users up); under
        another root from its /etc/passwd, which is all that can be seen of that host.
        """
        return self._id(name, lambda n: pwd.getpwnam(n).pw_uid, PASSWD)

    def group_id(self, name):
        """The gid of group ``name``, or None when there is none (getgrnam, or /etc/group)."""
        return self._id(name, lambda n: grp.getgrnam(n).gr_gid, GROUP)

    def _id(self, name, nss_lookup, host_path):
        if self.root in ('', '/'):
            try:
                return nss_lookup(name)
            except KeyError:
                return None
        try:
            text = self.read_text(host_path) or ''
        except SourceError:
            return None
        for line in text.splitlines():
            fields = line.split(':')
            if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        return None

    @property
    def kernel_release(self):
        """The running kernel's release, read under ``root`` (/proc/sys/kernel/osrelease)."""
        if self._kernel_release is None:
            self._kernel_release = self._proc_value(OSRELEASE, lambda: os.uname().release)
        return self._kernel_release

    def path(self, host_path):
        """``host_path`` (absolute, as on the host) under ``root``."""
        if self.root in ('', '/'):
            return host_path
        return os.path.join(self.root, host_path.lstrip('/'))

    def exists(self, host_path):
        return os.path.exists(self.path(host_path))

    def is_dir(self, host_path):
        return os.path.isdir(self.path(host_path))

    def is_executable_file(self, host_path):
        p = self.path(host_path)
        return os.path.isfile(p) and os.access(p, os.X_OK)

    def read_text(self, host_path):
        """The file's text, or None when it does not exist. SourceError when unreadable."""
        try:
            with open(self.path(host_path), encoding='utf-8', errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SourceError('cannot read %s: %s' % (host_path, e.strerror))

    def device_of(self, host_path):
        """st_dev of the path, or None when it does not exist."""
        try:
            return os.stat(self.path(host_path)).st_dev
        except OSError:
            return None

    def filesystem_mib(self, host_path):
        """Size in MiB of the file system holding the path, or None when it does not exist."""
        try:
            st = os.statvfs(self.path(host_path))
        except OSError:
            return None
        return st.f_frsize * st.f_blocks // (1024 * 1024)

    def module_state(self, name):
        """'loaded', 'builtin' or 'absent' for a kernel module; None when it cannot be told."""
        name = _module_name(name)
        builtin = self.read_text('%s/%s/modules.builtin' % (MODULES_DIR, self.kernel_release))
        if builtin and any(_module_name(os.path.basename(line.strip())[:-3]) == name
                           for line in builtin.splitlines() if line.strip().endswith('.ko')):
            return 'builtin'
        try:
            modules = self.read_text(PROC_MODULES)
        except SourceError:
            return None
        if modules is None:
            return None
        if any(line.split()[0] == name for line in modules.splitlines() if line.strip()):
            return 'loaded'
        return 'absent'

    def modprobe_rules(self, name):
        """The ``blacklist``/``install`` lines of modprobe.d that name the module, in kmod's order.

        Returns ModprobeRule tuples; unreadable files are skipped.
        """
        name = _module_name(name)
        seen, files = set(), []
        for d in MODPROBE_DIRS:
            try:
                names = sorted(os.listdir(self.path(d)))
            except OSError:
                continue
            for n in names:
                if n.endswith('.conf') and n not in seen:
                    seen.add(n)
                    files.append('%s/%s' % (d, n))
        rules = []
        for f in sorted(files, key=os.path.basename):
            try:
                text = self.read_text(f)
            except SourceError:
                continue
            for words in _modprobe_lines(text or ''):
                if (len(words) >= 2 and words[0] in ('blacklist', 'install') and
                        _module_name(words[1]) == name):
                    rules.append(ModprobeRule(f, words[0], ' '.join(words[2:])))
        return rules


@dataclasses.dataclass(frozen=True)
class ModprobeRule:
    file: str
    kind: str      # 'blacklist' or 'install'
    command: str   # the install command ('' for blacklist)


def _module_name(name):
    return name.replace('-', '_')


def _modprobe_lines(text):
    """Word lists of modprobe.d lines: '#' comments, backslash continuations (man modprobe.d)."""
    logical, current = [], ''
    for line in text.splitlines():
        if line.endswith('\\'):
            current += line[:-1] + ' '
            continue
        logical.append(current + line)
        current = ''
    if current:
        logical.append(current)
    for line in logical:
        words = line.split()
        if words and not words[0].startswith('#'):
            yield words


# --- nova.conf ---------------------------------------------------------------------------------

def register_nova_opts(conf):
    """nova's own definitions of every option the checks read, on ``conf``.

    Copies, registered under group names: an OptGroup object keeps per-option state (e.g. a
    default set with ``set_default``) that would otherwise be shared with nova's global CONF.
    """
    import nova.conf.compute
    import nova.conf.libvirt
    import nova.conf.notifications
    import nova.conf.paths
    import oslo_messaging.opts

    conf.register_opts(copy.deepcopy(nova.conf.libvirt.ALL_OPTS), group='libvirt')
    conf.register_opts(copy.deepcopy(nova.conf.compute.ALL_OPTS))
    # pybasedir and state_path: instances_path defaults to $state_path/instances.
    conf.register_opts(copy.deepcopy(nova.conf.paths.ALL_OPTS))
    conf.register_opts(copy.deepcopy(nova.conf.notifications.ALL_OPTS), group='notifications')
    for group, opts in oslo_messaging.opts.list_opts():   # already copies
        conf.register_opts(opts, group=group)


@dataclasses.dataclass
class NovaConfig:
    conf: object           # an oslo.config ConfigOpts with register_nova_opts() options
    files: list            # the files it was read from, in order


def load_nova_config(host, config_files=None, config_dirs=None):
    """nova.conf as nova-compute reads it. Raises SourceError.

    Without ``config_files``: /etc/nova/nova.conf and, when present, /etc/nova/nova-compute.conf
    (Debian/Ubuntu's nova-compute reads both). Without ``config_dirs``: /etc/nova/nova.conf.d
    when present (oslo.config reads it by default for project nova). All paths are host paths,
    read under ``host.root``.
    """
    conf = cfg.ConfigOpts()
    register_nova_opts(conf)
    args = []
    for f in config_files or ():
        args += ['--config-file', host.path(f)]
    for d in config_dirs or ():
        args += ['--config-dir', host.path(d)]
    default_files = [host.path(f) for f in NOVA_CONFIG_FILES[:1]]
    default_files += [host.path(f) for f in NOVA_CONFIG_FILES[1:] if host.exists(f)]
    default_dirs = [host.path(d) for d in NOVA_CONFIG_DIRS if host.is_dir(d)]
    try:
        conf(args, project='nova', prog='nova-compute', default_config_files=default_files,
             default_config_dirs=default_dirs, use_env=False)
    except cfg.ConfigFilesNotFoundError as e:
        raise SourceError('cannot read %s' % ', '.join(e.config_files))
    except (cfg.Error, OSError) as e:
        raise SourceError(str(e))
    return NovaConfig(conf, list(conf.config_file) + _dir_files(conf.config_dir))


def _dir_files(dirs):
    files = []
    for d in dirs or ():
        try:
            files += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith('.conf')]
        except OSError:
            pass
    return files


# --- libvirt's qemu.conf -----------------------------------------------------------------------

@dataclasses.dataclass
class QemuConf:
    path: str
    found: bool = False
    # memory_backing_dir as written: a string, a list of strings, or None when unset.
    memory_backing_dir: object = None
    # user and group as written (libvirt wants strings), or None when unset.
    user: object = None
    group: object = None
    error: str = ''

    @property
    def ram_dir(self):
        """Where libvirt puts guest RAM files, as it derives it from memory_backing_dir."""
        if isinstance(self.memory_backing_dir, str):
            return self.memory_backing_dir.rstrip('/') + '/libvirt/qemu'
        return LIBVIRT_DEFAULT_RAM_DIR


_VIRCONF_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\n]+) | (?P<comment>\#[^\n]*) |
    (?P<tstring>"""(?:.|\n)*?""") | (?P<dstring>"[^"\n]*") | (?P<sstring>'[^'\n]*') |
    (?P<name>[A-Za-z_][A-Za-z0-9_.]*) | (?P<number>-?[0-9]+) | (?P<punct>[=\[\],;])
''', re.VERBOSE)


def parse_virconf(text):
    """``{name: value}`` of a libvirt configuration file (virConf: strings, numbers, lists).

    The first setting of a name counts, as libvirt's virConfGetValue returns the first entry.
    Raises ValueError on what libvirt could not parse either.
    """
    tokens, pos = [], 0
    while pos < len(text):
        m = _VIRCONF_TOKEN.match(text, pos)
        if not m:
            raise ValueError('unexpected %r at offset %d' % (text[pos:pos + 10], pos))
        pos = m.end()
        kind = m.lastgroup
        if kind in ('space', 'comment'):
            continue
        value = m.group(kind)
        if kind == 'tstring':
            tokens.append(('string', value[3:-3]))
        elif kind in ('dstring', 'sstring'):
            tokens.append(('string', value[1:-1]))
        else:
            tokens.append((kind, value))
    settings, i = {}, 0

    def expect(kind, value=None):
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value and tokens[i][1] != value):
            raise ValueError('expected %s near token %d' % (value or kind, i))
        i += 1
        return tokens[i - 1][1]

    while i < len(tokens):
        if tokens[i] == ('punct', ';'):
            i += 1
            continue
        name = expect('name')
        expect('punct', '=')
        if i < len(tokens) and tokens[i] == ('punct', '['):
            i += 1
            items = []
            while i < len(tokens) and tokens[i] != ('punct', ']'):
                if tokens[i] == ('punct', ','):
                    i += 1
                    continue
                kind, item = tokens[i]
                if kind not in ('string', 'number'):
                    raise ValueError('bad list item %r' % item)
                items.append(item if kind == 'string' else int(item))
                i += 1
            expect('punct', ']')
            value = items
        elif i < len(tokens) and tokens[i][0] == 'string':
            value = expect('string')
        else:
            value = int(expect('number'))
        settings.setdefault(name, value)
    return settings


def load_qemu_conf(host, path=QEMU_CONF):
    """libvirt's qemu.conf; a missing file means libvirt's defaults."""
    result = QemuConf(path)
    try:
        text = host.read_text(path)
    except SourceError as e:
        result.error = str(e)
        return result
    if text is None:
        return result
    result.found = True
    try:
        settings = parse_virconf(text)
    except ValueError as e:
        result.error = 'cannot parse %s: %s' % (path, e)
        return result
    result.memory_backing_dir = settings.get('memory_backing_dir')
    result.user = settings.get('user')
    result.group = settings.get('group')
    return result


def libvirt_user_id(host, spec):
    """The uid libvirt runs QEMU as for qemu.conf ``user = spec``, or None when it refuses it.

    libvirt's virGetUserID(): "+N" is uid N; otherwise a user name, else a plain number.
    """
    return _libvirt_id(spec, host.user_id)


def libvirt_group_id(host, spec):
    """The gid for qemu.conf ``group = spec`` (virGetGroupID(), as libvirt_user_id())."""
    return _libvirt_id(spec, host.group_id)


def _libvirt_id(spec, lookup):
    number = spec[1:] if spec.startswith('+') else None
    if number is None:
        found = lookup(spec)
        if found is not None:
            return found
        number = spec
    return int(number) if number.isdigit() and int(number) < 1 << 32 else None


# --- the nova-dt agent's configuration ---------------------------------------------------------

@dataclasses.dataclass
class AgentConf:
    """What the checks need from nova-dt-agent.conf, with the agent's defaults (config.h)."""
    path: str
    found: bool = False
    error: str = ''
    # [DEFAULT] host as set; '' when unset (the agent then takes the machine's hostname).
    host: str = ''
    state_path: str = '/var/lib/nova-dt'
    # The agent's default (agent/config/config.h), where the libvirt hook looks.
    replica_path: str = '/var/lib/libvirt/qemu/ram/nova-dt'
    nova_notifications_enabled: bool = True
    nova_notification_topics: tuple = ('versioned_notifications',)
    notification_transport_url: str = ''
    # [libvirt]
    instances_path: str = '/var/lib/nova/instances'
    qemu_user: str = 'libvirt-qemu'
    qemu_group: str = 'libvirt-qemu'
    # [peer]: the three TLS files (paths as on the host; '' when unset), allow_insecure.
    peer_tls_cert_file: str = ''
    peer_tls_key_file: str = ''
    peer_tls_ca_file: str = ''
    peer_allow_insecure: bool = False
    # [witness]
    etcd_endpoints: tuple = ()
    witness_tls_ca_file: str = ''
    witness_tls_cert_file: str = ''
    witness_tls_key_file: str = ''
    witness_allow_none: bool = False
    # Values nova-dt-agent refuses when it loads its config (it exits 2), each as the agent says
    # it: {(section, key): "<file>: [<section>] <key>: <what>, got '<value>'"}.
    invalid: dict = dataclasses.field(default_factory=dict)

    def refusals(self, section, *keys):
        """The agent's refusals of these options of ``section``, in the order given."""
        return [self.invalid[(section, k)] for k in keys if (section, k) in self.invalid]


def load_agent_conf(host, path=AGENT_CONF):
    """nova-dt-agent.conf (oslo.config's INI parser, as the agent mirrors it).

    The options the checks read are validated as agent/config/config_loader.cc validates them;
    what the agent would refuse is in ``invalid``.
    """
    sections = {}
    try:
        if host.read_text(path) is None:
            return AgentConf(path)
        cfg.ConfigParser(host.path(path), sections).parse()
    except (SourceError, cfg.ParseError, OSError) as e:
        return AgentConf(path, found=True, error='cannot read %s: %s' % (path, e))
    invalid = {}

    def get(section, key, default=''):
        values = sections.get(section, {}).get(key)
        return values[-1].strip() if values else default

    def refuse(section, key, what, value):
        invalid.setdefault((section, key), "%s: [%s] %s: %s, got '%s'"
                           % (path, section, key, what, value))

    def get_bool(section, key):
        value = get(section, key, 'false')
        try:
            return _bool(value)
        except ValueError:
            refuse(section, key, 'expected a boolean (true/false, yes/no, on/off, 1/0)', value)
            return False

    try:
        enabled = _bool(get('nova_notifications', 'enabled', 'true'))
    except ValueError as e:
        return AgentConf(path, found=True, error='%s: [nova_notifications] enabled: %s'
                         % (path, e))
    topics = tuple(t.strip() for t in get('nova_notifications', 'topics',
                                          'versioned_notifications').split(',') if t.strip())
    state_path = get('DEFAULT', 'state_path', '/var/lib/nova-dt')

    # [libvirt] (config_loader.cc LoadLibvirt)
    instances_path = get('libvirt', 'instances_path', AgentConf.instances_path)
    bad = _restore_dir_error(instances_path)
    if bad:
        refuse('libvirt', 'instances_path', bad, instances_path)
    owner = {}
    for key in ('qemu_user', 'qemu_group'):
        owner[key] = get('libvirt', key, getattr(AgentConf, key))
        if not _is_owner_spec(owner[key]):
            refuse('libvirt', key, 'expected a user or group name, or +N', owner[key])

    # [peer] (LoadPeer): the TLS files go together; allow_insecure.
    peer_tls = {k: get('peer', k) for k in ('tls_cert_file', 'tls_key_file', 'tls_ca_file')}
    if any(peer_tls.values()):
        for key, value in peer_tls.items():
            if not value:
                refuse('peer', key, 'the peer TLS files go together: set tls_cert_file, '
                                    'tls_key_file and tls_ca_file, or none of them', value)
    allow_insecure = get_bool('peer', 'allow_insecure')

    # [witness] (LoadWitness)
    endpoints_text = get('witness', 'etcd_endpoints')
    endpoints, schemes = (), set()
    try:
        endpoints = tuple(agent_list(endpoints_text))
    except ValueError as e:
        refuse('witness', 'etcd_endpoints', e, endpoints_text)
    seen = set()
    for item in endpoints:
        scheme, sep, rest = item.partition('://')
        if not sep or scheme not in ('http', 'https'):
            refuse('witness', 'etcd_endpoints',
                   "expected 'http://host:port' or 'https://host:port' items", item)
            break
        bad = address_error(rest)
        if bad:
            refuse('witness', 'etcd_endpoints', bad, item)
            break
        if item in seen:
            refuse('witness', 'etcd_endpoints', 'duplicate endpoint', item)
            break
        seen.add(item)
        schemes.add(scheme)
        if len(schemes) > 1:
            refuse('witness', 'etcd_endpoints',
                   'mixes http:// and https:// endpoints: use one scheme for all', item)
            break
    allow_none = get_bool('witness', 'allow_none')
    witness_tls = {k: get('witness', k) for k in ('tls_ca_file', 'tls_cert_file', 'tls_key_file')}
    if bool(witness_tls['tls_cert_file']) != bool(witness_tls['tls_key_file']):
        missing = 'tls_cert_file' if not witness_tls['tls_cert_file'] else 'tls_key_file'
        refuse('witness', missing,
               'tls_cert_file and tls_key_file go together: set both or neither', '')
    if schemes == {'http'}:
        for key, value in witness_tls.items():
            if value:
                refuse('witness', key, 'TLS files need https:// etcd_endpoints (they are http://)',
                       value)

    return AgentConf(
        path, found=True, host=get('DEFAULT', 'host'), state_path=state_path,
        replica_path=get('replication', 'replica_path', AgentConf.replica_path),
        nova_notifications_enabled=enabled, nova_notification_topics=topics,
        notification_transport_url=(get('oslo_messaging_notifications', 'transport_url') or
                                    get('DEFAULT', 'transport_url')),
        instances_path=instances_path, qemu_user=owner['qemu_user'],
        qemu_group=owner['qemu_group'], peer_tls_cert_file=peer_tls['tls_cert_file'],
        peer_tls_key_file=peer_tls['tls_key_file'], peer_tls_ca_file=peer_tls['tls_ca_file'],
        peer_allow_insecure=allow_insecure, etcd_endpoints=endpoints,
        witness_tls_ca_file=witness_tls['tls_ca_file'],
        witness_tls_cert_file=witness_tls['tls_cert_file'],
        witness_tls_key_file=witness_tls['tls_key_file'], witness_allow_none=allow_none,
        invalid=invalid)


def _bool(text):
    """A boolean as the agent reads it (config_loader.cc ReadBool); ValueError otherwise."""
    t = text.strip().lower()
    if t in ('true', '1', 'yes', 'on'):
        return True
    if t in ('false', '0', 'no', 'off'):
        return False
    raise ValueError('not a boolean: %r' % text)


def agent_list(text):
    """A comma-separated list as the agent splits it (SplitList): items stripped, none empty."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(',')]
    if not all(items):
        raise ValueError('empty item in the comma-separated list')
    return items


_OWNER_NAME_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'
                              '0123456789._-$')


def _is_owner_spec(spec):
    """[libvirt] qemu_user / qemu_group as the agent accepts them: a name, or "+N"."""
    if len(spec) > 1 and spec[0] == '+' and spec[1:].isdigit() and spec[1:].isascii():
        return True
    return bool(spec) and spec[0] not in '-+' and set(spec) <= _OWNER_NAME_CHARS


def agent_owner_id(spec, lookup):
    """The id nova-dt-agent resolves qemu_user/qemu_group ``spec`` to, or None when it stops.

    agent/common/file_owner.cc ResolveFileOwner(): "+N" is N (below 2^32 - 1, no entry needed),
    anything else a name that must exist (getpwnam/getgrnam; ``lookup``).
    """
    if spec.startswith('+'):
        return int(spec[1:]) if spec[1:].isdigit() and int(spec[1:]) < 0xffffffff else None
    return lookup(spec)


def _restore_dir_error(path):
    """What the agent finds wrong with a restore allow-list directory (CheckRestoreDir), or ''."""
    if len(path) < 2 or not path.startswith('/') or path.endswith('/'):
        return "expected an absolute path other than / without a trailing '/'"
    if any(part in ('', '.', '..') for part in path[1:].split('/')):
        return "expected a path without empty, '.' or '..' components"
    return ''


_HOST_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._')


def address_error(address):
    """What the agent finds wrong with a dialled "host:port" / "[ipv6]:port" (CheckAddress)."""
    if address.startswith('['):
        close = address.find(']')
        if close < 0:
            return "missing ']' after the IPv6 address"
        try:
            socket.inet_pton(socket.AF_INET6, address[1:close])
        except (OSError, ValueError):
            return 'not an IPv6 address in brackets'
        if address[close + 1:close + 2] != ':':
            return "expected '[ipv6]:port'"
        port = address[close + 2:]
    else:
        host, colon, port = address.rpartition(':')
        if not colon:
            return "expected 'host:port' or '[ipv6]:port'"
        if ':' in host:
            return 'an IPv6 address must be in brackets'
        if not host:
            return 'empty host'
        if not set(host) <= _HOST_CHARS:
            return "the host may only hold letters, digits, '-', '.' and '_'"
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return 'the port must be an integer in 1..65535'
    return ''


# --- TLS material ------------------------------------------------------------------------------

def check_readable_file(host, path):
    """Raises SourceError unless ``path`` is a readable regular file; returns its bytes.

    As nova-dt-agent checks its TLS files at start (config_loader.cc CheckReadableFile(): opened
    non-blocking, so a FIFO named by mistake does not hang).
    """
    try:
        fd = os.open(host.path(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise SourceError('cannot read the file: %s' % e.strerror) from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError('not a regular file')
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b''.join(chunks)
            size += len(chunk)
            if size > MAX_TLS_FILE_BYTES:
                raise SourceError('larger than %d bytes: not a TLS file' % MAX_TLS_FILE_BYTES)
            chunks.append(chunk)
    except OSError as e:
        raise SourceError('cannot read the file: %s' % e.strerror) from e
    finally:
        os.close(fd)


def read_pem(host, path):
    """The text of a PEM file as nova-dt-agent reads its peer TLS files at start.

    check_readable_file(), then peer_tls.cc ReadPem(): it must hold a PEM block. Raises
    SourceError saying what is wrong.
    """
    data = check_readable_file(host, path)
    if b'-----BEGIN ' not in data:
        raise SourceError('holds no PEM block')
    return data.decode('ascii', errors='replace')


@dataclasses.dataclass(frozen=True)
class CertificateNames:
    """The names a certificate carries: its subjectAltName entries and its subject's CNs."""
    dns: tuple          # DNS subjectAltNames
    other_sans: tuple   # the other subjectAltName entries, as openssl prints them
    common_names: tuple


def certificate_names(host, path, openssl=None, timeout=None):
    """The names of the first certificate in ``path``, read with ``openssl x509``.

    None when openssl is not installed. Raises ToolTimeout when openssl does not finish within
    ``timeout`` seconds (default OPENSSL_TIMEOUT), SourceError when it cannot read a certificate.
    """
    binary = shutil.which(openssl or OPENSSL)
    if binary is None:
        return None
    try:
        proc = subprocess.run(
            [binary, 'x509', '-noout', '-in', host.path(path), '-ext', 'subjectAltName',
             '-subject', '-nameopt', 'sep_multiline,sname,utf8,-esc_msb'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=OPENSSL_TIMEOUT if timeout is None else timeout, check=False)
    except OSError as e:
        raise SourceError('cannot run %s: %s' % (binary, e.strerror))
    except Exception as e:
        # Under eventlet's monkey patching (nova's tests) Popen is eventlet's subclass of a
        # private copy of the subprocess module, which raises that copy's TimeoutExpired.
        if isinstance(e, subprocess.TimeoutExpired) or type(e).__name__ == 'TimeoutExpired':
            raise ToolTimeout('openssl x509 did not finish within %s s'
                              % (OPENSSL_TIMEOUT if timeout is None else timeout))
        raise
    out = proc.stdout.decode('utf-8', errors='replace')
    if proc.returncode != 0:
        err = proc.stderr.decode('utf-8', errors='replace').strip().splitlines()
        raise SourceError('openssl cannot read a certificate from it (%s)'
                          % (err[0] if err else 'exit status %d' % proc.returncode))
    return parse_certificate_names(out)


def parse_certificate_names(text):
    """CertificateNames from ``openssl x509 -noout -ext subjectAltName -subject -nameopt
    sep_multiline,sname,...`` output."""
    dns, other, cns = [], [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('X509v3 Subject Alternative Name') and i + 1 < len(lines):
            for entry in lines[i + 1].strip().split(', '):
                kind, _, value = entry.partition(':')
                if kind == 'DNS':
                    dns.append(value)
                elif entry:
                    other.append(entry)
        m = re.match(r'\s+CN=(.*)$', line)
        if m:
            cns.append(m.group(1))
    return CertificateNames(tuple(dns), tuple(other), tuple(cns))


def load_hook_ram_dir(host, path=HOOK_ENV):
    """NOVA_DT_RAM_DIR set in the libvirt hook's environment file, or None (the hook's default)."""
    text = host.read_text(path)
    value = None
    for line in (text or '').splitlines():
        m = re.match(r'\s*(?:export\s+)?NOVA_DT_RAM_DIR=(.*)$', line)
        if m:
            value = m.group(1).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
                value = value[1:-1]
    return value


# --- oslo.messaging transport URLs -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a transport URL leads, without its credentials."""
    scheme: str
    hosts: frozenset   # {(host, port)}
    vhost: str

    def __str__(self):
        hosts = ','.join('%s:%d' % ('[%s]' % h if ':' in h else h, p)
                         for h, p in sorted(self.hosts))
        return '%s://%s/%s' % (self.scheme, hosts, urllib.parse.quote(self.vhost, safe=''))


def transport_endpoint(url):
    """The Endpoint of an oslo.messaging transport URL (OPENSTACK-FACTS §6). Raises ValueError.

    ``kombu`` is ``rabbit``; the port defaults to 5672; an empty virtual host is the broker's
    default, "/".
    """
    scheme, sep, rest = url.strip().partition('://')
    if not sep or not scheme:
        raise ValueError('not a transport URL')
    scheme = scheme.lower()
    if scheme == 'kombu':
        scheme = 'rabbit'
    netloc, slash, path = rest.partition('/')
    path = path.partition('?')[0]
    hosts = set()
    for part in netloc.split(','):
        hostport = part.rpartition('@')[2]
        if hostport.startswith('['):
            host, _, after = hostport[1:].partition(']')
            port = after[1:] if after.startswith(':') else ''
        else:
            host, _, port = hostport.partition(':')
        if port and not port.isdigit():
            raise ValueError('bad port %r' % port)
        hosts.add((host.lower() or 'localhost', int(port) if port else 5672))
    vhost = urllib.parse.unquote(path) if slash else ''
    return Endpoint(scheme, frozenset(hosts), vhost or '/')
