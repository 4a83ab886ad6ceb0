"""The compute-host prerequisites of nova-dt, one check function each (docs/compute-host.md).

Each check returns a ``Result``: PASS, WARN (works now, but fragile or not verifiable from
here) or FAIL (DT servers on this host will not be protected, or cannot fail over), with the
reason and the fix. ``run()`` reads a host through ``sources`` and runs them all;
``notification_results()`` is what nova-dt-controller checks on its own nova.conf at start.

References are to Debian's python3-nova 26 (Zed) under /usr/lib/python3/dist-packages/nova.
"""

import dataclasses
import os

from oslo_config import cfg

from nova_dt.hostcheck import sources

PASS = 'PASS'
WARN = 'WARN'
FAIL = 'FAIL'
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

# Where nova-dt-agent looks for a running guest's RAM file and the libvirt hook links replica
# RAM: libvirt's default guest-RAM directory (agent/libvirt/libvirt_launcher.h
# LauncherOptions.memory_backing_dir and deploy/libvirt-hooks/qemu NOVA_DT_RAM_DIR; the
# agent's is not configurable).
AGENT_RAM_DIR = sources.LIBVIRT_DEFAULT_RAM_DIR
# The agent's default [nova_notifications] topics.
AGENT_TOPICS = ('versioned_notifications',)
# install commands in modprobe.d that make loading a module fail or do nothing.
_DISABLING_COMMANDS = {'/bin/false', '/bin/true', '/usr/bin/false', '/usr/bin/true',
                       'false', 'true'}
_VHOST_OFF_FIX = (
    "On DT hosts keep vhost_net from loading and unload it: "
    "echo 'install vhost_net /bin/false' > /etc/modprobe.d/nova-dt-vhost-net.conf; "
    "then 'modprobe -r vhost_net' once no guest holds it (lsmod: 'vhost_net ... 0'), or reboot. "
    "Guests started afterwards get userspace virtio-net.")


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    status: str
    reason: str
    fix: str = ''

    def as_dict(self):
        return dataclasses.asdict(self)


def worst(results):
    """The most severe status among results (PASS for none)."""
    return max((r.status for r in results), key=_RANK.__getitem__, default=PASS)


# --- shared file-backed guest RAM --------------------------------------------------------------

def check_file_backed_memory(nova):
    """[libvirt] file_backed_memory > 0 with virt_type kvm or qemu."""
    name = 'file_backed_memory'
    virt_type = nova.libvirt.virt_type
    mib = nova.libvirt.file_backed_memory
    if virt_type not in ('kvm', 'qemu'):
        return Result(name, FAIL,
                      "[libvirt] virt_type = %s: nova-compute refuses file_backed_memory with "
                      "anything but kvm or qemu (nova/virt/libvirt/driver.py:1096-1102), and "
                      "nova-dt needs QEMU." % virt_type,
                      "Set [libvirt] virt_type = kvm (or qemu without hardware "
                      "virtualization) in nova.conf.")
    if not mib:
        return Result(name, FAIL,
                      "[libvirt] file_backed_memory = 0: guests get anonymous RAM, which "
                      "nova-dt-agent cannot map; it refuses to protect them (\"guest RAM ... is "
                      "not shared file-backed memory\").",
                      "Set [libvirt] file_backed_memory = <MiB of guest RAM the file system of "
                      "%s can hold> in nova.conf and restart nova-compute (stop or migrate the "
                      "guests first: nova reports this value as the host's RAM to Placement)."
                      % AGENT_RAM_DIR)
    return Result(name, PASS,
                  "[libvirt] file_backed_memory = %d MiB: nova gives every guest "
                  "<memoryBacking><source type='file'/><access mode='shared'/><allocation "
                  "mode='immediate'/><discard/> (nova/virt/libvirt/driver.py:6408-6414), i.e. a "
                  "shared RAM file the agent can map; nova reports %d MiB to Placement as the "
                  "host's RAM (nova/virt/libvirt/host.py:1147-1148)." % (mib, mib))


def check_ram_allocation_ratio(nova):
    """[DEFAULT] ram_allocation_ratio exactly 1.0 (nova-compute refuses to start otherwise)."""
    name = 'ram_allocation_ratio'
    ratio = nova.ram_allocation_ratio
    fix = "Set [DEFAULT] ram_allocation_ratio = 1.0 in nova.conf explicitly."
    if ratio is None:
        return Result(name, FAIL,
                      "[DEFAULT] ram_allocation_ratio is unset (Zed's default is None, with "
                      "initial_ram_allocation_ratio 1.5): with file_backed_memory nova-compute "
                      "requires exactly 1.0 and does not start otherwise "
                      "(nova/virt/libvirt/driver.py:1107-1110; None != 1.0).", fix)
    if ratio != 1.0:
        return Result(name, FAIL,
                      "[DEFAULT] ram_allocation_ratio = %s: file-backed memory cannot be "
                      "overcommitted; nova-compute with file_backed_memory does not start "
                      "(nova/virt/libvirt/driver.py:1107-1110)." % ratio, fix)
    return Result(name, PASS, "[DEFAULT] ram_allocation_ratio = 1.0, as file_backed_memory "
                              "requires (nova/virt/libvirt/driver.py:1107-1110).")


