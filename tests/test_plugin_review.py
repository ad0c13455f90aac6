"""The review queue (issue 28, item 2): after a run, "Review detections" steps through the regions
(marked for review first, then largest first), each zoomed over the image; keys accept, reject,
skip, go back; decisions are edits of the layer's `review` field (undoable); rejected regions leave
the map, not the layer; "Improve the model from my review" trains from exactly those decisions.
Real PyQGIS, a real run of the shipped network (without its veto: it flags nothing on synthetic
squares), the label raster the fit builds checked pixel for pixel."""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("qgis.core")
pytest.importorskip("torch")

from osgeo import gdal, ogr, osr  # noqa: E402
from qgis.core import QgsProject, QgsRectangle, QgsVectorLayer  # noqa: E402
from qgis.PyQt.QtCore import Qt  # noqa: E402
from qgis.PyQt.QtTest import QTest  # noqa: E402

from qgis_helpers import panel_run_network, plugin_env, s2_raster  # noqa: E402

SQUARES = ((40, 40, 110), (250, 200, 90), (300, 30, 60), (40, 300, 70))


@pytest.fixture
def env(tm, tmp_path, monkeypatch, qgis_iface, qgis_new_project):
    with plugin_env(tmp_path, monkeypatch, qgis_iface, "tailings"):
        yield tmp_path


def _run(plugin, env):
    """The panel runs the shipped network without its veto on four bright squares; the run's
    polygon layer."""
    return panel_run_network(plugin, env, SQUARES)


def _mark_smallest(poly):
    """The smallest region marked for review, the others not (in the GeoPackage, as the engine
    writes the marks): the queue must put it first."""
    idx = poly.fields().indexOf("for_review")
    assert idx >= 0, "the run wrote no for_review field"
    areas = {f.id(): f.geometry().area() for f in poly.getFeatures()}
    smallest = min(areas, key=areas.get)
    assert poly.dataProvider().changeAttributeValues({fid: {idx: int(fid == smallest)} for fid in areas})
    return smallest, areas


def _states(poly):
    return {f.id(): f["review"] for f in poly.getFeatures()}


def _drawn(poly, fid):
    """Whether the layer's renderer draws a feature (what the map shows)."""
    from qgis.core import QgsRenderContext
    ctx = QgsRenderContext()
    r = poly.renderer().clone()
    r.startRender(ctx, poly.fields())
    try:
        return r.willRenderFeature(poly.getFeature(fid), ctx)
    finally:
        r.stopRender(ctx)


