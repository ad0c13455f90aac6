"""The PyQt6 suite's setup: PyQt6 and nothing of Qt 5, the stand-in ``qgis`` package first on the path,
the plugin imported as ``tailings_mapper`` the way QGIS imports it, a QgsApplication, a project with a
raster layer (a real GeoTIFF) and a polygon layer, and a stand-in iface.

Every failure is also summed up in one line at the end: the plugin's file and line where it broke and
the name that is missing under PyQt6 / QGIS 4, with the QGIS 4 spelling when one is known."""
import enum
import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "standins"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_TMP = tempfile.mkdtemp(prefix="tm-qt6-")
for _k, _v in (("QT6_SUITE_SETTINGS", os.path.join(_TMP, "settings.ini")), ("QT6_SUITE_PROFILE", _TMP),
               ("TAILINGS_MAPPER_MODELS", os.path.join(_TMP, "models")), ("XDG_DATA_HOME", _TMP)):
    os.environ[_k] = _v

# QGIS 3 enum spellings that moved to another class in QGIS 4 (the rest are found by looking through
# the class's own enums, e.g. Qt.RightDockWidgetArea -> Qt.DockWidgetArea.RightDockWidgetArea).
MOVED = {"QgsProcessing": ("Type", "Qgis.ProcessingSourceType."),
         "QgsProcessingParameterNumber": ("", "Qgis.ProcessingNumberParameterType."),
         "QgsProcessingParameterFile": ("", "Qgis.ProcessingFileParameterBehavior."),
         "QgsProcessingParameterDefinition": ("Flag", "Qgis.ProcessingParameterFlag.")}
COMPILED_RESOURCES = []   # (file, line) of each import of the plugin's resources_rc
SLOT_ERRORS = []          # exceptions raised in slots that Qt called (PyQt6 would abort the process)


class Qt6Breakage(AssertionError):
    """A failure the suite found at a place in the plugin (``where``: file:line) with ``what`` missing."""

    def __init__(self, where, what):
        super().__init__("%s: %s" % (where, what))
        self.where, self.what = where, what


class _NoCompiledResources:
    """Qt 6 has no pyrcc: an import of the plugin's resources_rc is recorded and refused (ImportError),
    as if the file were not there; test_no_compiled_resources reports where it came from."""

    def find_spec(self, name, path=None, target=None):
        if name.endswith(".resources_rc") and name.startswith("tailings_mapper"):
            frame = sys._getframe(1)
            while frame is not None and not _in_plugin(frame.f_code.co_filename):
                frame = frame.f_back
            if frame is not None:
                COMPILED_RESOURCES.append((_rel(frame.f_code.co_filename), frame.f_lineno))
            raise ImportError("compiled Qt resources (%s) are not used on Qt 6" % name)
        return None


sys.meta_path.insert(0, _NoCompiledResources())


def _rel(path):
    return os.path.relpath(os.path.realpath(path), ROOT)


def _in_plugin(path):
    if not (path.endswith(".py") and os.path.isfile(path)):
        return False
    rel = _rel(path)
    return not rel.startswith("..") and not rel.startswith("tests" + os.sep)


def pytest_configure(config):
    try:
        import PyQt5  # noqa: F401
    except ImportError:
        pass
    else:
        raise pytest.UsageError("PyQt5 is importable: run this suite with scripts/test_qt6.sh (its own venv)")
    import PyQt6.QtCore  # noqa: F401  (fails here without PyQt6)
    sys.excepthook = lambda kind, value, tb: SLOT_ERRORS.append(value.with_traceback(tb))
    config.qt6_breakage = []


def reraise_slot_errors():
    """The first exception a slot raised since the last call (a click's error), raised here."""
    errors = SLOT_ERRORS[:]
    del SLOT_ERRORS[:]
    if errors:
        raise errors[0]


@pytest.fixture(autouse=True)
def slot_errors():
    del SLOT_ERRORS[:]
    yield
    reraise_slot_errors()


@pytest.fixture(scope="session")
def app():
    from qgis.core import QgsApplication
    a = QgsApplication.instance() or QgsApplication([], True)
    yield a
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def tm(app):
    """The plugin package, imported as ``tailings_mapper``."""
    d = tempfile.mkdtemp(prefix="tm-pkg-", dir=_TMP)
    os.symlink(ROOT, os.path.join(d, "tailings_mapper"))
    sys.path.insert(0, d)
    import tailings_mapper
    return tailings_mapper


