"""What the controller decides, with no I/O: events read, pairs planned, backups chosen.

Everything here works on plain values: notification payloads (dicts), ``Pair`` records and
``HostView``/``Candidate`` facts that the reconciler gathered from Nova and Placement. The
reconciler (``reconciler.py``) carries the plans out, one idempotent step at a time.

A **job** is the list of steps that bring Nova, Placement, Neutron and the agents in line with one
event, plus how far it got. It lives in the pair's record, which the state store writes after
every step, so a restarted controller resumes a job at the step that did not finish.
"""

import collections
import math
import uuid

from nova_dt import extra_specs

# Steps, in the order jobs use them.
CHOOSE_BACKUP = 'choose_backup'         # pick a DT-capable host with room in another AZ
CLAIM_BACKUP = 'claim_backup'           # hold its resources in Placement (reservation consumer)
CAST_PROTECT = 'cast_protect'           # ask the primary's agent to protect to it
RELEASE_CLAIM = 'release_claim'         # drop the reservation consumer's allocations
CAST_UNPROTECT = 'cast_unprotect'       # ask the primary's agent to stop protecting
FORGET = 'forget'                       # drop the record
SET_INSTANCE_HOST = 'set_instance_host'  # instance.host/node/AZ to the new primary
BIND_PORTS = 'bind_ports'               # Neutron ports' binding:host_id to the new primary
MOVE_ALLOCATIONS = 'move_allocations'   # the server's allocation to the new primary's provider
RECORD_EVACUATION = 'record_evacuation'  # Nova's evacuation record, for the lost primary's compute

PROTECT = 'protect'
FAILOVER = 'failover'
RELEASE = 'release'

JOB_STEPS = {
    PROTECT: (CHOOSE_BACKUP, CLAIM_BACKUP, CAST_PROTECT),
    RELEASE: (RELEASE_CLAIM, CAST_UNPROTECT, FORGET),
    # The claim is released by MOVE_ALLOCATIONS, atomically with the move: the server now runs
    # on the resources the claim held.
    # RECORD_EVACUATION leaves the Migration record Nova's evacuate leaves, so that the lost
    # primary's nova-compute, when it starts again, destroys its stale guest and cleans up
    # (ComputeManager._destroy_evacuated_instances, from init_host). Its place:
    # - after SET_INSTANCE_HOST: while Nova still has the server on the lost primary, that
    #   host's nova-compute would destroy the guest Nova thinks the server runs on;
    # - after MOVE_ALLOCATIONS: nova-compute also takes its own provider out of the server's
    #   allocation. After the move nothing of it is there and that changes nothing; before
    #   it, the server's allocation would be emptied under the move, which then finds
    #   nothing to move;
    # - before CHOOSE_BACKUP, which ends the job when no host has room for a backup.
    # The step also completes the server's pending records whose source is the new primary:
    # that host's nova-compute must keep the server now.
    FAILOVER: (SET_INSTANCE_HOST, BIND_PORTS, MOVE_ALLOCATIONS, RECORD_EVACUATION,
               CHOOSE_BACKUP, CLAIM_BACKUP, CAST_PROTECT),
}

# Statuses of an evacuation record that its source's nova-compute acts on when it starts: it
# destroys its guest of the server and takes its provider out of the server's allocation
# (ComputeManager._destroy_evacuated_instances); it then sets 'completed'.
EVACUATION_PENDING = ('accepted', 'pre-migrating', 'done')

# Pair status, as recorded and reported.
PROTECTING = 'protecting'      # a protect job runs
PROTECTED = 'protected'        # backup claimed and protect cast to the primary's agent
NO_BACKUP = 'no_backup'        # no DT-capable host with room: retried every resume_interval
FAILING_OVER = 'failing_over'  # a failover reconciliation runs
RELEASING = 'releasing'        # the server is being deleted

# What the controller makes of an agent's dt.pair.failover.end (failover_verdict). The event
# cannot be trusted by itself (anyone allowed to publish on the agents' exchange can send one),
# and acting on it rewrites the server's host, ports and allocations.
IGNORE = 'ignore'   # nothing to do: a redelivery, already reconciled, or being deleted
REFUSE = 'refuse'   # not this pair's failover: never acted on (logged, recorded in the pair)
VERIFY = 'verify'   # plausible: ask the new host's agent whether the server runs there
ACCEPT = 'accept'   # the new host's agent runs the server as primary: reconcile