def check_reserved_host_memory(nova):
    """[DEFAULT] reserved_host_memory_mb 0 (warned by nova), below file_backed_memory (fatal)."""
    name = 'reserved_host_memory_mb'
    reserved = nova.reserved_host_memory_mb
    mib = nova.libvirt.file_backed_memory
    fix = "Set [DEFAULT] reserved_host_memory_mb = 0 in nova.conf (the default is 512)."
    if not reserved:
        return Result(name, PASS, "[DEFAULT] reserved_host_memory_mb = 0, as nova advises "
                                  "with file_backed_memory.")
    if mib and reserved >= mib:
        return Result(name, FAIL,
                      "[DEFAULT] reserved_host_memory_mb = %d >= [libvirt] file_backed_memory = "
                      "%d: Placement would get total <= reserved; nova-compute does not start "
                      "(nova/virt/libvirt/driver.py:1112-1121)." % (reserved, mib), fix)
    return Result(name, WARN,
                  "[DEFAULT] reserved_host_memory_mb = %d: with file_backed_memory the reserve "
                  "is taken from the RAM file capacity, not from host RAM; nova-compute logs "
                  "that this will become an error (nova/virt/libvirt/driver.py:1123-1129)."
                  % reserved, fix)


def check_memory_backing_dir(nova, qemu, host):
    """libvirt's guest-RAM directory is where the agent and hook expect it, and big enough."""
    name = 'memory_backing_dir'
    where = "%s memory_backing_dir" % qemu.path
    if qemu.error:
        return Result(name, FAIL, "%s; libvirt cannot start with it either." % qemu.error,
                      "Fix the syntax of %s and restart libvirtd/virtqemud." % qemu.path)
    value = qemu.memory_backing_dir
    if value is not None and not isinstance(value, str):
        return Result(name, FAIL,
                      "%s = %r: a list (one directory per NUMA node, newer libvirt) is not "
                      "supported by nova-dt (one RAM file per guest, no NUMA cells), and "
                      "libvirt 9.0 (bookworm) refuses anything but a string." % (where, value),
                      "Remove memory_backing_dir from %s." % qemu.path)
    ram_dir = qemu.ram_dir
    if ram_dir != AGENT_RAM_DIR:
        return Result(name, FAIL,
                      "%s = %r: libvirt then puts guest RAM in %s (it appends /libvirt/qemu), "
                      "but nova-dt-agent finds a guest's RAM file and the libvirt hook links "
                      "replica RAM under %s (not configurable in the agent)."
                      % (where, value, ram_dir, AGENT_RAM_DIR),
                      "Remove memory_backing_dir from %s and mount the backing store (tmpfs or "
                      "a fast local file system) on %s instead; restart libvirtd/virtqemud."
                      % (qemu.path, AGENT_RAM_DIR))
    source = ('%s (unset: libvirt\'s default)' % where if qemu.found and value is None
              else ('%s not found: libvirt\'s default' % qemu.path if not qemu.found
                    else where))
    if not host.is_dir(ram_dir):
        return Result(name, WARN,
                      "%s; guest RAM goes to %s, which does not exist yet (libvirt creates it "
                      "when it starts)." % (source, ram_dir),
                      "Start libvirtd/virtqemud, or create %s on the intended backing store."
                      % ram_dir)
    size = host.filesystem_mib(ram_dir)
    mib = nova.libvirt.file_backed_memory
    if mib and size is not None and size < mib:
        return Result(name, WARN,
                      "%s; the file system of %s holds %d MiB, less than [libvirt] "
                      "file_backed_memory = %d MiB that nova offers to Placement: guest "
                      "starts fail once it is full (RAM files are allocated in full at start)."
                      % (source, ram_dir, size, mib),
                      "Lower [libvirt] file_backed_memory to at most %d or enlarge the file "
                      "system mounted on %s." % (size, ram_dir))
    return Result(name, PASS,
                  "%s; guest RAM files go to %s (%s MiB file system), where nova-dt-agent and "
                  "the libvirt hook expect them." % (source, ram_dir,
                                                     '?' if size is None else size))


def check_replica_path(agent, qemu, host):
    """The agent's replica_path is <guest-RAM dir>/nova-dt, on the same file system."""
    name = 'replica_path'
    want = qemu.ram_dir.rstrip('/') + '/nova-dt'
    fix = ("Set [replication] replica_path = %s in %s (and create it, owned by the agent's "
           "user)." % (want, agent.path))
    if agent.error:
        return Result(name, FAIL, agent.error, "Fix %s." % agent.path)
    if not agent.found:
        return Result(name, WARN, "%s not found: the agent's replica_path was not checked."
                      % agent.path, "Run with --agent-config PATH if the agent's config lives "
                                    "elsewhere.")
    path = agent.replica_path.rstrip('/')
    if path != want:
        return Result(name, FAIL,
                      "[replication] replica_path = %s: the backup restores a server by "
                      "hard-linking the replica RAM file to where libvirt hands QEMU its RAM; "
                      "the agent writes the hook's arm files into replica_path and the hook "
                      "(deploy/libvirt-hooks/qemu) reads them from %s, so a failover here "
                      "cannot restore." % (path, want), fix)
    ram_dev, replica_dev = host.device_of(qemu.ram_dir), host.device_of(path)
    if replica_dev is None:
        return Result(name, WARN, "[replication] replica_path = %s does not exist yet." % path,
                      "Create %s (owned by the agent's user)." % path)
    if ram_dev is not None and ram_dev != replica_dev:
        return Result(name, FAIL,
                      "[replication] replica_path = %s is another file system than %s: the "
                      "hook cannot hard-link replica RAM across file systems." % (path,
                                                                                 qemu.ram_dir),
                      "Make %s a plain directory on the file system of %s." % (path,
                                                                                qemu.ram_dir))
    return Result(name, PASS, "[replication] replica_path = %s, on the guest-RAM file system "
                              "where the libvirt hook finds replica RAM." % path)


