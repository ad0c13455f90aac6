"""Change maps of a run's polygons saved in another CRS (ogr2ogr, QGIS "Save as"): the ground the
run covered (TM_AREA) is read in the CRS it was recorded in -- named with it (TM_AREA_CRS), or,
in older files, recovered from the run's class raster or source -- so the hectares are those of
the original layer; what cannot be placed is one error line."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine_helpers import conv_model, make_raster, run_cli
from inference import SegmentOptions
from inference.change import change
from inference.errors import InputError
from inference.run.execute import execute
from inference.run.planning import plan

gdal.UseExceptions()
FAST = dict(device="cpu", cloud_mask="off", tta=1, scales=(1.0,), ood_check=False, overwrite=True)
LOCAL_TM = ("+proj=tmerc +lat_0=-20.5 +lon_0=-45.2 +k=0.9999 +x_0=150000 +y_0=250000 +ellps=GRS80 +units=m "
            "+no_defs")
CRSS = {"wgs84": "EPSG:4326", "web_mercator": "EPSG:3857", "local_tm": LOCAL_TM}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of a tiny model over the same ground (UTM 23S): a 40 px square of tailings in
    2019 that grows to 80 px (off the first) in 2021."""
    d = tmp_path_factory.mktemp("runs")
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0] = 20.0    # tailings where the red reflectance is above 0.5
    m = conv_model(str(d / "m.onnx"), kernel=1, weights=w, bias=-10.0)
    out = {}
    for year, (y0, side) in {"2019": (30, 40), "2021": (60, 80)}.items():
        img = np.full((3, 200, 200), 1000, np.uint16)
        img[0, y0:y0 + side, 30:30 + side] = 8000
        r = make_raster(str(d / ("scene_%s.tif" % year)), img, descriptions=("B4", "B3", "B2"))
        out[year] = execute(plan(r, m, SegmentOptions(date=year, **FAST), str(d / ("run" + year))))
    return out


def saved_as(src, folder, crs, old=False):
    """The polygons of a run saved in ``crs`` into ``folder`` (GDAL's VectorTranslate, as ogr2ogr and
    QGIS's "Save as" write it); ``old``: as an older engine wrote it (TM_AREA without its CRS)."""
    os.makedirs(folder, exist_ok=True)
    dst = os.path.join(str(folder), "saved.gpkg")
    gdal.VectorTranslate(dst, src, dstSRS=crs, reproject=True)
    if old:
        ds = ogr.Open(dst, 1)
        lyr = ds.GetLayer(0)
        md = lyr.GetMetadata()
        md.pop("TM_AREA_CRS", None)
        lyr.SetMetadata(md)
        lyr = ds = None
    return dst


def figures(summary):
    return summary["area_ha"], {(t["from"], t["to"]): t["area_ha"] for t in summary["transitions"]}


def assert_same_hectares(got, want):
    areas, trans = figures(got)
    areas0, trans0 = figures(want)
    for y in areas0:
        for cls, ha in areas0[y].items():
            assert areas[y][cls] == pytest.approx(ha, rel=0.005), (y, cls)
    for k, ha in trans0.items():
        assert trans[k] == pytest.approx(ha, rel=0.005, abs=0.05), k


def test_a_layer_saved_in_any_crs_gives_the_original_hectares(runs, tmp_path):
    a, b = runs["2019"].class_raster, runs["2021"]
    ds = ogr.Open(b.polygons)
    md = ds.GetLayer(0).GetMetadata()
    ds = None
    assert "UTM zone 23S" in md["TM_AREA_CRS"]           # the footprint's CRS is recorded with it
    want = change([a, b.polygons], str(tmp_path / "original")).summary
    assert want["area_ha"]["2021"]["tailings"] == pytest.approx(6400 * 0.01 / 0.9996 ** 2, rel=1e-3)
    for name, crs in CRSS.items():
        saved = saved_as(b.polygons, tmp_path / name, crs)
        got = change([a, saved], str(tmp_path / ("out_" + name))).summary
        assert_same_hectares(got, want)