# A failover event not acted on, as recorded in its pair (Pair.failover_claim['verdict']).
CLAIM_REFUSED = 'refused'        # REFUSE: kept for the operator, never retried
CLAIM_UNVERIFIED = 'unverified'  # the new host's agent did not answer: asked again at resume

# Nova events (instance.<action>.<phase>) that start jobs.
CREATE_END = 'instance.create.end'
DELETE_EVENTS = ('instance.delete.start', 'instance.delete.end')
FAILOVER_END = 'dt.pair.failover.end'

# uuid5 namespace of the reservation consumers: the backup claim of server U is consumer
# uuid5(RESERVATION_NAMESPACE, U), the same on every retry and after a restart. Never change it:
# the claims made under the old value would be orphaned in Placement.
RESERVATION_NAMESPACE = uuid.UUID('6f0c1f8e-4a3b-5d2e-9c7a-1b8d3e5f7a90')


def reservation_consumer(instance_uuid):
    """The Placement consumer that holds the backup's resources of a server (deterministic)."""
    return str(uuid.uuid5(RESERVATION_NAMESPACE, str(instance_uuid)))


class Job(object):
    """A plan: steps of one kind, the index of the next one, and the facts the steps need."""

    def __init__(self, kind, next_step=0, exclude=(), new_host=None, old_host=None,
                 failures=0, last_error=None, rechoices=0, migration_uuid=None):
        if kind not in JOB_STEPS:
            raise ValueError('unknown job kind %r' % kind)
        self.kind = kind
        self.next_step = next_step
        self.exclude = list(exclude)      # hosts never to choose as backup in this job
        self.new_host = new_host          # failover: where the server runs now
        self.old_host = old_host          # failover: the lost primary
        self.failures = failures          # passes that ended on a failed step
        self.last_error = last_error
        self.rechoices = rechoices        # backups given up because their claim was refused
        # failover: UUID of the evacuation record in Nova, fixed (and recorded) before the
        # record is written, so that a step redone after a crash finds the one it wrote.
        self.migration_uuid = migration_uuid

    @property
    def steps(self):
        return JOB_STEPS[self.kind]

    @property
    def done(self):
        return self.next_step >= len(self.steps)

    @property
    def step(self):
        return None if self.done else self.steps[self.next_step]

    def advance(self):
        self.next_step += 1
        self.last_error = None

    def back_to(self, step):
        self.next_step = self.steps.index(step)

    def to_dict(self):
        return {'kind': self.kind, 'next_step': self.next_step, 'exclude': self.exclude,
                'new_host': self.new_host, 'old_host': self.old_host,
                'failures': self.failures, 'last_error': self.last_error,
                'rechoices': self.rechoices, 'migration_uuid': self.migration_uuid}

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    def __repr__(self):
        return 'Job(%s at %s)' % (self.kind, self.step)


class Pair(object):
    """The controller's record of one DT server: its primary, its backup and the running job."""

    FIELDS = ('instance_uuid', 'project_id', 'user_id', 'peer_az', 'primary_host',
              'backup_host', 'backup_rp', 'status', 'reason', 'failover_claim')

    def __init__(self, instance_uuid, project_id=None, user_id=None, peer_az=None,
                 primary_host=None, backup_host=None, backup_rp=None, status=PROTECTING,
                 reason=None, job=None, failover_claim=None):
        self.instance_uuid = instance_uuid
        self.project_id = project_id
        self.user_id = user_id
        self.peer_az = peer_az
        self.primary_host = primary_host
        self.backup_host = backup_host
        self.backup_rp = backup_rp
        self.status = status
        self.reason = reason
        self.job = job
        # The last failover event of this server that was not acted on: dict of new_host,
        # old_host, verdict (CLAIM_REFUSED or CLAIM_UNVERIFIED) and reason; None once a
        # failover was accepted (or none was ever refused).
        self.failover_claim = failover_claim

    @property
    def reservation(self):
        return reservation_consumer(self.instance_uuid)

    def to_dict(self):
        d = {f: getattr(self, f) for f in self.FIELDS}
        d['job'] = self.job.to_dict() if self.job else None
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        job = d.pop('job', None)
        return cls(job=Job.from_dict(job) if job else None, **d)

    def __repr__(self):
        return 'Pair(%s %s->%s %s %r)' % (self.instance_uuid, self.primary_host,
                                          self.backup_host, self.status, self.job)


# ---------------------------------------------------------------------------------------------
# Events

InstanceEvent = collections.namedtuple(
    'InstanceEvent', ['event_type', 'instance_uuid', 'host', 'project_id', 'user_id',
                      'extra_specs'])
