"""Fakes of the controller's clients: they hold state, enforce Placement's rules and fail on demand.

``fail(method, times, exc)`` makes the next ``times`` calls of ``method`` raise ``exc`` (before
doing anything); ``crash_after(method)`` makes the next call do its work and then raise ``Crash``,
a BaseException the reconciler does not catch, standing for the process dying right after the
call took effect and before the controller recorded it.
"""

import collections
import copy

from nova_dt.controller import clients
from nova_dt.controller import planner


class Crash(BaseException):
    """The controller process died here."""


class Injector(object):
    def __init__(self):
        self._failures = collections.defaultdict(list)
        self._crash_after = set()
        self.calls = collections.Counter()

    def fail(self, method, times=1, exc=None):
        self._failures[method].extend([exc or RuntimeError('injected %s failure' % method)]
                                      * times)

    def crash_after(self, method):
        self._crash_after.add(method)

    def _enter(self, method):
        self.calls[method] += 1
        if self._failures[method]:
            raise self._failures[method].pop(0)

    def _leave(self, method):
        if method in self._crash_after:
            self._crash_after.discard(method)
            raise Crash(method)


class FakePlacement(Injector, clients.PlacementAPI):
    """Providers with inventories, aggregates and traits; consumers with generations."""

    def __init__(self):
        super().__init__()
        self.providers = {}   # rp -> {'inventory': {rc: total}, 'aggregates': set, 'traits': set}
        self.consumers = {}   # uuid -> {'allocations': {rp: {rc: n}}, 'generation', project, user}

    def add_provider(self, rp, inventory, aggregates=(), traits=()):
        self.providers[rp] = {'inventory': dict(inventory), 'aggregates': set(aggregates),
                              'traits': set(traits)}

    def used(self, rp):
        used = collections.Counter()
        for consumer in self.consumers.values():
            used.update(consumer['allocations'].get(rp, {}))
        return used

    def usages(self, consumer_uuid):
        c = self.consumers.get(consumer_uuid)
        return copy.deepcopy(c['allocations']) if c else {}

    def set_allocations(self, consumer_uuid, allocations, project_id='p', user_id='u'):
        """Test set-up: write allocations with no checks."""
        old = self.consumers.get(consumer_uuid)
        self.consumers[consumer_uuid] = {
            'allocations': copy.deepcopy(allocations),
            'generation': old['generation'] + 1 if old else 1,
            'project_id': project_id, 'user_id': user_id}

    # PlacementAPI

    def get_allocations(self, consumer_uuid):
        self._enter('get_allocations')
        c = self.consumers.get(consumer_uuid)
        if c is None:
            return {'allocations': {}, 'consumer_generation': None, 'project_id': None,
                    'user_id': None}
        return {'allocations': {rp: {'resources': dict(res)}
                                for rp, res in c['allocations'].items()},
                'consumer_generation': c['generation'], 'project_id': c['project_id'],
                'user_id': c['user_id']}

    def _check_generation(self, consumer_uuid, generation):
        c = self.consumers.get(consumer_uuid)
        if (c['generation'] if c else None) != generation:
            raise clients.PlacementConflict('consumer generation conflict', True)

    def _apply(self, changes):
        """changes: {consumer: (allocations {rp: {rc: n}}, generation, project, user)}."""
        for consumer_uuid, (_, generation, _, _) in changes.items():
            self._check_generation(consumer_uuid, generation)
        saved = copy.deepcopy(self.consumers)
        for consumer_uuid, (allocations, _, project, user) in changes.items():
            if allocations:
                self.set_allocations(consumer_uuid, allocations, project, user)
            else:
                self.consumers.pop(consumer_uuid, None)
        for rp in self.providers:
            used = self.used(rp)
            if any(used[rc] > total for rc, total in self.providers[rp]['inventory'].items()):
                self.consumers = saved
                raise clients.PlacementConflict('not enough inventory on %s' % rp, False)

    @staticmethod
    def _plain(allocations):
        return {rp: dict(a['resources']) for rp, a in allocations.items()}

    def put_allocations(self, consumer_uuid, allocations, consumer_generation, project_id,
                        user_id):
        self._enter('put_allocations')
        self._apply({consumer_uuid: (self._plain(allocations), consumer_generation,
                                     project_id, user_id)})
        self._leave('put_allocations')

    def post_allocations(self, body):
        self._enter('post_allocations')
        self._apply({c: (self._plain(b['allocations']), b['consumer_generation'],
                         b['project_id'], b['user_id']) for c, b in body.items()})
        self._leave('post_allocations')

    def delete_allocations(self, consumer_uuid):
        self._enter('delete_allocations')
        existed = self.consumers.pop(consumer_uuid, None) is not None
        self._leave('delete_allocations')
        return existed

    def allocation_candidates(self, resources, member_of=(), forbidden_traits=()):
        self._enter('allocation_candidates')
        self.last_candidates_query = (dict(resources), list(member_of), list(forbidden_traits))
        result = {}
        for rp, p in self.providers.items():
            if member_of and not p['aggregates'] & set(member_of):
                continue
            if p['traits'] & set(forbidden_traits):
                continue
            used = self.used(rp)
            if all(p['inventory'].get(rc, 0) - used[rc] >= n for rc, n in resources.items()):
                result[rp] = planner.Candidate(
                    rp, p['inventory'].get('MEMORY_MB', 0) - used['MEMORY_MB'])
        return result


