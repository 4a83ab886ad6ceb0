"""The controller's bus side over oslo.messaging's in-process 'fake' driver.

Real oslo.messaging notifiers, listeners, RPC client and server; only the broker is the fake
driver's (exchanges and queues in memory). The addressing is what the agent uses (docs/bus.md):
RPC exchange nova_dt, topic nova_dt_agent, server = host; notifications on exchange nova_dt,
topic notifications; Nova's on exchange nova, topic versioned_notifications.
"""

import importlib.metadata
import json
import os
import threading
import time
from unittest import mock

import fixtures
from oslo_config import cfg
import oslo_messaging as messaging

import nova.conf
from nova import test

from nova_dt.cmd import controller as controller_cmd
from nova_dt import conf as dt_conf
from nova_dt.controller import link_stats_writer
from nova_dt.controller import nova_clients
from nova_dt.controller import planner
from nova_dt.controller import service
from nova_dt.tests import fixtures as dt_fixtures
from nova_dt.tests.unit.controller import fakes

CONF = nova.conf.CONF
U = '8f0b7e0e-1a43-4b6e-b4ab-6d3f3f1ea001'


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out')
        time.sleep(0.01)


class Recorder(object):
    """Stands for the reconciler: records what the listeners hand over."""

    def __init__(self):
        self.nova = []
        self.agent = []
        self.lock = threading.Lock()

    def handle_nova_notification(self, event_type, payload):
        with self.lock:
            self.nova.append((event_type, payload))
        if event_type == 'instance.create.end':
            raise planner.BadEvent('a handler error must not stop the listener')

    def handle_agent_notification(self, event_type, payload):
        with self.lock:
            self.agent.append((event_type, payload))


def notifier(exchange, topic, publisher):
    """A notifier publishing as a service whose control exchange is ``exchange``."""
    conf = cfg.ConfigOpts()
    # The first transport registers the transport options; the driver takes its default
    # exchange from control_exchange when it is made.
    messaging.get_notification_transport(conf, url='fake:/').cleanup()
    conf.set_override('control_exchange', exchange)
    transport = messaging.get_notification_transport(conf, url='fake:/')
    return messaging.Notifier(transport, publisher_id=publisher, driver='messagingv2',
                              topics=[topic]), transport


class FakeBroker(fixtures.Fixture):
    """An empty in-memory broker: the fake driver keeps its exchanges in a class attribute."""

    def _setUp(self):
        self.useFixture(fixtures.MonkeyPatch(
            'oslo_messaging._drivers.impl_fake.FakeExchangeManager._exchanges', {}))