FailoverEvent = collections.namedtuple(
    'FailoverEvent', ['instance_uuid', 'new_host', 'old_host'])


class BadEvent(ValueError):
    """A notification the controller must act on but cannot read (logged, then dropped)."""


def _data(payload, what):
    if not isinstance(payload, dict) or not isinstance(payload.get('nova_object.data'), dict):
        raise BadEvent('%s payload has no nova_object.data object' % what)
    return payload['nova_object.data']


def _string(data, key, what, required=True):
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadEvent('%s payload: %s must be a non-empty string' % (what, key))
    return value


def read_instance_event(event_type, payload):
    """An InstanceEvent from a Nova versioned notification, None if the controller ignores it.

    :raises BadEvent: an event the controller handles whose payload is not as Nova sends it.
    """
    if event_type != CREATE_END and event_type not in DELETE_EVENTS:
        return None
    data = _data(payload, event_type)
    specs = {}
    flavor = data.get('flavor')
    if isinstance(flavor, dict) and isinstance(flavor.get('nova_object.data'), dict):
        specs = flavor['nova_object.data'].get('extra_specs') or {}
    if not isinstance(specs, dict):
        raise BadEvent('%s payload: flavor extra_specs must be an object' % event_type)
    return InstanceEvent(
        event_type=event_type,
        instance_uuid=_string(data, 'uuid', event_type),
        host=_string(data, 'host', event_type, required=False),
        project_id=_string(data, 'tenant_id', event_type, required=False),
        user_id=_string(data, 'user_id', event_type, required=False),
        extra_specs=specs)


def read_failover_event(event_type, payload):
    """A FailoverEvent from an agent's dt.pair.failover.end, None for other agent events."""
    if event_type != FAILOVER_END:
        return None
    data = _data(payload, event_type)
    return FailoverEvent(instance_uuid=_string(data, 'instance_uuid', event_type),
                         new_host=_string(data, 'new_host', event_type),
                         old_host=_string(data, 'peer_host', event_type, required=False))


# ---------------------------------------------------------------------------------------------
# Plans

def plan_instance_event(event, pair):
    """The pair after a Nova event (a new job in it), or None when nothing is to be done.

    ``pair`` is the current record or None. A repeated event (redelivery) changes nothing.
    :raises ValueError: a create event of a flavor whose dt:* values the agent refuses.
    """
    if event.event_type == CREATE_END:
        specs = extra_specs.parse(event.extra_specs)
        if not specs.enabled or pair is not None:
            return None
        if not event.host:
            raise BadEvent('%s payload: host must be a non-empty string' % event.event_type)
        return Pair(event.instance_uuid, project_id=event.project_id, user_id=event.user_id,
                    peer_az=specs.peer_az, primary_host=event.host, status=PROTECTING,
                    job=Job(PROTECT, exclude=[event.host]))
    # delete.start or delete.end
    if pair is None or (pair.job is not None and pair.job.kind == RELEASE):
        return None
    pair.status = RELEASING
    pair.reason = None
    pair.job = Job(RELEASE)
    return pair


Verdict = collections.namedtuple('Verdict', ['action', 'reason'])
Verdict.__doc__ = """What to do with a failover event (IGNORE, REFUSE, VERIFY or ACCEPT) and why."""


