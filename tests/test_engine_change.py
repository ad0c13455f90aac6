"""Change maps between years: constructed results whose true change is known, in different CRSs
and grids, edited polygons, no data, a series, facilities, and bad input."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine_helpers import facilities_gpkg, run_cli
from inference.change import ChangeOptions, change, plan_change
from inference.errors import InputError

CLASSES = {0: "background", 1: "tailings", 2: "water"}
PX = 10.0
ORIGIN = (500000.0, 7700000.0)      # EPSG:32723, on the zone's central meridian
HA = PX * PX / 1e4 / 0.9996 ** 2    # one 10 m pixel, true area (UTM's scale on its central meridian: 0.9996)


def class_raster(path, arr, date=None, epsg=32723, origin=ORIGIN, px=PX, classes=CLASSES):
    h, w = arr.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((origin[0], px, 0, origin[1], 0, -px))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    b = ds.GetRasterBand(1)
    b.WriteArray(arr)
    b.SetNoDataValue(255)
    md = {"CLASS_%d" % k: v for k, v in classes.items()}
    if date:
        md["TM_DATE"] = date
    ds.SetMetadata(md)
    ds = None
    return str(path)


def to_wgs84(src, path):
    """The same raster warped (nearest) onto a geographic grid of about the same pixel size."""
    gdal.Warp(str(path), src, dstSRS="EPSG:4326", xRes=0.0001, yRes=0.00009, resampleAlg="near",
              srcNodata=255, dstNodata=255)
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.SetMetadata(gdal.Open(src).GetMetadata())
    ds = None
    return str(path)


def year_a():
    a = np.zeros((200, 200), np.uint8)
    a[20:60, 20:60] = 1        # pond 1: 40 x 40
    a[120:150, 120:150] = 1    # pond 2: disappears
    a[150:180, 30:60] = 2      # water that becomes tailings
    return a


def year_b():
    b = np.zeros((200, 200), np.uint8)
    b[20:80, 20:80] = 1        # pond 1 grows to 60 x 60
    b[150:180, 30:60] = 1      # the water is tailings now
    return b


def transitions(summary):
    return {(t["from"], t["to"]): t["area_ha"] for t in summary["transitions"] if not t.get("uncertain")}


def border_ha(side_px):
    return 4 * side_px * HA * 1.5


def test_known_change_across_crs_and_grids(tmp_path):
    a = class_raster(tmp_path / "a_classes.tif", year_a(), "2019-07-01")
    b_utm = class_raster(tmp_path / "b_utm.tif", year_b(), "2021-07-01")
    b = to_wgs84(b_utm, tmp_path / "b_classes.tif")
    res = change([a, b], str(tmp_path / "out"))
    s = res.summary
    t = transitions(s)
    assert s["years"] == ["2019", "2021"] and "EPSG:32723" in s["grid"]
    assert t[("background", "tailings")] == pytest.approx((3600 - 1600) * HA, abs=border_ha(60))   # growth
    assert t[("tailings", "background")] == pytest.approx(900 * HA, abs=border_ha(30))             # pond 2 gone
    assert t[("water", "tailings")] == pytest.approx(900 * HA, abs=border_ha(30))                  # class change
    assert t[("tailings", "tailings")] == pytest.approx(1600 * HA, abs=border_ha(40))
    assert s["area_ha"]["2019"]["tailings"] == pytest.approx(2500 * HA, abs=border_ha(70))
    assert s["area_ha"]["2021"]["tailings"] == pytest.approx(4500 * HA, abs=border_ha(90))
    # outputs: the transition raster's code, legend and style; the polygons; the tables; the report
    ds = gdal.Open(res.outputs["transitions"])
    band = ds.GetRasterBand(1)
    code = band.ReadAsArray()
    band.GetNoDataValue()
    names = band.GetCategoryNames()
    assert names[1 * 3 + 0] == "tailings -> background" and ds.GetMetadata()["TM_CODE"] == "from x 3 + to"
    band = ds = None
    assert code[40, 40] == 1 * 3 + 1 and code[70, 70] == 0 * 3 + 1 and code[130, 130] == 1 * 3 + 0
    assert 'label="water -&gt; tailings"' in open(res.outputs["transitions_style"]).read()   # (XML for ->)
    src = ogr.Open(res.outputs["polygons"])
    feats = [(f["class_before"], f["class_after"], f["change"], f["area_ha"], f["year_before"], f["year_after"])
             for f in src.GetLayer(0)]
    src = None
    kinds = {(f[0], f[1]): f[2] for f in feats}
    assert kinds[("background", "tailings")] == "new" and kinds[("tailings", "background")] == "lost"
    assert kinds[("water", "tailings")] == "changed class" and kinds[("tailings", "tailings")] == "unchanged"
    assert sum(f[3] for f in feats if f[2] == "lost") == pytest.approx(t[("tailings", "background")], rel=0.02)
    assert all(f[4:] == ("2019", "2021") for f in feats)
    rows = list(csv.reader(open(res.outputs["transition_table"])))
    assert rows[0][:2] == ["facility", "2019 \\ 2021"] and rows[-1][1] == "total 2021"
    gain = {r[1]: r for r in csv.reader(open(res.outputs["change_by_class"]))}
    assert float(gain["tailings"][6]) == pytest.approx(s["area_ha"]["2021"]["tailings"] - s["area_ha"]["2019"]["tailings"],
                                                       abs=0.02)
    html = open(res.outputs["report"]).read()
    assert "data:image/png;base64," in html and "Transitions 2019 → 2021" in html
    assert json.load(open(res.outputs["summary"]))["area_ha"] == s["area_ha"]


def test_a_geographic_grid_gives_true_hectares(tmp_path):
    """The first result in EPSG:4326: the grid is geographic, the areas still hectares."""
    b = class_raster(tmp_path / "b_utm.tif", year_b(), "2021")
    a = to_wgs84(class_raster(tmp_path / "a_utm.tif", year_a(), "2019"), tmp_path / "a_ll.tif")
    s = change([a, b], str(tmp_path / "out")).summary
    assert "EPSG:4326" in s["grid"]
    assert transitions(s)[("tailings", "background")] == pytest.approx(9.0, abs=border_ha(30))


def test_nodata_and_masked_pixels_are_never_change(tmp_path):
    a, b = year_a(), year_b()
    a[:, 190:] = 255                # no data in the first year
    b[100:200, 100:200] = 250       # cloud over pond 2 in the second
    s = change([class_raster(tmp_path / "a.tif", a, "2019"), class_raster(tmp_path / "b.tif", b, "2021")],
               str(tmp_path / "out")).summary
    t = transitions(s)
    assert t[("tailings", "background")] == 0.0          # pond 2 is under the cloud: not lost
    nodata = (200 * 10 + 100 * 90) * HA
    assert s["nodata_area_ha"] == pytest.approx(nodata, rel=1e-4)
    assert s["compared_area_ha"] == pytest.approx(200 * 200 * HA - nodata, rel=1e-4)
    assert sum(v for v in t.values()) == pytest.approx(s["compared_area_ha"], rel=1e-6)


def polygons_of(raster, path, date, edit=None):
    """An engine-like polygon layer of a class raster (class_id, class_name; TM_AREA, TM_DATE),
    optionally edited: ``edit(layer)``."""
    src = gdal.Open(raster)
    band = src.GetRasterBand(1)
    srs = osr.SpatialReference(wkt=src.GetProjection())
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    name = os.path.splitext(os.path.basename(str(path)))[0]
    lyr = ds.CreateLayer(name, srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    lyr.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    mem = gdal.GetDriverByName("MEM").CreateCopy("", src)
    m = mem.GetRasterBand(1)
    arr = m.ReadAsArray()
    mask = gdal.GetDriverByName("MEM").Create("", src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    mask.GetRasterBand(1).WriteArray(((arr > 0) & (arr < 250)).astype(np.uint8))
    gdal.Polygonize(m, mask.GetRasterBand(1), lyr, 0)
    for f in lyr:
        f.SetField("class_name", CLASSES[f.GetField("class_id")])
        lyr.SetFeature(f)
    gt = src.GetGeoTransform()
    x1, y1 = gt[0] + gt[1] * src.RasterXSize, gt[3] + gt[5] * src.RasterYSize
    lyr.SetMetadata({"TM_DATE": date, "TM_AREA": "POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
        gt[0], gt[3], x1, gt[3], x1, y1, gt[0], y1, gt[0], gt[3]), **{"CLASS_%d" % k: v for k, v in CLASSES.items()}})
    if edit:
        edit(lyr)
    lyr = ds = band = src = None
    return str(path)


def test_edited_polygons_are_the_truth(tmp_path):
    a = class_raster(tmp_path / "a_classes.tif", year_a(), "2019")
    b = class_raster(tmp_path / "b_classes.tif", year_b(), "2021")
    plain = change([a, polygons_of(b, tmp_path / "b_polygons.gpkg", "2021")], str(tmp_path / "plain")).summary
    assert transitions(plain) == pytest.approx(transitions(change([a, b], str(tmp_path / "ras")).summary), abs=1e-6)

    def delete_the_water_that_became_tailings(lyr):
        for f in list(lyr):
            env = f.GetGeometryRef().GetEnvelope()
            if env[0] < ORIGIN[0] + 70 * PX and env[3] < ORIGIN[1] - 140 * PX:
                lyr.DeleteFeature(f.GetFID())

    d = change([a, polygons_of(b, tmp_path / "d_polygons.gpkg", "2021", delete_the_water_that_became_tailings)],
               str(tmp_path / "deleted")).summary
    assert transitions(d)[("water", "tailings")] == 0.0
    assert transitions(d)[("water", "background")] == pytest.approx(900 * HA, rel=1e-4)   # exactly the edit

    def shrink_pond_one(lyr):
        for f in list(lyr):
            env = f.GetGeometryRef().GetEnvelope()
            if env[0] < ORIGIN[0] + 30 * PX and env[3] > ORIGIN[1] - 30 * PX:
                x0, y0 = ORIGIN[0] + 20 * PX, ORIGIN[1] - 20 * PX
                f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((%r %r,%r %r,%r %r,%r %r,%r %r))" % (
                    x0, y0, x0 + 50 * PX, y0, x0 + 50 * PX, y0 - 50 * PX, x0, y0 - 50 * PX, x0, y0)))
                lyr.SetFeature(f)
    r = change([a, polygons_of(b, tmp_path / "r_polygons.gpkg", "2021", shrink_pond_one)],
               str(tmp_path / "reshaped")).summary
    assert transitions(r)[("background", "tailings")] == pytest.approx((2500 - 1600) * HA, rel=1e-4)


def test_a_series_of_three_years(tmp_path):
    a, b = year_a(), year_b()
    c = b.copy()
    c[100:160, 100:160] = 1         # a new pond in 2023
    paths = [class_raster(tmp_path / ("%d.tif" % y), arr) for y, arr in ((2023, c), (2019, a), (2021, b))]
    res = change(paths, str(tmp_path / "out"), ChangeOptions(years=("2023", "2019", "2021")))
    s = res.summary
    assert s["series"]["years"] == ["2019", "2021", "2023"] and s["years"] == ["2019", "2023"]
    area = s["series"]["area_ha"]
    assert [area[y]["tailings"] for y in ("2019", "2021", "2023")] == pytest.approx(
        [2500 * HA, 4500 * HA, 8100 * HA], rel=1e-4)
    assert os.path.isfile(res.outputs["series_png"]) and "Area over the years" in open(res.outputs["report"]).read()


def test_per_facility(tmp_path):
    a = class_raster(tmp_path / "a.tif", year_a(), "2019")
    b = class_raster(tmp_path / "b.tif", year_b(), "2021")
    facilities_gpkg(tmp_path / "dams.gpkg", {"D-1": (10, 10, 90, 90), "D-2": (110, 110, 160, 160)}, ORIGIN, PX)
    res = change([a, b], str(tmp_path / "out"), ChangeOptions(facilities=str(tmp_path / "dams.gpkg"),
                                                              facility_field="dam_id"))
    fac = res.summary["facilities"]
    assert fac["D-1"]["2019"]["tailings"] == pytest.approx(1600 * HA, rel=1e-4)
    assert fac["D-1"]["2021"]["tailings"] == pytest.approx(3600 * HA, rel=1e-4)
    assert fac["D-2"]["2019"]["tailings"] == pytest.approx(900 * HA, rel=1e-4) and fac["D-2"]["2021"]["tailings"] == 0.0
    src = ogr.Open(res.outputs["polygons"])
    ids = {f["facility_id"] for f in src.GetLayer(0)}
    src = None
    assert {"D-1", "D-2"} <= ids
    rows = list(csv.reader(open(res.outputs["class_areas"])))
    assert {r[0] for r in rows[1:]} == {"all", "D-1", "D-2"}


def test_bad_inputs_are_clear(tmp_path):
    a = class_raster(tmp_path / "a.tif", year_a(), "2019")
    far = class_raster(tmp_path / "far.tif", year_b(), "2021", origin=(600000.0, 7000000.0))
    with pytest.raises(InputError, match="do not overlap"):
        plan_change([a, far])
    other = class_raster(tmp_path / "o.tif", year_b(), "2021", classes={0: "background", 1: "dam"})
    with pytest.raises(InputError, match="different class tables"):
        plan_change([a, other])
    twice = class_raster(tmp_path / "t.tif", year_b(), "2019-10-01")
    with pytest.raises(InputError, match="the year 2019 is given twice"):
        plan_change([a, twice])
    undated = class_raster(tmp_path / "u.tif", year_b())
    with pytest.raises(InputError, match="give the years"):
        plan_change([a, undated])
    with pytest.raises(InputError, match="two or more"):
        plan_change([a])
    # an empty polygon layer is a stated result: inside its ground, background (all lost)
    empty = polygons_of(class_raster(tmp_path / "e_classes.tif", np.zeros((200, 200), np.uint8), "2021"),
                        tmp_path / "e_polygons.gpkg", "2021")
    s = change([a, empty], str(tmp_path / "out")).summary
    assert s["area_ha"]["2021"]["tailings"] == 0.0
    assert transitions(s)[("tailings", "background")] == pytest.approx(2500 * HA, rel=1e-4)


def test_command_line(tmp_path):
    a = class_raster(tmp_path / "a.tif", year_a())
    b = class_raster(tmp_path / "b.tif", year_b())
    proc = run_cli(["change", a, b, "--out", str(tmp_path / "out"), "--years", "2019,2021"])
    assert proc.returncode == 0, proc.stderr
    assert "tailings -> background: 9.01 ha" in proc.stdout and "report: " in proc.stdout   # 900 px, true area
    again = run_cli(["change", a, b, "--out", str(tmp_path / "out"), "--years", "2019,2021"])
    assert again.returncode == 2 and "output exists" in again.stderr
    bad = run_cli(["change", a, b, "--out", str(tmp_path / "o2"), "--years", "2019,2021", "--facilities", a])
    assert bad.returncode == 2 and "--facility-field" in bad.stderr and "Traceback" not in bad.stderr
