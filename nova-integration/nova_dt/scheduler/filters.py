"""DTPairFilter: a DT server's primary host needs a backup partner in another AZ.

Enable with::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = nova_dt.scheduler.filters.DTPairFilter
    enabled_filters = ...,DTPairFilter

How the filter sees the partners. Nova filters judge one host at a time (``host_passes``), but a
partner is another host, so DTPairFilter overrides ``filter_all``, which nova calls with the
whole list of hosts still in the running. The partners are judged among the hosts of the
request's **first** pass: the request's Placement allocation candidates that passed the filters
listed before DTPairFilter, which is what a backup must satisfy too: it has to fit the same
flavor and image, and after a failover the server runs there under the same constraints. Hence
list DTPairFilter **last** in ``enabled_filters``. Partner capacity is checked on every pass on
the HostState, which also reflects the servers of the request placed so far.

Multi-server requests (``--min 3 --max 3``): nova filters once per server, and from the second
server on it hands the filters only the hosts that passed for the previous server
(``SchedulerManager._schedule``), so hosts that never pass as primaries (every host of
``dt:peer_az``) would be no partners from the second server on. The filter therefore remembers
each request's first-pass hosts (``pairing.RequestHosts``, keyed on the request's RequestSpec
object, held weakly and dropped with it) and pairs every server of the request among them.

Consequence: the partners' AZ must be among the candidates, so a DT request must not be scoped to
one availability zone (``--availability-zone``), since Nova then asks Placement for that zone's
hosts only and no partner can be seen. Pin the backup's zone with the flavor's ``dt:peer_az``
instead; the primary then goes to another zone. A zone-scoped DT request finds no valid host.
"""

from oslo_log import log as logging

from nova.scheduler import filters
from nova.scheduler import utils

from nova_dt.scheduler import pairing

LOG = logging.getLogger(__name__)


class DTPairFilter(filters.BaseHostFilter):
    """Pass DT-capable hosts that have a DT-capable backup partner in another AZ."""

    # The pair is settled when the server is created; a rebuild stays on its host.
    RUN_ON_REBUILD = False

    def __init__(self):
        super().__init__()
        # nova's HostManager makes one instance per scheduler process and uses it for every
        # request; this holds the first-pass hosts of the requests being scheduled.
        self._requests = pairing.RequestHosts()

    def filter_all(self, filter_obj_list, spec_obj):
        """Hosts that pass, with their partners recorded for DTPairWeigher."""
        hosts = list(filter_obj_list)
        specs = pairing.requested_specs(spec_obj)
        if specs is None:
            return hosts
        if not self.RUN_ON_REBUILD and utils.request_is_rebuild(spec_obj):
            return hosts
        candidates = self._requests.first_pass(hosts, spec_obj)
        if len(candidates) != len(hosts):
            LOG.debug("Later server of a request: backup partners among the %(first)d hosts of "
                      "its first pass, %(now)d still in the running",
                      {'first': len(candidates), 'now': len(hosts)})
        pool = pairing.PartnerPool(candidates, spec_obj)
        passed = []
        for host_state in hosts:
            partners = pairing.Partners()
            if self._primary_passes(host_state, specs):
                partners = pool.partners_for(host_state, specs.peer_az)
                if not partners:
                    LOG.debug("%(host_state)s fails: no DT-capable host with room "
                              "for the backup in %(zone)s",
                              {'host_state': host_state,
                               'zone': specs.peer_az or 'another availability zone'})
            pairing.set_partners(host_state, partners)
            if partners:
                passed.append(host_state)
        if not passed and 'availability_zone' in spec_obj and spec_obj.availability_zone:
            LOG.info("DT request scoped to availability zone %(zone)s: the hosts of other "
                     "zones are not candidates, so no backup partner can be found. Boot DT "
                     "flavors without an availability zone; dt:peer_az chooses the backup's.",
                     {'zone': spec_obj.availability_zone})
        return passed

    def host_passes(self, host_state, spec_obj):
        """The per-host half: a DT primary must be DT-capable and outside dt:peer_az.

        The partner half needs the other hosts and is done in ``filter_all``.
        """
        specs = pairing.requested_specs(spec_obj)
        return specs is None or self._primary_passes(host_state, specs)

    @staticmethod
    def _primary_passes(host_state, specs):
        if not pairing.is_capable(host_state):
            LOG.debug("%(host_state)s fails: not DT-capable", {'host_state': host_state})
            return False
        if specs.peer_az and pairing.host_az(host_state) == specs.peer_az:
            LOG.debug("%(host_state)s fails: it is in %(zone)s, the backup's zone "
                      "(dt:peer_az)", {'host_state': host_state, 'zone': specs.peer_az})
            return False
        return True