def failover_verdict(event, pair, agent_status=None):
    """What to do with an agent's failover.end, given the server's record (None if unknown).

    Without ``agent_status``, from the controller's record alone: IGNORE (a redelivery, a
    failover already reconciled or being reconciled, a server being deleted), REFUSE, or VERIFY.
    The event can be this pair's failover only if the controller knows the server, its new host
    is the pair's recorded backup and, when the event names the lost primary, that is the
    pair's primary. A planned switchover is reported with the same event (the backup took the
    server over) and is judged the same way.

    :param agent_status: the new host's agent's answer to the RPC ``status`` (docs/bus.md). Then
        ACCEPT when that agent (``host``) lists the server with role ``primary``, which it
        reports from the moment it restored the server (Agent::OnFailoverDone, also at the end
        of a switchover) and while it protects it again; REFUSE otherwise (e.g. role
        ``backup``: its primary still runs).
    :returns: a Verdict.
    """
    if pair is not None:
        if pair.job is not None and pair.job.kind == RELEASE:
            return Verdict(IGNORE, 'the server is being deleted')
        if pair.primary_host == event.new_host:
            return Verdict(IGNORE, 'the controller has the server on %s already'
                           % event.new_host)
    if pair is None:
        return Verdict(REFUSE, 'the controller protects no such server')
    if not pair.backup_host:
        return Verdict(REFUSE, 'the pair has no backup host (status %s); new host %s'
                       % (pair.status, event.new_host))
    if event.new_host != pair.backup_host:
        return Verdict(REFUSE, 'new host %s is not the pair\'s backup host %s'
                       % (event.new_host, pair.backup_host))
    if event.old_host and event.old_host != pair.primary_host:
        return Verdict(REFUSE, 'lost primary %s is not the pair\'s primary host %s'
                       % (event.old_host, pair.primary_host))
    if agent_status is None:
        return Verdict(VERIFY, None)
    servers = agent_status.get('protected_servers') if isinstance(agent_status, dict) else None
    if not isinstance(servers, list):
        return Verdict(REFUSE, 'the status of the agent on %s has no protected_servers list'
                       % event.new_host)
    if agent_status.get('host') != event.new_host:
        return Verdict(REFUSE, 'the status asked of %s came from the agent on %r'
                       % (event.new_host, agent_status.get('host')))
    views = [v for v in servers
             if isinstance(v, dict) and v.get('instance_uuid') == event.instance_uuid]
    if not views:
        return Verdict(REFUSE, 'the agent on %s does not have the server'
                       % event.new_host)
    if not any(v.get('role') == 'primary' for v in views):
        return Verdict(REFUSE, 'the agent on %s has the server as %s, not as the primary'
                       % (event.new_host, ', '.join(
                           '%s (%s)' % (v.get('role'), v.get('state')) for v in views)))
    return Verdict(ACCEPT, None)


def record_failover_claim(pair, event, verdict, reason):
    """The pair with a failover event that was not acted on recorded in it.

    :param verdict: CLAIM_REFUSED, or CLAIM_UNVERIFIED to ask the new host's agent again.
    """
    pair.failover_claim = {'new_host': event.new_host, 'old_host': event.old_host,
                           'verdict': verdict, 'reason': reason}
    return pair


def unverified_failover(pair):
    """The FailoverEvent of the pair's unverified claim (to verify again), or None."""
    claim = pair.failover_claim
    if not claim or claim.get('verdict') != CLAIM_UNVERIFIED:
        return None
    return FailoverEvent(instance_uuid=pair.instance_uuid, new_host=claim['new_host'],
                         old_host=claim.get('old_host'))


def plan_failover(event, pair):
    """The pair after an agent's failover.end, with the failover job in it.

    REQUIRES: ``failover_verdict(event, pair, <the new host's status>)`` is ACCEPT.
    """
    old_host = event.old_host or pair.primary_host
    pair.primary_host = event.new_host
    pair.backup_host = None
    pair.backup_rp = None
    pair.status = FAILING_OVER
    pair.reason = None
    pair.failover_claim = None
    pair.job = Job(FAILOVER, new_host=event.new_host, old_host=old_host,
                   exclude=sorted({h for h in (event.new_host, old_host) if h}))
    return pair


def plan_retry_protection(pair):
    """A new protect job for a pair left without a backup, or None for any other pair."""
    if pair.status != NO_BACKUP or pair.job is not None:
        return None
    pair.status = PROTECTING
    pair.job = Job(PROTECT, exclude=[pair.primary_host])
    return pair


# ---------------------------------------------------------------------------------------------
# Backup choice

HostView = collections.namedtuple(
    'HostView', ['host', 'node', 'rp_uuid', 'az', 'capable', 'enabled', 'aggregates'])
HostView.__doc__ = """One compute host as Nova sees it: node and provider, AZ, DT capability
(aggregate metadata, DTPairFilter's rule), whether its nova-compute service is enabled and up
(not disabled, not forced down, reporting to Nova's servicegroup), and the UUIDs of its
aggregates. A lost primary is excluded by the failover job itself and, later, by Nova seeing
its nova-compute down."""

Candidate = collections.namedtuple('Candidate', ['rp_uuid', 'free_ram_mb'])
Candidate.__doc__ = """A provider Placement can allocate the resources on (allocation
candidates), with its free RAM after allocation ratios."""

Choice = collections.namedtuple('Choice', ['host', 'rp_uuid', 'reason'])
Choice.__doc__ = """The backup chosen (host, rp_uuid), or host None and the reason why not."""


def backup_zone_ok(primary_az, host_az, peer_az):
    """DTPairFilter's zone rule: the backup is in dt:peer_az if set, else in another zone.

    After a failover the primary runs in dt:peer_az itself; the pair is reversed and its backup
    may then be in any other zone (the rule cannot be kept, and no backup would be worse).
    """
    if peer_az and primary_az != peer_az:
        return host_az == peer_az
    return host_az != primary_az


