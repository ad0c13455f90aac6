"""Change maps in QGIS: the Processing algorithm and the "Change map…" dialog, with a polygon layer
edited but not saved (what QGIS shows is the truth)."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("qgis.core")

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer  # noqa: E402
from qgis.PyQt.QtCore import Qt  # noqa: E402

from qgis_helpers import wait_for  # noqa: E402
from test_engine_change import HA, class_raster, polygons_of, year_a, year_b  # noqa: E402


@pytest.fixture
def pair(tmp_path):
    a = class_raster(tmp_path / "a_classes.tif", year_a(), "2019-06-01")
    b = class_raster(tmp_path / "b_classes.tif", year_b(), "2021-06-01")
    return tmp_path, a, b


def test_processing_change(tm, qgis_processing, pair):
    import processing
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    mine = reg.providerById("tailings_mapper") is None
    if mine:
        reg.addProvider(TailingsProvider())
    tmp, a, b = pair
    try:
        out = processing.run("tailings_mapper:change", {"INPUTS": [a, b], "OUTPUT_FOLDER": str(tmp / "out")})
        s = json.load(open(out["SUMMARY"]))
        assert s["years"] == ["2019", "2021"] and out["COMPARED_HA"] == pytest.approx(s["compared_area_ha"])
        assert os.path.isfile(out["REPORT"]) and QgsRasterLayer(out["TRANSITIONS"], "t").isValid()
        assert QgsVectorLayer(out["POLYGONS"], "p", "ogr").featureCount() > 0
        with pytest.raises(Exception, match="the year 2019 is given twice"):
            processing.run("tailings_mapper:change", {"INPUTS": [a, b], "YEARS": "2019,2019",
                                                      "OUTPUT_FOLDER": str(tmp / "out2")})
    finally:
        if mine:
            reg.removeProvider(reg.providerById("tailings_mapper"))


def test_dialog_reads_unsaved_edits_adds_styled_layers_and_opens_the_report(tm, qgis_iface, qgis_new_project, pair,
                                                                           monkeypatch):
    from qgis.PyQt.QtGui import QDesktopServices
    from tailings_mapper.ui.change_dialog import ChangeDialog
    tmp, a, b = pair
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile())))
    ra = QgsRasterLayer(a, "2019 classes")
    gpkg = polygons_of(b, tmp / "b_polygons.gpkg", "2021-06-01")
    pb = QgsVectorLayer(gpkg + "|layername=b_polygons", "2021 polygons", "ogr")
    for lyr in (ra, pb):
        assert lyr.isValid()
        QgsProject.instance().addMapLayer(lyr)
    # the analyst deletes the water that became tailings, and does not save
    assert pb.startEditing()
    gone = [f.id() for f in pb.getFeatures() if f.geometry().boundingBox().yMaximum() < 7700000 - 1400]
    assert gone and pb.deleteFeatures(gone)
    dlg = ChangeDialog(qgis_iface, out_dir=str(tmp / "out"))
    for i in range(dlg.results.count()):
        dlg.results.check(i)
    task = dlg.start()
    assert task is not None, dlg.status.text()
    assert wait_for(lambda: task.ok is not None, 120) and task.ok, task.outcome
    s = task.result.summary
    t = {(x["from"], x["to"]): x["area_ha"] for x in s["transitions"] if not x.get("uncertain")}
    assert t[("water", "tailings")] == 0.0 and t[("water", "background")] == pytest.approx(900 * HA, rel=1e-4)
    names = [lyr.name() for lyr in task.layers]
    assert names == ["change polygons 2019 → 2021", "change 2019 → 2021"]
    trans = task.layers[1]
    assert trans.renderer().type() == "paletted"                                  # its style came with it
    labels = [c.label for c in trans.renderer().classes()]
    assert "tailings -> background" in labels
    assert task.layers[0].renderer().type() == "categorizedSymbol"
    assert opened == [task.result.outputs["report"]]
    assert pb.isEditable() and QgsVectorLayer(gpkg + "|layername=b_polygons", "x", "ogr").featureCount() == \
        pb.featureCount() + len(gone)                                             # the file untouched
    pb.rollBack()


def test_dialog_says_what_is_missing(tm, qgis_iface, qgis_new_project, pair):
    from tailings_mapper.ui.change_dialog import ChangeDialog
    tmp, a, _ = pair
    QgsProject.instance().addMapLayer(QgsRasterLayer(a, "only one"))
    dlg = ChangeDialog(qgis_iface, out_dir=str(tmp / "out"))
    dlg.results.check(0)
    assert dlg.start() is None and "two or more" in dlg.status.text()


def test_processing_batch_over_a_facilities_layer(tm, qgis_processing, tmp_path):
    """A facilities layer loaded in QGIS and a folder of dated scenes, in QGIS's process."""
    import processing
    from osgeo import ogr, osr
    from engine_helpers import make_raster
    from test_engine_batch import model
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    mine = reg.providerById("tailings_mapper") is None
    if mine:
        reg.addProvider(TailingsProvider())
    try:
        scenes = tmp_path / "scenes"
        scenes.mkdir()
        for k, day in enumerate(("20200701", "20210702", "20220703")):
            img = np.full((3, 120, 120), 1000, np.uint16)
            img[0, 20:40 + 10 * k, 20:40 + 10 * k] = 8000
            make_raster(str(scenes / ("S2_%s.tif" % day)), img, descriptions=("B4", "B3", "B2"))
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(32723)
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "fac.gpkg"))
        lyr = ds.CreateLayer("fac", srs, ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("code", ogr.OFTString))
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("code", "BR-1")
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((500100 7699900,500700 7699900,500700 7699300,500100 7699300,"
                                                "500100 7699900))"))
        lyr.CreateFeature(f)
        ds = None
        layer = QgsVectorLayer(str(tmp_path / "fac.gpkg"), "facilities", "ogr")
        QgsProject.instance().addMapLayer(layer)
        out = processing.run("tailings_mapper:batch", {
            "FACILITIES": layer, "FACILITY_FIELD": "code", "SCENES": str(scenes),
            "MODEL": model(tmp_path / "m.onnx"), "OUTPUT": str(tmp_path / "out")})
        assert out["DONE"] == 3 and out["FAILED"] == 0
        s = json.load(open(out["SUMMARY"]))
        assert [s["area_ha"]["BR-1"][y]["tailings"] for y in ("2020", "2021", "2022")] == pytest.approx([4.0, 9.0, 16.0], rel=1e-3)   # (true areas: 0.08 % over the UTM grid's)
        assert len(s["changes"]["BR-1"]) == 2
    finally:
        QgsProject.instance().removeAllMapLayers()
        if mine:
            reg.removeProvider(reg.providerById("tailings_mapper"))