def test_older_files_recover_the_footprints_crs(runs, tmp_path):
    """No TM_AREA_CRS: the run's class raster (beside the copy) or its source raster says it."""
    a, b = runs["2019"].class_raster, runs["2021"]
    want = change([a, b.polygons], str(tmp_path / "original")).summary
    for name, crs in CRSS.items():
        # saved elsewhere: the source raster (TM_SOURCE) is still there
        got = change([a, saved_as(b.polygons, tmp_path / name, crs, old=True)], str(tmp_path / ("o_" + name))).summary
        assert_same_hectares(got, want)
    # saved beside its class raster (the layer keeps its name): the class raster says it
    beside = tmp_path / "beside"
    beside.mkdir()
    shutil.copy(b.class_raster, beside)
    saved = saved_as(b.polygons, beside, "EPSG:4326", old=True)
    assert_same_hectares(change([a, saved], str(tmp_path / "o_beside")).summary, want)


def test_an_old_copy_that_cannot_be_placed_is_one_error_line(runs, tmp_path):
    """No CRS recorded, no class raster nor source to say it, the polygons off the recorded ground
    in the layer's CRS: an error, not "Invalid coordinate" nor wrong hectares."""
    a, b = runs["2019"].class_raster, runs["2021"]
    lone = tmp_path / "lone"
    saved = saved_as(b.polygons, lone, "EPSG:3857", old=True)
    ds = ogr.Open(saved, 1)
    lyr = ds.GetLayer(0)
    md = lyr.GetMetadata()
    md["TM_SOURCE"] = str(tmp_path / "gone" / "scene.tif")     # the source raster moved away
    lyr.SetMetadata(md)
    lyr = ds = None
    with pytest.raises(InputError, match="saved in another CRS"):
        change([a, saved], str(tmp_path / "x"))
    proc = run_cli(["change", a, saved, "--out", str(tmp_path / "cli")])
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert "saved in another CRS" in proc.stderr and not os.path.exists(tmp_path / "cli")
    # in the layer's own CRS (never reprojected) an old file still works without raster or source
    same = saved_as(b.polygons, tmp_path / "same", None, old=True)
    ds = ogr.Open(same, 1)
    lyr = ds.GetLayer(0)
    md = lyr.GetMetadata()
    md["TM_SOURCE"] = str(tmp_path / "gone" / "scene.tif")
    lyr.SetMetadata(md)
    lyr = ds = None
    want = change([a, b.polygons], str(tmp_path / "original")).summary
    assert_same_hectares(change([a, same], str(tmp_path / "same_out")).summary, want)


def test_damaged_result_and_facility_layers_are_one_error_line(runs, tmp_path):
    a, b = runs["2019"].class_raster, runs["2021"]
    zero = tmp_path / "zero.gpkg"
    zero.write_bytes(b"")
    header = tmp_path / "header.gpkg"
    data = bytearray(open(b.polygons, "rb").read())
    data[:16] = b"\0" * 16                                    # the SQLite header overwritten
    header.write_bytes(bytes(data))
    cut = tmp_path / "cut.gpkg"
    cut.write_bytes(open(b.polygons, "rb").read()[:8192])      # a copy cut short
    for bad in (zero, header, cut):
        proc = run_cli(["change", a, str(bad), "--out", str(tmp_path / ("o_" + bad.stem))])
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.count("error:") == 1 and str(bad) in proc.stderr and "Traceback" not in proc.stderr
        assert not os.path.exists(tmp_path / ("o_" + bad.stem))
    proc = run_cli(["change", a, b.polygons, "--out", str(tmp_path / "f"), "--facilities", str(zero),
                    "--facility-field", "id"])
    assert proc.returncode == 2 and "the facilities %s is empty" % zero in proc.stderr, proc.stderr