def test_review_queue_orders_decides_hides_and_trains_from_exactly_the_decisions(plugin, env):
    from tailings_mapper.qgis_glue import edits
    from training import chips as C
    from training import labels as L
    from training.review import read_review
    from inference import open_model
    raster, poly = _run(plugin, env)
    n = poly.featureCount()
    assert n >= 3, "the network found %d of the four squares" % n
    smallest, areas = _mark_smallest(poly)
    plugin.iface.setActiveLayer(poly)
    canvas = plugin.iface.mapCanvas()
    canvas.setExtent(QgsRectangle(0, 0, 1, 1))

    dlg = plugin.dock.review_button.click() or plugin.dock.review_dialog
    rv = dlg.review
    # the order: the marked region first, then the rest largest first
    rest = sorted((f for f in areas if f != smallest), key=lambda f: -areas[f])
    assert rv.order == [smallest] + rest
    # the field was added in the GeoPackage itself (not editing), every region unreviewed
    assert set(QgsVectorLayer(poly.source(), "file", "ogr").fields().names()) >= {"review"}
    assert set(_states(poly).values()) == {"unreviewed"}
    assert dlg.progress_label.text() == "0 of %d reviewed" % n
    # zoomed over the first region, which is selected
    box = poly.getFeature(smallest).geometry().boundingBox()
    ext = canvas.extent()    # (the canvas keeps its own aspect: the region's larger side fits, with room)
    assert ext.contains(box) and min(ext.width(), ext.height()) < 3 * max(box.width(), box.height())
    assert poly.selectedFeatureIds() == [smallest]
    assert "marked for review" in dlg.region_label.text()

    QTest.keyClick(dlg, Qt.Key.Key_A)                 # accept the marked one
    QTest.keyClick(dlg, Qt.Key.Key_R)                 # reject the largest
    QTest.keyClick(dlg, Qt.Key.Key_Space)             # skip the next
    s = _states(poly)
    assert s[smallest] == "accepted" and s[rest[0]] == "rejected" and s[rest[1]] == "unreviewed"
    assert dlg.progress_label.text() == "2 of %d reviewed" % n
    assert rv.current() == (rest[2] if len(rest) > 2 else None)
    box = poly.getFeature(rest[2]).geometry().boundingBox() if len(rest) > 2 else None
    assert box is None or canvas.extent().contains(box)
    QTest.keyClick(dlg, Qt.Key.Key_B)                 # back to the skipped one
    assert rv.current() == rest[1] and poly.selectedFeatureIds() == [rest[1]]
    # decisions are edits: undo takes the last back; the rejected region is off the map, in the layer
    assert poly.isEditable() and poly.undoStack().count() == 2
    assert not _drawn(poly, rest[0]) and _drawn(poly, smallest) and _drawn(poly, rest[1])
    assert poly.featureCount() == n and poly.getFeature(rest[0]).isValid()
    poly.undoStack().undo()
    assert _states(poly)[rest[0]] == "unreviewed" and _drawn(poly, rest[0])
    poly.undoStack().redo()
    assert _states(poly)[rest[0]] == "rejected"
    dlg.refresh()
    assert dlg.progress_label.text() == "2 of %d reviewed" % n

    # the training request: tailings exactly on the accepted region, background exactly on the rejected
    req = edits.from_review(poly, epochs=1)
    assert req.review and req.rasters == [raster] and req.corrections_of is None and req.aoi is None
    model = open_model(req.init)
    polys, area = read_review(req.labels, model.info.classes)
    sc = C.open_scene(raster, model, polys, area, str(env), None, 64, 0.0, 0, 0)
    lab = sc.labels.ReadAsArray()
    gt, wkt, w, h = sc.grid.gt, sc.grid.wkt, sc.grid.width, sc.grid.height
    sc.close()
    expected = np.full((h, w), L.IGNORE, np.uint8)
    for fid, value in ((smallest, 1), (rest[0], 0)):
        expected[_burn(poly.getFeature(fid).geometry().asWkt(), gt, wkt, w, h)] = value
    assert (expected == 1).sum() > 100 and (expected == 0).sum() > 100
    assert np.array_equal(lab, expected)
    assert (lab == L.IGNORE).sum() > 0    # the skipped and unvisited regions, the ground between: ignored
    poly.rollBack()


def _burn(wkt_geom, gt, wkt, w, h):
    """A polygon's pixels on a grid (GDAL's rasterizer, pixel centres)."""
    ds = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    lyr = mem.CreateLayer("p", srs, ogr.wkbPolygon)
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetGeometry(ogr.CreateGeometryFromWkt(wkt_geom))
    lyr.CreateFeature(f)
    gdal.RasterizeLayer(ds, [1], lyr, burn_values=[1])
    return ds.ReadAsArray() == 1


