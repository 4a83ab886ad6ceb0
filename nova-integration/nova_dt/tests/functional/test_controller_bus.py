"""The controller's bus side on a real RabbitMQ with the real nova-dt-agent.

A private rabbitmq-server (tests/support/rabbitmq.py) and one nova-dt-agent process
(tests/support/nova_dt_agent.py) on libvirt's test:///default driver. The controller is the real
``ControllerService`` started as ``nova-dt-controller`` starts it, with
``[nova_dt] agent_transport_url`` and ``agent_notification_transport_url`` pointing at the broker,
so its agent RPC client (``RpcAgents``) and its listener on the agents' exchange are the ones the
service builds, on oslo.messaging's rabbit driver. Only Nova, Placement and Neutron are the unit
tests' fakes (and Nova's own bus stays the fake driver: this test is about the agents' side).

The agent and the controller connect with the users and rights docs/bus.md documents, made by
running that page's rabbitmqctl commands (tests/support/rabbitmq_permissions.py): the agents' RPC
in vhost nova_dt, the notifications in vhost /.

The agent needs a build: ``NOVA_DT_BUILD`` (default ``<repo>/build``). Without the binary the test
fails; it never skips.
"""

import os
import shutil
import sys
import tempfile
import time
import uuid

import fixtures
from oslo_config import cfg
import oslo_messaging as messaging

import nova.conf
from nova import test

from nova_dt.controller import planner
from nova_dt.controller import reconciler as dt_reconciler
from nova_dt.controller import service
from nova_dt.tests.unit.controller import fakes

CONF = nova.conf.CONF

SRC = os.environ.get('NOVA_DT_SOURCE_DIR') or os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
BUILD = os.environ.get('NOVA_DT_BUILD') or os.path.join(SRC, 'build')
AGENT_BINARY = os.path.join(BUILD, 'agent', 'daemon', 'nova-dt-agent')
SUPPORT = os.path.join(SRC, 'tests', 'support')

HOST = 'dt-ctl-a'
BACKUP = 'dt-ctl-b'
RPC_VHOST = 'nova_dt'
NOTIFY_VHOST = '/'
# The running domain of libvirt's test driver: it has no QMP, so protecting it fails with
# "not shared file-backed memory".
TEST_DOMAIN_UUID = '6695eb01-f6a4-8304-79aa-97f2502e193f'
WAIT = 20.0