def check_libvirt_hook(host, ram_dir, hook_path=sources.LIBVIRT_HOOK,
                       hook_env=sources.HOOK_ENV):
    """The nova-dt libvirt qemu hook is installed and looks at the guest-RAM directory."""
    name = 'libvirt_hook'
    install = ("Install deploy/libvirt-hooks/qemu as %s (mode 0755), then restart "
               "libvirtd/virtqemud (libvirt looks for hooks when it starts)." % hook_path)
    if not host.exists(hook_path):
        return Result(name, FAIL,
                      "%s is missing: a failover on this host cannot make the restored QEMU "
                      "map the replica RAM file." % hook_path, install)
    if not host.is_executable_file(hook_path):
        return Result(name, FAIL, "%s is not an executable file: libvirt does not run it."
                      % hook_path, install)
    try:
        text = host.read_text(hook_path) or ''
        configured = sources.load_hook_ram_dir(host, hook_env)
    except sources.SourceError as e:
        return Result(name, WARN, str(e), install)
    hook_dir = (configured or AGENT_RAM_DIR).rstrip('/')
    if hook_dir != ram_dir:
        return Result(name, FAIL,
                      "the hook links replica RAM under %s (%s), but libvirt puts guest RAM "
                      "under %s." % (hook_dir, ('NOVA_DT_RAM_DIR in %s' % hook_env) if configured
                                     else "its default", ram_dir),
                      "Set NOVA_DT_RAM_DIR=%s in %s, or remove it there." % (ram_dir, hook_env))
    if 'nova-dt' not in text:
        return Result(name, WARN,
                      "%s exists but is not nova-dt's hook: make sure it runs nova-dt's "
                      "(libvirt runs exactly one qemu hook script)." % hook_path,
                      "Call deploy/libvirt-hooks/qemu from %s with the same arguments and "
                      "standard input, failing when it fails." % hook_path)
    return Result(name, PASS, "%s is nova-dt's hook, linking replica RAM under %s."
                  % (hook_path, hook_dir))


def _agent_not_usable(name, agent, what):
    """The Result when the agent's config cannot be judged (unreadable, or not found), else None."""
    if agent.error:
        return Result(name, FAIL, agent.error, "Fix %s." % agent.path)
    if not agent.found:
        return Result(name, WARN, "%s not found: %s was not checked." % (agent.path, what),
                      "Run with --agent-config PATH if the agent's config lives elsewhere.")
    return None


def _refused(name, agent, refusals):
    """FAIL for values nova-dt-agent refuses at start (it exits 2 naming the first)."""
    return Result(name, FAIL, "nova-dt-agent does not start (exit 2): %s." % '; '.join(refusals),
                  "Fix the value in %s." % agent.path)


def _unreadable(name, agent, option, path, error, fix):
    """The Result for a file the agent reads at start that this check could not read.

    FAIL: the agent (root) stops on it too. WARN when only this check's own user lacks the
    permission (the agent's TLS keys are root's, 0600).
    """
    if isinstance(error.__cause__, PermissionError) and os.geteuid() != 0:
        return Result(name, WARN, "%s %s = %s: %s as uid %d: not checked (nova-dt-agent reads it "
                                  "as root)." % (agent.path, option, path, error, os.geteuid()),
                      "Run nova-dt-host-check as root.")
    return Result(name, FAIL, "%s %s = %s: %s; nova-dt-agent does not start with it (exit 2)."
                  % (agent.path, option, path, error), fix)


_QEMU_FILES_WHY = (
    "the agent gives replica images (ram.img, disk-*.raw) and the disk capture's NBD sockets to "
    "that user and group, mode 0600, in directories only that group can pass "
    "(docs/compute-host.md, \"Ownership and permissions\"): a QEMU running as anyone else cannot "
    "open them, so protection and failover of the DT servers here fail")


