"""A small Nova cloud in Nova's own functional harness, with nova_dt plugged in as deployed.

In-process nova-api (wsgi-intercept), conductor, scheduler (DTPairFilter and DTPairWeigher
enabled by import path), fake-driver computes, the real Placement service (python3-placement's
fixture, through nova's ``PlacementFixture``), nova's Neutron and Glance fixtures and its fake
versioned notifier, which captures the notifications the services emit. nova_dt's extra spec
validators are loaded through their entry point, as nova-api does.

The controller under test is the real ``Reconciler`` with its real clients (Nova's objects on
the harness's databases, Nova's report client on the Placement fixture, Nova's neutron client on
the Neutron fixture); only the agents' RPC is a fake that records the casts.
"""

import os

import fixtures

from nova import context as nova_context
from nova import test
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import fixtures as func_fixtures
from nova.tests.functional import integrated_helpers
from nova.scheduler.client import report
from nova.virt import fake as fake_virt

from nova_dt.controller import nova_clients
from nova_dt.controller import planner
from nova_dt.controller import reconciler
from nova_dt.controller import service
from nova_dt.controller import state
from nova_dt.tests import fixtures as dt_fixtures
from nova_dt.tests.unit.controller import fakes

API_PASTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'api-paste.ini')

ENABLED_FILTERS = ['ComputeFilter', 'ComputeCapabilitiesFilter', 'ImagePropertiesFilter',
                   'ServerGroupAntiAffinityFilter', 'ServerGroupAffinityFilter', 'DTPairFilter']


def _with_free_disk(get_available_resource):
    def wrapper(self, nodename):
        resources = get_available_resource(self, nodename)
        if resources:
            resources['disk_available_least'] = (resources['local_gb'] -
                                                 resources['local_gb_used'])
        return resources
    return wrapper