@pytest.fixture(scope="session")
def layers(app):
    """A raster layer (a small three-band GeoTIFF with band names) and a polygon layer, in the project."""
    import numpy as np
    from osgeo import gdal, osr
    from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsVectorLayer
    path = os.path.join(_TMP, "scene.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32650)
    ds.SetProjection(srs.ExportToWkt())
    for i, name in enumerate(("B4", "B3", "B2")):
        band = ds.GetRasterBand(i + 1)
        band.SetDescription(name)
        band.WriteArray(np.full((64, 64), 1000 + i, dtype=np.uint16))
    ds = None
    raster = QgsRasterLayer(path, "scene", "gdal")
    polygons = QgsVectorLayer(os.path.join(_TMP, "sites.gpkg|layername=sites"), "sites", "ogr",
                              geometry=Qgis.GeometryType.Polygon)
    for lyr in (raster, polygons):
        QgsProject.instance().addMapLayer(lyr)
    return raster, polygons


@pytest.fixture
def iface(app, layers):
    from qgis import utils
    from qt6_iface import QgisInterface
    i = QgisInterface()
    i.active = layers[0]
    utils.iface = i
    yield i
    i.mainWindow().deleteLater()


# ---------------------------------------------------------------------------------------------- report
def _hint(exc):
    """The QGIS 4 / Qt 6 spelling of a missing attribute, when one is known."""
    name, obj = getattr(exc, "name", None), getattr(exc, "obj", None)
    if not name or obj is None:
        return ""
    owner = obj if isinstance(obj, type) else type(obj)
    if name.endswith("_") and hasattr(obj, name[:-1]):
        return "%s.%s" % (owner.__name__, name[:-1])
    for attr in dir(owner):
        v = getattr(owner, attr, None)
        if isinstance(v, enum.EnumMeta) and hasattr(v, name):
            return "%s.%s.%s" % (owner.__name__, attr, name)
    prefix, new = MOVED.get(owner.__name__, (None, None))
    if new and name.startswith(prefix):
        return new + name[len(prefix):]
    if owner.__name__ == "QgsWkbTypes" and name.endswith("Geometry"):
        return "Qgis.GeometryType." + name[:-len("Geometry")]
    return ""


def _summary(excinfo):
    exc = excinfo.value
    if isinstance(exc, Qt6Breakage):
        return "%s: %s" % (exc.where, exc.what)
    where = "?"
    for entry in excinfo.traceback:
        if _in_plugin(str(entry.path)):
            where = "%s:%d" % (_rel(str(entry.path)), entry.lineno + 1)
    if isinstance(exc, AttributeError) and getattr(exc, "name", None) and getattr(exc, "obj", None) is not None:
        obj = exc.obj
        owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        hint = _hint(exc)
        what = "%s.%s missing%s" % (owner, exc.name, " (QGIS 4 / Qt 6: %s)" % hint if hint else "")
        module = getattr(obj if isinstance(obj, type) else type(obj), "__module__", "") or ""
        if not hint and module.split(".")[0] in ("qgis", "processing", "qt6_iface"):
            what += " (in the stand-ins: add it under tests/qt6/standins if QGIS 4 has it)"
    else:
        what = "%s: %s" % (type(exc).__name__, (str(exc).strip().splitlines() or [""])[0])
    return "%s: %s" % (where, what)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None:
        item.config.qt6_breakage.append("%s  [%s]" % (_summary(call.excinfo), item.name))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = getattr(config, "qt6_breakage", [])
    if lines:
        terminalreporter.section("breaks under PyQt6 / QGIS 4 (file:line: what)")
        seen = {}
        for line in lines:
            cause, test = line.rsplit("  [", 1)
            seen.setdefault(cause, []).append(test[:-1])
        for cause, tests in seen.items():
            terminalreporter.write_line("%s  [%s%s]" % (cause, tests[0], " and %d more" % (len(tests) - 1)
                                                       if len(tests) > 1 else ""))
        terminalreporter.write_line("%d distinct, in %d failed tests" % (len(seen), len(lines)))
