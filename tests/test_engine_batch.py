"""Batch runs (``python -m inference batch``): jobs from a table, the same outputs with 0, 1 and 2
workers, a worker killed mid-job, a corrupt raster, --resume, a changed model, and the time series
of facilities whose tailings grow by a known area each year."""
from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from osgeo import ogr, osr

from engine_helpers import conv_model, make_raster, run_cli, true_m2

UTM = (500000.0, 7700000.0, 32723)   # (make_raster's rasters: true areas there)
from inference import SegmentOptions
from inference.batch import plan_batch, run_batch
from inference.errors import Cancelled, OutputError

pytest.importorskip("distributed")

RGB = ("B4", "B3", "B2")
SIDES = {"MG-001": {"2019": 20, "2020": 30, "2021": 40, "2022": 50},    # side of the square, px (10 m)
         "PA-002": {"2019": 44, "2020": 36, "2021": 28, "2022": 20}}
FAST = SegmentOptions(device="cpu", cloud_mask="off", tta=1, scales=(1.0,), ood_check=False)


def model(path, bias=-10.0):
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0] = 20.0    # tailings where the red reflectance is above 0.5
    return conv_model(str(path), kernel=1, weights=w, bias=bias)


@pytest.fixture
def jobs(tmp_path):
    """8 jobs (2 facilities x 4 years) in a CSV with relative paths."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    rows = []
    for fac, by_year in SIDES.items():
        for year, side in by_year.items():
            img = np.full((3, 100, 100), 1000, np.uint16)
            img[0, 30:30 + side, 30:30 + side] = 8000
            name = "%s_%s.tif" % (fac, year)
            make_raster(str(scenes / name), img, descriptions=RGB)
            rows.append((fac, year, "scenes/" + name))
    path = tmp_path / "jobs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "year", "raster"])
        w.writerows(rows)
    return str(path), model(tmp_path / "m.onnx")


def checksums(out):
    got = {}
    for fac in SIDES:
        for year in SIDES[fac]:
            p = os.path.join(out, fac, year, "%s_%s_classes.tif" % (fac, year))
            from osgeo import gdal
            got[(fac, year)] = hashlib.sha256(gdal.Open(p).ReadAsArray().tobytes()).hexdigest()
    return got


def test_the_time_series_matches_the_truth_and_0_1_2_workers_agree(jobs, tmp_path):
    table, m = jobs
    outs = {}
    for workers in (0, 1, 2):
        out = str(tmp_path / ("out%d" % workers))
        res = run_batch(plan_batch(table, m, out, FAST, workers=workers))
        assert res.summary["done"] == 8 and res.summary["failed"] == 0 and res.ran == 8
        outs[workers] = out
    assert checksums(outs[0]) == checksums(outs[1]) == checksums(outs[2])
    rows = list(csv.DictReader(open(os.path.join(outs[2], "timeseries.csv"))))
    area = {(r["facility"], r["year"]): float(r["area_ha"]) for r in rows if r["class"] == "tailings"}
    for fac, by_year in SIDES.items():
        for year, side in by_year.items():
            assert area[(fac, year)] == pytest.approx(true_m2(side * side * 100.0, UTM) / 1e4, abs=1e-4), (fac, year)
    s = json.load(open(os.path.join(outs[2], "summary.json")))
    assert s["area_ha"]["MG-001"]["2022"]["tailings"] == pytest.approx(true_m2(25e4, UTM) / 1e4, abs=1e-4)
    # the change products between consecutive years, per facility
    assert len(s["changes"]["MG-001"]) == 3
    ch = json.load(open(os.path.join(outs[2], "MG-001", "change_2019_2020", "summary.json")))
    gain = next(t["area_ha"] for t in ch["transitions"] if t["from"] == "background" and t["to"] == "tailings")
    assert gain == pytest.approx((900 - 400) * 0.01 / 0.9996 ** 2, rel=1e-3)   # (true area: UTM's scale factor)
    assert os.path.isfile(os.path.join(outs[2], "area_per_facility.png"))
    # each job's outputs in DIR/<facility>/<year>/, nothing half-written left
    assert not os.path.exists(os.path.join(outs[2], ".staging"))
    assert sorted(os.listdir(os.path.join(outs[2], "PA-002", "2021"))) == sorted(
        "PA-002_2021_" + s for s in ("classes.qml", "classes.tif", "classes.tif.aux.xml", "confidence.qml",
                                     "confidence.tif", "polygons.gpkg", "report.json"))


def test_a_worker_killed_mid_job_and_a_corrupt_raster(jobs, tmp_path, monkeypatch):
    table, m = jobs
    with open(os.path.join(os.path.dirname(table), "scenes", "broken.tif"), "wb") as fh:
        fh.write(b"II*\x00" + b"\x00" * 300)     # a TIFF header, then nothing
    with open(table, "a") as fh:
        fh.write("XX-003,2021,scenes/broken.tif\n")
    marker = tmp_path / "killed.txt"
    monkeypatch.setenv("TM_BATCH_TEST_KILL", "MG-001/2021=%s" % marker)
    out = str(tmp_path / "out")
    res = run_batch(plan_batch(table, m, out, FAST, workers=2))
    assert marker.exists()                                  # the worker did die during that job
    s = res.summary
    assert s["done"] == 8 and s["failed"] == 1
    assert s["failures"][0]["facility"] == "XX-003" and "broken.tif" in s["failures"][0]["error"]
    assert os.path.isfile(os.path.join(out, "MG-001", "2021", "MG-001_2021_classes.tif"))
    assert not os.path.exists(os.path.join(out, "XX-003")) and not os.path.exists(os.path.join(out, ".staging"))
    proc = run_cli(["batch", table, "--out", str(tmp_path / "cli"), "--model", m, "--workers", "0", "--cloud-mask",
                    "off", "--no-changes"])
    assert proc.returncode == 1 and "failed: XX-003 2021" in proc.stdout and "Traceback" not in proc.stderr
    # each job's line: the presenter's one line for a run, the error's for a failed job
    from inference.output.report import read
    lines = proc.stdout.splitlines()
    mg = [ln for ln in lines if ln.startswith("[") and ": MG-001 2021: " in ln]
    summary = read(os.path.join(str(tmp_path / "cli"), "MG-001", "2021", "MG-001_2021_report.json"))["summary"]
    assert len(mg) == 1 and mg[0].endswith(summary)
    assert any(ln.startswith("[") and ": XX-003 2021: failed: " in ln and "broken.tif" in ln for ln in lines)


def test_resume_does_only_what_is_missing_and_a_changed_model_reruns_all(jobs, tmp_path):
    table, m = jobs
    out = str(tmp_path / "out")
    calls = {"n": 0}

    def cancel():   # interrupted after three jobs
        calls["n"] += 1
        return calls["n"] > 3
    with pytest.raises(Cancelled):
        run_batch(plan_batch(table, m, out, FAST, workers=0, changes=False), cancel=cancel)
    with pytest.raises(OutputError, match="--resume"):
        plan_batch(table, m, out, FAST)
    res = run_batch(plan_batch(table, m, out, FAST, workers=0, resume=True, changes=False))
    assert res.ran == 5 and res.summary["done"] == 8
    again = run_batch(plan_batch(table, m, out, FAST, workers=0, resume=True, changes=False))
    assert again.ran == 0 and again.summary["done"] == 8
    other = model(tmp_path / "m2.onnx", bias=-12.0)          # another model: every job again
    assert run_batch(plan_batch(table, other, out, FAST, workers=0, resume=True, changes=False)).ran == 8
    scene = os.path.join(os.path.dirname(table), "scenes", "MG-001_2020.tif")
    with open(scene, "r+b") as fh:                           # a changed raster: its job again
        fh.seek(0, 2)
        fh.write(b"\x00")
    assert run_batch(plan_batch(table, other, out, FAST, workers=0, resume=True, changes=False)).ran == 1


def test_point_facilities_with_a_buffer_and_facilities_with_scenes(tmp_path):
    m = model(tmp_path / "m.onnx")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for year in ("20190704", "20210710"):
        img = np.full((3, 200, 200), 1000, np.uint16)
        img[0, 20:60, 20:60] = 8000         # facility A's pond
        img[0, 140:180, 140:180] = 8000     # another pond, far from A
        make_raster(str(scenes / ("S2_%s_scene.tif" % year)), img, descriptions=RGB)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    pts = tmp_path / "dams.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(pts))
    lyr = ds.CreateLayer("dams", srs, ogr.wkbPoint)
    lyr.CreateField(ogr.FieldDefn("dam_id", ogr.OFTString))
    f = ogr.Feature(lyr.GetLayerDefn())
    f.SetField("dam_id", "A")
    f.SetGeometry(ogr.CreateGeometryFromWkt("POINT(500400 7699600)"))   # the centre of A's pond
    lyr.CreateFeature(f)
    ds = None
    p = plan_batch(None, m, str(tmp_path / "out"), FAST, workers=0, facilities=str(pts), facility_field="dam_id",
                   scenes=str(scenes), buffer_m=400.0)
    assert [(j.facility, j.year, j.date) for j in p.jobs] == [("A", "2019", "2019-07-04"), ("A", "2021", "2021-07-10")]
    res = run_batch(p)
    area = {r["year"]: r["areas"]["tailings"] for r in res.records}
    ha = true_m2(16e4, UTM) / 1e4
    assert area == {"2019": pytest.approx(ha, abs=1e-4), "2021": pytest.approx(ha, abs=1e-4)}   # only A's pond: inside the buffer