def wait_for(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(0.05)


def _support():
    if SUPPORT not in sys.path:
        sys.path.insert(0, SUPPORT)
    import nova_dt_agent
    import nova_payloads
    import rabbitmq
    import rabbitmq_permissions
    return nova_dt_agent, nova_payloads, rabbitmq, rabbitmq_permissions


class ControllerBusTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        # Fail, never skip: a missing build must show up as a failure.
        self.assertTrue(os.access(AGENT_BINARY, os.X_OK),
                        'nova-dt-agent binary not found at %s: build the agent first (cmake '
                        '--build build) or set NOVA_DT_BUILD' % AGENT_BINARY)
        self.assertTrue(os.path.isdir(SUPPORT),
                        'tests/support not found under %s: set NOVA_DT_SOURCE_DIR' % SRC)
        agent_mod, self.payloads, rabbitmq_mod, permissions = _support()

        workdir = tempfile.mkdtemp(prefix='nova-dt-controller-bus.')
        self.addCleanup(shutil.rmtree, workdir, True)
        self.rabbit = rabbitmq_mod.RabbitMQ()
        self.addCleanup(self.rabbit.close)
        self.rabbit.start()
        self.users = permissions.apply_documented_permissions(
            self.rabbit, HOST, notify_vhost=NOTIFY_VHOST, rpc_vhost=RPC_VHOST)
        # Nova runs already: its exchange exists (the agent only checks that it does).
        import nova_emit
        nova_emit.declare_nova_exchange(self.rabbit.url)
        self.agent = agent_mod.AgentProcess(
            BUILD, os.path.join(workdir, 'agent'),
            agent_mod.bus_test_config(
                HOST, self.users.agent_url(self.rabbit, RPC_VHOST), BACKUP,
                '[oslo_messaging_notifications]\ntransport_url = %s\n'
                % self.users.agent_url(self.rabbit, NOTIFY_VHOST)))
        self.addCleanup(self.agent.stop)

        # The test's own view of the agent (status, as the controller) and Nova's notifier.
        self.test_transport = messaging.get_rpc_transport(
            CONF, url=self.users.controller_url(self.rabbit, RPC_VHOST))
        self.addCleanup(self.test_transport.cleanup)
        self.status_client = messaging.get_rpc_client(
            self.test_transport,
            messaging.Target(exchange='nova_dt', topic='nova_dt_agent', server=HOST,
                             version='1.0'),
            timeout=5)
        self.nova = self._nova_notifier()
        try:
            wait_for(lambda: self._status_quiet(), "the agent's bus")
        except AssertionError as e:
            raise AssertionError('%s; agent log:\n%s' % (e, self.agent.log_text()[-4000:]))

        # The controller, started as nova-dt-controller starts it; Nova, Placement and Neutron
        # are fakes, the agents' RPC client and notification listener are the real ones.
        self.flags(agent_transport_url=self.users.controller_url(self.rabbit, RPC_VHOST),
                   agent_notification_transport_url=self.users.controller_url(
                       self.rabbit, NOTIFY_VHOST),
                   state_dir=os.path.join(workdir, 'state'), resume_interval=3600,
                   group='nova_dt')
        self.placement = fakes.FakePlacement()
        self.compute = fakes.FakeCompute()
        self.network = fakes.FakeNetwork()
        for name, fake in (('ReportClientPlacement', self.placement),
                           ('NovaObjectsCompute', self.compute),
                           ('NovaNeutronNetwork', self.network)):
            self.useFixture(fixtures.MockPatch('nova_dt.controller.nova_clients.' + name,
                                               return_value=fake))
        # Watch what the agents' listener hands the reconciler, and what it makes of it. The
        # endpoint binds the method when the service makes the listeners, so patch the class.
        self.agent_events = []
        handle = dt_reconciler.Reconciler.handle_agent_notification
        events = self.agent_events

        def watched(reconciler, event_type, payload):
            try:
                result = handle(reconciler, event_type, payload)
            except Exception as e:
                events.append((event_type, payload, e))
                raise
            events.append((event_type, payload, result))
            return result

        self.useFixture(fixtures.MonkeyPatch(
            'nova_dt.controller.reconciler.Reconciler.handle_agent_notification', watched))
        self.svc = service.ControllerService(CONF)
        self.svc.start()
        self.addCleanup(self.svc.stop)
        # The listener's queues exist (bound on the broker) before the agent publishes.
        wait_for(lambda: 'notifications.error' in self.rabbit.ctl(
            'list_bindings', '--no-table-headers', 'source_name', 'routing_key'),
            "the controller's agent listener bound to nova_dt/notifications.error")

    def _nova_notifier(self):
        conf = cfg.ConfigOpts()
        messaging.get_notification_transport(conf, url=self.rabbit.url).cleanup()
        conf.set_override('control_exchange', 'nova')
        transport = messaging.get_notification_transport(conf, url=self.rabbit.url)
        self.addCleanup(transport.cleanup)
        return messaging.Notifier(transport, publisher_id='nova-compute:' + HOST,
                                  driver='messagingv2', topics=['versioned_notifications'])

    def _agent_notifier(self):
        """What any agent's user may publish: notifications on nova_dt (docs/bus.md)."""
        conf = cfg.ConfigOpts()
        url = self.users.agent_url(self.rabbit, NOTIFY_VHOST)
        messaging.get_notification_transport(conf, url=url).cleanup()
        conf.set_override('control_exchange', 'nova_dt')
        transport = messaging.get_notification_transport(conf, url=url)
        self.addCleanup(transport.cleanup)
        return messaging.Notifier(transport, publisher_id='nova-dt-agent:' + HOST,
                                  driver='messagingv2', topics=['notifications'])

    def _status_quiet(self):
        try:
            s = self.status_client.prepare(timeout=2).call({}, 'status')
        except messaging.MessagingTimeout:
            return False
        return (s['bus']['nova_notifications']['connected'] and
                s['bus']['notifier']['connected'])

    def status(self):
        return self.status_client.call({}, 'status')

    def _nova_payload(self, instance_uuid):
        return self.payloads.instance_payload('instance.create.end', instance_uuid, HOST,
                                              {'dt:enabled': 'true'})

    def _no_listener_errors(self):
        log = self.stdlog.logger.output
        self.assertNotIn('Handling agent notification', log)
        self.assertNotIn('Dropped agent notification', log)

    def test_protect_casts_reach_the_real_agent(self):
        agents = self.svc.reconciler.agents
        before = self.status()['bus']['rpc']
        unknown = str(uuid.uuid4())
        # The test domain cannot be protected (no shared file-backed memory); an unknown
        # server is NotFound: both arrive, both fail in the agent.
        agents.protect(HOST, TEST_DOMAIN_UUID, BACKUP)
        agents.protect(HOST, unknown, BACKUP)
        after = wait_for(
            lambda: (lambda r: r if r['failures'] >= before['failures'] + 2 else None)(
                self.status()['bus']['rpc']),
            'the two protect casts served and failed')
        # The status calls themselves count as received too.
        self.assertGreaterEqual(after['received'], before['received'] + 2)
        self.assertEqual(before['failures'] + 2, after['failures'])
        log = self.agent.log_text()
        self.assertIn('not shared file-backed memory', log)
        self.assertIn(unknown, log)
        self.assertIsNone(self.agent.proc.poll(), 'the agent died')

    def test_agent_protect_error_reaches_the_controller_listener(self):
        # Nova says a DT server was created here: the agent protects it to its default backup,
        # fails (test driver) and publishes dt.pair.protect.error on nova_dt/notifications.
        self.nova.info({}, 'instance.create.end', self._nova_payload(TEST_DOMAIN_UUID))
        event_type, payload, result = wait_for(
            lambda: next((e for e in self.agent_events
                          if e[0] == 'dt.pair.protect.error'), None),
            'dt.pair.protect.error at the controller')
        data = payload['nova_object.data']
        self.assertEqual('DTPairPayload', payload['nova_object.name'])
        self.assertEqual(TEST_DOMAIN_UUID, data['instance_uuid'])
        self.assertEqual(HOST, data['host'])
        self.assertEqual(BACKUP, data['peer_host'])
        self.assertIn('not shared file-backed memory', data['reason'])
        # The controller acts on dt.pair.failover.end only: this one is received and ignored,
        # without error and without a record.
        self.assertIsNone(result)
        self.assertIsNone(self.svc.reconciler.store.get(TEST_DOMAIN_UUID))
        self._no_listener_errors()

    def pair_on(self, instance_uuid, primary, backup):
        """The controller protects the server from ``primary`` to ``backup`` (its record, and
        Nova's, Placement's and Neutron's fakes as they are then)."""
        for name, az in ((primary, 'az1'), (backup, 'az2')):
            view = fakes.host(name, az)
            self.compute.host_views[name] = view
            self.placement.add_provider(view.rp_uuid, {'VCPU': 8, 'MEMORY_MB': 8192,
                                                       'DISK_GB': 100})
        self.compute.instances[instance_uuid] = {'host': primary, 'node': primary + '-node',
                                                 'az': 'az1'}
        self.placement.set_allocations(instance_uuid, {'rp-' + primary: dict(fakes.FLAVOR)})
        self.network.add_port('port-' + instance_uuid, instance_uuid, primary)
        self.svc.reconciler.store.put(planner.Pair(
            instance_uuid, primary_host=primary, backup_host=backup, backup_rp='rp-' + backup,
            status=planner.PROTECTED))

    def publish_failover(self, instance_uuid, new_host, lost_primary):
        self._agent_notifier().info({}, 'dt.pair.failover.end', fakes.failover_payload(
            instance_uuid, new_host, lost_primary))

    def test_forged_failover_is_refused_once_the_real_agent_denies_it(self):
        # The agent on HOST is the pair's backup, so the event names the right hosts; but HOST's
        # agent has no such server. Sent with an agent's user, which may publish on nova_dt.
        forged = str(uuid.uuid4())
        self.pair_on(forged, BACKUP, HOST)
        before = self.status()['bus']['rpc']['received']
        self.publish_failover(forged, HOST, BACKUP)
        pair = wait_for(lambda: (lambda p: p if p.failover_claim else None)(
            self.svc.reconciler.store.get(forged)), 'the failover refused')
        self.assertEqual('refused', pair.failover_claim['verdict'])
        self.assertEqual('the agent on %s does not have the server' % HOST,
                         pair.failover_claim['reason'])
        # The controller asked HOST's agent (the status call came in over HOST's queue) ...
        self.assertGreater(self.status()['bus']['rpc']['received'], before + 1)
        # ... and changed nothing.
        self.assertEqual(BACKUP, self.compute.instances[forged]['host'])
        self.assertEqual(BACKUP, self.network.port_table['port-' + forged]['binding:host_id'])
        self.assertEqual({'rp-' + BACKUP: fakes.FLAVOR}, self.placement.usages(forged))
        self.assertEqual((BACKUP, HOST, planner.PROTECTED),
                         (pair.primary_host, pair.backup_host, pair.status))
        self.assertIn('Server %s: not acting on its failover to %s' % (forged, HOST),
                      self.stdlog.logger.output)
        self._no_listener_errors()

    def test_failover_confirmed_by_the_real_agent_is_reconciled(self):
        # Nova says the server runs on HOST: HOST's agent lists it as primary (unprotected: the
        # test driver cannot protect it), as it does a server it restored.
        self.nova.info({}, 'instance.create.end', self._nova_payload(TEST_DOMAIN_UUID))
        view = wait_for(lambda: next((v for v in self.status()['protected_servers']
                                      if v['instance_uuid'] == TEST_DOMAIN_UUID), None),
                        'the server in the agent status')
        self.assertEqual('primary', view['role'])
        self.pair_on(TEST_DOMAIN_UUID, BACKUP, HOST)
        self.publish_failover(TEST_DOMAIN_UUID, HOST, BACKUP)
        wait_for(lambda: self.compute.instances[TEST_DOMAIN_UUID]['host'] == HOST,
                 'the server moved to %s in Nova' % HOST)
        self.assertEqual(HOST, self.network.port_table['port-' + TEST_DOMAIN_UUID][
            'binding:host_id'])
        self.assertEqual({'rp-' + HOST: fakes.FLAVOR}, self.placement.usages(TEST_DOMAIN_UUID))
        pair = wait_for(lambda: (lambda p: p if p.job is None else None)(
            self.svc.reconciler.store.get(TEST_DOMAIN_UUID)), 'the failover job done')
        self.assertEqual((HOST, None), (pair.primary_host, pair.failover_claim))
        self.assertIn('Server %s failed over from %s to %s (confirmed by its agent)'
                      % (TEST_DOMAIN_UUID, BACKUP, HOST), self.stdlog.logger.output)
        self._no_listener_errors()
