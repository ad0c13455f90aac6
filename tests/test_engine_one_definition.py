"""One definition: the provenance a run records (the same keys and formats in its rasters and
its polygon layer, files of the previous version still read)."""
from dataclasses import replace

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine_helpers import make_raster, pixel_model
from inference import SegmentOptions, provenance, segment
from inference.change.doubt import evidence
from inference.change.inputs import open_input, recorded_date

gdal.UseExceptions()
ogr.UseExceptions()


def _scene(tmp_path, w=120, h=90):
    img = np.full((3, h, w), 1000, np.uint16)
    img[0, 20:50, 30:70] = 3000      # one block of tailings
    img[0, 60:80, 90:115] = 3000     # and another
    return make_raster(str(tmp_path / "r.tif"), img, descriptions=["B4", "B3", "B2"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    m = pixel_model(str(tmp / "m.onnx"), [10, 0, 0], -2.0, threshold=0.45, min_area_ha=0.05)
    return segment(_scene(tmp), m, str(tmp / "out"), SegmentOptions(device="cpu", date="2021-07-04", tta=2))


def _layer_md(gpkg):
    ds = ogr.Open(gpkg)
    lyr = next(ds.GetLayer(i) for i in range(ds.GetLayerCount()) if ds.GetLayer(i).GetName().endswith("_polygons"))
    return dict(lyr.GetMetadata())


def test_numbers_are_written_one_way():
    assert [provenance.number(x) for x in (0.5, 1, 1.0, 2.25, 0.123456789, 1e-7)] == \
        ["0.5", "1", "1", "2.25", "0.123456789", "1e-07"]
    assert float(provenance.number(0.1 + 0.2)) == 0.1 + 0.2      # exact where %g rounds
    assert "%g" % (0.1 + 0.2) != provenance.number(0.1 + 0.2)


def test_rasters_and_polygon_layer_record_the_same_keys_and_values(run):
    ras = {k: v for k, v in gdal.Open(run.class_raster).GetMetadata().items() if k.startswith("TM_")}
    conf = {k: v for k, v in gdal.Open(run.confidence_raster).GetMetadata().items() if k.startswith("TM_")}
    gpkg = {k: v for k, v in _layer_md(run.polygons).items() if k.startswith("TM_")}
    assert conf.pop(provenance.CONTENT)
    assert ras == conf == gpkg
    assert {provenance.MODEL, provenance.MODEL_PATH, provenance.SOURCE, provenance.DEVICE, provenance.THRESHOLD,
            provenance.MIN_AREA_HA, provenance.TTA, provenance.SCALES, provenance.AREA, provenance.AREA_CRS,
            provenance.DATE} <= set(gpkg)
    made = provenance.read(_layer_md(run.polygons))
    assert made == replace(provenance.read(gdal.Open(run.class_raster).GetMetadata()), classes=made.classes)
    assert (made.threshold, made.min_area_ha, made.tta, made.scales, made.date, made.device) == \
        (0.45, 0.05, 2, (1.0,), "2021-07-04", "cpu")
    assert gpkg[provenance.THRESHOLD] == "0.45" and gpkg[provenance.MIN_AREA_HA] == "0.05"
    assert made.classes == {0: "background", 1: "tailings"}


def _old_raster(tmp_path):
    """A class raster as the previous version wrote it (numbers as %g; no model path, no area)."""
    a = np.zeros((40, 50), np.uint8)
    a[10:20, 10:30] = 1
    path = make_raster(str(tmp_path / "old_classes.tif"), a, dtype=gdal.GDT_Byte, nodata=255)
    ds = gdal.Open(path, gdal.GA_Update)
    ds.SetMetadata({"TM_MODEL": "old", "TM_SOURCE": "/x/s2.tif", "TM_DEVICE": "cpu", "TM_PROVIDER_REASON": "asked",
                    "TM_RUN_TIME": "2024-01-02T03:04:05", "TM_BANDS": "B4=1", "TM_TTA": "1", "TM_SCALES": "1,0.5",
                    "TM_THRESHOLD": "%g" % 0.35, "TM_DATE": "2019", "CLASS_0": "background", "CLASS_1": "tailings"})
    ds = None
    return path


def _old_gpkg(tmp_path):
    """A polygon layer as the previous version wrote it (numbers as str(), its own set of keys)."""
    path = str(tmp_path / "old.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    lyr = ds.CreateLayer("old_polygons", srs, ogr.wkbMultiPolygon)
    lyr.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    lyr.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    x0, y0 = 500000.0, 7700000.0
    area = "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (x0, y0, x0 + 500, y0, x0 + 500, y0 - 400, x0, y0 - 400, x0, y0)
    lyr.SetMetadata({"TM_MODEL": "old", "TM_MODEL_PATH": "/nowhere/old.onnx", "TM_SOURCE": "/x/s2.tif",
                     "TM_RUN_TIME": "2024-01-02T03:04:05", "TM_MIN_AREA_HA": str(1.0), "TM_THRESHOLD": str(0.35),
                     "TM_AREA": area, "TM_AREA_CRS": srs.ExportToWkt(), "TM_DATE": "2019",
                     "CLASS_0": "background", "CLASS_1": "tailings"})
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetField("class_id", 1)
    f.SetField("class_name", "tailings")
    f.SetGeometry(ogr.CreateGeometryFromWkt("MULTIPOLYGON(((%r %r,%r %r,%r %r,%r %r)))" % (
        x0 + 100, y0 - 100, x0 + 300, y0 - 100, x0 + 300, y0 - 200, x0 + 100, y0 - 100)))
    lyr.CreateFeature(f)
    ds = None
    return path


def test_files_of_the_previous_version_are_read(tmp_path):
    r = provenance.read_file(_old_raster(tmp_path))
    assert (r.model, r.threshold, r.tta, r.scales, r.date, r.device, r.model_path, r.area) == \
        ("old", 0.35, 1, (1.0, 0.5), "2019", "cpu", None, None)
    g = provenance.read_file(_old_gpkg(tmp_path), "old_polygons")
    assert (g.model, g.threshold, g.min_area_ha, g.model_path, g.date, g.device) == \
        ("old", 0.35, 1.0, "/nowhere/old.onnx", "2019", None)
    assert g.area.startswith("POLYGON") and g.classes == r.classes == {0: "background", 1: "tailings"}
    # and the change map's readers take them as before
    assert recorded_date(str(tmp_path / "old_classes.tif")) == "2019"
    assert recorded_date(str(tmp_path / "old.gpkg") + "|layername=old_polygons") == "2019"
    inp = open_input(str(tmp_path / "old.gpkg") + "|layername=old_polygons")
    assert inp.year == "2019" and inp.classes == {0: "background", 1: "tailings"}
    assert evidence(str(tmp_path / "old_classes.tif")).threshold == 0.35


def test_unreadable_values_read_as_unknown():
    made = provenance.read({"TM_THRESHOLD": "high", "TM_TTA": "2.5", "TM_SCALES": "1,x", "TM_DATE": ""})
    assert (made.threshold, made.tta, made.scales, made.date) == (None, None, None, None)
    assert provenance.read_file("/nowhere/at/all.tif") == provenance.Provenance()


# --------------------------------------------------------------------------------------
# One grid type for geotransform arithmetic
# --------------------------------------------------------------------------------------

from inference.grid import Grid, Window, box_wkt  # noqa: E402

UTM = (500010.0, 10.0, 0.0, 7700000.0, 0.0, -10.0)


def test_grid_coordinates_are_the_geotransform_sums():
    g = Grid(UTM, 300, 200)
    gt = UTM
    for c, r in ((0, 0), (7, 3), (300, 200), (12.5, 0.25)):
        assert g.xy(c, r) == (gt[0] + gt[1] * c, gt[3] + gt[5] * r)
        assert g.pixel_of(*g.xy(c, r)) == pytest.approx((c, r))
    cols, rows = g.pixel_of(np.array([500010.0, 500110.0]), np.array([7700000.0, 7699950.0]))
    assert cols.tolist() == [0.0, 10.0] and rows.tolist() == [0.0, 5.0]
    assert g.bounds == (500010.0, 7698000.0, 503010.0, 7700000.0)
    assert g.center == (501510.0, 7699000.0) and g.pixel_size == (10.0, 10.0) and g.north_up


def test_windows_and_sub_grids():
    g = Grid(UTM, 300, 200, "wkt", "r.tif")
    w = Window.of((10, 20, 30, 40))
    assert g.extent_of(w) == (500110.0, 7699400.0, 500410.0, 7699800.0)
    s = g.sub(w)
    assert (s.gt, s.width, s.height, s.wkt, s.source) == ((500110.0, 10.0, 0.0, 7699800.0, 0.0, -10.0), 30, 40,
                                                         "wkt", "r.tif")
    assert s.bounds == g.extent_of(w)
    assert g.box_wkt(w) == box_wkt(500110.0, 7699800.0, 500410.0, 7699400.0)
    assert ogr.CreateGeometryFromWkt(g.box_wkt(w)).GetArea() == 300.0 * 400.0
    # the window covering an extent: edges within a millionth of a pixel take no pixel more
    assert g.window_of(500110.0, 7699400.0, 500410.0, 7699800.0) == w
    assert g.window_of(500115.0, 7699400.0 - 1e-9, 500410.0 + 0.1, 7699800.0) == Window(10, 20, 31, 40)
    # pixels three times as large, from the same corner, covering the whole grid
    a = g.at_resolution(3)
    assert (a.gt, a.width, a.height) == ((500010.0, 30.0, 0.0, 7700000.0, 0.0, -30.0), 100, 67)
    assert a.pixel_of(500010.0 + 95.0, 7700000.0 - 31.0) == pytest.approx((95 / 30.0, 31 / 30.0))


def test_a_south_up_or_rotated_grid_has_sorted_bounds():
    south = Grid((0.0, 1.0, 0.0, 0.0, 0.0, 2.0), 10, 5)
    assert south.bounds == (0.0, 0.0, 10.0, 10.0)
    rot = Grid((0.0, 1.0, 0.5, 0.0, 0.0, -1.0), 10, 4)
    assert not rot.north_up and rot.bounds == (0.0, -4.0, 12.0, 0.0)


def test_one_grid_type_for_the_change_map(tmp_path):
    from inference.change import grid as change_grid
    from inference.input.raster import open_input
    path = _old_raster(tmp_path)
    assert change_grid.Grid is Grid
    g = open_input(path).grid
    d = Grid.of_dataset(gdal.Open(path))
    assert isinstance(g, Grid) and (g.gt, g.width, g.height, g.wkt) == (d.gt, d.width, d.height, d.wkt)
    assert (g.width, g.height) == (50, 40) and g.bounds == (500000.0, 7699600.0, 500500.0, 7700000.0)
    assert "pixels of 10 x 10 metre, 50 x 40, from old_classes.tif" in Grid.of_dataset(gdal.Open(path)).describe()


# --------------------------------------------------------------------------------------
# One equal-area measure
# --------------------------------------------------------------------------------------

def _tailings_m2(gpkg):
    ds = ogr.Open(gpkg)
    lyr = next(ds.GetLayer(i) for i in range(ds.GetLayerCount()) if ds.GetLayer(i).GetName().endswith("_polygons"))
    return sum(f.GetField("area_m2") for f in lyr if f.GetField("class_id") == 1), \
        sum(f.GetField("area_ha") for f in ds.GetLayer(lyr.GetName()) if f.GetField("class_id") == 1)


def test_the_same_polygon_gets_the_same_hectares_everywhere(run, tmp_path):
    from inference.areas import hectares
    from inference.change import ChangeOptions, change
    ds = gdal.Open(run.class_raster)
    cls = ds.GetRasterBand(1).ReadAsArray()
    pixels = int((cls == 1).sum())
    assert pixels == 30 * 40 + 20 * 25
    m2, ha = _tailings_m2(run.polygons)
    # true areas: the raster is on UTM zone 23S's central meridian, where its metres are 0.9996 true ones
    assert m2 == pytest.approx(pixels * 100.0 / 0.9996 ** 2, rel=1e-7)
    assert ha == pytest.approx(hectares(m2), abs=0.01) and run.stats[1]["area_ha"] == pytest.approx(hectares(m2), rel=1e-7)
    # the class raster's statistics (a run without polygons)
    m = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0, threshold=0.45, min_area_ha=0.05)
    bare = segment(_scene(tmp_path), m, str(tmp_path / "bare"), SegmentOptions(device="cpu", polygons=False))
    assert bare.polygons is None
    assert bare.stats[1]["area_ha"] == pytest.approx(hectares(m2), rel=1e-7)
    # a change map from nothing to this run: its new tailings, as pixels and as polygons
    before = gdal.GetDriverByName("GTiff").CreateCopy(str(tmp_path / "before.tif"), ds)
    before.GetRasterBand(1).WriteArray(np.zeros_like(cls))
    before.SetMetadata({"CLASS_0": "background", "CLASS_1": "tailings", "TM_DATE": "2019"})
    before = ds = None
    res = change([str(tmp_path / "before.tif"), run.class_raster], str(tmp_path / "change"), ChangeOptions())
    assert res.summary["series"]["area_ha"]["2021"]["tailings"] == pytest.approx(hectares(m2), abs=1e-4)
    out = ogr.Open(res.outputs["polygons"])
    lyr = next(out.GetLayer(i) for i in range(out.GetLayerCount()) if out.GetLayer(i).GetName() != "layer_styles")
    new = [f.GetField("area_ha") for f in lyr if f.GetField("class_after") == "tailings"]   # (new, or uncertain)
    assert len(new) >= 2 and sum(new) == pytest.approx(hectares(m2), abs=1e-4 * len(new))