def check_qemu_user(agent, qemu, host):
    """The agent's [libvirt] qemu_user/qemu_group are who libvirt runs QEMU as, and exist."""
    name = 'qemu_user'
    unusable = _agent_not_usable(name, agent, "[libvirt] qemu_user / qemu_group")
    if unusable:
        return unusable
    refusals = agent.refusals('libvirt', 'qemu_user', 'qemu_group')
    if refusals:
        return _refused(name, agent, refusals)
    if qemu.error:
        return Result(name, FAIL, "%s; libvirt cannot start with it either." % qemu.error,
                      "Fix the syntax of %s and restart libvirtd/virtqemud." % qemu.path)
    # qemu.conf's user/group as libvirt takes them, and where that comes from.
    wanted = {}
    for conf_key, value, default in (('user', qemu.user, sources.LIBVIRT_DEFAULT_QEMU_USER),
                                     ('group', qemu.group, sources.LIBVIRT_DEFAULT_QEMU_GROUP)):
        if value is not None and not isinstance(value, str):
            return Result(name, FAIL,
                          "%s %s = %r: libvirt wants a string there and does not start."
                          % (qemu.path, conf_key, value),
                          "Quote the value in %s (e.g. %s = \"%s\") and restart "
                          "libvirtd/virtqemud." % (qemu.path, conf_key, default))
        if value is not None:
            wanted[conf_key] = (value, '%s %s = "%s"' % (qemu.path, conf_key, value))
        elif qemu.found:
            wanted[conf_key] = (default, "%s leaves %s unset: Debian's libvirt default"
                                % (qemu.path, conf_key))
        else:
            wanted[conf_key] = (default, "%s not found: Debian's libvirt default" % qemu.path)
    agent_fix = ("Set [libvirt] qemu_user = %s and qemu_group = %s in %s (who libvirt runs QEMU "
                 "as), and restart nova-dt-agent." % (wanted['user'][0], wanted['group'][0],
                                                      agent.path))
    where = {'user': '/etc/passwd', 'group': '/etc/group'}
    if host.root in ('', '/'):
        where = {'user': 'getpwnam', 'group': 'getgrnam'}
    said = []
    for key, what, lookup, libvirt_id in (
            ('qemu_user', 'user', host.user_id, sources.libvirt_user_id),
            ('qemu_group', 'group', host.group_id, sources.libvirt_group_id)):
        spec = getattr(agent, key)
        libvirt_spec, source = wanted[what]
        mine = sources.agent_owner_id(spec, lookup)
        if mine is None and spec.startswith('+'):
            return Result(name, FAIL, "%s [libvirt] %s = %s: a malformed numeric %s (at most "
                                      "4294967294), so nova-dt-agent does not start (exit 2)."
                          % (agent.path, key, spec, what), agent_fix)
        if mine is None:
            return Result(name, FAIL,
                          "%s [libvirt] %s = %s: no such %s on this host (%s), so nova-dt-agent "
                          "does not start (exit 2); and %s."
                          % (agent.path, key, spec, what, where[what], _QEMU_FILES_WHY),
                          agent_fix if spec != libvirt_spec else
                          "Create the %s %s (Debian's libvirt-daemon-system does), or make "
                          "[libvirt] %s and qemu.conf's %s name an existing one."
                          % (what, spec, key, what))
        theirs = libvirt_id(host, libvirt_spec)
        if theirs is None:
            return Result(name, FAIL,
                          "%s (%s %s): no such %s on this host (%s), so libvirtd/virtqemud does "
                          "not start (\"Failed to parse %s '%s'\")."
                          % (source, what, libvirt_spec, what, where[what], what, libvirt_spec),
                          "Create the %s or set %s in %s to an existing one, and restart "
                          "libvirtd/virtqemud." % (what, what, qemu.path))
        if mine != theirs:
            return Result(name, FAIL,
                          "%s [libvirt] %s = %s (%sid %d), but libvirt runs QEMU as %s %s (%sid "
                          "%d; %s): %s." % (agent.path, key, spec, what[0], mine, what,
                                            libvirt_spec, what[0], theirs, source,
                                            _QEMU_FILES_WHY),
                          agent_fix)
        said.append('%s %s (%sid %d; %s)' % (what, spec, what[0], mine, source))
    return Result(name, PASS, "nova-dt-agent gives QEMU's files to the %s libvirt runs QEMU as."
                  % ' and the '.join(said))


def check_instances_path(nova, agent):
    """The agent's [libvirt] instances_path is nova's [DEFAULT] instances_path."""
    name = 'instances_path'
    unusable = _agent_not_usable(name, agent, "[libvirt] instances_path")
    if unusable:
        return unusable
    refusals = agent.refusals('libvirt', 'instances_path')
    if refusals:
        return _refused(name, agent, refusals)
    nova_path = nova.instances_path
    fix = ("Set [libvirt] instances_path = %s in %s (nova.conf's [DEFAULT] instances_path, as "
           "libvirtd sees it), and restart nova-dt-agent." % (nova_path.rstrip('/') or '/',
                                                             agent.path))
    # nova names a server's files os.path.join(instances_path, uuid)/kernel, /ramdisk and
    # /console.log (nova/virt/libvirt/utils.py get_instance_path); the agent accepts exactly
    # <its instances_path>/<uuid>/<name> (agent/libvirt/restore_xml.cc HostFilePath).
    uuid = '00000000-0000-0000-0000-000000000000'
    if os.path.join(nova_path, uuid) != agent.instances_path + '/' + uuid:
        return Result(name, FAIL,
                      "nova.conf [DEFAULT] instances_path = %s, but %s [libvirt] instances_path "
                      "= %s: as a backup the agent accepts a server's console.log, kernel and "
                      "ramdisk only as <its instances_path>/<uuid>/..., so it refuses the "
                      "definition of every server nova keeps under %s (nova gives every server a "
                      "console.log there; \"host file ... is neither ...\"): no server can be "
                      "protected towards this host." % (nova_path, agent.path,
                                                        agent.instances_path, nova_path), fix)
    return Result(name, PASS,
                  "nova.conf [DEFAULT] instances_path = %s, as %s [libvirt] instances_path: as a "
                  "backup the agent accepts the console.log, kernel and ramdisk paths nova gives "
                  "servers." % (nova_path, agent.path))


# --- security of the peer link and the witness (docs/security.md) ------------------------------

_PEER_TLS_FIX = (
    "Make the certificates with deploy/nova-dt-make-certs DIR <host>... (one CA; per compute "
    "host a certificate naming its [DEFAULT] host), copy ca.pem and this host's .pem/.key to it "
    "(e.g. /etc/nova-dt/tls/) and set [peer] tls_ca_file, tls_cert_file and tls_key_file in %s "
    "(docs/security.md, \"Deploying securely\").")


