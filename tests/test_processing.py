"""The Processing algorithm tailings_mapper:segment through processing.run and qgis_process."""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("onnx")

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402

from engine_helpers import true_m2  # noqa: E402
from qgis_helpers import s2_raster, tiny_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALG = "tailings_mapper:segment"


@pytest.fixture(scope="module")
def provider(tm, qgis_processing):
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    if reg.providerById("tailings_mapper") is None:
        p = TailingsProvider()
        reg.addProvider(p)
    yield reg.providerById("tailings_mapper")
    p = reg.providerById("tailings_mapper")
    if p is not None:
        reg.removeProvider(p)


@pytest.fixture
def data(tmp_path):
    model = tiny_model(str(tmp_path / "tiny_s2rgb.onnx"))
    raster = s2_raster(str(tmp_path / "scene.tif"), squares=((40, 40, 80), (200, 180, 50)))
    return tmp_path, model, raster


def test_processing_run(provider, data, ort_sessions):
    import processing
    tmp, model, raster = data
    out = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "PRESET": "auto", "DEVICE": "cpu", "BATCH": 2,
        "OUTPUT_CLASSES": str(tmp / "classes.tif"), "OUTPUT_CONFIDENCE": str(tmp / "conf.tif"),
        "OUTPUT_POLYGONS": str(tmp / "polys.gpkg"),
    })
    assert out["OUTPUT_CLASSES"] == str(tmp / "classes.tif")
    assert os.path.isfile(tmp / "classes.tif") and os.path.isfile(tmp / "conf.tif")
    poly = QgsVectorLayer(out["OUTPUT_POLYGONS"], "p", "ogr")
    assert poly.isValid() and poly.featureCount() == 2
    assert "mean_confidence" in [f.name() for f in poly.fields()]
    assert out["POLYGON_COUNT"] == 2 and out["AREA_HA"] == pytest.approx(true_m2(89.0e4, raster) / 1e4, abs=0.005)
    assert out["DEVICE"] == "cpu"
    assert ort_sessions == [model]          # one network load for the run
    cls = QgsRasterLayer(out["OUTPUT_CLASSES"], "c")
    assert cls.isValid() and cls.bandCount() == 1
    del poly, cls
    assert _run_meta(out["OUTPUT_CLASSES"])["TM_TTA"] == "1"     # the model's default


def test_processing_returns_the_report_and_the_tiles(provider, tmp_path):
    import processing
    model = tiny_model(str(tmp_path / "doubtful.onnx"), unlike_everything=True)
    raster = s2_raster(str(tmp_path / "scene.tif"))
    out = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu",
        "OUTPUT_CLASSES": str(tmp_path / "classes.tif"), "OUTPUT_POLYGONS": str(tmp_path / "polys.gpkg"),
        "OUTPUT_TILES": str(tmp_path / "tiles.gpkg"), "OUTPUT_REPORT": str(tmp_path / "run.json"),
    })
    assert out["OUTPUT_REPORT"] == str(tmp_path / "run.json")
    rep = json.load(open(out["OUTPUT_REPORT"]))
    assert rep["ood"] is True and rep["ood_score"] > 1.5 and out["OOD_SCORE"] == rep["ood_score"]
    assert rep["outputs"] == {"classes": str(tmp_path / "classes.tif"), "polygons": str(tmp_path / "polys.gpkg"),
                              "tiles": str(tmp_path / "tiles.gpkg")}   # where Processing put them
    assert "unlike the images the model learnt from" in out["WARNINGS"]
    assert out["MASKED_FRACTION"] == 0.0 and 0 < out["FLAGGED_FRACTION"] < 1
    tiles = QgsVectorLayer(out["OUTPUT_TILES"], "t", "ogr")
    assert tiles.isValid() and tiles.featureCount() == rep["reliability"]["tiles_scored"]
    assert tiles.renderer().type() == "RuleRenderer"     # its style travelled with it
    del tiles
    # not asked for: no report, no tiles
    out2 = processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu",
                                "OUTPUT_CLASSES": str(tmp_path / "c2.tif"), "OUTPUT_REPORT": None})
    assert "OUTPUT_REPORT" not in out2 and "OUTPUT_TILES" not in out2


def _run_meta(path):
    from osgeo import gdal
    ds = gdal.Open(path)
    md = ds.GetMetadata()
    ds = None
    return md


