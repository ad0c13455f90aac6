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


QGIS_TEST_FILES = ("test_plugin", "test_processing", "test_desktop")


def pytest_configure(config):
    config.addinivalue_line("markers", "desktop: starts desktop QGIS under xvfb-run (skipped without it)")


def pytest_collection_modifyitems(config, items):
    """Without pytest-qgis (not installed, or ``-p no:pytest_qgis``) the QGIS tests are skipped, not errors."""
    if config.pluginmanager.hasplugin("pytest_qgis"):
        return
    skip = pytest.mark.skip(reason="needs pytest-qgis (QGIS tests; run without -p no:pytest_qgis)")
    for item in items:
        if os.path.basename(str(item.fspath)).startswith(QGIS_TEST_FILES):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def speed_records_kept_apart(tmp_path_factory):
    """Runs record their speed (``inference.run.sizing``) in a folder of the test session's, never the
    user's cache (command-line runs inherit it)."""
    before = os.environ.get("TAILINGS_MAPPER_CACHE")
    os.environ["TAILINGS_MAPPER_CACHE"] = str(tmp_path_factory.mktemp("speed-cache"))
    yield
    if before is None:
        os.environ.pop("TAILINGS_MAPPER_CACHE", None)
    else:
        os.environ["TAILINGS_MAPPER_CACHE"] = before


@pytest.fixture(scope="session")
def tm():
    """The plugin package, imported as ``tailings_mapper``."""
    d = tempfile.mkdtemp(prefix="tm-pkg-")
    os.symlink(ROOT, os.path.join(d, "tailings_mapper"))
    sys.path.insert(0, d)
    import tailings_mapper
    yield tailings_mapper
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ort_sessions(monkeypatch):
    """Paths of the onnxruntime sessions created while the test runs (every network the engine
    loads goes through ``onnxruntime.InferenceSession``)."""
    import onnxruntime
    made = []
    real = onnxruntime.InferenceSession

    class Counting(real):
        def __init__(self, path, *a, **kw):
            made.append(path)
            super().__init__(path, *a, **kw)
    monkeypatch.setattr(onnxruntime, "InferenceSession", Counting)
    return made


# tests/qt6 is the PyQt6 suite: its own venv and stand-in QGIS modules (scripts/test_qt6.sh), never this one.
collect_ignore = ["qt6"]


@pytest.fixture
def plugin(tm, qgis_iface, env):
    """The plugin loaded into the test's QGIS interface, over the test module's own ``env``."""
    p = tm.classFactory(qgis_iface)
    p.initGui()
    yield p
    p.unload()