def _result_gpkg(path, n=3):
    """A polygon layer as the engine writes it (class_id, area_ha, for_review), squares of growing size."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("scene_polygons", srs, ogr.wkbPolygon)
    for name, kind in (("class_id", ogr.OFTInteger), ("area_ha", ogr.OFTReal), ("for_review", ogr.OFTInteger)):
        lyr.CreateField(ogr.FieldDefn(name, kind))
    for k in range(n):
        x0, y0, side = 500000.0 + 1000 * k, 7700000.0, 100.0 * (k + 1)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("class_id", 1)
        f.SetField("area_ha", side * side / 1e4)
        f.SetField("for_review", 0)
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
            x0, y0, x0 + side, y0, x0 + side, y0 - side, x0, y0 - side, x0, y0)))
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def test_a_layer_being_edited_gets_the_field_in_its_edit_buffer_and_loses_nothing(tm, env):
    """Editing with unsaved reshapes: the review field and the decisions join the edit buffer (the
    file untouched until saved); rolled back, nothing of them stays; saved, everything is in the file."""
    from tailings_mapper.qgis_glue import review as R
    path = _result_gpkg(env / "run.gpkg")
    poly = QgsVectorLayer(path + "|layername=scene_polygons", "run", "ogr")
    QgsProject.instance().addMapLayer(poly)
    assert poly.startEditing()
    fids = R.queue(poly)
    assert [round(poly.getFeature(f)["area_ha"], 2) for f in fids] == [9.0, 4.0, 1.0]   # largest first
    rv = R.Review(poly)
    assert "review" in poly.fields().names()
    assert "review" not in QgsVectorLayer(path, "file", "ogr").fields().names()        # the file: untouched
    rv.reject()
    assert R.progress_text(poly) == "1 of 3 reviewed" and rv.current() == fids[1]
    poly.rollBack()
    assert "review" not in poly.fields().names() and "review" not in QgsVectorLayer(path, "f", "ogr").fields().names()
    rv = R.Review(poly)                                 # not editing now: the column goes into the file
    assert "review" in QgsVectorLayer(path, "file", "ogr").fields().names()
    rv.accept()
    rv.skip()
    rv.reject()
    assert rv.done() and "All 3 regions seen" in rv.describe()
    assert poly.commitChanges()
    saved = {f["area_ha"]: f["review"] for f in QgsVectorLayer(path, "file", "ogr").getFeatures()}
    assert saved == {9.0: "accepted", 4.0: "unreviewed", 1.0: "rejected"}


def test_review_labels_refuse_what_teaches_nothing_or_is_not_a_decision(tm, env):
    """Read by the training side: no decision yet, an unknown value, --review with --field: one
    error line each, from the CLI with exit 2."""
    import subprocess
    from inference import open_model
    from inference.errors import InputError
    from training.review import read_review
    classes = open_model("tailings").info.classes
    path = _result_gpkg(env / "run.gpkg")
    with pytest.raises(InputError, match="no 'review' field"):
        read_review(path, classes)
    ds = ogr.Open(path, 1)
    lyr = ds.GetLayer(0)
    lyr.CreateField(ogr.FieldDefn("review", ogr.OFTString))
    ds = None
    with pytest.raises(InputError, match="no region is accepted or rejected"):
        read_review(path, classes)
    ds = ogr.Open(path, 1)
    lyr = ds.GetLayer(0)
    for f, v in zip(list(lyr), ("accepted", "Rejected", "maybe")):
        f.SetField("review", v)
        lyr.SetFeature(f)
    ds = None
    with pytest.raises(InputError, match="'maybe' \\(1 regions\\)"):
        read_review(path, classes)
    raster = s2_raster(str(env / "scene.tif"), size=64)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "training", "fit", "--raster", raster, "--labels", path, "--review",
                        "--field", "class_id", "--no-register"], cwd=root, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --review takes"), r.stderr
    assert "Traceback" not in r.stderr


def test_review_without_a_result_layer_says_so(plugin, env):
    plugin.show_panel(True)
    other = QgsVectorLayer(_result_gpkg(env / "mine.gpkg"), "mine", "ogr")
    QgsProject.instance().addMapLayer(other)
    plugin.iface.setActiveLayer(other)
    plugin.dock.review_button.click()
    assert getattr(plugin.dock, "review_dialog", None) is None
    msgs = " ".join(plugin.iface.messageBar().get_messages(0) + plugin.iface.messageBar().get_messages(1))
    assert "Nothing to review" in msgs
    assert plugin.improve_from_edits(layer=other, review=True) is None
