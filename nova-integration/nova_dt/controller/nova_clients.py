"""The controller's clients, built on Nova's own code and nova.conf (see README "Write paths").

- Placement: Nova's ``SchedulerReportClient`` transport (``[placement]`` credentials in nova.conf),
  plain REST calls at microversion 1.36 (consumer generations since 1.28, ``member_of=in:`` and
  forbidden traits).
- Nova: Nova's versioned objects on Nova's databases (``[api_database]``, the cells' databases
  through the cell mappings), as ``nova-manage`` does: the API has no call that moves a server's
  host without Nova rebuilding or migrating it.
- Neutron: Nova's own neutron client factory (``[neutron]`` credentials), admin context.
- Agents: oslo.messaging RPC casts (and the ``status`` call) on the agents' exchange and topic
  (docs/bus.md).
"""

import contextlib
import urllib.parse

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_utils import uuidutils

from nova import context as nova_context
from nova import exception as nova_exception
from nova import objects
from nova.objects import fields as nova_fields
from nova import servicegroup

from nova_dt.controller import clients
from nova_dt.controller import planner
from nova_dt.scheduler import pairing

LOG = logging.getLogger(__name__)

PLACEMENT_VERSION = '1.36'
CONCURRENT_UPDATE = 'placement.concurrent_update'
# What evacuations() reads of a Migration (clients.ComputeAPI).
EVACUATION_FIELDS = ('uuid', 'instance_uuid', 'migration_type', 'status', 'source_compute',
                     'source_node', 'dest_compute', 'dest_node')


class PlacementError(Exception):
    """Placement answered with an unexpected status."""


def _errors(response):
    try:
        return response.json().get('errors') or []
    except ValueError:
        return []


def _raise_for(response, what, ok):
    if response.status_code in ok:
        return
    errors = _errors(response)
    detail = '; '.join(e.get('detail') or e.get('title') or '' for e in errors) or \
        (response.text or '')[:300]
    if response.status_code == 409:
        concurrent = any(e.get('code') == CONCURRENT_UPDATE for e in errors)
        raise clients.PlacementConflict('%s: %s' % (what, detail), concurrent)
    raise PlacementError('%s: HTTP %d: %s' % (what, response.status_code, detail))


class ReportClientPlacement(clients.PlacementAPI):
    """Placement over Nova's report client (or anything with its get/put/post/delete)."""

    def __init__(self, report_client=None):
        self._report_client = report_client

    @property
    def _client(self):
        # Made on first use: Placement (or Keystone) being unreachable when the controller
        # starts fails a step, which is retried, rather than the whole service.
        if self._report_client is None:
            from nova.scheduler.client import report
            self._report_client = report.report_client_singleton()
        return self._report_client

    def get_allocations(self, consumer_uuid):
        r = self._client.get('/allocations/%s' % consumer_uuid, version=PLACEMENT_VERSION)
        _raise_for(r, 'GET /allocations/%s' % consumer_uuid, (200,))
        body = r.json()
        return {'allocations': body.get('allocations') or {},
                'consumer_generation': body.get('consumer_generation'),
                'project_id': body.get('project_id'), 'user_id': body.get('user_id')}

    def put_allocations(self, consumer_uuid, allocations, consumer_generation, project_id,
                        user_id):
        body = {'allocations': allocations, 'consumer_generation': consumer_generation,
                'project_id': project_id, 'user_id': user_id}
        r = self._client.put('/allocations/%s' % consumer_uuid, body,
                             version=PLACEMENT_VERSION)
        _raise_for(r, 'PUT /allocations/%s' % consumer_uuid, (204,))

    def post_allocations(self, body):
        r = self._client.post('/allocations', body, version=PLACEMENT_VERSION)
        _raise_for(r, 'POST /allocations', (204,))

    def delete_allocations(self, consumer_uuid):
        r = self._client.delete('/allocations/%s' % consumer_uuid, version=PLACEMENT_VERSION)
        _raise_for(r, 'DELETE /allocations/%s' % consumer_uuid, (204, 404))
        return r.status_code == 204

    def allocation_candidates(self, resources, member_of=(), forbidden_traits=()):
        query = [('resources', ','.join('%s:%d' % kv for kv in sorted(resources.items())))]
        if member_of:
            query.append(('member_of', 'in:' + ','.join(member_of)))
        if forbidden_traits:
            query.append(('required', ','.join('!' + t for t in forbidden_traits)))
        url = '/allocation_candidates?' + urllib.parse.urlencode(query, safe=':,!')
        r = self._client.get(url, version=PLACEMENT_VERSION)
        _raise_for(r, 'GET /allocation_candidates', (200,))
        body = r.json()
        summaries = body.get('provider_summaries') or {}
        candidates = {}
        for request in body.get('allocation_requests') or []:
            providers = list((request.get('allocations') or {}).keys())
            if len(providers) != 1:
                continue  # the backup must fit on the compute node itself
            rp = providers[0]
            ram = summaries.get(rp, {}).get('resources', {}).get('MEMORY_MB', {})
            candidates[rp] = planner.Candidate(
                rp, ram.get('capacity', 0) - ram.get('used', 0))
        return candidates


