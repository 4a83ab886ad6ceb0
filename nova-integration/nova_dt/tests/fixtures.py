"""Fixtures that make nova see nova_dt as an installed package.

Nova finds extra spec validators (and oslo-config-generator finds options) through entry points,
i.e. through package metadata on ``sys.path``, not through imports. A clean clone has none, so the
first use builds it the way an install would: ``setup.py egg_info`` (setuptools, from setup.cfg)
into a temporary directory, once per test process. ``EntryPoints`` puts that directory on
``sys.path`` for one test; ``ExtraSpecValidators`` then re-runs nova's own loader and restores
nova's registry afterwards, so tests pass in any order and with any other test in the process.
"""

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import fixtures
from stevedore import extension

from nova.api.validation.extra_specs import validators

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Read at import, before nova's test base class points tempfile at a per-test directory that is
# removed when the test ends.
_TMP_ROOT = tempfile.gettempdir()

_metadata_dir = None


def package_metadata_dir():
    """A directory with ``nova_dt.egg-info`` built by setuptools from SOURCE_DIR/setup.cfg."""
    global _metadata_dir
    if _metadata_dir is None or not os.path.isdir(_metadata_dir):
        path = tempfile.mkdtemp(prefix='nova-dt-metadata-', dir=_TMP_ROOT)
        atexit.register(shutil.rmtree, path, True)
        result = subprocess.run(
            [sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', path],
            cwd=SOURCE_DIR, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError('setup.py egg_info failed (%d): %s'
                               % (result.returncode, result.stderr))
        _metadata_dir = path
    return _metadata_dir


class EntryPoints(fixtures.Fixture):
    """nova_dt's package metadata, and so its entry points, visible on sys.path.

    stevedore keeps the entry points of every namespace it has listed for the life of the
    process (``ExtensionManager.ENTRY_POINT_CACHE``); the fixture empties that cache for the
    test and puts it back afterwards.
    """

    def _setUp(self):
        self.path = package_metadata_dir()
        self.useFixture(fixtures.MonkeyPatch('sys.path', [self.path] + sys.path))
        importlib.invalidate_caches()
        cache = extension.ExtensionManager.ENTRY_POINT_CACHE
        saved = dict(cache)
        cache.clear()
        self.addCleanup(_replace, cache, saved)


def _replace(mapping, content):
    mapping.clear()
    mapping.update(content)


class ExtraSpecValidators(fixtures.Fixture):
    """nova's extra spec validators as nova-api loads them with nova_dt installed."""

    def _setUp(self):
        saved = dict(validators.VALIDATORS), set(validators.NAMESPACES)
        self.addCleanup(self._restore, *saved)
        self.useFixture(EntryPoints())
        validators.load_validators()
        if 'dt:enabled' not in validators.VALIDATORS:
            raise RuntimeError('nova did not load the dt extra spec validators through the '
                               'nova.api.extra_spec_validators entry point (see warnings above)')

    @staticmethod
    def _restore(saved_validators, saved_namespaces):
        _replace(validators.VALIDATORS, saved_validators)
        validators.NAMESPACES.clear()
        validators.NAMESPACES.update(saved_namespaces)
