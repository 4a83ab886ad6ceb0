"""Configuration options of nova_dt, in the ``[nova_dt]`` group of nova.conf.

The scheduler plugins register them on nova's CONF when they are imported, and so does the
nova-dt-controller (which reads nova.conf: it uses nova's database, Placement and Neutron settings);
``list_opts`` feeds ``oslo-config-generator --namespace nova_dt`` (entry point in setup.cfg).
"""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'nova_dt',
    title='nova-dt options',
    help='Options of the nova-dt scheduler filter (DTPairFilter), weigher '
         '(DTPairWeigher) and controller (nova-dt-controller).')

scheduler_opts = [
    cfg.StrOpt(
        'capable_metadata_key',
        default='nova_dt:capable',
        help="""
Host aggregate metadata key that marks DT-capable compute hosts.

A host is DT-capable when an aggregate it belongs to has this key set to a true
boolean string (``true``, ``1``, ``yes``, ...). Usually the key sits on the
aggregate that also defines the host's availability zone, e.g.
``openstack aggregate create --zone az1 --property nova_dt:capable=true dt-az1``.
"""),
    cfg.StrOpt(
        'link_stats_file',
        help="""
JSON file with per host pair replication link figures (round-trip time,
current replication rate, capacity), written by the nova-dt controller from the
agents' reports. DTPairWeigher reads it; when unset, missing, unreadable or
stale, every host gets the same (neutral) weight. The format is described in
nova-integration/README.md.
"""),
    cfg.IntOpt(
        'link_stats_max_age',
        default=300,
        min=0,
        help="""
Seconds after its last modification that ``link_stats_file`` is considered
stale and ignored. 0 means the file never goes stale.
"""),
    cfg.FloatOpt(
        'default_link_capacity',
        default=125000000.0,
        min=1.0,
        help="""
Capacity in bytes per second (the M/M/1 service rate) assumed for a
replication link whose entry in ``link_stats_file`` has no
``capacity_bytes_per_s``. The default is 1 Gbit/s.
"""),
    cfg.IntOpt(
        'replication_message_bytes',
        default=65536,
        min=1,
        help="""
Mean size in bytes of one replication message (a batch of dirty pages, device
state or disk writes). The weigher models a link as an M/M/1 queue of such
messages, so its queueing delay is
``replication_message_bytes / (capacity - rate)`` seconds.
"""),
    cfg.FloatOpt(
        'weight_multiplier',
        default=1.0,
        help="""
Multiplier of DTPairWeigher's normalized weight (0..1). Can be overridden per
host aggregate with the ``dt_pair_weight_multiplier`` metadata key. Raise it to
let the replication link matter more than RAM, CPU or disk spreading for DT
flavors; it has no effect on other flavors, which all weigh 0.
"""),
]

controller_opts = [
    cfg.StrOpt(
        'state_dir',
        default='/var/lib/nova-dt',
        help="""
Directory of the nova-dt controller's state: ``controller.sqlite`` records
every protected server's pair (primary, backup, claim) and the reconciliation
in progress, step by step, so a restarted controller resumes where it stopped.
Run one controller per deployment (or per state directory).
"""),
    cfg.StrOpt(
        'agent_transport_url',
        secret=True,
        help="""
oslo.messaging transport URL of the nova-dt agents' RPC bus (topic
``agent_topic``). Default: ``[DEFAULT] transport_url``.
"""),
    cfg.StrOpt(
        'agent_notification_transport_url',
        secret=True,
        help="""
Transport URL on which the agents publish their ``dt.pair.*`` notifications.
Default: the notification transport of nova
(``[oslo_messaging_notifications] transport_url``, else
``[DEFAULT] transport_url``).
"""),
    cfg.StrOpt(
        'agent_exchange',
        default='nova_dt',
        help="""
Exchange of the agents' RPC API and notifications (the agents'
``[DEFAULT] control_exchange``).
"""),
    cfg.StrOpt(
        'agent_topic',
        default='nova_dt_agent',
        help='RPC topic of the nova-dt agents; one server per compute host.'),
    cfg.IntOpt(
        'agent_call_timeout',
        default=10,
        min=1,
        help="""
Seconds the controller waits for an agent's answer to an RPC call. Before it
acts on a ``dt.pair.failover.end``, the controller asks the new host's agent
(``status``) whether the server runs there as the primary; without an answer
in time nothing is changed and the question is asked again at the next
``resume_interval``.
"""),
    cfg.ListOpt(
        'agent_notification_topics',
        default=['notifications'],
        help="""
Topics of the agents' notifications (the agents'
``[oslo_messaging_notifications] topics``).
"""),
    cfg.StrOpt(
        'notification_pool',
        default='nova-dt-controller',
        help="""
Listener pool of the controller's notification queues. A pool gets its own
queues, so the controller does not take notifications away from other
consumers of nova's ``versioned_notifications`` (or the agents' topic). With
oslo's rabbit driver the queue of Nova's notifications is named after the pool,
that of the agents' notifications ``<pool>.agents``.
"""),
    cfg.IntOpt(
        'step_attempts',
        default=5,
        min=1,
        help="""
How often one reconciliation step (a Placement claim, a port binding, an RPC
cast, ...) is tried before the controller leaves it for the next periodic
resume (``resume_interval``).
"""),
    cfg.FloatOpt(
        'retry_interval',
        default=1.0,
        min=0.0,
        help="""
Seconds before the second try of a failed step; doubled for each further try,
up to 30 seconds.
"""),
    cfg.IntOpt(
        'resume_interval',
        default=60,
        min=1,
        help="""
Seconds between two passes over unfinished reconciliations (steps that failed
all their tries) and servers left without a backup (no DT-capable host with
room), which are tried again.
"""),
]

ALL_OPTS = scheduler_opts + controller_opts


def register_opts(conf):
    """Register the ``[nova_dt]`` options on ``conf`` (idempotent)."""
    conf.register_group(GROUP)
    conf.register_opts(ALL_OPTS, group=GROUP)


def list_opts():
    """Options for oslo-config-generator: ``[(group, [opts])]``."""
    return [(GROUP, ALL_OPTS)]
