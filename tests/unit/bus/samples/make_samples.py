#!/usr/bin/python3
"""Regenerates the wire samples of tests/unit/bus/samples/ with the real OpenStack libraries.

Nothing in the samples is written by hand: every body is what kombu was asked to publish by
oslo.messaging's rabbit driver (oslo_messaging/_drivers/impl_rabbit.py + amqpdriver.py), which
serializes with oslo's own serialize_msg / serialize_remote_exception, and every Nova payload is
built and emitted by Nova's own code (nova.compute.utils.notify_about_instance_*,
nova.objects.Service._send_notification, nova.objects.Flavor._send_notification) through
nova.rpc's notifier configured as in production ([notifications] notification_format=versioned,
[oslo_messaging_notifications] driver=messagingv2).

The broker is kombu's in-process "memory" transport (transport_url kombu+memory:////, as
oslo.messaging's own test_impl_rabbit.py uses): the RPC server, client and notifier are the real
ones and really exchange the messages; kombu.messaging.Producer._publish is wrapped to record each
published body (already serialized, i.e. the bytes that go on the wire) with its exchange, routing
key and AMQP properties.

Only the *inputs* are made up: the server, flavor and service records (Nova's test helper
nova.tests.unit.fake_instance.fake_instance_obj builds the Instance object without a database), the
RPC method names and arguments, and the exception raised by the failing RPC endpoint.

Each sample file holds the published body as a string ("body") plus, for reading and for the C++
tests' cross-check, "oslo_deserialize_msg": what oslo's own deserialize_msg returns for that body.

Regenerate (Debian bookworm: python3-oslo.messaging 14.0.3, python3-kombu 5.2.4, python3-nova
26.2.2, which ships nova.tests; use the Debian interpreter, not a pyenv one):

    /usr/bin/python3 tests/unit/bus/samples/make_samples.py          # writes next to this script
    /usr/bin/python3 tests/unit/bus/samples/make_samples.py OUT_DIR

Ids, request ids and timestamps are fresh on every run, so a regeneration changes every file.
"""

import datetime
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import threading
import time

import kombu.messaging

OUT_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

_captured = []
_orig_publish = kombu.messaging.Producer._publish


def _recording_publish(self, body, priority, content_type, content_encoding, headers,
                       properties, routing_key, mandatory, immediate, exchange, declare,
                       timeout=None):
    _captured.append({
        'exchange': exchange,
        'routing_key': routing_key,
        'mandatory': mandatory,
        'content_type': content_type,
        'content_encoding': content_encoding,
        'properties': dict(properties or {}),
        'body': body.decode(content_encoding or 'utf-8') if isinstance(body, bytes) else body,
    })
    return _orig_publish(self, body, priority, content_type, content_encoding, headers,
                         properties, routing_key, mandatory, immediate, exchange, declare,
                         timeout)


kombu.messaging.Producer._publish = _recording_publish

# Nova's configuration (the global oslo.config CONF, shared with oslo.messaging).
import nova.conf  # noqa: E402
from nova import config as nova_config  # noqa: E402

CONF = nova.conf.CONF
with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as _conf_file:
    _conf_file.write('[DEFAULT]\n'
                     'transport_url = kombu+memory:////\n'
                     'host = compute1\n'
                     '[notifications]\n'
                     'notification_format = versioned\n'
                     '[oslo_messaging_notifications]\n'
                     'driver = messagingv2\n')
nova_config.parse_args(['make_samples', '--config-file', _conf_file.name],
                       configure_db=False, init_rpc=False)
os.unlink(_conf_file.name)
logging.disable(logging.ERROR)  # the failing RPC endpoint's traceback is expected

import oslo_messaging  # noqa: E402
from oslo_messaging._drivers import common as rpc_common  # noqa: E402

VERSIONS = {name: importlib.metadata.version(name)
            for name in ('oslo.messaging', 'kombu', 'nova')}


def take_one():
    """The single message published since the last call."""
    assert len(_captured) == 1, _captured
    return _captured.pop()


def take_matching(routing_key_prefix):
    """The published messages whose routing key starts with the prefix, in order."""
    taken = [m for m in _captured if m['routing_key'].startswith(routing_key_prefix)]
    _captured[:] = [m for m in _captured if m not in taken]
    return taken


def write(name, description, published):
    sample = {
        'description': description,
        'generated_by': 'tests/unit/bus/samples/make_samples.py',
        'versions': VERSIONS,
    }
    sample.update(published)
    sample['oslo_deserialize_msg'] = rpc_common.deserialize_msg(json.loads(published['body']))
    path = os.path.join(OUT_DIR, name + '.json')
    with open(path, 'w') as f:
        json.dump(sample, f, indent=2, sort_keys=False)
        f.write('\n')
    print('wrote', path)


# --- oslo.messaging RPC and notifications -----------------------------------------------------

class DtEndpoint(object):
    target = oslo_messaging.Target(version='1.0')

    def protect(self, ctxt, instance_uuid, peer_host):
        return {'ok': True, 'instance_uuid': instance_uuid}

    def unprotect(self, ctxt, instance_uuid):
        raise ValueError('no such instance')

    def status(self, ctxt):
        time.sleep(1.5)  # longer than _timeout / 2: the server sends one keep-alive first
        return {'pairs': 0}


