"""The nova-dt-controller process: notification listeners, periodic resume, oslo.service.

Two oslo.messaging notification listeners in pools (own queues, so other consumers of the same
topics keep their notifications):

- Nova's versioned notifications: exchange ``nova`` (nova's control exchange), topics
  ``[notifications] versioned_notifications_topics``, on nova's notification transport, pool
  ``[nova_dt] notification_pool``;
- the agents' ``dt.pair.*``: exchange ``[nova_dt] agent_exchange``, topics
  ``[nova_dt] agent_notification_topics``, on ``[nova_dt] agent_notification_transport_url``,
  pool ``<notification_pool>.agents``. oslo's rabbit driver names a pool's queue after the pool
  alone, so one pool for both would be one queue on a shared broker, with each listener taking
  every other message of both sources.

With ``[nova_dt] link_stats_file`` set, a third listener takes the agents' ``dt.link.stats``
in a pool of this host's own and keeps that file up to date (link_stats_writer).

Handlers persist the job before running it and never raise, so a notification is acknowledged
once the controller has recorded what it has to do about it.
"""

from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_service import service

import nova.conf

from nova_dt import conf as dt_conf
from nova_dt.controller import link_stats_writer
from nova_dt.controller import nova_clients
from nova_dt.controller import planner
from nova_dt.controller import reconciler as dt_reconciler
from nova_dt.controller import state
from nova_dt.hostcheck import checks as host_checks
from nova_dt.scheduler import link_stats
from nova_dt.scheduler import weights

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
dt_conf.register_opts(CONF)

NOVA_EXCHANGE = 'nova'


class NotificationEndpoint(object):
    """Hands notifications of one source to the reconciler; logs and drops bad ones."""

    def __init__(self, handler, source):
        self._handler = handler
        self._source = source

    def _handle(self, event_type, payload):
        try:
            self._handler(event_type, payload)
        except planner.BadEvent as e:
            LOG.error("Dropped %(source)s notification %(event)s: %(err)s",
                      {'source': self._source, 'event': event_type, 'err': e})
        except Exception:
            LOG.exception("Handling %(source)s notification %(event)s failed",
                          {'source': self._source, 'event': event_type})
        return messaging.NotificationResult.HANDLED

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._handle(event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._handle(event_type, payload)


def nova_targets(conf):
    return [messaging.Target(exchange=NOVA_EXCHANGE, topic=topic)
            for topic in conf.notifications.versioned_notifications_topics]


def agent_targets(conf):
    return [messaging.Target(exchange=conf.nova_dt.agent_exchange, topic=topic)
            for topic in conf.nova_dt.agent_notification_topics]


class LinkStatsEndpoint(NotificationEndpoint):
    """Only the agents' dt.link.stats reach it (oslo drops the rest for this pool's queue)."""

    filter_rule = messaging.NotificationFilter(event_type=r'^dt\.link\.stats$')


def agent_pool(conf):
    """The pool of the agents' listener: never Nova's (its queue would be the same)."""
    pool = conf.nova_dt.notification_pool
    return '%s.agents' % pool if pool else None


def link_stats_pool(conf):
    """This controller host's own pool: every controller host sees every link report."""
    return '%s.link-stats.%s' % (conf.nova_dt.notification_pool or 'nova-dt-controller',
                                 conf.host)


def make_listeners(reconciler, nova_transport, agent_transport, conf, executor='threading',
                   link_stats_collector=None):
    """The notification listeners (not started): Nova's, the agents' and, with a collector,
    the agents' link reports in this host's own pool."""
    pool = conf.nova_dt.notification_pool or None
    listeners = [
        messaging.get_notification_listener(
            nova_transport, nova_targets(conf),
            [NotificationEndpoint(reconciler.handle_nova_notification, 'nova')],
            executor=executor, pool=pool),
        messaging.get_notification_listener(
            agent_transport, agent_targets(conf),
            [NotificationEndpoint(reconciler.handle_agent_notification, 'agent')],
            executor=executor, pool=agent_pool(conf)),
    ]
    if link_stats_collector is not None:
        listeners.append(messaging.get_notification_listener(
            agent_transport, agent_targets(conf),
            [LinkStatsEndpoint(link_stats_collector.handle, 'agent link stats')],
            executor=executor, pool=link_stats_pool(conf)))
    return listeners


def make_reconciler(conf, agent_transport):
    """A reconciler on Nova's objects, report client and neutron client, and the agents' RPC."""
    def links():
        return link_stats.get_provider().links()

    def link_delay(stats):
        return weights.link_delay_ms(stats, conf.nova_dt.replication_message_bytes)

    return dt_reconciler.Reconciler(
        store=state.StateStore.in_dir(conf.nova_dt.state_dir),
        placement=nova_clients.ReportClientPlacement(),
        compute=nova_clients.NovaObjectsCompute(),
        network=nova_clients.NovaNeutronNetwork(),
        agents=nova_clients.RpcAgents(agent_transport, conf.nova_dt.agent_exchange,
                                      conf.nova_dt.agent_topic,
                                      timeout=conf.nova_dt.agent_call_timeout),
        links=links, link_delay=link_delay,
        step_attempts=conf.nova_dt.step_attempts,
        retry_interval=conf.nova_dt.retry_interval)


class ControllerService(service.Service):
    """Listens to Nova and the agents and resumes unfinished work every resume_interval."""

    def __init__(self, conf=CONF):
        super().__init__()
        self.conf = conf
        self.listeners = []
        self.reconciler = None

    def start(self):
        super().start()
        conf = self.conf
        agent_rpc = messaging.get_rpc_transport(conf, url=conf.nova_dt.agent_transport_url)
        nova_notifications = messaging.get_notification_transport(conf)
        agent_notifications = nova_notifications
        if conf.nova_dt.agent_notification_transport_url:
            agent_notifications = messaging.get_notification_transport(
                conf, url=conf.nova_dt.agent_notification_transport_url)
        # Nova's notifications are what the controller reacts to; say so when the nova.conf it
        # reads would not send them (docs/compute-host.md). Never stops the start.
        try:
            host_checks.log_notification_warnings(conf, LOG)
        except Exception:
            LOG.debug("Checking nova.conf's notification settings failed", exc_info=True)
        self.reconciler = make_reconciler(conf, agent_rpc)
        collector = None
        if conf.nova_dt.link_stats_file:
            collector = link_stats_writer.LinkStatsCollector(
                conf.nova_dt.link_stats_file, conf.nova_dt.link_stats_max_age)
        self.listeners = make_listeners(self.reconciler, nova_notifications,
                                        agent_notifications, conf,
                                        link_stats_collector=collector)
        for listener in self.listeners:
            listener.start()
        # The first pass resumes what a previous run left unfinished.
        self.tg.add_timer_args(conf.nova_dt.resume_interval, self._resume, initial_delay=0,
                               stop_on_exception=False)
        LOG.info("nova-dt-controller started (state in %s)", conf.nova_dt.state_dir)

    def _resume(self):
        try:
            self.reconciler.resume()
        except Exception:
            LOG.exception("Resuming unfinished reconciliations failed")

    def stop(self, graceful=False):
        for listener in self.listeners:
            listener.stop()
        for listener in self.listeners:
            listener.wait()
        super().stop(graceful)
        if self.reconciler is not None:
            self.reconciler.store.close()