def check_peer_tls(agent, host, openssl=None):
    """The agent serves its peer API with mutual TLS, with a certificate naming this host."""
    name = 'peer_tls'
    fix = _PEER_TLS_FIX % agent.path
    unusable = _agent_not_usable(name, agent, "the peer API's TLS")
    if unusable:
        return unusable
    refusals = agent.refusals('peer', 'tls_cert_file', 'tls_key_file', 'tls_ca_file',
                              'allow_insecure')
    if refusals:
        return _refused(name, agent, refusals)
    files = (('tls_cert_file', agent.peer_tls_cert_file), ('tls_key_file', agent.peer_tls_key_file),
             ('tls_ca_file', agent.peer_tls_ca_file))
    if not agent.peer_tls_cert_file:
        if agent.peer_allow_insecure:
            return Result(name, WARN,
                          "%s [peer] sets no TLS files and allow_insecure = true: the peer API "
                          "is served in plaintext and authenticates nobody; anyone who can "
                          "reach its listen_address and claims a [peer] peers host can stream a "
                          "domain for this host to run, or take its servers over. For an "
                          "isolated lab network only (the agent warns: INSECURE SETTING)."
                          % agent.path, fix + " Then remove allow_insecure.")
        return Result(name, FAIL,
                      "%s [peer] sets no TLS files (tls_cert_file, tls_key_file, tls_ca_file): "
                      "nova-dt-agent refuses to start (exit 2, \"[peer] has no TLS "
                      "certificates\")." % agent.path, fix)
    for key, path in files:
        try:
            sources.read_pem(host, path)
        except sources.SourceError as e:
            return _unreadable(name, agent, '[peer] ' + key, path, e, fix)
    host_name = agent.host or host.hostname
    which = ('[DEFAULT] host' if agent.host else "this machine's hostname ([DEFAULT] host unset)")
    done = ("%s [peer] tls_cert_file, tls_key_file and tls_ca_file are readable PEM files: the "
            "peer API uses mutual TLS" % agent.path)
    try:
        names = sources.certificate_names(host, agent.peer_tls_cert_file, openssl)
    except sources.ToolTimeout as e:
        return Result(name, WARN, "%s; whether the certificate names %s %s was not checked: %s."
                      % (done, which, host_name, e),
                      "Check by hand: openssl x509 -noout -ext subjectAltName -subject -in %s"
                      % agent.peer_tls_cert_file)
    except sources.SourceError as e:
        return Result(name, FAIL, "%s [peer] tls_cert_file = %s: %s." % (agent.path,
                                                                         agent.peer_tls_cert_file,
                                                                         e), fix)
    if names is None:
        return Result(name, PASS, "%s. Not checked: whether the certificate names %s %s "
                                  "(openssl is not installed)." % (done, which, host_name))
    has_sans = bool(names.dns or names.other_sans)
    if host_name in names.dns or (not has_sans and host_name in names.common_names):
        return Result(name, PASS, "%s; the certificate names %s %s (%s), as peers require."
                      % (done, which, host_name,
                         'DNS subjectAltName' if host_name in names.dns else 'CN, no SANs'))
    shown = ', '.join(['DNS:%s' % n for n in names.dns] + list(names.other_sans) +
                      ['CN=%s' % n for n in names.common_names]) or 'no name'
    if not names.dns and host_name in names.common_names:
        return Result(name, WARN,
                      "%s; the certificate's CN is %s %s, but it has subjectAltNames without "
                      "that DNS name (%s): whether peers accept the CN then depends on gRPC's "
                      "TLS library (docs/security.md names the host as DNS subjectAltName)."
                      % (done, which, host_name, shown), fix)
    return Result(name, FAIL,
                  "%s, but the certificate %s names %s, not %s %s (as DNS subjectAltName, or CN "
                  "without SANs): peers refuse this agent's hellos and streams (\"its certificate "
                  "names ...\") and this agent's own calls fail the TLS handshake, so no server "
                  "is protected to or from here." % (done, agent.peer_tls_cert_file, shown,
                                                     which, host_name), fix)


def check_witness(agent, host):
    """The etcd witness is configured, over https with client certificates."""
    name = 'witness'
    unusable = _agent_not_usable(name, agent, "the [witness]")
    if unusable:
        return unusable
    refusals = agent.refusals('witness', 'etcd_endpoints', 'tls_ca_file', 'tls_cert_file',
                              'tls_key_file', 'allow_none')
    if refusals:
        return _refused(name, agent, refusals)
    production = ("Set [witness] etcd_endpoints = https://etcd-1:2379,... with tls_cert_file and "
                  "tls_key_file (a client certificate etcd's --client-cert-auth trusts) and "
                  "tls_ca_file in %s (docs/witness.md, \"Production setting\")." % agent.path)
    endpoints = agent.etcd_endpoints
    if not endpoints:
        if agent.witness_allow_none:
            return Result(name, WARN,
                          "%s [witness] sets no etcd_endpoints and allow_none = true: automatic "
                          "failover without a witness. A primary whose backup stops answering "
                          "degrades and releases its held output; if it then dies while its "
                          "backup never heard of the degrade, the backup resumes a replica older "
                          "than what clients saw (output repeated, the disk goes back: "
                          "docs/security.md, \"Without a witness\")." % agent.path,
                          production + " Then remove allow_none.")
        return Result(name, WARN,
                      "%s [witness] sets no etcd_endpoints: automatic failover is off. A lost "
                      "primary is reported on its backup (degraded: \"automatic failover is off "
                      "without a witness\") and only an explicit failover request (the RPC "
                      "API's failover) restores the server (docs/security.md, \"Without a "
                      "witness\")." % agent.path, production)
    for key, path in (('tls_ca_file', agent.witness_tls_ca_file),
                      ('tls_cert_file', agent.witness_tls_cert_file),
                      ('tls_key_file', agent.witness_tls_key_file)):
        if not path:
            continue
        try:
            sources.check_readable_file(host, path)
        except sources.SourceError as e:
            return _unreadable(name, agent, '[witness] ' + key, path, e,
                               "Fix [witness] %s in %s." % (key, agent.path))
    shown = ', '.join(endpoints)
    if endpoints[0].startswith('http://'):
        return Result(name, WARN,
                      "%s [witness] etcd_endpoints = %s: plain http, so anyone who can reach "
                      "etcd can write the ownership and fencing keys, i.e. make two copies of a "
                      "server run or none; http:// is for tests and labs." % (agent.path, shown),
                      production)
    if not agent.witness_tls_cert_file:
        return Result(name, WARN,
                      "%s [witness] etcd_endpoints = %s over https, but without a client "
                      "certificate (tls_cert_file, tls_key_file): etcd then cannot require one "
                      "(--client-cert-auth), so any client it lets in can write the fencing keys."
                      % (agent.path, shown), production)
    return Result(name, PASS,
                  "%s [witness] etcd_endpoints = %s over https with a client certificate (%s): "
                  "failover is fenced by the witness." % (agent.path, shown,
                                                         agent.witness_tls_cert_file))