class FakeCompute(Injector, clients.ComputeAPI):
    def __init__(self, hosts=()):
        super().__init__()
        self.host_views = {h.host: h for h in hosts}
        self.instances = {}   # uuid -> {'host', 'node', 'az'}
        self.migrations = {}  # uuid -> an evacuation record, as evacuations() returns them

    def hosts(self):
        self._enter('hosts')
        return dict(self.host_views)

    def get_instance_host(self, instance_uuid):
        self._enter('get_instance_host')
        if instance_uuid not in self.instances:
            raise clients.ServerGone('no server %s' % instance_uuid)
        i = self.instances[instance_uuid]
        return i['host'], i['node']

    def set_instance_host(self, instance_uuid, host, node, availability_zone):
        self._enter('set_instance_host')
        self.instances[instance_uuid] = {'host': host, 'node': node, 'az': availability_zone}
        self._leave('set_instance_host')

    def evacuations(self, instance_uuid):
        self._enter('evacuations')
        if instance_uuid not in self.instances:
            raise clients.ServerGone('no server %s' % instance_uuid)
        return [dict(m) for m in self.migrations.values() if m['instance_uuid'] == instance_uuid]

    def create_evacuation(self, instance_uuid, migration_uuid, source_host, source_node,
                          dest_host, dest_node):
        self._enter('create_evacuation')
        if instance_uuid not in self.instances:
            raise clients.ServerGone('no server %s' % instance_uuid)
        if migration_uuid in self.migrations:
            raise RuntimeError('duplicate migration uuid %s' % migration_uuid)  # unique index
        self.migrations[migration_uuid] = {
            'uuid': migration_uuid, 'instance_uuid': instance_uuid,
            'migration_type': 'evacuation', 'status': 'done',
            'source_compute': source_host, 'source_node': source_node,
            'dest_compute': dest_host, 'dest_node': dest_node}
        self._leave('create_evacuation')

    def complete_evacuation(self, instance_uuid, migration_uuid):
        self._enter('complete_evacuation')
        self.migrations[migration_uuid]['status'] = 'completed'
        self._leave('complete_evacuation')

    def records(self, instance_uuid):
        """Test helper: the server's evacuation records, without their UUIDs."""
        return [{k: v for k, v in m.items() if k != 'uuid'} for m in self.migrations.values()
                if m['instance_uuid'] == instance_uuid]