def make_rpc_samples():
    transport = oslo_messaging.get_rpc_transport(CONF)
    target = oslo_messaging.Target(exchange='dt', topic='dt_agent', server='compute-1')
    server = oslo_messaging.get_rpc_server(transport, target, [DtEndpoint()],
                                           executor='threading')
    server.start()
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(exchange='dt', topic='dt_agent', server='compute-1',
                                         version='1.0'))
    ctxt = {'project_id': 'fake-project', 'request_id': 'req-dt-sample', 'is_admin': False}

    client.cast(ctxt, 'protect', instance_uuid='u-1', peer_host='compute-2')
    time.sleep(0.5)  # let the server take it: a cast has no reply
    write('rpc_cast', 'RPCClient.cast(protect) to Target(exchange=dt, topic=dt_agent, '
          'server=compute-1)', take_one())

    result = client.call(ctxt, 'protect', instance_uuid='u-2', peer_host='compute-2')
    assert result == {'ok': True, 'instance_uuid': 'u-2'}, result
    request, reply = _captured[0], _captured[1]
    del _captured[:2]
    write('rpc_call', 'RPCClient.call(protect), no call_monitor_timeout: "_timeout": null',
          request)
    write('rpc_reply_result', 'the RPC server\'s reply to rpc_call (result, ending true)', reply)

    try:
        client.prepare(timeout=10).call(ctxt, 'unprotect', instance_uuid='u-3')
        raise AssertionError('the call should have failed')
    except ValueError as e:
        raised = {'type': type(e).__name__, 'base': type(e).__mro__[0].__name__,
                  'str': str(e)}
    request, reply = _captured[0], _captured[1]
    del _captured[:2]
    reply['client_raised'] = raised
    write('rpc_reply_failure', 'the reply to a call whose endpoint raised '
          'ValueError("no such instance"): "failure" is serialize_remote_exception\'s JSON '
          'string; client_raised is what the calling RPCClient raised', reply)

    result = client.prepare(timeout=10, call_monitor_timeout=2).call(ctxt, 'status')
    assert result == {'pairs': 0}, result
    request, keep_alive, reply = _captured[0], _captured[1], _captured[2]
    del _captured[:3]
    write('rpc_call_monitored', 'RPCClient.prepare(timeout=10, call_monitor_timeout=2)'
          '.call(status): "_timeout": 2', request)
    write('rpc_reply_keepalive', 'the call-monitor heartbeat the server sent after _timeout/2 '
          'seconds (result and failure null, ending false)', keep_alive)

    server.stop()
    server.wait()
    transport.cleanup()
    del _captured[:]


def make_oslo_notification_samples():
    transport = oslo_messaging.get_notification_transport(CONF)
    payload = {'instance_uuid': 'u-1', 'peer_host': 'compute-2', 'epoch_ms': 50}
    ctxt = {'project_id': 'fake-project', 'request_id': 'req-dt-sample', 'is_admin': False}
    for driver, name, what in (('messagingv2', 'oslo_notify_v2', 'envelope 2.0'),
                               ('messaging', 'oslo_notify_v1', 'no envelope (format 1.0)')):
        notifier = oslo_messaging.Notifier(transport, publisher_id='nova-dt-agent:compute1',
                                           driver=driver, topics=['dt_notifications'])
        notifier.info(ctxt, 'dt.pair.protected', payload)
        write(name, 'oslo_messaging.Notifier(driver=%s).info(dt.pair.protected): %s'
              % (driver, what), take_one())
    transport.cleanup()


# --- Nova versioned notifications -------------------------------------------------------------