def test_processing_test_time_augmentation(provider, data):
    import processing
    tmp, model, raster = data
    out = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu", "TTA": "4",
        "OUTPUT_CLASSES": str(tmp / "c_tta.tif"), "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": None})
    assert _run_meta(out["OUTPUT_CLASSES"])["TM_TTA"] == "4"
    assert _run_meta(out["OUTPUT_CLASSES"])["TM_SCALES"] == "1"
    ms = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu", "SCALES": "1,0.5",
        "OUTPUT_CLASSES": str(tmp / "c_ms.tif"), "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": None})
    assert _run_meta(ms["OUTPUT_CLASSES"])["TM_SCALES"] == "1,0.5"
    # a per-pixel model: the same classes as one pass
    base = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu", "TTA": "1",
        "OUTPUT_CLASSES": str(tmp / "c_1.tif"), "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": None})
    from osgeo import gdal
    a = gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray()
    b = gdal.Open(base["OUTPUT_CLASSES"]).ReadAsArray()
    assert (a == b).all() and (a == 1).sum() > 0


def test_processing_options_extent_mapping_and_skipped_outputs(provider, data):
    import processing
    tmp, model, raster = data
    # only the upper-left 1.5 km: one pond; explicit mapping in model order; no confidence raster;
    # polygons converted to GeoJSON
    out = processing.run(ALG, {
        "INPUT": raster, "MODEL_FILE": model, "BANDS": "1,2,3", "PRESET": "s2-rgb",
        "EXTENT": "500000,501500,7698500,7700000 [EPSG:32723]", "TILE_SIZE": 64, "OVERLAP": 16,
        "THRESHOLD": 0.5, "MIN_AREA_HA": 1.0, "SIMPLIFY_M": 5.0,
        "OUTPUT_CLASSES": str(tmp / "c2.tif"), "OUTPUT_CONFIDENCE": None,
        "OUTPUT_POLYGONS": str(tmp / "p2.geojson"),
    })
    assert "OUTPUT_CONFIDENCE" not in out or not out["OUTPUT_CONFIDENCE"]
    poly = QgsVectorLayer(out["OUTPUT_POLYGONS"], "p", "ogr")
    assert poly.isValid() and poly.featureCount() == 1
    cls = QgsRasterLayer(out["OUTPUT_CLASSES"], "c")
    assert cls.width() == 150 and cls.height() == 150
    del poly, cls


def test_processing_area_of_interest_selected_polygons_in_another_crs(provider, data):
    import processing
    from osgeo import gdal
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsGeometry,
                           QgsProcessingFeatureSourceDefinition)
    tmp, model, raster = data
    # two polygons in EPSG:4326; only the selected one (a triangle over the first pond) counts
    ct = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32723"),
                                QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    tri = QgsGeometry.fromWkt("POLYGON((500300 7698500, 501500 7698500, 500300 7699700, 500300 7698500))")
    far = QgsGeometry.fromWkt("POLYGON((501900 7698100, 502600 7698100, 502600 7697600, 501900 7698100))")
    lyr = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feats = []
    for g in (tri, far):
        g.transform(ct)
        f = QgsFeature()
        f.setGeometry(g)
        feats.append(f)
    lyr.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(lyr)
    lyr.selectByIds([next(lyr.getFeatures()).id()])
    try:
        out = processing.run(ALG, {
            "INPUT": raster, "MODEL_FILE": model, "DEVICE": "cpu", "MIN_AREA_HA": 0.0,
            "AOI": QgsProcessingFeatureSourceDefinition(lyr.id(), True),
            "OUTPUT_CLASSES": str(tmp / "c3.tif"), "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": None})
    finally:
        QgsProject.instance().removeMapLayer(lyr.id())
    ds = gdal.Open(out["OUTPUT_CLASSES"])
    # the triangle's bounding box (120 x 120 px), not the second polygon's
    assert (ds.RasterXSize, ds.RasterYSize) == (120, 120)
    arr = ds.ReadAsArray()
    ds = None
    assert arr[5, -5] == 255 and arr[-5, 5] != 255     # the upper right half lies outside the triangle
    assert abs(int((arr == 255).sum()) - 120 * 120 // 2) < 200
    assert (arr == 1).sum() > 1000                     # the pond inside it is found


def test_processing_refuses_bad_mapping(provider, data):
    import processing
    from qgis.core import QgsProcessingException
    tmp, model, raster = data
    with pytest.raises(QgsProcessingException):
        processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "BANDS": "1,2,7",
                             "OUTPUT_CLASSES": str(tmp / "bad.tif")})
    assert not os.path.exists(tmp / "bad.tif")


