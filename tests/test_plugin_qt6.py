"""One code base for QGIS 3.22 to 4.x: the enum names of qgis_glue/compat.py on this QGIS (3.22), and the
Qt 6 lint of scripts/check_qt6.py (the migration checker itself runs in CI: `python3 scripts/check_qt6.py`)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import check_qt6  # noqa: E402


def test_compat_names_the_values_this_qgis_uses(tm):
    from qgis.core import Qgis, QgsMapLayerProxyModel, QgsProcessing, QgsProcessingParameterNumber, QgsWkbTypes
    from tailings_mapper.qgis_glue import compat
    assert compat.SOURCE_VECTOR_POLYGON == QgsProcessing.SourceType.TypeVectorPolygon
    assert compat.SOURCE_RASTER == QgsProcessing.SourceType.TypeRaster
    assert compat.NUMBER_DOUBLE == QgsProcessingParameterNumber.Type.Double
    assert compat.NUMBER_INTEGER != compat.NUMBER_DOUBLE
    assert compat.LAYER_POLYGON == QgsMapLayerProxyModel.Filter.PolygonLayer
    assert compat.GEOMETRY_POLYGON == QgsWkbTypes.GeometryType.PolygonGeometry
    # the QGIS 4 spelling wins where this QGIS has it; a name no QGIS has is an import error, not None
    assert compat._first("Qgis.MessageLevel.Warning", "Qgis.Nothing") == Qgis.MessageLevel.Warning
    assert compat._first("Qgis.NoSuchEnum.X", "QgsProcessing.SourceType.TypeRaster") == compat.SOURCE_RASTER
    with pytest.raises(ImportError):
        compat._first("Qgis.NoSuchEnum.X", "QgsProcessing.NoSuch")


def test_processing_parameters_built_from_compat(tm):
    from tailings_mapper.processing_provider.fit_algorithm import FitAlgorithm
    from tailings_mapper.qgis_glue import compat
    alg = FitAlgorithm()
    alg.initAlgorithm({})
    assert alg.parameterDefinition("EPOCHS").dataType() == compat.NUMBER_INTEGER
    assert compat.SOURCE_VECTOR_POLYGON in alg.parameterDefinition("LABELS").dataTypes()
    advanced = [p.name() for p in alg.parameterDefinitions() if p.flags() & compat.PARAMETER_ADVANCED]
    assert advanced


def test_lint_finds_qt6_blockers():
    src = "\n".join([
        "from qgis.PyQt.QtGui import QIcon, QAction",
        "from PyQt5.QtCore import QTimer",
        "from .. import resources_rc",
        "bar.pushMessage('x', level=Qgis.Warning)",
        "label.setAlignment(QtCore.Qt.AlignLeft)",
        "task = QgsTask('x', QgsTask.CanCancel)",
        "types = [QgsProcessing.SourceType.TypeVectorPolygon]",
        "combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)",
        "dlg.exec_()",
        "rx = QRegExp('a')",
    ])
    found = check_qt6.lint_source(src, "x.py")
    for needle in ("QAction", "PyQt5", "resources_rc", "Qgis.Warning", "Qt.AlignLeft", "QgsTask.CanCancel",
                   "QgsProcessing.SourceType.TypeVectorPolygon", "QgsMapLayerProxyModel.Filter.RasterLayer",
                   "exec_", "QRegExp"):
        assert any(needle in f for f in found), (needle, found)


def test_lint_passes_scoped_code():
    src = "\n".join([
        "from qgis.PyQt.QtWidgets import QAction",
        "bar.pushMessage('x', level=Qgis.MessageLevel.Warning)",
        "label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)",
        "task = QgsTask('x', QgsTask.Flag.CanCancel)",
        "ok = Qgis.QGIS_VERSION_INT >= 33600",
        "opts = QgsVectorFileWriter.SaveVectorOptions()",
        "dlg.exec()",
    ])
    assert check_qt6.lint_source(src, "x.py") == []


def test_plugin_has_no_qt6_blockers():
    files = check_qt6.plugin_files(ROOT)
    assert "plugin.py" in files and "ui/dock.py" in files and "qgis_glue/compat.py" in files
    assert not any(f.startswith(("tests/", "scripts/")) for f in files)
    assert check_qt6.check_metadata(ROOT) == []
    assert check_qt6.lint(ROOT, files) == []


def test_metadata_hiding_the_plugin_from_qgis4(tmp_path):
    (tmp_path / "metadata.txt").write_text("[general]\nqgisMinimumVersion=3.22\nqgisMaximumVersion=3.99\n")
    assert len(check_qt6.check_metadata(str(tmp_path))) == 1
    (tmp_path / "metadata.txt").write_text("[general]\nqgisMinimumVersion=3.28\n")
    assert len(check_qt6.check_metadata(str(tmp_path))) == 2