# --- userspace virtio-net (vhost off) ----------------------------------------------------------

def check_vhost_net(nova, host):
    """Guests' virtio NICs use QEMU's userspace virtio-net, not vhost-net."""
    name = 'vhost_net'
    virt_type = nova.libvirt.virt_type
    if virt_type == 'qemu':
        return Result(name, PASS,
                      "[libvirt] virt_type = qemu: nova writes <driver name='qemu'/> on virtio "
                      "NICs (nova/virt/libvirt/vif.py:217-220) and libvirt opens vhost-net only "
                      "for KVM domains, so NICs are userspace virtio-net.")
    if virt_type != 'kvm':
        return Result(name, WARN, "[libvirt] virt_type = %s: not checked (nova-dt needs kvm "
                                  "or qemu)." % virt_type)
    why = ("with virt_type kvm nova leaves a virtio NIC's <driver> unset "
           "(nova/virt/libvirt/vif.py:217-232) and libvirt then gives it vhost-net whenever it "
           "can open %s (qemuInterfaceOpenVhostNet); QEMU refuses the filter-buffer objects "
           "of nova-dt's output commit on vhost NICs (\"Vhost is not supported\")"
           % sources.DEV_VHOST_NET)
    state = host.module_state('vhost_net')
    if state == 'builtin':
        return Result(name, FAIL, "vhost_net is built into the kernel: %s." % why,
                      "Use a kernel with CONFIG_VHOST_NET=m (Debian's), or remove %s at boot "
                      "(systemd-tmpfiles: 'r %s')." % (sources.DEV_VHOST_NET,
                                                       sources.DEV_VHOST_NET))
    if state == 'loaded':
        return Result(name, FAIL, "the vhost_net module is loaded: %s." % why, _VHOST_OFF_FIX)
    rules = host.modprobe_rules('vhost_net')
    installs = [r for r in rules if r.kind == 'install']
    blacklists = [r for r in rules if r.kind == 'blacklist']
    unknown = " (module state unknown: %s unreadable)" % sources.PROC_MODULES if state is None \
        else ''
    if installs:
        rule = installs[0]
        if rule.command.split()[:1] and rule.command.split()[0] in _DISABLING_COMMANDS:
            status = WARN if state is None else PASS
            return Result(name, status,
                          "vhost_net is not loaded%s and cannot be (%s: install vhost_net %s), "
                          "so libvirt falls back to userspace virtio-net for every guest."
                          % (unknown, rule.file, rule.command),
                          '' if status == PASS else "Check 'lsmod | grep vhost_net' by hand.")
        return Result(name, WARN,
                      "%s: install vhost_net %s: cannot tell whether that command loads the "
                      "module; %s." % (rule.file, rule.command, why), _VHOST_OFF_FIX)
    if blacklists:
        return Result(name, WARN,
                      "vhost_net is not loaded%s; %s blacklists it, which stops the automatic "
                      "load when libvirt opens %s but not an explicit 'modprobe vhost_net' "
                      "(e.g. from modules-load.d or a qemu-kvm start script); %s."
                      % (unknown, blacklists[0].file, sources.DEV_VHOST_NET, why), _VHOST_OFF_FIX)
    if host.exists(sources.DEV_VHOST_NET):
        return Result(name, FAIL,
                      "vhost_net is not loaded%s, but %s exists and nothing stops the kernel "
                      "from loading the module on its first open: %s."
                      % (unknown, sources.DEV_VHOST_NET, why), _VHOST_OFF_FIX)
    return Result(name, WARN,
                  "vhost_net is not loaded%s and %s is absent, but nothing in modprobe.d keeps "
                  "it from being loaded later: %s." % (unknown, sources.DEV_VHOST_NET, why),
                  _VHOST_OFF_FIX)


