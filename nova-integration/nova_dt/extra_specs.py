"""The ``dt:*`` flavor extra specs: nova-api validators and the one parser nova_dt uses.

nova-api (microversion >= 2.86) finds ``register()`` through the ``nova.api.extra_spec_validators``
entry point ``dt`` (setup.cfg) and refuses bad values when a flavor's extra specs are set. Once
registered, ``dt`` is a known namespace, so an unknown ``dt:`` key (a typo) is refused as well.

What is accepted here is exactly what the agent accepts (agent/bus/nova_events.cc
``ParseDtSpecs``): booleans are oslo's strict strings (1/t/true/on/y/yes, 0/f/false/off/n/no,
any ASCII case, surrounding ASCII whitespace ignored) and integers are plain decimal digits. Nova's
own checks (``strutils.bool_from_string``, ``int()``) are looser - ``int()`` takes ``+10``,
`` 10``, ``1_0`` and non-ASCII digits - so ``DTExtraSpecValidator`` adds the agent's rules on top.
"""

import collections
import re

from nova.api.validation.extra_specs import base
from nova.api.validation import parameter_types
from nova import exception

ENABLED = 'dt:enabled'
EPOCH_MS = 'dt:epoch_ms'
PEER_AZ = 'dt:peer_az'
MAX_FAILOVER_MS = 'dt:max_failover_ms'

EPOCH_MS_RANGE = (10, 10000)
MAX_FAILOVER_MS_RANGE = (100, 600000)

_TRUE = ('1', 't', 'true', 'on', 'y', 'yes')
_FALSE = ('0', 'f', 'false', 'off', 'n', 'no')
_BOOL_RE = re.compile(r'[ \t\n\v\f\r]*(%s)[ \t\n\v\f\r]*' % '|'.join(_TRUE + _FALSE),
                      re.ASCII | re.IGNORECASE)
_DECIMAL_RE = re.compile(r'[0-9]{1,9}')
# nova's own availability zone name rule (printable characters except ':', no leading or trailing
# whitespace), made non-empty.
_AZ_NAME_RE = re.compile('(?=.)' + parameter_types.valid_az_name_regex.regex)
_AZ_NAME_MAX = 255

DTSpecs = collections.namedtuple(
    'DTSpecs', ['enabled', 'epoch_ms', 'peer_az', 'max_failover_ms'])
DTSpecs.__doc__ = """The dt:* extra specs of a flavor; None (or False) where a key is absent."""


class DTExtraSpecValidator(base.ExtraSpecValidator):
    """nova's extra spec validator, narrowed to the values the nova-dt agent accepts."""

    def validate(self, name, value):
        super().validate(name, value)
        kind = self.value['type']
        if kind == bool and not _BOOL_RE.fullmatch(value):
            raise exception.ValidationError(
                f"Validation failed; '{value}' is not a valid boolean-like value "
                f"for {name} (one of {', '.join(_TRUE + _FALSE)}).")
        if kind == int and not _DECIMAL_RE.fullmatch(value):
            raise exception.ValidationError(
                f"Validation failed; '{value}' is not a plain decimal integer "
                f"for {name} (digits only, no sign, spaces or separators).")
        if kind == str and not _is_az_name(value):
            raise exception.ValidationError(
                f"Validation failed; '{value}' is not a valid availability zone "
                f"name for {name} (1 to {_AZ_NAME_MAX} printable characters "
                f"except ':', not starting or ending with whitespace).")


def _is_az_name(value):
    return len(value) <= _AZ_NAME_MAX and bool(_AZ_NAME_RE.fullmatch(value))


VALIDATORS = [
    DTExtraSpecValidator(
        name=ENABLED,
        description=(
            'Protect servers of this flavor with nova-dt continuous disaster '
            'tolerance: a backup host in another availability zone keeps a '
            'copy of the server as of its last committed epoch and takes over '
            'when the primary host fails.'),
        value={
            'type': bool,
            'description': 'Whether servers of this flavor are protected.',
        },
    ),
    DTExtraSpecValidator(
        name=EPOCH_MS,
        description=(
            'Checkpoint epoch length of protected servers, in milliseconds. '
            'Shorter epochs delay guest output less and cost more CPU and '
            'replication bandwidth. Default: the agent\'s configuration.'),
        value={
            'type': int,
            'min': EPOCH_MS_RANGE[0],
            'max': EPOCH_MS_RANGE[1],
            'description': 'Epoch length in milliseconds.',
        },
    ),
    DTExtraSpecValidator(
        name=PEER_AZ,
        description=(
            'Availability zone that must hold the backup of protected '
            'servers; the primary is then placed in another zone. Default: '
            'any DT-capable zone other than the primary\'s.'),
        value={
            'type': str,
            'description': 'An availability zone name.',
        },
    ),
    DTExtraSpecValidator(
        name=MAX_FAILOVER_MS,
        description=(
            'Longest acceptable time, in milliseconds, from the primary\'s '
            'failure to the server running on its backup. Default: the '
            'agent\'s configuration.'),
        value={
            'type': int,
            'min': MAX_FAILOVER_MS_RANGE[0],
            'max': MAX_FAILOVER_MS_RANGE[1],
            'description': 'Failover time budget in milliseconds.',
        },
    ),
]


def register():
    """The validators nova-api loads through the ``nova.api.extra_spec_validators`` entry point."""
    return VALIDATORS


def _bounded_int(extra_specs, key, bounds):
    value = extra_specs.get(key)
    if value is None:
        return None
    if not _DECIMAL_RE.fullmatch(value) or not bounds[0] <= int(value) <= bounds[1]:
        raise ValueError('flavor extra spec %s must be a decimal integer from %d to %d'
                         % (key, bounds[0], bounds[1]))
    return int(value)


def parse(extra_specs):
    """Read the dt:* keys of a flavor's extra specs, as the agent does.

    :param extra_specs: dict of str to str (``flavor.extra_specs``).
    :returns: a ``DTSpecs``; ``enabled`` is False unless dt:enabled is a true boolean string.
    :raises ValueError: a dt:* value the agent would refuse, naming the key.
    """
    enabled = False
    value = extra_specs.get(ENABLED)
    if value is not None:
        match = _BOOL_RE.fullmatch(value)
        if not match:
            raise ValueError('flavor extra spec %s must be a boolean string (%s or %s)'
                             % (ENABLED, '/'.join(_TRUE), '/'.join(_FALSE)))
        enabled = match.group(1).lower() in _TRUE
    return DTSpecs(
        enabled=enabled,
        epoch_ms=_bounded_int(extra_specs, EPOCH_MS, EPOCH_MS_RANGE),
        # The agent treats an empty dt:peer_az as absent; so does the scheduler.
        peer_az=extra_specs.get(PEER_AZ) or None,
        max_failover_ms=_bounded_int(extra_specs, MAX_FAILOVER_MS, MAX_FAILOVER_MS_RANGE))
