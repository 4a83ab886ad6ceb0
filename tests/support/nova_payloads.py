"""Nova instance notification payloads for tests, from the samples that
tests/unit/bus/samples/make_samples.py made with nova's own notification objects.

    instance_payload("instance.create.end", uuid, host, {"dt:enabled": "true"}, state="active")

create.* events get the InstanceCreatePayload sample, any other the InstanceActionPayload one;
the server's uuid, host/node, state and flavor extra specs are replaced. Standard library only.
"""
import copy
import json
import os

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit", "bus", "samples")


def instance_payload(event_type, instance_uuid, host, extra_specs, state=None):
    sample = ("nova_instance_create_end.json" if event_type.startswith("instance.create")
              else "nova_instance_delete_end.json")
    with open(os.path.join(SAMPLES, sample)) as f:
        payload = copy.deepcopy(json.load(f)["oslo_deserialize_msg"]["payload"])
    data = payload["nova_object.data"]
    data.update(uuid=instance_uuid, host=host, node=host)
    if state:
        data["state"] = state
    data["flavor"]["nova_object.data"]["extra_specs"] = dict(extra_specs)
    return payload