class DTFunctionalTestCase(test.TestCase, integrated_helpers.PlacementInstanceHelperMixin):
    """Hosts ``HOSTS`` (name -> AZ), each in its zone's DT-capable aggregate."""

    HOSTS = {'host1': 'az1', 'host2': 'az2', 'host3': 'az1'}
    compute_driver = 'fake.MediumFakeDriver'

    def setUp(self):
        self.flags(compute_driver=self.compute_driver)
        super().setUp()
        self.useFixture(dt_fixtures.ExtraSpecValidators())
        self.flags(api_paste_config=API_PASTE, group='wsgi')
        self.flags(available_filters=['nova.scheduler.filters.all_filters',
                                      'nova_dt.scheduler.filters.DTPairFilter'],
                   enabled_filters=ENABLED_FILTERS,
                   weight_classes=['nova.scheduler.weights.all_weighers',
                                   'nova_dt.scheduler.weights.DTPairWeigher'],
                   group='filter_scheduler')

        # nova's fake driver reports disk_available_least 0, i.e. a full disk to the scheduler's
        # HostState, which DTPairFilter's partner check reads (nova's old DiskFilter rule);
        # libvirt reports the real free space. Report the fake disk's free space instead.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.fake.FakeDriver.get_available_resource', _with_free_disk(
                fake_virt.FakeDriver.get_available_resource)))

        self.policy = self.useFixture(nova_fixtures.RealPolicyFixture())
        self.neutron = self.useFixture(nova_fixtures.NeutronFixture(self))
        self.glance = self.useFixture(nova_fixtures.GlanceFixture(self))
        self.placement = self.useFixture(func_fixtures.PlacementFixture()).api
        self.useFixture(nova_fixtures.AllServicesCurrent())
        self.notifier = self.useFixture(nova_fixtures.NotificationFixture(self))

        self.api_fixture = self.useFixture(nova_fixtures.OSAPIFixture(api_version='v2.1'))
        self.admin_api = self.api_fixture.admin_api
        self.admin_api.microversion = 'latest'
        self.api = self.admin_api

        self.start_service('conductor')
        self.scheduler_service = self.start_service('scheduler')
        self.computes = {}
        for host in sorted(self.HOSTS):
            self.computes[host] = self._start_compute(host)
        self.aggregates = {}
        for zone in sorted(set(self.HOSTS.values())):
            agg = self.admin_api.post_aggregate(
                {'aggregate': {'name': 'dt-' + zone, 'availability_zone': zone}})
            self.admin_api.post_aggregate_action(
                agg['id'], {'set_metadata': {'metadata': {'nova_dt:capable': 'true'}}})
            for host in sorted(h for h, z in self.HOSTS.items() if z == zone):
                self.admin_api.add_host_to_aggregate(agg['id'], host)
            self.aggregates[zone] = agg

        self.agents = fakes.FakeAgents()
        self.state_dir = self.useFixture(fixtures.TempDir()).path
        self.controller = self.make_controller()

    def make_controller(self):
        """The controller as nova-dt-controller builds it, with a recording agent RPC."""
        ctxt = nova_context.get_admin_context()
        rec = reconciler.Reconciler(
            store=state.StateStore.in_dir(self.state_dir),
            placement=nova_clients.ReportClientPlacement(report.SchedulerReportClient()),
            compute=nova_clients.NovaObjectsCompute(ctxt),
            network=nova_clients.NovaNeutronNetwork(ctxt),
            agents=self.agents, step_attempts=2, retry_interval=0, sleep=lambda s: None)
        self.addCleanup(rec.store.close)
        return rec

    # -- driving the controller --------------------------------------------------------------

    def feed_nova_notifications(self, event_type=None):
        """Hand the captured versioned notifications (of one type) to the controller's
        listener endpoint, as the oslo.messaging listener would."""
        endpoint = service.NotificationEndpoint(self.controller.handle_nova_notification, 'nova')
        for n in list(self.notifier.versioned_notifications):
            if event_type is None or n['event_type'] == event_type:
                endpoint.info({}, n['publisher_id'], n['event_type'], n['payload'], {})

    def feed_agent_notification(self, event_type, data):
        endpoint = service.NotificationEndpoint(self.controller.handle_agent_notification,
                                                'agent')
        payload = {'nova_object.name': 'DTPairPayload', 'nova_object.namespace': 'nova_dt',
                   'nova_object.version': '1.0', 'nova_object.data': data}
        endpoint.info({}, 'nova-dt-agent:' + data.get('host', '?'), event_type, payload, {})

    # -- Nova side helpers -------------------------------------------------------------------

    def create_dt_flavor(self, memory_mb=1024, **specs):
        extra = {'dt:enabled': 'true'}
        extra.update(specs)
        return self._create_flavor(memory_mb=memory_mb, vcpu=1, disk=5, ephemeral=0,
                                   extra_spec=extra)

    def boot(self, flavor_id, port=None, expected_state='ACTIVE'):
        networks = [{'port': port}] if port else 'none'
        server = self._create_server(flavor_id=flavor_id, networks=networks,
                                     expected_state=expected_state)
        if expected_state == 'ACTIVE':
            self.notifier.wait_for_versioned_notifications('instance.create.end')
        return server

    def host_of(self, server):
        return self.admin_api.get_server(server['id'])['OS-EXT-SRV-ATTR:host']

    def rp(self, host):
        return self._get_provider_uuid_by_host(host)

    def allocations(self, consumer):
        """{rp uuid: resources} of a Placement consumer."""
        body = self.placement.get('/allocations/%s' % consumer, version='1.28').body
        return {rp: a['resources'] for rp, a in body['allocations'].items()}

    def usages(self, host):
        return self.placement.get('/resource_providers/%s/usages' % self.rp(host)).body[
            'usages']

    @staticmethod
    def flavor_resources(flavor):
        return {'VCPU': flavor['vcpus'], 'MEMORY_MB': flavor['ram'], 'DISK_GB': flavor['disk']}

    def pair(self, server):
        return self.controller.store.get(server['id'])

    def reservation(self, server):
        return planner.reservation_consumer(server['id'])