class _AggregatesOf(object):
    """What pairing's capability and zone rules read: the aggregates of one host."""

    def __init__(self, aggregates):
        self.aggregates = aggregates


def _cell_results(results, what):
    for cell_uuid, result in results.items():
        if not nova_context.is_cell_failure_sentinel(result):
            yield from result
        else:
            LOG.warning("Cell %(cell)s did not answer for %(what)s: %(r)s",
                        {'cell': cell_uuid, 'what': what, 'r': result})


class NovaObjectsCompute(clients.ComputeAPI):
    """Nova through its objects and databases (needs nova.conf's database settings)."""

    def __init__(self, context=None):
        self._context = context or nova_context.get_admin_context()
        self._servicegroup = servicegroup.API()

    def hosts(self):
        ctx = self._context
        aggregates = objects.AggregateList.get_all(ctx)
        nodes = {}
        for node in _cell_results(nova_context.scatter_gather_skip_cell0(
                ctx, objects.ComputeNodeList.get_all), 'compute nodes'):
            if node.deleted:
                continue
            # One node per host (libvirt); for several (ironic) the first by name.
            if node.host not in nodes or node.hypervisor_hostname < nodes[node.host].\
                    hypervisor_hostname:
                nodes[node.host] = node
        services = {s.host: s for s in _cell_results(nova_context.scatter_gather_skip_cell0(
            ctx, objects.ServiceList.get_by_binary, 'nova-compute', include_disabled=True),
            'services')}
        hosts = {}
        for host, node in nodes.items():
            aggs = _AggregatesOf([a for a in aggregates if host in a.hosts])
            service = services.get(host)
            hosts[host] = planner.HostView(
                host=host, node=node.hypervisor_hostname, rp_uuid=node.uuid,
                az=pairing.host_az(aggs), capable=pairing.is_capable(aggs),
                # As nova's scheduler sees it: not disabled, not forced down, reporting.
                enabled=(bool(service) and not service.disabled and
                         self._servicegroup.service_is_up(service)),
                aggregates=tuple(sorted(a.uuid for a in aggs.aggregates)))
        return hosts

    @contextlib.contextmanager
    def _instance_cell(self, instance_uuid):
        mapping = objects.InstanceMapping.get_by_instance_uuid(self._context, instance_uuid)
        with nova_context.target_cell(self._context, mapping.cell_mapping) as cctxt:
            yield cctxt, mapping.cell_mapping

    def get_instance_host(self, instance_uuid):
        try:
            with self._instance_cell(instance_uuid) as (cctxt, _):
                instance = objects.Instance.get_by_uuid(cctxt, instance_uuid)
                return instance.host, instance.node
        except (nova_exception.InstanceMappingNotFound,
                nova_exception.InstanceNotFound) as e:
            raise clients.ServerGone(str(e))

    def set_instance_host(self, instance_uuid, host, node, availability_zone):
        host_cell = objects.HostMapping.get_by_host(self._context, host).cell_mapping
        with self._instance_cell(instance_uuid) as (cctxt, cell):
            if host_cell.uuid != cell.uuid:
                raise ValueError('host %s is in cell %s, the server in cell %s'
                                 % (host, host_cell.uuid, cell.uuid))
            instance = objects.Instance.get_by_uuid(cctxt, instance_uuid)
            LOG.info("Server %(uuid)s: host %(old)s/%(old_node)s -> %(host)s/%(node)s",
                     {'uuid': instance_uuid, 'old': instance.host,
                      'old_node': instance.node, 'host': host, 'node': node})
            instance.host = host
            instance.node = node
            if availability_zone:
                instance.availability_zone = availability_zone
            instance.save()

    def evacuations(self, instance_uuid):
        try:
            with self._instance_cell(instance_uuid) as (cctxt, _):
                migrations = objects.MigrationList.get_by_filters(cctxt, {
                    'instance_uuid': instance_uuid,
                    'migration_type': nova_fields.MigrationType.EVACUATION})
                return [{f: getattr(m, f) for f in EVACUATION_FIELDS} for m in migrations]
        except nova_exception.InstanceMappingNotFound as e:
            raise clients.ServerGone(str(e))

    def create_evacuation(self, instance_uuid, migration_uuid, source_host, source_node,
                          dest_host, dest_node):
        try:
            with self._instance_cell(instance_uuid) as (cctxt, _):
                instance = objects.Instance.get_by_uuid(cctxt, instance_uuid,
                                                        expected_attrs=['flavor'])
                dest = objects.ComputeNode.get_by_host_and_nodename(cctxt, dest_host,
                                                                   dest_node)
                # The fields nova-api's evacuate and the destination's resource tracker set
                # (compute/api.py evacuate, resource_tracker._create_migration), with the
                # status finish_evacuation leaves once the server runs on the destination.
                migration = objects.Migration(
                    cctxt, uuid=migration_uuid, instance_uuid=instance_uuid,
                    migration_type=nova_fields.MigrationType.EVACUATION, status='done',
                    source_compute=source_host, source_node=source_node,
                    dest_compute=dest_host, dest_node=dest_node,
                    dest_host=str(dest.host_ip) if dest.host_ip else None,
                    old_instance_type_id=instance.flavor.id,
                    new_instance_type_id=instance.flavor.id)
                migration.create()
                LOG.info("Server %(uuid)s: evacuation record %(mig)s from %(src)s/%(src_node)s "
                         "to %(dest)s/%(dest_node)s", {
                             'uuid': instance_uuid, 'mig': migration_uuid, 'src': source_host,
                             'src_node': source_node, 'dest': dest_host,
                             'dest_node': dest_node})
        except (nova_exception.InstanceMappingNotFound,
                nova_exception.InstanceNotFound) as e:
            raise clients.ServerGone(str(e))

    def complete_evacuation(self, instance_uuid, migration_uuid):
        with self._instance_cell(instance_uuid) as (cctxt, _):
            migration = objects.Migration.get_by_uuid(cctxt, migration_uuid)
            LOG.info("Server %(uuid)s: evacuation record %(mig)s from %(src)s %(status)s -> "
                     "completed", {'uuid': instance_uuid, 'mig': migration_uuid,
                                   'src': migration.source_compute,
                                   'status': migration.status})
            migration.status = 'completed'
            migration.save()


