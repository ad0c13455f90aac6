"""Shared test setup.

Only the ``tm`` fixture touches the plugin: it makes the repository importable as the
package ``tailings_mapper`` (a symlink in a temporary folder put on sys.path), the way
QGIS imports it.  Engine tests that do not ask for it are unaffected.
"""
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "desktop: starts desktop QGIS under xvfb-run (skipped without it)")


@pytest.fixture(scope="session")
def tm():
    """The plugin package, imported as ``tailings_mapper``."""
    d = tempfile.mkdtemp(prefix="tm-pkg-")
    os.symlink(ROOT, os.path.join(d, "tailings_mapper"))
    sys.path.insert(0, d)
    import tailings_mapper
    yield tailings_mapper
    shutil.rmtree(d, ignore_errors=True)
