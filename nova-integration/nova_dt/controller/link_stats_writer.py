"""Builds ``[nova_dt] link_stats_file`` from the agents' ``dt.link.stats`` notifications.

Every agent publishes, every ``[peer] link_stats_interval_s`` seconds, the replication links it
sends on (agent/core/link_stats.h): per backup host the round-trip time of its peer hello, the
replication rate of the last interval and the capacity its operator configured::

    {"nova_object.name": "DTLinkStatsPayload", "nova_object.namespace": "nova_dt",
     "nova_object.version": "1.0",
     "nova_object.data": {"host": "compute-1",
                          "links": [{"source": "compute-1", "target": "compute-2",
                                     "rtt_us": 420, "rate_bytes_per_s": 1500000,
                                     "capacity_bytes_per_s": 1250000000}]}}

The collector keeps the newest report of each agent host, forgets a host whose report is older
than ``[nova_dt] link_stats_max_age`` (an agent that stopped reporting), and rewrites the file
DTPairWeigher reads (nova_dt/scheduler/link_stats.py has the format) atomically: a temporary
file in the same directory, fsync, rename. A link whose RTT the agent could not measure (-1:
it never greeted that backup) is left out; the weigher would have to guess it.

The file is local to the host the controller runs on: run the controller where nova-scheduler
runs, or put the file on storage both see. Each controller host listens in its own pool, so
every one of them sees every report.
"""

import json
import os
import tempfile
import threading
import time

from oslo_log import log as logging

from nova_dt.controller import planner
from nova_dt.scheduler import link_stats

LOG = logging.getLogger(__name__)

EVENT_TYPE = 'dt.link.stats'


def read_report(payload):
    """(host, [link dict]) from a dt.link.stats payload.

    :raises planner.BadEvent: not a payload an agent sends.
    """
    data = planner._data(payload, EVENT_TYPE)
    host = planner._string(data, 'host', EVENT_TYPE)
    links = data.get('links')
    if not isinstance(links, list):
        raise planner.BadEvent('%s payload: links must be a list' % EVENT_TYPE)
    out = []
    for link in links:
        if not isinstance(link, dict) or link.get('source') != host:
            raise planner.BadEvent('%s payload from %s: every link must be an object whose '
                                   'source is the reporting host' % (EVENT_TYPE, host))
        target = link.get('target')
        if not isinstance(target, str) or not target:
            raise planner.BadEvent('%s payload from %s: link target must be a non-empty '
                                   'string' % (EVENT_TYPE, host))
        for key in ('rtt_us', 'rate_bytes_per_s', 'capacity_bytes_per_s'):
            value = link.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise planner.BadEvent('%s payload from %s: %s of the link to %s must be an '
                                       'integer' % (EVENT_TYPE, host, key, target))
        if link['rate_bytes_per_s'] < 0 or link['capacity_bytes_per_s'] <= 0:
            raise planner.BadEvent('%s payload from %s: negative rate or non-positive '
                                   'capacity for the link to %s' % (EVENT_TYPE, host, target))
        out.append({'source': host, 'target': target, 'rtt_us': link['rtt_us'],
                    'rate_bytes_per_s': link['rate_bytes_per_s'],
                    'capacity_bytes_per_s': link['capacity_bytes_per_s']})
    return host, out


class LinkStatsCollector(object):
    """Newest report per agent host, written to ``path`` after each report. Thread-safe.

    ``path``'s directory is made (0755: the scheduler reads the file) when it does not exist yet,
    as the controller makes its ``state_dir``; a directory that cannot be made raises OSError
    here, at start, rather than with every report.
    """

    def __init__(self, path, max_age=0, clock=time.time):
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
        self.path = path
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._reports = {}  # host -> (received at, [link dict])

    def handle(self, event_type, payload):
        """Take one agent notification; anything but dt.link.stats is ignored.

        :raises planner.BadEvent: a dt.link.stats payload that cannot be read (nothing changes).
        """
        if event_type != EVENT_TYPE:
            return
        host, links = read_report(payload)
        with self._lock:
            self._reports[host] = (self._clock(), links)
            self._write_locked()

    def document(self):
        """The file's content now (after dropping stale reports)."""
        with self._lock:
            self._expire_locked()
            return self._document_locked()

    def _expire_locked(self):
        if not self.max_age:
            return
        now = self._clock()
        for host in [h for h, (at, _) in self._reports.items() if now - at > self.max_age]:
            LOG.info("Link stats of %s are older than %d s: dropped", host, self.max_age)
            del self._reports[host]

    def _document_locked(self):
        links = [link for host in sorted(self._reports)
                 for link in self._reports[host][1] if link['rtt_us'] >= 0]
        return {'version': link_stats.FORMAT_VERSION, 'links': links}

    def _write_locked(self):
        self._expire_locked()
        text = json.dumps(self._document_locked(), sort_keys=True)
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix='.link-stats-', dir=directory)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
