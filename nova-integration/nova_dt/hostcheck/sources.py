"""What the compute-host checks read: configuration files and kernel state, every path injectable.

Every host path goes through ``Host.path()``, which prefixes ``Host.root`` ("/" in production; a
temporary directory in tests, or a container's view of the host), so nothing here is bound to the
real /etc, /proc or /dev.

nova.conf is read with **oslo.config and nova's own option definitions** (``nova.conf.libvirt``,
``nova.conf.compute``, ``nova.conf.notifications`` and oslo.messaging's options) on a private
``ConfigOpts``: the same file and directory precedence, deprecated names (e.g. ``[DEFAULT]
notification_driver``), types, bounds and defaults that nova-compute itself applies. A value
nova-compute would refuse fails the check that reads it. configparser would get each of these
wrong.
"""

import copy
import dataclasses
import os
import re
import urllib.parse

from oslo_config import cfg

# libvirt's guest-RAM directory when qemu.conf does not set memory_backing_dir (privileged
# driver: "<libDir>/ram" with libDir /var/lib/libvirt/qemu; libvirt src/qemu/qemu_conf.c
# virQEMUDriverConfigNew). A memory_backing_dir set in qemu.conf becomes "<value>/libvirt/qemu"
# (virQEMUDriverConfigLoadMemoryEntry).
LIBVIRT_DEFAULT_RAM_DIR = '/var/lib/libvirt/qemu/ram'

NOVA_CONFIG_FILES = ('/etc/nova/nova.conf', '/etc/nova/nova-compute.conf')
NOVA_CONFIG_DIRS = ('/etc/nova/nova.conf.d',)
QEMU_CONF = '/etc/libvirt/qemu.conf'
AGENT_CONF = '/etc/nova-dt/nova-dt-agent.conf'
LIBVIRT_HOOK = '/etc/libvirt/hooks/qemu'
HOOK_ENV = '/etc/nova-dt/hook.env'
DEV_VHOST_NET = '/dev/vhost-net'
PROC_MODULES = '/proc/modules'
OSRELEASE = '/proc/sys/kernel/osrelease'
MODULES_DIR = '/lib/modules'
# kmod's search order; a file name found in an earlier directory hides the same name later.
MODPROBE_DIRS = ('/etc/modprobe.d', '/run/modprobe.d', '/usr/local/lib/modprobe.d',
                 '/lib/modprobe.d', '/usr/lib/modprobe.d')


class SourceError(Exception):
    """A configuration file that exists but cannot be read or parsed."""


class Host(object):
    """The compute host's file system as the checks see it, under ``root``."""

    def __init__(self, root='/', kernel_release=None):
        self.root = root
        self._kernel_release = kernel_release

    @property
    def kernel_release(self):
        """The running kernel's release, read under ``root`` (/proc/sys/kernel/osrelease)."""
        if self._kernel_release is None:
            try:
                text = self.read_text(OSRELEASE)
            except SourceError:
                text = None
            self._kernel_release = (text or '').strip() or os.uname().release
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
    import oslo_messaging.opts

    conf.register_opts(copy.deepcopy(nova.conf.libvirt.ALL_OPTS), group='libvirt')
    conf.register_opts(copy.deepcopy(nova.conf.compute.ALL_OPTS))
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
        result.memory_backing_dir = parse_virconf(text).get('memory_backing_dir')
    except ValueError as e:
        result.error = 'cannot parse %s: %s' % (path, e)
    return result


# --- the nova-dt agent's configuration ---------------------------------------------------------

@dataclasses.dataclass
class AgentConf:
    """What the checks need from nova-dt-agent.conf, with the agent's defaults."""
    path: str
    found: bool = False
    error: str = ''
    state_path: str = '/var/lib/nova-dt'
    # The agent's default (agent/config/config.h), where the libvirt hook looks.
    replica_path: str = '/var/lib/libvirt/qemu/ram/nova-dt'
    nova_notifications_enabled: bool = True
    nova_notification_topics: tuple = ('versioned_notifications',)
    notification_transport_url: str = ''


def load_agent_conf(host, path=AGENT_CONF):
    """nova-dt-agent.conf (oslo.config's INI parser, as the agent mirrors it)."""
    sections = {}
    try:
        if host.read_text(path) is None:
            return AgentConf(path)
        cfg.ConfigParser(host.path(path), sections).parse()
    except (SourceError, cfg.ParseError, OSError) as e:
        return AgentConf(path, found=True, error='cannot read %s: %s' % (path, e))

    def get(section, key, default=''):
        values = sections.get(section, {}).get(key)
        return values[-1].strip() if values else default

    try:
        enabled = _bool(get('nova_notifications', 'enabled', 'true'))
    except ValueError as e:
        return AgentConf(path, found=True, error='%s: [nova_notifications] enabled: %s'
                         % (path, e))
    topics = tuple(t.strip() for t in get('nova_notifications', 'topics',
                                          'versioned_notifications').split(',') if t.strip())
    state_path = get('DEFAULT', 'state_path', '/var/lib/nova-dt')
    return AgentConf(
        path, found=True, state_path=state_path,
        replica_path=get('replication', 'replica_path', AgentConf.replica_path),
        nova_notifications_enabled=enabled, nova_notification_topics=topics,
        notification_transport_url=(get('oslo_messaging_notifications', 'transport_url') or
                                    get('DEFAULT', 'transport_url')))


def _bool(text):
    t = text.strip().lower()
    if t in ('1', 't', 'true', 'on', 'y', 'yes'):
        return True
    if t in ('0', 'f', 'false', 'off', 'n', 'no'):
        return False
    raise ValueError('not a boolean: %r' % text)


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
