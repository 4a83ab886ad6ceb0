"""What DTPairFilter and DTPairWeigher share: DT requests, host capability, AZs and partners.

Capability is host aggregate metadata (``[nova_dt] capable_metadata_key``, default
``nova_dt:capable=true``) rather than a Placement trait because a filter must judge *other*
hosts - the backup candidates - and a HostState carries its aggregates (with their metadata and
the availability zone, kept current by the scheduler's HostManager) but not its Placement traits.
"""

import itertools
import weakref

from oslo_log import log as logging
from oslo_utils import strutils

import nova.conf
from nova.scheduler.filters import utils as filters_utils

from nova_dt import conf as dt_conf
from nova_dt import extra_specs

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
dt_conf.register_opts(CONF)

# The HostState attribute where DTPairFilter leaves a passing host's partners for DTPairWeigher.
# Nova builds fresh HostState objects for every scheduling request (HostManager._get_host_states),
# so the value never outlives the request; the filter sets it on every host it sees.
PARTNERS_ATTR = 'nova_dt_partners'


def requested_specs(spec_obj):
    """The dt:* specs of a request's flavor, or None when it does not ask for DT.

    A flavor whose dt:* values the agent would refuse is not protected by the agent, so it is not
    a DT request for the scheduler either (logged; nova-api >= 2.86 refuses such values anyway).
    """
    flavor = spec_obj.flavor if spec_obj and 'flavor' in spec_obj else None
    if flavor is None or 'extra_specs' not in flavor or not flavor.extra_specs:
        return None
    try:
        specs = extra_specs.parse(flavor.extra_specs)
    except ValueError as e:
        LOG.warning("Flavor %(flavor)s is scheduled as a non-DT flavor: %(reason)s",
                    {'flavor': flavor.name if 'name' in flavor else '?', 'reason': e})
        return None
    return specs if specs.enabled else None


def host_az(host_state):
    """The availability zone of a host, from its aggregates (nova's default AZ if none)."""
    zones = filters_utils.aggregate_values_from_key(host_state, 'availability_zone')
    if not zones:
        return CONF.default_availability_zone
    # Nova keeps a host in one AZ; min() only makes a broken setup deterministic.
    return min(zones)


def is_capable(host_state):
    """True if an aggregate of the host marks it DT-capable and none marks it not capable."""
    values = filters_utils.aggregate_values_from_key(
        host_state, CONF.nova_dt.capable_metadata_key)
    flags = [strutils.bool_from_string(v, default=None) for v in values]
    return True in flags and False not in flags


def _requested_disk_mb(spec_obj):
    flavor = spec_obj.flavor
    root_gb = 0 if 'is_bfv' in spec_obj and spec_obj.is_bfv else flavor.root_gb
    return 1024 * (root_gb + flavor.ephemeral_gb) + flavor.swap


def can_hold(host_state, spec_obj):
    """True if the host has the RAM, vCPUs and disk for one more server of the request's flavor.

    The rules of nova's former RamFilter, CoreFilter and DiskFilter (allocation ratios applied to
    the compute node's totals, no overcommit of a server against itself), on the HostState. A
    host whose totals are unknown (0, e.g. not reported yet) cannot hold anything.
    """
    flavor = spec_obj.flavor

    def usable(total, free, ratio):
        return total * (ratio or 1.0) - (total - free)

    ram_total = host_state.total_usable_ram_mb
    if (ram_total < flavor.memory_mb or
            usable(ram_total, host_state.free_ram_mb,
                   host_state.ram_allocation_ratio) < flavor.memory_mb):
        return False
    vcpus_total = host_state.vcpus_total
    if (vcpus_total < flavor.vcpus or
            vcpus_total * (host_state.cpu_allocation_ratio or 1.0) -
            host_state.vcpus_used < flavor.vcpus):
        return False
    disk_mb = _requested_disk_mb(spec_obj)
    disk_total_mb = host_state.total_usable_disk_gb * 1024
    if disk_mb and (disk_total_mb < disk_mb or
                    usable(disk_total_mb, host_state.free_disk_mb,
                           host_state.disk_allocation_ratio) < disk_mb):
        return False
    return True


class Partners(object):
    """The backup candidates of one primary: host names, in per-AZ sets shared between hosts."""

    def __init__(self, groups=()):
        self._groups = tuple(g for g in groups if g)

    def __contains__(self, host):
        return any(host in g for g in self._groups)

    def __iter__(self):
        for group in self._groups:
            yield from sorted(group)

    def __len__(self):
        return sum(len(g) for g in self._groups)

    def __repr__(self):
        return 'Partners(%s)' % ', '.join(self)


