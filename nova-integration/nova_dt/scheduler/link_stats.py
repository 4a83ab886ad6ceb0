"""Replication link figures per host pair, for DTPairWeigher.

The agents measure their peer links (round-trip time of the peer hello, bytes per second sent on
each pair's replication stream); the nova-dt controller collects them and writes one JSON file,
``[nova_dt] link_stats_file``, replacing it atomically (write a temp file, rename)::

    {"version": 1,
     "links": [
       {"source": "compute-1", "target": "compute-2",
        "rtt_us": 850, "rate_bytes_per_s": 12000000, "capacity_bytes_per_s": 1250000000}]}

``source`` and ``target`` are nova compute host names (``HostState.host``); a link is directed,
primary (source, the sender of replication) to backup (target). ``rtt_us`` (>= 0) is required;
``rate_bytes_per_s`` (>= 0, default 0: no replication on the link) and ``capacity_bytes_per_s``
(> 0, default ``[nova_dt] default_link_capacity``) are optional. Unknown keys are ignored, so the
format can grow. A missing, unreadable, malformed or stale file (``link_stats_max_age``) reads as
no data, and a malformed entry is skipped; both are logged once per file version.
"""

import abc
import collections
import json
import math
import os
import time

from oslo_log import log as logging

import nova.conf

from nova_dt import conf as dt_conf

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
dt_conf.register_opts(CONF)

FORMAT_VERSION = 1

LinkStats = collections.namedtuple(
    'LinkStats', ['rtt_us', 'rate_bytes_per_s', 'capacity_bytes_per_s'])
LinkStats.__doc__ = """One directed link: RTT (us), replication rate and capacity (bytes/s)."""


class LinkStatsProvider(metaclass=abc.ABCMeta):
    """Source of replication link figures; implementations must not raise on missing data."""

    @abc.abstractmethod
    def links(self):
        """All known links, read-only: dict of source host to dict of target host to LinkStats."""


class NoLinkStats(LinkStatsProvider):
    """No figures at all (``link_stats_file`` unset)."""

    def links(self):
        return {}


class JSONFileLinkStats(LinkStatsProvider):
    """Figures from the controller's JSON file, re-read when the file changes."""

    def __init__(self, path, max_age=0, default_capacity=1.0, clock=time.time):
        self.path = path
        self.max_age = max_age
        self.default_capacity = default_capacity
        self._clock = clock
        self._version = None
        self._links = {}
        self._stale_warned = None

    def links(self):
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._reset(('missing', str(e)), "Link stats file %(path)s unusable: %(err)s",
                        {'path': self.path, 'err': e})
            return {}
        version = (st.st_mtime_ns, st.st_size, st.st_ino)
        if version != self._version:
            self._load(version)
        if self.max_age and self._clock() - st.st_mtime > self.max_age:
            if self._stale_warned != version:
                self._stale_warned = version
                LOG.warning("Link stats file %(path)s is older than %(age)d s; ignored until "
                            "it is rewritten", {'path': self.path, 'age': self.max_age})
            return {}
        return self._links

    def _reset(self, version, msg, args):
        if version != self._version:
            LOG.warning(msg, args)
        self._version = version
        self._links = {}

    def _load(self, version):
        try:
            with open(self.path, encoding='utf-8') as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            self._reset(version, "Link stats file %(path)s unusable: %(err)s",
                        {'path': self.path, 'err': e})
            return
        if (not isinstance(doc, dict) or doc.get('version') != FORMAT_VERSION or
                not isinstance(doc.get('links'), list)):
            self._reset(version, "Link stats file %(path)s unusable: not a version %(v)d "
                        "document with a 'links' list", {'path': self.path, 'v': FORMAT_VERSION})
            return
        links = {}
        skipped = 0
        for entry in doc['links']:
            parsed = self._parse_entry(entry)
            if parsed is None:
                skipped += 1
                continue
            source, target, stats = parsed
            links.setdefault(source, {})[target] = stats
        if skipped:
            LOG.warning("Link stats file %(path)s: skipped %(n)d malformed link entries",
                        {'path': self.path, 'n': skipped})
        LOG.debug("Loaded %(n)d links from %(path)s",
                  {'n': sum(len(v) for v in links.values()), 'path': self.path})
        self._version = version
        self._links = links

    def _parse_entry(self, entry):
        if not isinstance(entry, dict):
            return None
        source, target = entry.get('source'), entry.get('target')
        if not (isinstance(source, str) and source and isinstance(target, str) and target):
            return None
        rtt = _number(entry.get('rtt_us'), minimum=0)
        rate = _number(entry.get('rate_bytes_per_s', 0), minimum=0)
        capacity = _number(entry.get('capacity_bytes_per_s', self.default_capacity),
                           minimum=0, inclusive=False)
        if rtt is None or rate is None or capacity is None:
            return None
        return source, target, LinkStats(rtt, rate, capacity)


def _number(value, minimum, inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum):
        return None
    return float(value)


_provider = None


def get_provider():
    """The provider for the current ``[nova_dt]`` options; kept while they stay the same."""
    global _provider
    opts = CONF.nova_dt
    if not opts.link_stats_file:
        return NoLinkStats()
    key = (opts.link_stats_file, opts.link_stats_max_age, opts.default_link_capacity)
    if _provider is None or _provider[0] != key:
        _provider = (key, JSONFileLinkStats(opts.link_stats_file, opts.link_stats_max_age,
                                            opts.default_link_capacity))
    return _provider[1]
