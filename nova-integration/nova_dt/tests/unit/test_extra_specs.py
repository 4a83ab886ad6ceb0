"""dt:* flavor extra specs, validated by nova's own machinery through the package's entry point."""

import importlib.metadata
import os
import re

import fixtures
import testtools

from nova.api.openstack.compute import flavors_extraspecs
from nova.api.validation.extra_specs import base
from nova.api.validation.extra_specs import validators
from nova import exception
from nova import objects
from nova import test
from nova.tests.unit.api.openstack import fakes

from nova_dt import extra_specs
from nova_dt.tests import fixtures as dt_fixtures

VALID = [
    ('dt:enabled', 'true'), ('dt:enabled', 'True'), ('dt:enabled', 'TRUE'),
    ('dt:enabled', '1'), ('dt:enabled', 't'), ('dt:enabled', 'on'), ('dt:enabled', 'y'),
    ('dt:enabled', 'yes'), ('dt:enabled', ' yes\t'), ('dt:enabled', 'false'),
    ('dt:enabled', 'No'), ('dt:enabled', '0'), ('dt:enabled', 'f'), ('dt:enabled', 'off'),
    ('dt:enabled', 'n'),
    ('dt:epoch_ms', '10'), ('dt:epoch_ms', '250'), ('dt:epoch_ms', '10000'),
    ('dt:epoch_ms', '000000010'),
    ('dt:max_failover_ms', '100'), ('dt:max_failover_ms', '600000'),
    ('dt:max_failover_ms', '1500'),
    ('dt:peer_az', 'az2'), ('dt:peer_az', 'zone b'), ('dt:peer_az', 'z\u00f6ne-2'),
    ('dt:peer_az', 'a' * 255),
]

# (name, value, what the message must say)
INVALID = [
    ('dt:enabled', 'maybe', "'maybe' is not a valid boolean-like value"),
    ('dt:enabled', '', "'' is not a valid boolean-like value"),
    ('dt:enabled', 'tr ue', "is not a valid boolean-like value"),
    # Python's strip() (nova's check) removes these, the agent does not.
    ('dt:enabled', 'true\x1f', 'is not a valid boolean-like value for dt:enabled'),
    ('dt:enabled', '\u00a0true', 'is not a valid boolean-like value for dt:enabled'),
    ('dt:epoch_ms', '9', "'9' is less than the min value of '10'"),
    ('dt:epoch_ms', '10001', "'10001' is greater than the max value of '10000'"),
    ('dt:epoch_ms', 'abc', "'abc' is not a valid integer value"),
    ('dt:epoch_ms', '', "'' is not a valid integer value"),
    # int() accepts these, the agent does not.
    ('dt:epoch_ms', '+10', "'\\+10' is not a plain decimal integer for dt:epoch_ms"),
    ('dt:epoch_ms', ' 10', "' 10' is not a plain decimal integer"),
    ('dt:epoch_ms', '1_0', "'1_0' is not a plain decimal integer"),
    ('dt:epoch_ms', '\uff11\uff10', 'is not a plain decimal integer'),
    ('dt:epoch_ms', '0000000010', "'0000000010' is not a plain decimal integer"),
    ('dt:max_failover_ms', '99', "'99' is less than the min value of '100'"),
    ('dt:max_failover_ms', '600001', "is greater than the max value of '600000'"),
    ('dt:max_failover_ms', '-1', "'-1' is less than the min value of '100'"),
    ('dt:peer_az', '', "'' is not a valid availability zone name for dt:peer_az"),
    ('dt:peer_az', ' az2', 'is not a valid availability zone name'),
    ('dt:peer_az', 'az2 ', 'is not a valid availability zone name'),
    ('dt:peer_az', 'az:2', 'is not a valid availability zone name'),
    ('dt:peer_az', 'az\n2', 'is not a valid availability zone name'),
    ('dt:peer_az', 'a' * 256, 'is not a valid availability zone name'),
    ('dt:enable', 'true', "extra spec 'dt:enable' does not appear to be a valid extra spec"),
]


class TestRegistration(test.NoDBTestCase):

    def test_entry_point_in_package_metadata(self):
        self.useFixture(dt_fixtures.EntryPoints())
        eps = importlib.metadata.entry_points(group='nova.api.extra_spec_validators')
        self.assertIn(('dt', 'nova_dt.extra_specs'), {(ep.name, ep.value) for ep in eps})

    def test_register_returns_nova_validators(self):
        registered = extra_specs.register()
        self.assertEqual(
            {'dt:enabled', 'dt:epoch_ms', 'dt:peer_az', 'dt:max_failover_ms'},
            {v.name for v in registered})
        for validator in registered:
            self.assertIsInstance(validator, base.ExtraSpecValidator)
            self.assertTrue(validator.description)
            self.assertTrue(validator.value['description'])

    def test_nova_loads_them_through_the_entry_point(self):
        self.useFixture(dt_fixtures.ExtraSpecValidators())
        for validator in extra_specs.register():
            self.assertIs(validator, validators.VALIDATORS[validator.name])
        self.assertIn('dt', validators.NAMESPACES)

    def test_fixture_restores_nova_registry(self):
        before = dict(validators.VALIDATORS), set(validators.NAMESPACES)
        fixture = dt_fixtures.ExtraSpecValidators()
        fixture.setUp()
        self.assertIn('dt:enabled', validators.VALIDATORS)
        fixture.cleanUp()
        self.assertEqual(before, (dict(validators.VALIDATORS), set(validators.NAMESPACES)))