def check_vif_queue_size(nova):
    """[libvirt] rx_queue_size unset with kvm: nova would force <driver name='vhost'/>."""
    name = 'vif_rx_queue_size'
    size = nova.libvirt.rx_queue_size
    if size and nova.libvirt.virt_type == 'kvm':
        return Result(name, FAIL,
                      "[libvirt] rx_queue_size = %d: with virt_type kvm nova then writes "
                      "<driver name='vhost' rx_queue_size=.../> on every virtio NIC "
                      "(nova/virt/libvirt/vif.py:234-243): with vhost-net disabled libvirt "
                      "refuses to start the guest (\"vhost-net was requested for an interface, "
                      "but is unavailable\"), with it enabled QEMU refuses nova-dt's "
                      "filter-buffer." % size,
                      "Unset [libvirt] rx_queue_size in nova.conf.")
    return Result(name, PASS,
                  "[libvirt] rx_queue_size %s does not force vhost-net. Not visible here: DT "
                  "flavors and their images must not enable multiqueue "
                  "(hw:vif_multiqueue_enabled / hw_vif_multiqueue_enabled), which also makes "
                  "nova write <driver name='vhost' queues=N/> (vif.py:256-274) and which "
                  "QEMU's filter-buffer refuses (\"multiqueue is not supported\")."
                  % ('unset' if not size else '= %d (virt_type %s)' % (size,
                                                                      nova.libvirt.virt_type)))


# --- versioned notifications -------------------------------------------------------------------

def check_notification_format(nova):
    """[notifications] notification_format versioned or both."""
    name = 'notification_format'
    fmt = nova.notifications.notification_format
    if fmt in ('versioned', 'both'):
        return Result(name, PASS,
                      "[notifications] notification_format = %s: nova sends versioned "
                      "notifications (nova/rpc.py:77-91)." % fmt)
    return Result(name, FAIL,
                  "[notifications] notification_format = %s (the default): nova's versioned "
                  "notifier gets the noop driver (nova/rpc.py:72-76), so nova-dt-agent and "
                  "nova-dt-controller never see instance.create.end and the other instance.* "
                  "events." % fmt,
                  "Set [notifications] notification_format = versioned (or both, if "
                  "something still consumes the legacy notifications) in the nova.conf of "
                  "every nova service, and restart them.")


def check_notification_driver(nova):
    """[oslo_messaging_notifications] driver includes messagingv2 (or messaging)."""
    name = 'notification_driver'
    drivers = [d.strip() for d in nova.oslo_messaging_notifications.driver if d.strip()]
    fix = ("Set [oslo_messaging_notifications] driver = messagingv2 in the nova.conf of every "
           "nova service, and restart them.")
    if 'messagingv2' in drivers:
        return Result(name, PASS, "[oslo_messaging_notifications] driver = %s: notifications "
                                  "go to the message bus." % ', '.join(drivers))
    if 'messaging' in drivers:
        return Result(name, PASS,
                      "[oslo_messaging_notifications] driver = %s: notifications go to the bus "
                      "in oslo's 1.0 format (no envelope), which the agent and the controller "
                      "also read; messagingv2 is the usual choice." % ', '.join(drivers))
    if 'routing' in drivers:
        return Result(name, WARN,
                      "[oslo_messaging_notifications] driver = %s: the routing driver sends "
                      "where its routing_config says; not checked." % ', '.join(drivers), fix)
    return Result(name, FAIL,
                  "[oslo_messaging_notifications] driver = %s: nothing reaches the message bus "
                  "(oslo.messaging's default is none)." % (', '.join(drivers) or '(empty)'), fix)


def check_notification_topics(nova, agent):
    """nova's versioned_notifications_topics include every topic nova-dt-agent binds."""
    name = 'notification_topics'
    topics = list(nova.notifications.versioned_notifications_topics)
    if agent.error:
        return Result(name, FAIL, agent.error, "Fix %s." % agent.path)
    agent_topics = agent.nova_notification_topics if agent.found else AGENT_TOPICS
    source = ('%s [nova_notifications] topics' % agent.path if agent.found
              else "the agent's default topics (%s not found)" % agent.path)
    missing = [t for t in agent_topics if t not in topics]
    if missing:
        return Result(name, FAIL,
                      "[notifications] versioned_notifications_topics = %s, but nova-dt-agent "
                      "binds %s (%s) on exchange nova: it receives nothing on %s."
                      % (', '.join(topics), ', '.join('%s.info/.error' % t for t in agent_topics),
                         source, ', '.join(missing)),
                      "Make %s [nova_notifications] topics a subset of nova's "
                      "versioned_notifications_topics (default: versioned_notifications)."
                      % agent.path)
    if agent.found and not agent.nova_notifications_enabled:
        return Result(name, WARN,
                      "%s [nova_notifications] enabled = false: the agent does not consume "
                      "nova's notifications; only nova-dt-controller's protect casts start "
                      "protection." % agent.path,
                      "Set [nova_notifications] enabled = true in %s unless that is intended."
                      % agent.path)
    return Result(name, PASS,
                  "nova publishes versioned notifications on %s; nova-dt-agent binds %s (%s)."
                  % (', '.join(topics), ', '.join(agent_topics), source))