def test_processing_load_results_styled(provider, data, qgis_new_project):
    import processing
    from qgis.core import QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer
    tmp, model, raster = data
    processing.runAndLoadResults(ALG, {
        "INPUT": QgsRasterLayer(raster, "scene"), "MODEL_FILE": model, "OUTPUT_CLASSES": "TEMPORARY_OUTPUT",
        "OUTPUT_CONFIDENCE": "TEMPORARY_OUTPUT", "OUTPUT_POLYGONS": "TEMPORARY_OUTPUT"})
    layers = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert set(layers) == {"scene polygons", "scene classes", "scene confidence (%)"}, list(layers)
    assert isinstance(layers["scene classes"].renderer(), QgsPalettedRasterRenderer)
    assert isinstance(layers["scene polygons"].renderer(), QgsCategorizedSymbolRenderer)
    # as the panel adds them: one group, polygons on top and shown, the rasters hidden
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    assert group.name().startswith("scene – tailings ")
    assert [(n.name(), n.isVisible()) for n in group.children()] == [
        ("scene polygons", True), ("scene classes", False), ("scene confidence (%)", False)]
    QgsProject.instance().removeAllMapLayers()
    root.removeAllChildren()


def test_styles_travel_with_the_outputs(provider, data, qgis_new_project):
    """Opened later, in a fresh project, the outputs look as they did after the run: the GeoTIFFs'
    .qml beside them, the polygons' style in the GeoPackage (and beside a GeoJSON)."""
    import processing
    from qgis.core import QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer, QgsSingleBandGrayRenderer
    tmp, model, raster = data
    processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "OUTPUT_CLASSES": str(tmp / "c.tif"),
                         "OUTPUT_CONFIDENCE": str(tmp / "conf.tif"), "OUTPUT_POLYGONS": str(tmp / "p.gpkg")})
    processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "OUTPUT_CLASSES": str(tmp / "c2.tif"),
                         "OUTPUT_CONFIDENCE": None, "OUTPUT_POLYGONS": str(tmp / "p2.geojson")})
    for path in (str(tmp / "p.gpkg"), str(tmp / "p2.geojson")):
        poly = QgsVectorLayer(path, "p", "ogr")
        assert isinstance(poly.renderer(), QgsCategorizedSymbolRenderer), path
        assert [c.label() for c in poly.renderer().categories()] == ["tailings"]
        assert poly.attributeAlias(poly.fields().indexOf("mean_confidence")) == "Mean confidence (%)"
        del poly
    cls = QgsRasterLayer(str(tmp / "c.tif"), "c")
    assert isinstance(cls.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in cls.renderer().classes()] == ["tailings"]
    conf = QgsRasterLayer(str(tmp / "conf.tif"), "conf")
    assert isinstance(conf.renderer(), QgsSingleBandGrayRenderer)
    del cls, conf


def _qgis_process():
    for name in ("qgis_process.bin", "qgis_process"):
        # Debian's qgis_process wrapper passes --noversioncheck, which qgis_process 3.22 rejects
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.mark.skipif(_qgis_process() is None, reason="qgis_process not installed")
def test_qgis_process(tm, data):
    tmp, model, raster = data
    prof = tmp / "config"
    plugins = prof / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    os.symlink(ROOT, plugins / "tailings_mapper")
    ini = prof / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ntailings_mapper=true\n")
    models = tmp / "models"
    models.mkdir()
    shutil.copy(model, models / "tiny_s2rgb.onnx")
    env = dict(os.environ)
    site = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(os.path.join(p, "onnxruntime"))]
    env.update({"QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(prof),
                "TAILINGS_MAPPER_MODELS": str(models),
                "PYTHONPATH": os.pathsep.join(site + [env.get("PYTHONPATH", "")]).strip(os.pathsep)})
    env.pop("QGIS_OPTIONS_PATH", None)
    cmd = [_qgis_process(), "--json", "run", ALG, "--", "INPUT=%s" % raster, "MODEL=tiny_s2rgb",
           "PRESET=auto", "DEVICE=cpu", "SCALES=1,0.5", "TTA=2", "OUTPUT_CLASSES=%s" % (tmp / "qp_classes.tif"),
           "OUTPUT_CONFIDENCE=%s" % (tmp / "qp_conf.tif"), "OUTPUT_POLYGONS=%s" % (tmp / "qp_polys.gpkg")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    js = json.loads(r.stdout[r.stdout.index("{"):])
    res = js["results"]
    assert res["POLYGON_COUNT"] == 2
    assert os.path.isfile(res["OUTPUT_CLASSES"]) and os.path.isfile(tmp / "qp_polys.gpkg")
    meta = _run_meta(res["OUTPUT_CLASSES"])          # the command line's text forms, taken as they are
    assert meta["TM_SCALES"] == "1,0.5" and meta["TM_TTA"] == "2"
    # a bad band mapping: reported once, and nothing written
    bad = subprocess.run(cmd[:5] + ["BANDS=1,2,9"] + cmd[5:], env=env, capture_output=True, text=True, timeout=240)
    assert bad.returncode != 0
    said = (bad.stdout + bad.stderr).count("band 9 does not exist")
    assert said == 1, bad.stdout + bad.stderr
    lyr = QgsVectorLayer(str(tmp / "qp_polys.gpkg"), "p", "ogr")
    assert lyr.featureCount() == 2
    del lyr


def test_in_model_builder_model(provider, data):
    """A Processing model (as the model builder makes) with the algorithm as a child."""
    from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingModelAlgorithm,
                           QgsProcessingModelChildAlgorithm, QgsProcessingModelChildParameterSource,
                           QgsProcessingModelOutput, QgsProcessingModelParameter,
                           QgsProcessingParameterRasterLayer)
    tmp, model, raster = data
    m = QgsProcessingModelAlgorithm("tailings model", "test")
    m.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    child = QgsProcessingModelChildAlgorithm(ALG)
    child.setChildId("seg")
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    child.addParameterSources("MODEL_FILE", [QgsProcessingModelChildParameterSource.fromStaticValue(model)])
    child.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue("cpu")])
    out = QgsProcessingModelOutput("polys", "Polygons")
    out.setChildOutputName("OUTPUT_POLYGONS")
    child.setModelOutputs({"polys": out})
    m.addChildAlgorithm(child)
    ctx, fb = QgsProcessingContext(), QgsProcessingFeedback()
    res, ok = m.run({"scene": raster, "seg:polys": str(tmp / "model_polys.gpkg"),
                     "seg:OUTPUT_CLASSES": str(tmp / "model_classes.tif")}, ctx, fb)
    assert ok, res
    lyr = QgsVectorLayer(str(tmp / "model_polys.gpkg"), "p", "ogr")
    assert lyr.featureCount() == 2
    del lyr


