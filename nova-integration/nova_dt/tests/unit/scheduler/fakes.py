"""Hosts and requests for the scheduler tests, built from nova's own fakes and objects."""

import itertools

from oslo_utils import uuidutils

from nova import objects
from nova.tests.unit.scheduler import fakes

_agg_ids = itertools.count(1)

DT_SPECS = {'dt:enabled': 'true'}


def aggregate(hosts, az=None, **metadata):
    """An aggregate of ``hosts``; ``az`` sets its availability_zone metadata."""
    if az is not None:
        metadata['availability_zone'] = az
    agg_id = next(_agg_ids)
    return objects.Aggregate(id=agg_id, name='agg%d' % agg_id, hosts=list(hosts),
                             metadata=metadata)


def host(name, az='az1', capable=True, ram_mb=16384, free_ram_mb=None, vcpus=16,
         vcpus_used=0, disk_gb=200, free_disk_gb=None, aggregates=None, **attrs):
    """A FakeHostState in zone ``az`` (None: no AZ aggregate), DT-capable unless told not.

    ``capable`` is True/False (metadata 'true'/'false') or None (no metadata at all).
    """
    if aggregates is None:
        metadata = {}
        if capable is not None:
            metadata['nova_dt:capable'] = 'true' if capable else 'false'
        aggregates = [aggregate([name], az=az, **metadata)] if (metadata or az) else []
    values = {
        'total_usable_ram_mb': ram_mb,
        'free_ram_mb': ram_mb if free_ram_mb is None else free_ram_mb,
        'vcpus_total': vcpus,
        'vcpus_used': vcpus_used,
        'total_usable_disk_gb': disk_gb,
        'free_disk_mb': 1024 * (disk_gb if free_disk_gb is None else free_disk_gb),
        'ram_allocation_ratio': 1.0,
        'cpu_allocation_ratio': 1.0,
        'disk_allocation_ratio': 1.0,
        'aggregates': aggregates,
    }
    values.update(attrs)
    return fakes.FakeHostState(name, name, values)


def request(extra_specs=None, memory_mb=4096, vcpus=4, root_gb=20, ephemeral_gb=0, swap=0,
            **spec_fields):
    """A RequestSpec for a flavor with these extra specs and sizes."""
    flavor = objects.Flavor(name='dt.test', memory_mb=memory_mb, vcpus=vcpus, root_gb=root_gb,
                            ephemeral_gb=ephemeral_gb, swap=swap,
                            extra_specs=dict(extra_specs or {}))
    spec_fields.setdefault('scheduler_hints', {})
    spec_fields.setdefault('instance_uuid', uuidutils.generate_uuid())
    return objects.RequestSpec(flavor=flavor, **spec_fields)


def dt_request(**kwargs):
    extra_specs = dict(DT_SPECS, **kwargs.pop('extra_specs', {}))
    return request(extra_specs, **kwargs)
