"""Carries out the planner's jobs: one idempotent step at a time, retried, recorded after each.

Every step first reads the state it is about to change and does nothing when it is already as
wanted, so a step interrupted by a crash (done but not recorded) is harmless to run again:

- the backup claim is the allocation of a reservation consumer whose UUID is derived from the
  server's (``planner.reservation_consumer``), written with Placement's consumer generation;
- the failover's allocation move is one ``POST /allocations`` that moves the server's allocation
  to the new primary's provider and empties the reservation consumer together, all or nothing;
- instance host/node and port bindings are compared before they are written;
- the failover's evacuation record in Nova: its UUID is recorded in the job before the record
  is written, and the server's records are read first;
- RPC casts are repeated at most once per interruption, and the agents accept a repeated
  protect/unprotect (the second one fails on the agent and is dropped, casts have no reply).

A step that fails is tried ``step_attempts`` times with a growing pause; after that the job stays
where it is, with the error in the record, and ``resume()`` (called at start and every
``resume_interval`` by the service) tries again.
"""

import threading
import time

from oslo_log import log as logging
from oslo_utils import uuidutils

from nova_dt import exception as dt_exception
from nova_dt.controller import clients
from nova_dt.controller import planner

LOG = logging.getLogger(__name__)

# What a step tells the runner about the job's position.
NEXT = 'next'        # done: go on with the next step
JUMPED = 'jumped'    # the step moved the job itself (e.g. back to choosing a backup)
ENDED = 'ended'      # the job ended early (no backup; record forgotten)

DISABLED_TRAIT = 'COMPUTE_STATUS_DISABLED'


class StepFailed(Exception):
    """A step cannot be done now (the message says why); it is retried."""