def eligible_hosts(primary_host, peer_az, hosts, exclude=()):
    """Hosts that may hold the backup of a server on ``primary_host``, capacity aside.

    :param hosts: dict of host name to HostView.
    :returns: list of HostView, sorted by host name.
    """
    primary = hosts.get(primary_host)
    primary_az = primary.az if primary else None
    return [h for _, h in sorted(hosts.items())
            if h.host != primary_host and h.host not in exclude and h.capable and h.enabled
            and h.rp_uuid and backup_zone_ok(primary_az, h.az, peer_az)]


def pending_evacuation_sources(records):
    """Hosts whose nova-compute, when it next starts, destroys its guest of the server.

    :param records: the server's evacuation records (dicts with ``source_compute``, ``status``).
    """
    return sorted({r['source_compute'] for r in records
                   if r['status'] in EVACUATION_PENDING and r['source_compute']})


def backup_aggregates(eligible):
    """Aggregate UUIDs to restrict the Placement query to (member_of=in:...)."""
    return sorted({agg for h in eligible for agg in h.aggregates})


def choose_backup(primary_host, peer_az, hosts, candidates, links=None, exclude=(),
                  link_delay=None):
    """The backup host for a server on ``primary_host`` (DTPairFilter's rules plus room).

    :param hosts: dict of host name to HostView (all compute hosts Nova knows).
    :param candidates: dict of resource provider UUID to Candidate: the providers Placement
        can hold the server's resources on.
    :param links: link figures, dict of source host to dict of target host to stats, ranked by
        ``link_delay(stats)`` (ms); hosts without figures come after those with.
    :param exclude: hosts never chosen (the primary, a lost primary, hosts refused before).
    :returns: a Choice. Among eligible hosts with room: least link delay from the primary, then
        most free RAM, then host name.
    """
    if primary_host not in hosts:
        return Choice(None, None, 'primary host %s is not a compute host Nova knows'
                      % primary_host)
    eligible = eligible_hosts(primary_host, peer_az, hosts, exclude)
    zone = ('availability zone %s' % peer_az if peer_az
            else 'an availability zone other than %s' % hosts[primary_host].az)
    if not eligible:
        return Choice(None, None, 'no enabled DT-capable compute host in %s' % zone)
    with_room = [h for h in eligible if h.rp_uuid in candidates]
    if not with_room:
        return Choice(None, None, 'no DT-capable host in %s has room for the server (%s)'
                      % (zone, ', '.join(h.host for h in eligible)))
    out = (links or {}).get(primary_host, {})

    def rank(h):
        stats = out.get(h.host)
        delay = link_delay(stats) if stats is not None and link_delay else math.inf
        return (delay, -candidates[h.rp_uuid].free_ram_mb, h.host)

    best = min(with_room, key=rank)
    return Choice(best.host, best.rp_uuid, None)


# ---------------------------------------------------------------------------------------------
# Allocations

def compute_resources(allocations, rp_uuid):
    """The resources a consumer holds on one provider ({} if none).

    :param allocations: Placement's ``allocations`` object of GET /allocations/{consumer}.
    """
    return dict((allocations or {}).get(rp_uuid, {}).get('resources', {}))


def moved_allocations(allocations, from_rp, to_rp):
    """A consumer's allocations with those on ``from_rp`` moved to ``to_rp`` (others kept).

    :returns: dict of provider UUID to {'resources': {...}}, as PUT/POST /allocations take.
    """
    result = {rp: {'resources': dict(a['resources'])} for rp, a in (allocations or {}).items()
              if rp not in (from_rp, to_rp)}
    merged = compute_resources(allocations, to_rp)
    for rc, amount in compute_resources(allocations, from_rp).items():
        merged[rc] = max(merged.get(rc, 0), amount)
    if merged:
        result[to_rp] = {'resources': merged}
    return result


def same_allocations(current, wanted):
    """True if GET's ``allocations`` hold exactly ``wanted`` (provider -> {'resources'})."""
    have = {rp: a.get('resources', {}) for rp, a in (current or {}).items()}
    return have == {rp: a['resources'] for rp, a in wanted.items()}


def backoff(attempt, first, limit=30.0):
    """Seconds to wait after failed try number ``attempt`` (1-based): first, 2*first, ..."""
    return min(limit, first * (2 ** (attempt - 1)))