class FakeNetwork(Injector, clients.NetworkAPI):
    def __init__(self):
        super().__init__()
        self.port_table = {}   # id -> port dict

    def add_port(self, port_id, instance_uuid, host):
        self.port_table[port_id] = {'id': port_id, 'device_id': instance_uuid,
                                    'binding:host_id': host}

    def ports(self, instance_uuid):
        self._enter('ports')
        return [dict(p) for p in self.port_table.values() if p['device_id'] == instance_uuid]

    def bind_port(self, port_id, host):
        self._enter('bind_port')
        self.port_table[port_id]['binding:host_id'] = host
        self._leave('bind_port')


class FakeAgents(Injector, clients.AgentAPI):
    """The agents of all hosts: what each has of which server follows the casts, as on the
    real agents (docs/bus.md), and ``fail_over`` does what a backup's agent does."""

    def __init__(self):
        super().__init__()
        self.casts = []
        self.servers = collections.defaultdict(dict)  # host -> uuid -> view (status' entries)
        self.status_calls = []

    def run(self, host, instance_uuid, role, state, peer_host=None):
        """Test set-up: the agent on ``host`` reports the server with ``role`` and ``state``."""
        self.servers[host][instance_uuid] = {'instance_uuid': instance_uuid, 'role': role,
                                             'state': state, 'peer_host': peer_host or ''}

    def fail_over(self, instance_uuid, new_host):
        """What the backup's agent does before it sends dt.pair.failover.end: it runs the
        server as primary (Agent::OnFailoverDone); the lost primary's agent is gone."""
        view = self.servers[new_host].get(instance_uuid) or {}
        lost = view.get('peer_host')
        if lost:
            self.servers[lost].pop(instance_uuid, None)
        self.run(new_host, instance_uuid, 'primary', 'unprotected', lost)

    def protect(self, host, instance_uuid, backup_host):
        self._enter('protect')
        self.casts.append(('protect', host, instance_uuid, backup_host))
        self.run(host, instance_uuid, 'primary', 'seeding', backup_host)
        self.run(backup_host, instance_uuid, 'backup', 'protected', host)
        self._leave('protect')

    def unprotect(self, host, instance_uuid):
        self._enter('unprotect')
        self.casts.append(('unprotect', host, instance_uuid))
        view = self.servers[host].get(instance_uuid)
        if view and view['role'] == 'primary':
            if view['peer_host']:
                self.servers[view['peer_host']].pop(instance_uuid, None)
            view.update(state='unprotected', peer_host='')
        self._leave('unprotect')

    def status(self, host):
        self._enter('status')
        self.status_calls.append(host)
        return {'host': host, 'version': 'fake',
                'protected_servers': [dict(v) for v in self.servers[host].values()]}


def host(name, az, capable=True, enabled=True, rp=None, aggregates=None):
    return planner.HostView(host=name, node=name + '-node', rp_uuid=rp or 'rp-' + name,
                            az=az, capable=capable, enabled=enabled,
                            aggregates=tuple(aggregates or ('agg-' + az,)))


FLAVOR = {'VCPU': 2, 'MEMORY_MB': 2048, 'DISK_GB': 20}


def payload(instance_uuid, host, extra_specs=None, project='proj', user='user'):
    """The part of Nova's InstanceCreatePayload/InstanceActionPayload the controller reads."""
    return {'nova_object.name': 'InstanceCreatePayload', 'nova_object.namespace': 'nova',
            'nova_object.version': '1.12',
            'nova_object.data': {
                'uuid': instance_uuid, 'host': host, 'node': host and host + '-node',
                'tenant_id': project, 'user_id': user,
                'flavor': {'nova_object.name': 'FlavorPayload',
                           'nova_object.data': {'extra_specs': dict(extra_specs or {})}}}}


def failover_payload(instance_uuid, new_host, old_host):
    """The agent's DTPairPayload of dt.pair.failover.end (docs/bus.md)."""
    return {'nova_object.name': 'DTPairPayload', 'nova_object.namespace': 'nova_dt',
            'nova_object.version': '1.0',
            'nova_object.data': {'instance_uuid': instance_uuid, 'host': new_host,
                                 'role': 'primary', 'state': 'running', 'reason': '',
                                 'peer_host': old_host, 'committed_epoch': 42,
                                 'duration_ms': 900, 'new_host': new_host}}