class Reconciler(object):
    """Plans and runs the controller's jobs; all public methods are safe from any thread."""

    def __init__(self, store, placement, compute, network, agents, links=None,
                 link_delay=None, step_attempts=5, retry_interval=1.0, sleep=time.sleep):
        """
        :param store: a state.StateStore.
        :param placement, compute, network, agents: clients.PlacementAPI, ComputeAPI,
            NetworkAPI, AgentAPI.
        :param links: callable returning the link figures (dict of source host to dict of
            target host to stats), or None for none; ``link_delay(stats)`` ranks them (ms).
        """
        self.store = store
        self.placement = placement
        self.compute = compute
        self.network = network
        self.agents = agents
        self._links = links or (lambda: {})
        self._link_delay = link_delay
        self.step_attempts = step_attempts
        self.retry_interval = retry_interval
        self._sleep = sleep
        # One job at a time: jobs of different servers compete for the same hosts' room.
        self._lock = threading.RLock()
        self._steps = {
            planner.CHOOSE_BACKUP: self._choose_backup,
            planner.CLAIM_BACKUP: self._claim_backup,
            planner.CAST_PROTECT: self._cast_protect,
            planner.RELEASE_CLAIM: self._release_claim,
            planner.CAST_UNPROTECT: self._cast_unprotect,
            planner.FORGET: self._forget,
            planner.SET_INSTANCE_HOST: self._set_instance_host,
            planner.BIND_PORTS: self._bind_ports,
            planner.MOVE_ALLOCATIONS: self._move_allocations,
            planner.RECORD_EVACUATION: self._record_evacuation,
        }

    # -- events ----------------------------------------------------------------------------

    def handle_nova_notification(self, event_type, payload):
        """React to a Nova versioned notification; returns the pair's record (or None).

        :raises planner.BadEvent: an event the controller handles that it cannot read.
        """
        event = planner.read_instance_event(event_type, payload)
        if event is None:
            return None
        with self._lock:
            current = self.store.get(event.instance_uuid)
            try:
                pair = planner.plan_instance_event(event, current)
            except ValueError as e:
                if isinstance(e, planner.BadEvent):
                    raise
                LOG.warning("Server %(uuid)s is not protected: %(reason)s",
                            {'uuid': event.instance_uuid, 'reason': e})
                return None
            if pair is None:
                return current
            LOG.info("%(event)s for %(uuid)s: %(job)s", {
                'event': event_type, 'uuid': event.instance_uuid, 'job': pair.job})
            self.store.put(pair)
            return self._run(pair)

    def handle_agent_notification(self, event_type, payload):
        """React to an agent's dt.pair.* notification; returns the pair's record (or None).

        Only ``dt.pair.failover.end`` is acted on, and only when it is the failover of a pair
        the controller knows, to that pair's backup, and the new host's agent confirms it runs
        the server as the primary (``planner.failover_verdict``). Anything else leaves Nova,
        Neutron and Placement untouched; why is logged and recorded in the pair.
        """
        event = planner.read_failover_event(event_type, payload)
        if event is None:
            return None
        with self._lock:
            return self._handle_failover(event, self.store.get(event.instance_uuid))[1]

    def _handle_failover(self, event, current):
        """(True, the record) if the failover was accepted (its job ran), else (False, record)."""
        verdict = planner.failover_verdict(event, current)
        if verdict.action == planner.VERIFY:
            # Before anything is written: the event alone proves nothing (whoever may publish
            # on the agents' exchange can send it), the agent of the new host answers for it.
            try:
                status = self.agents.status(event.new_host)
            except Exception as e:
                return False, self._not_acted_on(
                    event, current, planner.CLAIM_UNVERIFIED,
                    'the agent on %s did not answer whether the server runs there (asked '
                    'again at the next resume): %s' % (event.new_host,
                                                       str(e) or type(e).__name__))
            verdict = planner.failover_verdict(event, current, status)
        if verdict.action == planner.IGNORE:
            LOG.debug("Server %(uuid)s: nothing to do for its failover to %(new)s: %(reason)s",
                      {'uuid': event.instance_uuid, 'new': event.new_host,
                       'reason': verdict.reason})
            if current is not None and planner.unverified_failover(current) == event:
                current.failover_claim = None  # moot
                self.store.put(current)
            return False, current
        if verdict.action == planner.REFUSE:
            return False, self._not_acted_on(event, current, planner.CLAIM_REFUSED,
                                             verdict.reason)
        pair = planner.plan_failover(event, current)
        LOG.info("Server %(uuid)s failed over from %(old)s to %(new)s (confirmed by its agent): "
                 "reconciling", {'uuid': event.instance_uuid, 'old': pair.job.old_host or '?',
                                 'new': event.new_host})
        self.store.put(pair)
        return True, self._run(pair)

    def _not_acted_on(self, event, pair, verdict, reason):
        """Log (and record in the pair, if there is one) a failover event left alone."""
        LOG.warning("Server %(uuid)s: not acting on its failover to %(new)s (lost primary "
                    "%(old)s): %(reason)s; Nova, Neutron and Placement are left as they are",
                    {'uuid': event.instance_uuid, 'new': event.new_host,
                     'old': event.old_host or '?', 'reason': reason})
        if pair is not None:
            planner.record_failover_claim(pair, event, verdict, reason)
            self.store.put(pair)
        return pair

    def resume(self):
        """Run every unfinished job again, and look for backups for servers that have none.

        Servers Nova no longer has (their delete notification was lost) are released. A
        failover whose new host's agent did not answer is verified again.
        """
        with self._lock:
            for pair in self.store.all():
                if pair.job is None or pair.job.kind != planner.RELEASE:
                    self._release_if_gone(pair)
                claimed = planner.unverified_failover(pair)
                if claimed is not None:
                    LOG.info("Asking the agent on %(new)s again whether server %(uuid)s runs "
                             "there", {'new': claimed.new_host, 'uuid': pair.instance_uuid})
                    if self._handle_failover(claimed, pair)[0]:
                        continue  # confirmed: its failover job ran
                if pair.job is None and planner.plan_retry_protection(pair) is not None:
                    self.store.put(pair)
                if pair.job is not None:
                    LOG.info("Resuming %(job)s of %(uuid)s", {'job': pair.job,
                                                              'uuid': pair.instance_uuid})
                    self._run(pair)

    def _release_if_gone(self, pair):
        try:
            self.compute.get_instance_host(pair.instance_uuid)
        except clients.ServerGone as e:
            self._release_gone(pair, e)
            self.store.put(pair)
        except Exception as e:
            LOG.warning("Cannot tell whether server %(uuid)s still exists: %(err)s",
                        {'uuid': pair.instance_uuid, 'err': e})

    @staticmethod
    def _release_gone(pair, why):
        LOG.info("Server %(uuid)s is gone (%(why)s): releasing its backup",
                 {'uuid': pair.instance_uuid, 'why': why})
        pair.status = planner.RELEASING
        pair.reason = None
        pair.job = planner.Job(planner.RELEASE)

    # -- runner ----------------------------------------------------------------------------

    def _run(self, pair):
        """Run the pair's job to its end or to a step that keeps failing; returns the record."""
        while pair.job is not None and not pair.job.done:
            step = pair.job.step
            outcome = self._try(step, pair)
            if outcome is None:
                return pair
            if outcome == NEXT:
                pair.job.advance()
            if pair.job is not None and pair.job.done:
                pair.job = None
            if outcome == ENDED and pair.job is None and step == planner.FORGET:
                self.store.delete(pair.instance_uuid)
                return None
            self.store.put(pair)
        return pair

    def _try(self, step, pair):
        """The step's outcome, or None after ``step_attempts`` failures (recorded)."""
        for attempt in range(1, self.step_attempts + 1):
            try:
                return self._steps[step](pair)
            except Exception as e:
                if isinstance(e, clients.ServerGone) and pair.job.kind != planner.RELEASE:
                    # Deleted while the job waited (its delete notification missed or not
                    # yet here): release what the job may have claimed.
                    self._release_gone(pair, e)
                    return JUMPED
                LOG.warning("%(step)s of %(uuid)s failed (try %(n)d of %(max)d): %(err)s",
                            {'step': step, 'uuid': pair.instance_uuid, 'n': attempt,
                             'max': self.step_attempts, 'err': e})
                error = '%s: %s' % (step, e)
                if attempt < self.step_attempts:
                    self._sleep(planner.backoff(attempt, self.retry_interval))
        pair.job.failures += 1
        pair.job.last_error = error
        pair.reason = error
        self.store.put(pair)
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _server_resources(self, pair, hosts):
        """What the server holds on its primary's provider (what its backup must hold)."""
        primary = hosts.get(pair.primary_host)
        if primary is None or not primary.rp_uuid:
            raise StepError('primary host %s has no compute node in Nova' % pair.primary_host)
        current = self.placement.get_allocations(pair.instance_uuid)
        resources = planner.compute_resources(current['allocations'], primary.rp_uuid)
        if not resources:
            raise StepError('server has no allocation on its primary host %s'
                            % pair.primary_host)
        if current.get('project_id'):
            pair.project_id = current['project_id']
            pair.user_id = current['user_id']
        return resources

    # -- steps -----------------------------------------------------------------------------

    def _choose_backup(self, pair):
        if pair.backup_host and pair.backup_rp:
            return NEXT
        self.compute.get_instance_host(pair.instance_uuid)  # ServerGone if deleted meanwhile
        # A lost primary whose nova-compute has not started since would destroy the backup's
        # guest (same UUID) when it does, or the server itself after a failover to it.
        stale = planner.pending_evacuation_sources(
            self.compute.evacuations(pair.instance_uuid))
        exclude = sorted(set(pair.job.exclude) | set(stale))
        hosts = self.compute.hosts()
        resources = self._server_resources(pair, hosts)
        eligible = planner.eligible_hosts(pair.primary_host, pair.peer_az, hosts, exclude)
        candidates = {}
        if eligible:
            candidates = self.placement.allocation_candidates(
                resources, member_of=planner.backup_aggregates(eligible),
                forbidden_traits=[DISABLED_TRAIT])
        choice = planner.choose_backup(pair.primary_host, pair.peer_az, hosts, candidates,
                                       self._links(), exclude, self._link_delay)
        if choice.host is None and stale:
            choice = choice._replace(reason='%s; left out until their nova-compute has '
                                     'started and removed the server\'s stale guest: %s'
                                     % (choice.reason, ', '.join(stale)))
        if choice.host is None:
            LOG.warning("Server %(uuid)s on %(host)s stays unprotected for now: %(reason)s",
                        {'uuid': pair.instance_uuid, 'host': pair.primary_host,
                         'reason': choice.reason})
            pair.status = planner.NO_BACKUP
            pair.reason = choice.reason
            pair.job = None
            return ENDED
        LOG.info("Backup of %(uuid)s (primary %(primary)s): %(backup)s",
                 {'uuid': pair.instance_uuid, 'primary': pair.primary_host,
                  'backup': choice.host})
        pair.backup_host, pair.backup_rp = choice.host, choice.rp_uuid
        return NEXT

    def _claim_backup(self, pair):
        hosts = self.compute.hosts()
        resources = self._server_resources(pair, hosts)
        wanted = {pair.backup_rp: {'resources': resources}}
        current = self.placement.get_allocations(pair.reservation)
        if planner.same_allocations(current['allocations'], wanted):
            return NEXT
        try:
            self.placement.put_allocations(pair.reservation, wanted,
                                           current.get('consumer_generation'),
                                           pair.project_id, pair.user_id)
        except clients.PlacementConflict as e:
            if e.concurrent:
                raise
            LOG.info("Placement refused the backup claim of %(uuid)s on %(host)s (%(err)s); "
                     "choosing another host", {'uuid': pair.instance_uuid,
                                               'host': pair.backup_host, 'err': e})
            pair.job.exclude.append(pair.backup_host)
            pair.job.rechoices += 1
            pair.backup_host = pair.backup_rp = None
            pair.job.back_to(planner.CHOOSE_BACKUP)
            return JUMPED
        return NEXT

    def _cast_protect(self, pair):
        self.agents.protect(pair.primary_host, pair.instance_uuid, pair.backup_host)
        pair.status = planner.PROTECTED
        pair.reason = None
        return NEXT

    def _release_claim(self, pair):
        self.placement.delete_allocations(pair.reservation)
        return NEXT

    def _cast_unprotect(self, pair):
        if pair.primary_host:
            try:
                self.agents.unprotect(pair.primary_host, pair.instance_uuid)
            except dt_exception.ServerNotFound:
                pass  # not protected there (any more): what unprotect wants
        return NEXT

    def _forget(self, pair):
        pair.job = None
        return ENDED

    def _set_instance_host(self, pair):
        new = self.compute.hosts().get(pair.job.new_host)
        if new is None or not new.node:
            raise StepError('new primary %s has no compute node in Nova' % pair.job.new_host)
        if self.compute.get_instance_host(pair.instance_uuid) != (new.host, new.node):
            self.compute.set_instance_host(pair.instance_uuid, new.host, new.node, new.az)
        return NEXT

    def _bind_ports(self, pair):
        for port in self.network.ports(pair.instance_uuid):
            if port.get('binding:host_id') != pair.job.new_host:
                self.network.bind_port(port['id'], pair.job.new_host)
        return NEXT

    def _move_allocations(self, pair):
        hosts = self.compute.hosts()
        new = hosts.get(pair.job.new_host)
        if new is None or not new.rp_uuid:
            raise StepError('new primary %s has no compute node in Nova' % pair.job.new_host)
        old = hosts.get(pair.job.old_host) if pair.job.old_host else None
        server = self.placement.get_allocations(pair.instance_uuid)
        claim = self.placement.get_allocations(pair.reservation)
        body = {}
        if old is not None and old.rp_uuid in server['allocations']:
            body[pair.instance_uuid] = {
                'allocations': planner.moved_allocations(server['allocations'], old.rp_uuid,
                                                         new.rp_uuid),
                'consumer_generation': server['consumer_generation'],
                'project_id': server['project_id'], 'user_id': server['user_id']}
        elif new.rp_uuid not in server['allocations']:
            raise StepError('server has no allocation on %s or %s to move'
                            % (pair.job.old_host, pair.job.new_host))
        if claim['allocations']:
            body[pair.reservation] = {
                'allocations': {}, 'consumer_generation': claim['consumer_generation'],
                'project_id': claim['project_id'], 'user_id': claim['user_id']}
        if body:
            self.placement.post_allocations(body)
        return NEXT

    def _record_evacuation(self, pair):
        # Nova's evacuate record (see planner.JOB_STEPS for why here): the lost primary's
        # nova-compute, when it starts, destroys its guest of the server and takes its own
        # provider out of the server's allocation, which the move already did.
        job = pair.job
        records = self.compute.evacuations(pair.instance_uuid)
        for record in records:
            if (record['source_compute'] == job.new_host and
                    record['status'] in planner.EVACUATION_PENDING):
                # The server runs on that host again: its nova-compute must not destroy it, nor
                # take its provider out of the server's allocation.
                self.compute.complete_evacuation(pair.instance_uuid, record['uuid'])
        if not job.old_host or job.old_host == job.new_host:
            LOG.warning("Server %(uuid)s: no lost primary known, no evacuation record; Nova "
                        "does not remove a stale guest there", {'uuid': pair.instance_uuid})
            return NEXT
        hosts = self.compute.hosts()
        new = hosts.get(job.new_host)
        if new is None or not new.node:
            raise StepError('new primary %s has no compute node in Nova' % job.new_host)
        old = hosts.get(job.old_host)
        if old is None or not old.node:
            LOG.warning("Server %(uuid)s: lost primary %(old)s has no compute node in Nova, no "
                        "evacuation record", {'uuid': pair.instance_uuid, 'old': job.old_host})
            return NEXT
        if job.migration_uuid is None:
            # Durable before the record is written: a redone step looks for this one.
            job.migration_uuid = uuidutils.generate_uuid()
            self.store.put(pair)
        elif any(r['uuid'] == job.migration_uuid for r in records):
            return NEXT  # written before a crash; perhaps completed by the old host since
        self.compute.create_evacuation(pair.instance_uuid, job.migration_uuid, old.host,
                                       old.node, new.host, new.node)
        return NEXT


class StepError(StepFailed):
    """A precondition of a step does not hold (yet)."""
