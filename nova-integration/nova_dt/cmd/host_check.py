"""nova-dt-host-check: are this compute host's prerequisites for nova-dt in place?

Run on each compute host (as root, to read nova.conf and libvirt's qemu.conf)::

    nova-dt-host-check                                   # /etc/nova/nova.conf (+ nova-compute.conf)
    nova-dt-host-check --config-file /etc/nova/nova.conf --config-dir /etc/nova/nova.conf.d
    nova-dt-host-check --format json                     # for automation

Prints one line per check (PASS, WARN or FAIL, the reason and the fix; docs/compute-host.md).
Exit status: 0 when no check FAILs (warnings allowed), 1 when one does, 2 on bad usage.

Not built on oslo.upgradecheck: its runner exits 1 on warnings and 2 on failures, is invoked as
``<cmd> upgrade check``, and its results have no field for the fix; the checks here are plain
functions (nova_dt.hostcheck.checks) that nova-dt-controller reuses.
"""

import argparse
import json
import sys
import textwrap

from nova_dt.hostcheck import checks
from nova_dt.hostcheck import sources

WIDTH = 100
_NAME_WIDTH = 24
_STATUS_WIDTH = 6


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog='nova-dt-host-check',
        description="Check a compute host's prerequisites for nova-dt: shared file-backed "
                    "guest RAM, userspace virtio-net (vhost off), versioned notifications.")
    p.add_argument('--config-file', action='append', metavar='PATH',
                   help="a nova.conf file nova-compute reads; repeatable, later files win "
                        "(default: %s, and %s when present)" % sources.NOVA_CONFIG_FILES)
    p.add_argument('--config-dir', action='append', metavar='DIR',
                   help="a directory of *.conf files read after the files; repeatable "
                        "(default: %s when present)" % sources.NOVA_CONFIG_DIRS)
    p.add_argument('--qemu-conf', default=sources.QEMU_CONF, metavar='PATH',
                   help="libvirt's qemu.conf (default: %(default)s)")
    p.add_argument('--agent-config', default=sources.AGENT_CONF, metavar='PATH',
                   help="nova-dt-agent's config (default: %(default)s)")
    p.add_argument('--libvirt-hook', default=sources.LIBVIRT_HOOK, metavar='PATH',
                   help="libvirt's qemu hook script (default: %(default)s)")
    p.add_argument('--hook-env', default=sources.HOOK_ENV, metavar='PATH',
                   help="the nova-dt hook's environment file (default: %(default)s)")
    p.add_argument('--root', default='/', metavar='DIR',
                   help="where the host's file system is seen, e.g. /host in a container: "
                        "every path above (given or default), /proc, /dev, /lib/modules and "
                        "modprobe.d are read under it (default: /)")
    p.add_argument('--format', choices=('table', 'json'), default='table',
                   help="output format (default: %(default)s)")
    return p.parse_args(argv)


def render_table(report):
    lines = ['nova-dt compute host check']
    src = report.sources
    lines.append('  nova.conf: %s' % (', '.join(src['nova_config']) or '(not read)'))
    lines.append('  qemu.conf: %s' % src['qemu_conf'])
    lines.append('  agent:     %s' % src['agent_config'])
    if src['root'] not in ('', '/'):
        lines.append('  root:      %s' % src['root'])
    lines.append('')
    indent = ' ' * (_NAME_WIDTH + _STATUS_WIDTH + 2)
    lines.append('%-*s %-*s %s' % (_NAME_WIDTH, 'CHECK', _STATUS_WIDTH, 'RESULT', 'REASON / FIX'))
    for r in report.results:
        head = '%-*s %-*s ' % (_NAME_WIDTH, r.name, _STATUS_WIDTH, r.status)
        lines += textwrap.wrap(r.reason, WIDTH, initial_indent=head, subsequent_indent=indent,
                               break_on_hyphens=False)
        if r.fix:
            lines += textwrap.wrap('Fix: ' + r.fix, WIDTH, initial_indent=indent,
                                   subsequent_indent=indent + '     ',
                                   break_on_hyphens=False)
    counts = report.as_dict()['summary']
    lines.append('')
    lines.append('Result: %s (%d PASS, %d WARN, %d FAIL)' % (
        report.status, counts[checks.PASS], counts[checks.WARN], counts[checks.FAIL]))
    return '\n'.join(lines) + '\n'


def main(argv=None, stdout=None, host=None):
    """Runs the checks; returns the exit status. ``host`` overrides ``--root`` (tests)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stdout = stdout or sys.stdout
    host = host or sources.Host(args.root)
    report = checks.run(host, nova_config_files=args.config_file,
                        nova_config_dirs=args.config_dir, qemu_conf=args.qemu_conf,
                        agent_conf=args.agent_config, libvirt_hook=args.libvirt_hook,
                        hook_env=args.hook_env)
    if args.format == 'json':
        stdout.write(json.dumps(report.as_dict(), indent=2) + '\n')
    else:
        stdout.write(render_table(report))
    return 1 if report.status == checks.FAIL else 0


if __name__ == '__main__':
    sys.exit(main())
