"""Configuration options of nova_dt, in the ``[nova_dt]`` group of nova.conf.

The scheduler plugins register them on nova's CONF when they are imported; ``list_opts`` feeds
``oslo-config-generator --namespace nova_dt`` (entry point in setup.cfg).
"""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'nova_dt',
    title='nova-dt options',
    help='Options of the nova-dt scheduler filter (DTPairFilter) and weigher '
         '(DTPairWeigher).')

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

ALL_OPTS = scheduler_opts


def register_opts(conf):
    """Register the ``[nova_dt]`` options on ``conf`` (idempotent)."""
    conf.register_group(GROUP)
    conf.register_opts(ALL_OPTS, group=GROUP)


def list_opts():
    """Options for oslo-config-generator: ``[(group, [opts])]``."""
    return [(GROUP, ALL_OPTS)]