class TestNovaValidation(test.NoDBTestCase):
    """nova.api.validation.extra_specs.validators.validate(), as nova-api calls it."""

    def setUp(self):
        super().setUp()
        self.useFixture(dt_fixtures.ExtraSpecValidators())

    def test_valid_values_accepted(self):
        for name, value in VALID:
            validators.validate(name, value)

    def test_invalid_values_refused_with_a_clear_message(self):
        for name, value, message in INVALID:
            with testtools.ExpectedException(
                    exception.ValidationError, '(?s)Validation failed; .*' + message,
                    msg='%s=%r' % (name, value)):
                validators.validate(name, value)

    def test_other_namespaces_unaffected(self):
        validators.validate('hw:cpu_policy', 'dedicated')
        validators.validate('foo:bar', 'anything')
        self.assertRaises(exception.ValidationError,
                          validators.validate, 'hw:cpu_policy', 'sharrred')


class TestFlavorExtraSpecsAPI(test.NoDBTestCase):
    """POST /flavors/{id}/os-extra_specs through nova's controller."""

    def setUp(self):
        super().setUp()
        self.useFixture(dt_fixtures.ExtraSpecValidators())
        self.controller = flavors_extraspecs.FlavorExtraSpecsController()
        flavor = objects.Flavor(flavorid='1', extra_specs={})
        self.useFixture(fixtures.MockPatch('nova.api.openstack.common.get_flavor',
                                           return_value=flavor))
        self.save = self.useFixture(fixtures.MockPatch('nova.objects.Flavor.save')).mock

    def _create(self, specs, version):
        req = fakes.HTTPRequest.blank('/v2/%s/flavors/1/os-extra_specs' % fakes.FAKE_PROJECT_ID,
                                      use_admin_context=True, version=version)
        return self.controller.create(req, '1', body={'extra_specs': specs})

    def test_bad_values_refused_from_2_86(self):
        for specs in ({'dt:enabled': 'maybe'}, {'dt:epoch_ms': '5'},
                      {'dt:enabled': 'true', 'dt:max_failover_ms': '1e3'},
                      {'dt:peer_az': 'a:b'}):
            self.assertRaises(exception.ValidationError, self._create, specs, '2.86')
        self.save.assert_not_called()

    def test_dt_flavor_accepted(self):
        specs = {'dt:enabled': 'true', 'dt:epoch_ms': '100', 'dt:peer_az': 'az2',
                 'dt:max_failover_ms': '2000'}
        result = self._create(specs, '2.86')
        self.assertEqual(specs, result['extra_specs'])
        self.save.assert_called_once_with()

    def test_not_validated_before_2_86(self):
        result = self._create({'dt:epoch_ms': '5'}, '2.85')
        self.assertEqual({'dt:epoch_ms': '5'}, result['extra_specs'])


class TestParse(test.NoDBTestCase):
    """extra_specs.parse(): the agent's reading of the same keys."""

    def test_absent(self):
        self.assertEqual(extra_specs.DTSpecs(False, None, None, None), extra_specs.parse({}))

    def test_all_keys(self):
        specs = extra_specs.parse({'dt:enabled': ' Yes ', 'dt:epoch_ms': '50',
                                   'dt:peer_az': 'az2', 'dt:max_failover_ms': '900',
                                   'hw:cpu_policy': 'dedicated'})
        self.assertEqual(extra_specs.DTSpecs(True, 50, 'az2', 900), specs)

    def test_false_and_empty_peer_az(self):
        specs = extra_specs.parse({'dt:enabled': 'off', 'dt:peer_az': ''})
        self.assertEqual(extra_specs.DTSpecs(False, None, None, None), specs)

    def test_invalid_names_the_key(self):
        for key, value in (('dt:enabled', 'maybe'), ('dt:epoch_ms', '+10'),
                           ('dt:epoch_ms', '10001'), ('dt:max_failover_ms', '99')):
            e = self.assertRaises(ValueError, extra_specs.parse, {key: value})
            self.assertIn(key, str(e))

    def test_agrees_with_nova_validation(self):
        """Whatever nova-api accepts, parse() accepts, and the other way round."""
        self.useFixture(dt_fixtures.ExtraSpecValidators())
        for name, value, _ in INVALID + [v + (None,) for v in VALID]:
            if name == 'dt:enable' or name == 'dt:peer_az':
                continue  # not a known key / any string is read as a zone name
            try:
                validators.validate(name, value)
                nova_ok = True
            except exception.ValidationError:
                nova_ok = False
            try:
                extra_specs.parse({name: value})
                parse_ok = True
            except ValueError:
                parse_ok = False
            self.assertEqual(nova_ok, parse_ok, '%s=%r' % (name, value))


class TestAgentBounds(test.NoDBTestCase):
    """The bounds are the ones the C++ agent's ParseDtSpecs enforces."""

    def test_bounds_match_agent_source(self):
        top = os.environ.get('NOVA_DT_SOURCE_DIR',
                             os.path.dirname(dt_fixtures.SOURCE_DIR))
        with open(os.path.join(top, 'agent', 'bus', 'nova_events.cc')) as f:
            source = f.read()
        for key, bounds in (('dt:epoch_ms', extra_specs.EPOCH_MS_RANGE),
                            ('dt:max_failover_ms', extra_specs.MAX_FAILOVER_MS_RANGE)):
            found = re.search(r'ReadBoundedInt\(\s*extra_specs,\s*"%s",\s*(\d+),\s*(\d+)'
                              % re.escape(key), source)
            self.assertIsNotNone(found, 'no ReadBoundedInt for %s in nova_events.cc' % key)
            self.assertEqual(bounds, (int(found.group(1)), int(found.group(2))), key)
        for word in ('"1", "t", "true", "on", "y", "yes"', '"0", "f", "false", "off", "n", "no"'):
            self.assertIn(word, source)