def check_notification_transport(nova, agent):
    """nova's notification bus is the one nova-dt-agent consumes from."""
    name = 'notification_transport'
    url = nova.oslo_messaging_notifications.transport_url or nova.transport_url
    label = ('[oslo_messaging_notifications] transport_url'
             if nova.oslo_messaging_notifications.transport_url else '[DEFAULT] transport_url')
    if not url:
        return Result(name, FAIL, "nova.conf sets no transport_url: nova has no message bus.",
                      "Set [DEFAULT] transport_url (and, for a separate notification bus, "
                      "[oslo_messaging_notifications] transport_url) in nova.conf.")
    try:
        ours = sources.transport_endpoint(url)
    except ValueError as e:
        return Result(name, FAIL, "nova.conf %s is malformed: %s." % (label, e),
                      "Fix %s in nova.conf." % label)
    if ours.scheme != 'rabbit':
        return Result(name, FAIL, "nova.conf %s uses %s://; nova-dt-agent speaks RabbitMQ "
                                  "(rabbit://) only." % (label, ours.scheme),
                      "Send nova's notifications to RabbitMQ.")
    if agent.error:
        return Result(name, FAIL, agent.error, "Fix %s." % agent.path)
    if not agent.found:
        return Result(name, WARN, "nova notifies on %s (%s); %s not found, so the agent's bus "
                                  "was not compared." % (ours, label, agent.path),
                      "Run with --agent-config PATH if the agent's config lives elsewhere.")
    agent_fix = ("Set [oslo_messaging_notifications] transport_url in %s to the bus of nova's "
                 "%s." % (agent.path, label))
    if not agent.notification_transport_url:
        return Result(name, FAIL, "%s sets no transport_url: the agent runs without the bus "
                                  "and sees none of nova's notifications." % agent.path,
                      agent_fix)
    try:
        theirs = sources.transport_endpoint(agent.notification_transport_url)
    except ValueError as e:
        return Result(name, FAIL, "%s: notification transport_url is malformed: %s."
                      % (agent.path, e), agent_fix)
    if (theirs.hosts, theirs.vhost) != (ours.hosts, ours.vhost):
        return Result(name, WARN,
                      "nova notifies on %s (%s) but the agent consumes from %s: unless these "
                      "name the same broker and virtual host, the agent sees none of nova's "
                      "notifications." % (ours, label, theirs), agent_fix)
    return Result(name, PASS, "nova notifies on %s (%s), where nova-dt-agent consumes."
                  % (ours, label))


# --- running them ------------------------------------------------------------------------------

def _guarded(name, check, *args):
    """Runs one check; a nova.conf value nova would refuse becomes that check's FAIL."""
    try:
        return check(*args)
    except (cfg.Error, ValueError) as e:
        return Result(name, FAIL, "nova.conf: %s (nova would refuse this value too)." % e,
                      "Fix the value in nova.conf.")


@dataclasses.dataclass
class Report:
    results: list
    sources: dict

    @property
    def status(self):
        return worst(self.results)

    def as_dict(self):
        counts = {s: sum(1 for r in self.results if r.status == s) for s in (PASS, WARN, FAIL)}
        return {'result': self.status, 'summary': counts, 'sources': self.sources,
                'checks': [r.as_dict() for r in self.results]}


def run(host=None, nova_config_files=None, nova_config_dirs=None,
        qemu_conf=sources.QEMU_CONF, agent_conf=sources.AGENT_CONF,
        libvirt_hook=sources.LIBVIRT_HOOK, hook_env=sources.HOOK_ENV):
    """Reads the host and runs every check. Never raises for what it reads."""
    host = host or sources.Host()
    results = []
    try:
        nova_config = sources.load_nova_config(host, nova_config_files, nova_config_dirs)
        nova = nova_config.conf
    except sources.SourceError as e:
        nova_config, nova = None, None
        results.append(Result('nova_config', FAIL,
                              "%s; the checks of nova.conf settings were skipped." % e,
                              "Run on the compute host (as root), or pass --config-file for "
                              "each file nova-compute reads."))
    qemu = sources.load_qemu_conf(host, qemu_conf)
    agent = sources.load_agent_conf(host, agent_conf)
    if nova is not None:
        results += [
            _guarded('file_backed_memory', check_file_backed_memory, nova),
            _guarded('ram_allocation_ratio', check_ram_allocation_ratio, nova),
            _guarded('reserved_host_memory_mb', check_reserved_host_memory, nova),
            _guarded('memory_backing_dir', check_memory_backing_dir, nova, qemu, host),
        ]
    results += [
        check_replica_path(agent, qemu, host),
        check_libvirt_hook(host, qemu.ram_dir, libvirt_hook, hook_env),
        check_qemu_user(agent, qemu, host),
    ]
    if nova is not None:
        results += [
            _guarded('instances_path', check_instances_path, nova, agent),
            _guarded('vhost_net', check_vhost_net, nova, host),
            _guarded('vif_rx_queue_size', check_vif_queue_size, nova),
            _guarded('notification_format', check_notification_format, nova),
            _guarded('notification_driver', check_notification_driver, nova),
            _guarded('notification_topics', check_notification_topics, nova, agent),
            _guarded('notification_transport', check_notification_transport, nova, agent),
        ]
    results += [
        check_peer_tls(agent, host),
        check_witness(agent, host),
    ]
    return Report(results, {
        'nova_config': nova_config.files if nova_config else [],
        'qemu_conf': qemu.path + ('' if qemu.found else ' (not found)'),
        'agent_config': agent.path + ('' if agent.found else ' (not found)'),
        'root': host.root,
    })


def notification_results(conf):
    """The notification checks that make sense on any nova.conf (nova-dt-controller's)."""
    return [_guarded('notification_format', check_notification_format, conf),
            _guarded('notification_driver', check_notification_driver, conf)]


def log_notification_warnings(conf, log):
    """Logs a warning for each notification prerequisite ``conf`` (a nova.conf) lacks."""
    for result in notification_results(conf):
        if result.status != PASS:
            log.warning("nova.conf seen by this service: %(reason)s Fix: %(fix)s "
                        "(docs/compute-host.md)",
                        {'reason': result.reason, 'fix': result.fix})