def test_parameters_are_generated_from_the_option_table(provider):
    """Every option the table gives Processing is a parameter of the algorithm, with the engine's
    own choices; the rest of the algorithm's parameters are the input, the model and the outputs."""
    from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterNumber
    from tailings_mapper.inference import OPTIONS
    from tailings_mapper.inference.model.runtime import DEVICES
    from tailings_mapper.inference.tiling import TTA_PASSES
    alg = provider.algorithm("segment")
    names = {p.name() for p in alg.parameterDefinitions()}
    table = {o.name.upper() for o in OPTIONS if "processing" in o.fronts}
    assert table <= names
    assert names - table == {"INPUT", "MODEL", "MODEL_FILE", "OUTPUT_CLASSES", "OUTPUT_CONFIDENCE", "OUTPUT_POLYGONS",
                             "OUTPUT_TILES", "OUTPUT_REPORT"}
    tta = alg.parameterDefinition("TTA")
    assert isinstance(tta, QgsProcessingParameterEnum) and tta.options() == ["model default"] + [str(p) for p in TTA_PASSES]
    assert alg.parameterDefinition("DEVICE").options() == list(DEVICES)
    tile = alg.parameterDefinition("TILE_SIZE")
    assert isinstance(tile, QgsProcessingParameterNumber) and tile.minimum() == 16 and tile.flags() & tile.FlagOptional
    assert "test-time augmentation" in alg.shortHelpString().lower() and "SCALES" in alg.shortHelpString()


def test_bad_option_is_the_engines_message_naming_the_parameter(provider, data):
    import processing
    from qgis.core import QgsProcessingException
    from tailings_mapper.inference import OptionError, SegmentOptions, plan
    tmp, model, raster = data
    with pytest.raises(OptionError) as engine:
        plan(raster, model, SegmentOptions(tile_size=20))   # at least 16 (Processing checks that too), not a multiple of 8
    with pytest.raises(QgsProcessingException) as e:
        processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "TILE_SIZE": 20,
                             "OUTPUT_CLASSES": str(tmp / "bad.tif")})
    assert str(e.value).endswith("\nTILE_SIZE: %s" % engine.value)    # checked before the run
    with pytest.raises(QgsProcessingException, match="DATE: acquisition date must be"):
        processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "DATE": "last summer",
                             "OUTPUT_CLASSES": str(tmp / "bad.tif")})
    out = processing.run(ALG, {"INPUT": raster, "MODEL_FILE": model, "DATE": "2021-07", "DEVICE": "cpu",
                               "OUTPUT_CLASSES": str(tmp / "dated.tif")})
    assert _run_meta(out["OUTPUT_CLASSES"])["TM_DATE"] == "2021-07"