class TestListeners(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(FakeBroker())
        self.flags(transport_url='fake:/')
        self.recorder = Recorder()
        transport = messaging.get_notification_transport(CONF, url='fake:/')
        self.listeners = service.make_listeners(self.recorder, transport, transport, CONF)
        for listener in self.listeners:
            listener.start()
            self.addCleanup(listener.wait)
            self.addCleanup(listener.stop)

    def test_targets(self):
        self.assertEqual([('nova', 'versioned_notifications')],
                         [(t.exchange, t.topic) for t in service.nova_targets(CONF)])
        self.assertEqual([('nova_dt', 'notifications')],
                         [(t.exchange, t.topic) for t in service.agent_targets(CONF)])

    def test_both_sources_reach_their_handler(self):
        nova, t1 = notifier('nova', 'versioned_notifications', 'nova-compute:host1')
        agent, t2 = notifier('nova_dt', 'notifications', 'nova-dt-agent:host2')
        self.addCleanup(t1.cleanup)
        self.addCleanup(t2.cleanup)
        nova.info({}, 'instance.create.end', fakes.payload(U, 'host1'))
        nova.info({}, 'instance.delete.end', fakes.payload(U, 'host1'))
        agent.info({}, 'dt.pair.failover.end', fakes.failover_payload(U, 'host2', 'host1'))
        agent.error({}, 'dt.pair.degraded', {'nova_object.data': {}})
        wait_for(lambda: len(self.recorder.nova) == 2 and len(self.recorder.agent) == 2)
        self.assertEqual(['instance.create.end', 'instance.delete.end'],
                         [e for e, _ in self.recorder.nova])
        # INFO and ERROR notifications come through different queues: no order between them.
        agent = dict(self.recorder.agent)
        self.assertEqual({'dt.pair.failover.end', 'dt.pair.degraded'}, set(agent))
        self.assertEqual('host2', agent['dt.pair.failover.end']['nova_object.data']['new_host'])


class TestLinkStatsListener(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(FakeBroker())
        self.flags(transport_url='fake:/')
        self.flags(host='controller-1')
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'links.json')
        self.recorder = Recorder()
        transport = messaging.get_notification_transport(CONF, url='fake:/')
        self.listeners = service.make_listeners(
            self.recorder, transport, transport, CONF,
            link_stats_collector=link_stats_writer.LinkStatsCollector(self.path))
        for listener in self.listeners:
            listener.start()
            self.addCleanup(listener.wait)
            self.addCleanup(listener.stop)

    def test_agent_link_reports_reach_the_file_in_this_hosts_own_pool(self):
        self.assertEqual(3, len(self.listeners))
        self.assertEqual('nova-dt-controller.link-stats.controller-1', service.link_stats_pool(CONF))
        agent, t = notifier('nova_dt', 'notifications', 'nova-dt-agent:host2')
        self.addCleanup(t.cleanup)
        agent.info({}, 'dt.pair.protect.end', {'nova_object.data': {}})
        agent.info({}, 'dt.link.stats', {'nova_object.data': {'host': 'host2', 'links': [
            {'source': 'host2', 'target': 'host3', 'rtt_us': 310, 'rate_bytes_per_s': 0,
             'capacity_bytes_per_s': 125000000}]}})
        wait_for(lambda: os.path.exists(self.path))
        with open(self.path) as f:
            self.assertEqual(['host3'], [x['target'] for x in json.load(f)['links']])
        # The reconciler's listener still sees the agents' notifications (and ignores reports).
        wait_for(lambda: len(self.recorder.agent) == 2)


class AgentEndpoint(object):
    """A stand-in for the agent's RPC server (docs/bus.md: protect, unprotect, status)."""

    target = messaging.Target(version='1.0')

    def __init__(self, host):
        self.host = host
        self.calls = []

    def protect(self, ctxt, instance_uuid, backup_host):
        self.calls.append(('protect', instance_uuid, backup_host))

    def unprotect(self, ctxt, instance_uuid):
        self.calls.append(('unprotect', instance_uuid))

    def status(self, ctxt):
        self.calls.append(('status',))
        return {'host': self.host, 'protected_servers': [
            {'instance_uuid': U, 'role': 'primary', 'state': 'unprotected'}]}


class TestRpcAgents(test.NoDBTestCase):

    def test_casts_reach_the_agent_of_that_host_only(self):
        self.useFixture(FakeBroker())
        transport = messaging.get_rpc_transport(CONF, url='fake:/')
        endpoints = {}
        for host in ('host1', 'host2'):
            endpoints[host] = AgentEndpoint(host)
            server = messaging.get_rpc_server(
                transport, messaging.Target(exchange='nova_dt', topic='nova_dt_agent',
                                            server=host),
                [endpoints[host]], executor='threading')
            server.start()
            self.addCleanup(server.wait)
            self.addCleanup(server.stop)
        agents = nova_clients.RpcAgents(transport)
        agents.protect('host1', U, 'host2')
        agents.unprotect('host2', U)
        wait_for(lambda: endpoints['host1'].calls and endpoints['host2'].calls)
        self.assertEqual([('protect', U, 'host2')], endpoints['host1'].calls)
        self.assertEqual([('unprotect', U)], endpoints['host2'].calls)
        # The status call is answered by the agent of that host, within the timeout.
        self.assertEqual('host2', agents.status('host2')['host'])
        self.assertEqual([('unprotect', U), ('status',)], endpoints['host2'].calls)
        self.assertEqual(1, len(endpoints['host1'].calls))
        started = time.monotonic()
        self.assertRaises(messaging.MessagingTimeout,
                          nova_clients.RpcAgents(transport, timeout=1).status, 'host3')
        self.assertLess(time.monotonic() - started, 5)


class TestControllerService(test.NoDBTestCase):

    def test_start_resume_and_stop(self):
        state_dir = self.useFixture(fixtures.TempDir()).path
        self.flags(transport_url='fake:/')
        self.flags(state_dir=state_dir, resume_interval=3600, group='nova_dt')
        resumed = threading.Event()
        recorder = Recorder()
        recorder.resume = resumed.set
        recorder.store = mock.Mock()
        made = self.useFixture(fixtures.MockPatch(
            'nova_dt.controller.service.make_reconciler', return_value=recorder)).mock
        svc = service.ControllerService(CONF)
        svc.start()
        try:
            self.assertEqual(2, len(svc.listeners))
            self.assertTrue(resumed.wait(10), 'no resume pass at start')
            made.assert_called_once()
        finally:
            svc.stop()
        recorder.store.close.assert_called_once_with()


class TestConfRegistered(test.NoDBTestCase):

    def test_controller_options_on_nova_conf(self):
        dt_conf.register_opts(CONF)
        self.assertEqual('nova_dt', CONF.nova_dt.agent_exchange)
        self.assertEqual('nova_dt_agent', CONF.nova_dt.agent_topic)
        self.assertEqual(['notifications'], CONF.nova_dt.agent_notification_topics)
        self.assertEqual('/var/lib/nova-dt', CONF.nova_dt.state_dir)


class TestConsoleScript(test.NoDBTestCase):

    def test_nova_dt_controller_entry_point(self):
        self.useFixture(dt_fixtures.EntryPoints())
        [ep] = [e for e in importlib.metadata.entry_points(group='console_scripts')
                if e.name == 'nova-dt-controller']
        self.assertIs(controller_cmd.main, ep.load())