class NovaNeutronNetwork(clients.NetworkAPI):
    """Neutron through Nova's client factory (nova.conf ``[neutron]``), as admin."""

    def __init__(self, context=None):
        self._context = context or nova_context.get_admin_context()

    def _client(self):
        from nova.network import neutron
        return neutron.get_client(self._context, admin=True)

    def ports(self, instance_uuid):
        return self._client().list_ports(device_id=instance_uuid)['ports']

    def bind_port(self, port_id, host):
        self._client().update_port(port_id, {'port': {'binding:host_id': host}})


class RpcAgents(clients.AgentAPI):
    """The agents' RPC API on topic ``agent_topic``, server = compute host: casts, and the
    ``status`` call (at most ``timeout`` seconds)."""

    VERSION = '1.0'

    def __init__(self, transport, exchange='nova_dt', topic='nova_dt_agent', timeout=10):
        target = messaging.Target(exchange=exchange, topic=topic, version=self.VERSION)
        self._client = messaging.get_rpc_client(transport, target, timeout=timeout)

    @staticmethod
    def _context():
        return {'request_id': 'req-' + uuidutils.generate_uuid(), 'is_admin': True}

    def protect(self, host, instance_uuid, backup_host):
        LOG.info("protect(%(uuid)s, %(backup)s) to the agent on %(host)s",
                 {'uuid': instance_uuid, 'backup': backup_host, 'host': host})
        self._client.prepare(server=host).cast(
            self._context(), 'protect', instance_uuid=instance_uuid, backup_host=backup_host)

    def unprotect(self, host, instance_uuid):
        LOG.info("unprotect(%(uuid)s) to the agent on %(host)s",
                 {'uuid': instance_uuid, 'host': host})
        self._client.prepare(server=host).cast(
            self._context(), 'unprotect', instance_uuid=instance_uuid)

    def status(self, host):
        return self._client.prepare(server=host).call(self._context(), 'status')
