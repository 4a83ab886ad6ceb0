"""DTPairWeigher: prefer DT primaries with the fastest replication link to a backup partner.

Enable with::

    [filter_scheduler]
    weight_classes = nova.scheduler.weights.all_weighers
    weight_classes = nova_dt.scheduler.weights.DTPairWeigher

For a DT flavor, a primary's raw weight is ``-(rtt + queueing delay)`` in milliseconds of its best
partner. The replication link is modelled as an M/M/1 queue of replication messages of mean size
``S = [nova_dt] replication_message_bytes``: with capacity ``mu`` and current replication rate
``lambda`` in bytes per second, a message waits and is sent in ``S / (mu - lambda)`` seconds on
average; at ``lambda >= mu`` the queue grows without bound and the link is saturated. So a closer
partner wins at equal load, a less loaded link wins at equal distance. Figures come from
``link_stats.get_provider()``; partners are those DTPairFilter recorded on the host in this
request (without DTPairFilter there are none and every host weighs the same).

The raw weights are normalized by nova to 0..1 across the hosts: a host without figures for any of
its partners gets the middle of the known range (neutral), one whose partner links are all
saturated gets less than every other host. Non-DT flavors weigh 0 everywhere.
"""

import math

from oslo_log import log as logging

import nova.conf
from nova.scheduler import utils
from nova.scheduler import weights

from nova_dt import conf as dt_conf
from nova_dt.scheduler import link_stats
from nova_dt.scheduler import pairing

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
dt_conf.register_opts(CONF)

SATURATED = -math.inf


def link_delay_ms(stats, message_bytes):
    """RTT plus M/M/1 sojourn time of one message on a link, in ms; inf when saturated."""
    spare = stats.capacity_bytes_per_s - stats.rate_bytes_per_s
    if spare <= 0:
        return math.inf
    return stats.rtt_us / 1000.0 + 1000.0 * message_bytes / spare


class DTPairWeigher(weights.BaseHostWeigher):
    """Prefer DT primaries whose best partner link has the least RTT plus queueing delay."""

    def weight_multiplier(self, host_state):
        """Override the weight multiplier."""
        return utils.get_weight_multiplier(
            host_state, 'dt_pair_weight_multiplier', CONF.nova_dt.weight_multiplier)

    def weigh_objects(self, weighed_obj_list, weight_properties):
        """Raw weights of all hosts, with neutral and saturated hosts placed among the rest."""
        if pairing.requested_specs(weight_properties) is None:
            return [0.0] * len(weighed_obj_list)
        links = link_stats.get_provider().links()
        raw = [self._score(obj.obj, links) for obj in weighed_obj_list]
        known = [s for s in raw if s is not None and math.isfinite(s)]
        low = min(known, default=0.0)
        high = max(known, default=0.0)
        neutral = (low + high) / 2
        worst = low - max(1.0, high - low)
        return [neutral if s is None else worst if s == SATURATED else s for s in raw]

    def _weigh_object(self, host_state, weight_properties):
        """-(best link delay) in ms; None without figures, SATURATED if all links are full."""
        if pairing.requested_specs(weight_properties) is None:
            return 0.0
        return self._score(host_state, link_stats.get_provider().links())

    def _score(self, host_state, links):
        partners = pairing.get_partners(host_state)
        if not partners:
            LOG.debug("%(host_state)s: no DT partners recorded (is DTPairFilter enabled?)",
                      {'host_state': host_state})
            return None
        message_bytes = CONF.nova_dt.replication_message_bytes
        best = None
        for target, stats in links.get(host_state.host, {}).items():
            if target not in partners:
                continue
            delay = link_delay_ms(stats, message_bytes)
            if best is None or delay < best[1]:
                best = (target, delay)
        if best is None:
            LOG.debug("%(host_state)s: no link figures for its %(n)d DT partners",
                      {'host_state': host_state, 'n': len(partners)})
            return None
        LOG.debug("%(host_state)s: best DT partner %(partner)s, link delay %(delay).3f ms",
                  {'host_state': host_state, 'partner': best[0], 'delay': best[1]})
        return -best[1]
