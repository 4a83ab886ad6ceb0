"""The controller's notification listeners on a real RabbitMQ (oslo.messaging's rabbit driver).

oslo's rabbit driver names a listener pool's queue after the pool alone
(``AMQPDriverBase.listen_for_notifications``: ``queue_name=pool`` for every target), so two
listeners in one pool on one broker and vhost share one queue, whatever their exchanges, and
take turns at its messages. The controller's listeners for Nova's and the agents' notifications
are usually on the same broker (the agents' default is Nova's notification transport): each
must have a queue of its own, or half of Nova's events reach the agents' handler and half of
the agents' failovers reach Nova's, and both drop them. The in-process fake driver keys queues
by exchange, topic and pool, so only a real broker shows it.
"""

import os
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging

import nova.conf
from nova import test

from nova_dt.controller import service
from nova_dt.tests.unit.controller import fakes

CONF = nova.conf.CONF

SRC = os.environ.get('NOVA_DT_SOURCE_DIR') or os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
SUPPORT = os.path.join(SRC, 'tests', 'support')
U = '8f0b7e0e-1a43-4b6e-b4ab-6d3f3f1ea001'
COUNT = 6


def _rabbitmq():
    if SUPPORT not in sys.path:
        sys.path.insert(0, SUPPORT)
    import rabbitmq
    return rabbitmq


class Recorder(object):
    def __init__(self):
        self.nova = []
        self.agent = []
        self.lock = threading.Lock()

    def handle_nova_notification(self, event_type, payload):
        with self.lock:
            self.nova.append(event_type)

    def handle_agent_notification(self, event_type, payload):
        with self.lock:
            self.agent.append(event_type)


class ListenerQueuesTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.assertTrue(os.path.isdir(SUPPORT),
                        'tests/support not found under %s: set NOVA_DT_SOURCE_DIR' % SRC)
        self.rabbit = _rabbitmq().RabbitMQ()
        self.addCleanup(self.rabbit.close)
        self.rabbit.start()

    def notifier(self, exchange, topic):
        conf = cfg.ConfigOpts()
        messaging.get_notification_transport(conf, url=self.rabbit.url).cleanup()
        conf.set_override('control_exchange', exchange)
        transport = messaging.get_notification_transport(conf, url=self.rabbit.url)
        self.addCleanup(transport.cleanup)
        return messaging.Notifier(transport, publisher_id='test:host1', driver='messagingv2',
                                  topics=[topic])

    def test_nova_and_agent_notifications_on_one_broker_reach_their_own_handler(self):
        transport = messaging.get_notification_transport(CONF, url=self.rabbit.url)
        self.addCleanup(transport.cleanup)
        recorder = Recorder()
        listeners = service.make_listeners(recorder, transport, transport, CONF)
        for listener in listeners:
            listener.start()
            self.addCleanup(listener.wait)
            self.addCleanup(listener.stop)
        nova = self.notifier('nova', 'versioned_notifications')
        agents = self.notifier('nova_dt', 'notifications')
        for i in range(COUNT):
            nova.info({}, 'instance.create.end', fakes.payload(U, 'host%d' % i))
            agents.info({}, 'dt.pair.failover.end', fakes.failover_payload(U, 'h%d' % i, 'h'))
        deadline = time.monotonic() + 20
        while len(recorder.nova) + len(recorder.agent) < 2 * COUNT:
            self.assertLess(time.monotonic(), deadline, 'notifications did not arrive')
            time.sleep(0.05)
        time.sleep(0.5)  # nothing more comes
        self.assertEqual(['instance.create.end'] * COUNT, recorder.nova)
        self.assertEqual(['dt.pair.failover.end'] * COUNT, recorder.agent)
        # (The notifiers' default queues versioned_notifications.info, notifications.info too.)
        queues = self.rabbit.ctl('list_queues', '--no-table-headers', 'name').split()
        self.assertEqual(['nova-dt-controller', 'nova-dt-controller.agents'],
                         sorted(q for q in queues if q.startswith('nova-dt-controller')))