def make_nova_samples():
    from nova import context as nova_context
    from nova import objects
    from nova import rpc
    from nova.compute import utils as compute_utils
    from nova.network import model as network_model
    from nova.objects import fields
    from nova.tests.unit import fake_instance
    from nova.tests.unit import fake_network_cache_model
    from oslo_utils import timeutils
    from oslo_utils import uuidutils

    objects.register_all()
    rpc.init(CONF)
    ctxt = nova_context.RequestContext('fake-user', 'fake-project')
    now = timeutils.utcnow().replace(microsecond=0)

    def flavor(name, extra_specs):
        return objects.Flavor(id=1, name=name, memory_mb=512, vcpus=1, root_gb=1,
                              ephemeral_gb=0, flavorid=uuidutils.generate_uuid(), swap=0,
                              rxtx_factor=1.0, vcpu_weight=0, disabled=False, is_public=True,
                              extra_specs=extra_specs, projects=[], description=None)

    def instance(host, flavor_obj, **updates):
        attrs = dict(host=host, node=host, vm_state='active', power_state=1, task_state=None,
                     flavor=flavor_obj, availability_zone='az1', display_name='web-1',
                     image_ref=uuidutils.generate_uuid(), key_name='dt-key', launched_at=now,
                     created_at=now - datetime.timedelta(seconds=30))
        attrs.update(updates)
        inst = fake_instance.fake_instance_obj(ctxt, **attrs)
        inst.info_cache = objects.InstanceInfoCache(
            instance_uuid=inst.uuid,
            network_info=network_model.NetworkInfo([fake_network_cache_model.new_vif()]))
        inst.system_metadata = {}
        inst.metadata = {'role': 'web'}
        inst.trusted_certs = None
        inst.obj_reset_changes(recursive=True)
        return inst

    no_bdms = objects.BlockDeviceMappingList(objects=[])
    dt_flavor = flavor('m1.dt', {'dt:enabled': 'true', 'dt:epoch_ms': '50',
                                 'dt:peer_az': 'az2', 'hw:watchdog_action': 'disabled'})
    plain_flavor = flavor('m1.small', {})

    server = instance('compute1', dt_flavor)
    compute_utils.notify_about_instance_create(ctxt, server, 'compute1',
                                               phase=fields.NotificationPhase.END,
                                               bdms=no_bdms)
    write('nova_instance_create_end', 'nova.compute.utils.notify_about_instance_create'
          '(phase=end): InstanceCreatePayload of a server whose flavor has dt:* extra specs',
          take_one())

    compute_utils.notify_about_instance_action(
        ctxt, server, 'compute1', action=fields.NotificationAction.POWER_OFF,
        phase=fields.NotificationPhase.START, bdms=no_bdms)
    write('nova_instance_power_off_start', 'notify_about_instance_action(power_off, start)',
          take_one())

    server.host = server.node = 'compute2'
    compute_utils.notify_about_instance_action(
        ctxt, server, 'compute2', action=fields.NotificationAction.LIVE_MIGRATION_POST_DEST,
        phase=fields.NotificationPhase.END, bdms=no_bdms)
    write('nova_instance_live_migration_post_dest_end', 'notify_about_instance_action'
          '(live_migration_post_dest, end) from the destination compute2', take_one())

    # A soft or hard reboot that failed while the guest still runs (ComputeManager.reboot_
    # instance): priority ERROR and a fault.
    try:
        raise RuntimeError('virtual reboot failure')
    except RuntimeError as e:
        compute_utils.notify_about_instance_action(
            ctxt, server, 'compute2', action=fields.NotificationAction.REBOOT,
            phase=fields.NotificationPhase.ERROR, exception=e, bdms=no_bdms)
    write('nova_instance_reboot_error', 'notify_about_instance_action(reboot, error, '
          'exception=RuntimeError): priority ERROR, payload fault set', take_one())

    # nova-api's evacuate: published by the API host, the payload's host is still the dead one.
    CONF.set_override('host', 'ctl1')
    compute_utils.notify_about_instance_action(
        ctxt, server, CONF.host, action=fields.NotificationAction.EVACUATE,
        source=fields.NotificationSource.API, bdms=no_bdms)
    CONF.clear_override('host')
    write('nova_instance_evacuate', 'nova.compute.api.API.evacuate\'s notify_about_instance_'
          'action(evacuate, source=nova-api): no phase', take_one())

    plain = instance('compute1', plain_flavor, display_name='db-1')
    compute_utils.notify_about_instance_action(
        ctxt, plain, 'compute1', action=fields.NotificationAction.DELETE,
        phase=fields.NotificationPhase.START, bdms=no_bdms)
    write('nova_instance_delete_start', 'notify_about_instance_action(delete, start) of a '
          'server whose flavor has no extra specs', take_one())
    plain.vm_state = 'deleted'
    plain.power_state = 0
    plain.terminated_at = timeutils.utcnow()
    compute_utils.notify_about_instance_action(
        ctxt, plain, 'compute1', action=fields.NotificationAction.DELETE,
        phase=fields.NotificationPhase.END, bdms=no_bdms)
    write('nova_instance_delete_end', 'notify_about_instance_action(delete, end)', take_one())

    service = objects.Service(
        context=ctxt, id=7, uuid=uuidutils.generate_uuid(), host='compute2',
        binary='nova-compute', topic='compute', report_count=42, disabled=True,
        disabled_reason='dt sample: host down', forced_down=True, last_seen_up=now,
        availability_zone='az2')
    service._send_notification(fields.NotificationAction.UPDATE)
    write('nova_service_update', 'nova.objects.Service._send_notification(update) of a '
          'disabled, forced-down nova-compute', take_one())

    new_flavor = objects.Flavor(context=ctxt, id=2, name='m1.dt2', memory_mb=1024, vcpus=2,
                                root_gb=10, ephemeral_gb=0, flavorid='dt2', swap=0,
                                rxtx_factor=1.0, vcpu_weight=0, disabled=False,
                                is_public=True, extra_specs={'dt:enabled': 'yes'},
                                projects=[], description=None)
    new_flavor._send_notification(fields.NotificationAction.CREATE)
    write('nova_flavor_create', 'nova.objects.Flavor._send_notification(create): an event '
          'the agent does not handle', take_one())
    rpc.cleanup()


def main():
    make_rpc_samples()
    make_oslo_notification_samples()
    make_nova_samples()
    assert not _captured, _captured


if __name__ == '__main__':
    main()