class PartnerPool(object):
    """The hosts of one request that could hold a backup now, grouped by availability zone.

    Built on every filter pass from the request's first-pass hosts (``RequestHosts``): capability
    and room are judged on the HostStates as they are at this pass, which nova updates in place
    for every server of the request it has placed so far (``HostState.consume_from_request``).
    """

    def __init__(self, host_states, spec_obj):
        by_az = {}
        for host_state in host_states:
            if is_capable(host_state) and can_hold(host_state, spec_obj):
                by_az.setdefault(host_az(host_state), set()).add(host_state.host)
        self.by_az = {az: frozenset(hosts) for az, hosts in by_az.items()}

    def partners_for(self, host_state, peer_az=None):
        """Partners of a primary on ``host_state``: in ``peer_az``, or in any AZ but its own."""
        own_az = host_az(host_state)
        if peer_az:
            groups = [self.by_az.get(peer_az)] if peer_az != own_az else []
        else:
            groups = [hosts for az, hosts in self.by_az.items() if az != own_az]
        return Partners(groups)


class _Request(object):
    __slots__ = ('hosts', 'host_ids', 'last_used')

    def __init__(self, hosts, last_used):
        self.hosts = hosts
        # The tuple keeps these HostStates alive, so their ids stay theirs.
        self.host_ids = frozenset(id(h) for h in hosts)
        self.last_used = last_used


class RequestHosts(object):
    """The hosts DTPairFilter saw on the first pass of each request still being scheduled.

    Nova's scheduler filters a request's hosts once per server (``SchedulerManager._schedule``),
    and from the second server on it starts from the hosts that passed the previous server's
    filters, not from the request's candidates; the hosts that never pass as primaries (every
    host of ``dt:peer_az``) are gone then, though they are the partners. ``first_pass`` returns,
    for every pass of a request, the hosts of its first pass.

    Nova gives the filters no instance index, and the RequestSpec names only the server being
    placed (``instance_uuid``, changed by nova on every pass; ``num_instances`` is the request's
    count). What marks a request is the RequestSpec *object*: nova passes the same one to every
    pass of a request and builds a new one for every ``select_destinations`` call. A pass belongs
    to a known request only if its RequestSpec is that object and every host it is offered is one
    of that request's first-pass HostState objects (nova builds fresh HostStates for every
    request); anything else is a new request.

    Nothing is kept longer than the request's RequestSpec: it is held weakly (a
    ``WeakKeyDictionary``; nova's RequestSpec compares and hashes by identity), so its entry, and
    with it the references to the request's HostStates, goes when Python frees the RequestSpec
    after ``select_destinations`` - at once, or, as a RequestSpec with scheduler hints is in a
    reference cycle of its own (oslo's CoercedDict points back at it), at the garbage
    collector's next pass over it. At most ``limit`` requests are kept in any case, the least
    recently used dropped first (logged): should that one still be scheduled, it pairs its later
    servers among the hosts still in the running, as nova offers them.
    """

    DEFAULT_LIMIT = 256

    def __init__(self, limit=DEFAULT_LIMIT):
        self._limit = max(1, limit)
        self._requests = weakref.WeakKeyDictionary()  # RequestSpec -> _Request
        self._uses = itertools.count()

    def __len__(self):
        return len(self._requests)

    def first_pass(self, host_states, spec_obj):
        """The hosts of the first pass of the request (``host_states`` on its first pass)."""
        host_states = tuple(host_states)
        try:
            known = self._requests.get(spec_obj)
        except TypeError:  # cannot be held weakly or hashed: nothing to key on
            return host_states
        if known is not None and all(id(h) in known.host_ids for h in host_states):
            known.last_used = next(self._uses)
            return known.hosts
        self._requests[spec_obj] = _Request(host_states, next(self._uses))
        if len(self._requests) > self._limit:
            oldest = min(self._requests.items(), key=lambda item: item[1].last_used)[0]
            del self._requests[oldest]
            LOG.warning("More than %(limit)d DT requests kept: dropped the least recently "
                        "scheduled; if it is still being scheduled, its later servers are "
                        "paired among the hosts still in the running only",
                        {'limit': self._limit})
        return host_states


def set_partners(host_state, partners):
    setattr(host_state, PARTNERS_ATTR, partners)


def get_partners(host_state):
    """The partners DTPairFilter found for this host in this request, or None."""
    return getattr(host_state, PARTNERS_ATTR, None)
