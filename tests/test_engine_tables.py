"""Tables and batch runs a user or a machine damages: a jobs CSV saved by a spreadsheet in
Windows-1252, empty or damaged GeoPackages, a manifest cut mid-JSON, GDAL's reasons in the
failures, the workers' scratch folders (also after Ctrl-C), and evaluate's 0/255 masks."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from engine_helpers import REPO, conv_model, make_raster, run_cli
from inference.batch.work import failure_reason
from inference.scores.evaluate import evaluate, read_mask
from inference.run.options import SegmentOptions

RGB = ("B4", "B3", "B2")
FLAGS = ["--cloud-mask", "off", "--no-changes", "--device", "cpu", "--tta", "1"]


def model(path):
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0] = 20.0    # tailings where the red reflectance is above 0.5
    return conv_model(str(path), kernel=1, weights=w, bias=-10.0)


def scene(path, side, size=100):
    img = np.full((3, size, size), 1000, np.uint16)
    img[0, 20:20 + side, 20:20 + side] = 8000
    return make_raster(str(path), img, descriptions=RGB)


def jobs_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(["facility", "year", "raster"])
        w.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    (d / "scenes").mkdir()
    scene(d / "scenes" / "a_2019.tif", 20)
    scene(d / "scenes" / "a_2021.tif", 30)
    data = open(d / "scenes" / "a_2019.tif", "rb").read()
    (d / "scenes" / "cut.tif").write_bytes(data[:len(data) // 2])    # a download cut short
    model(d / "m.onnx")
    return d


def tm_runs(folder):
    """The engine's scratch folders under ``folder`` (hidden folders included)."""
    return [os.path.join(r, n) for r, dirs, _ in os.walk(str(folder)) for n in dirs if n.startswith("tm-run-")]


# --------------------------------------------------------------------------------------------------
# jobs tables
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["cp1252", "utf-8-sig"])
def test_a_spreadsheets_csv_is_read_in_its_encoding(d, tmp_path, encoding):
    """Excel on Windows saves "CSV" in Windows-1252 ("Fundão" as 0xe3), "CSV UTF-8" with a BOM."""
    table = jobs_csv(d / ("jobs_%s.csv" % encoding), [("Fundão", "2019", "scenes/a_2019.tif"),
                                                      ("Germano – Sul", "2021", "scenes/a_2021.tif")], encoding)
    raw = open(table, "rb").read()
    assert (b"Fund\xe3o" in raw) == (encoding == "cp1252") and raw.startswith(b"\xef\xbb\xbf") == (encoding != "cp1252")
    out = tmp_path / "out"
    proc = run_cli(["batch", table, "--out", str(out), "--model", str(d / "m.onnx"), "--workers", "0"] + FLAGS)
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stdout.splitlines() if ln.startswith("note:")]
    if encoding == "cp1252":
        assert len(notes) == 1 and "not UTF-8" in notes[0] and "Windows-1252" in notes[0], proc.stdout
    else:
        assert notes == []
    rows = list(csv.DictReader(open(out / "timeseries.csv", encoding="utf-8")))
    assert {r["facility"] for r in rows} == {"Fundão", "Germano – Sul"}
    assert os.path.isdir(out / "Fund_o" / "2019")


def test_empty_or_damaged_geopackages_are_one_error_line(d, tmp_path):
    good = tmp_path / "jobs.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(good))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32723)
    lyr = ds.CreateLayer("jobs", srs, ogr.wkbPolygon)
    for name in ("facility", "year", "raster"):
        lyr.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    for k in range(2):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("facility", "F%02d" % k)
        f.SetField("year", "2019")
        f.SetField("raster", str(d / "scenes" / "a_2019.tif"))
        f.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((500000 7700000,500100 7700000,500100 7699900,500000 "
                                                "7700000))"))
        lyr.CreateFeature(f)
    lyr = ds = None
    data = open(good, "rb").read()
    bad = {"zero": b"", "header": b"\0" * 100 + data[100:], "cut": data[:len(data) // 3]}
    for name, content in bad.items():
        path = tmp_path / ("%s.gpkg" % name)
        path.write_bytes(content)
        out = tmp_path / ("out_" + name)
        proc = run_cli(["batch", str(path), "--out", str(out), "--model", str(d / "m.onnx"), "--workers", "0"])
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert proc.stderr.count("error:") == 1 and str(path) in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists()
    for name in ("zero", "header"):     # as the facilities of a folder of scenes
        path = tmp_path / ("%s.gpkg" % name)
        proc = run_cli(["batch", "--facilities", str(path), "--facility-field", "facility", "--scenes",
                        str(d / "scenes"), "--out", str(tmp_path / "o"), "--model", str(d / "m.onnx"),
                        "--workers", "0"])
        assert proc.returncode == 2 and str(path) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_cli(["batch", str(good), "--out", str(tmp_path / "ok"), "--model", str(d / "m.onnx"), "--workers",
                    "0", "--quiet"] + FLAGS)
    assert proc.returncode == 0 and "done 2, failed 0" in proc.stdout, proc.stderr


def test_a_manifest_cut_mid_json_restarts_with_a_note(d, tmp_path):
    table = jobs_csv(d / "jobs_two.csv", [("A", "2019", "scenes/a_2019.tif"), ("A", "2021", "scenes/a_2021.tif")])
    out = tmp_path / "out"
    args = ["batch", table, "--out", str(out), "--model", str(d / "m.onnx"), "--workers", "0", "--quiet"] + FLAGS
    assert run_cli(args).returncode == 0
    manifest = out / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[:len(text) // 2])     # a full disk or a kill while it was written
    proc = run_cli(args)
    assert proc.returncode == 2 and "holds a batch already" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(args + ["--resume"])
    assert proc.returncode == 0, proc.stderr
    assert "note: the batch manifest %s is damaged" % manifest in proc.stdout and "every job runs again" in proc.stdout
    assert "jobs: 2 (2 run now, 0 done before); done 2" in proc.stdout
    assert set(json.load(open(manifest))["jobs"]) == {"A/2019", "A/2021"}   # whole again
    again = run_cli(args + ["--resume"])
    assert "0 run now, 2 done before" in again.stdout and "note:" not in again.stdout


# --------------------------------------------------------------------------------------------------
# failures and scratch space
# --------------------------------------------------------------------------------------------------

def test_failures_carry_gdals_reason_and_workers_leave_no_scratch(d, tmp_path):
    pytest.importorskip("distributed")
    table = jobs_csv(d / "jobs_cut.csv", [("A", "2019", "scenes/a_2019.tif"), ("B", "2019", "scenes/cut.tif")])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    proc = run_cli(["batch", table, "--out", str(out), "--model", str(d / "m.onnx"), "--workers", "2"] + FLAGS,
                   env={"TMPDIR": str(tmp)})
    assert proc.returncode == 1, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("failed: B 2019"))
    assert "TIFFReadEncoded" in line or "IReadBlock" in line, line          # GDAL's own words
    summary = json.load(open(out / "summary.json"))
    assert summary["failures"][0]["error"] in line
    assert not tm_runs(tmp) and "dask-scratch-space" not in os.listdir(tmp), os.listdir(tmp)
    assert not os.path.exists(out / ".staging") and not os.path.exists(out / ".batch.lock")


def test_an_unexpected_error_without_a_message_says_gdals():
    with pytest.raises(RuntimeError):
        gdal.Open("/nonexistent/scene.tif")          # GDAL's last error: its reason
    reason = failure_reason(RuntimeError())
    assert reason.startswith("RuntimeError: ") and "/nonexistent/scene.tif" in reason, reason
    assert failure_reason(RuntimeError("disk full\nmore")) == "RuntimeError: disk full"


def test_ctrl_c_of_a_batch_leaves_no_scratch_no_lock_no_traceback(d, tmp_path):
    pytest.importorskip("distributed")
    (tmp_path / "scenes").mkdir()
    rows = []
    for k in range(4):
        scene(tmp_path / "scenes" / ("s%d.tif" % k), 300, size=1800)
        rows.append(("F%d" % k, "2019", "scenes/s%d.tif" % k))
    table = jobs_csv(tmp_path / "jobs.csv", rows)
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "inference", "batch", table, "--out", str(out), "--model",
                             str(d / "m.onnx"), "--workers", "2"] + FLAGS, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.time()
    while not tm_runs(out) and time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.05)
    assert tm_runs(out) and not tm_runs(tmp), "the jobs' scratch is in the batch's staging folder"
    os.killpg(proc.pid, signal.SIGINT)          # Ctrl-C in a terminal: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: interrupted"), stderr
    assert not tm_runs(tmp) and not tm_runs(out) and "dask-scratch-space" not in os.listdir(tmp), os.listdir(tmp)
    assert not os.path.exists(out / ".staging") and not os.path.exists(out / ".batch.lock")


# --------------------------------------------------------------------------------------------------
# evaluate's masks
# --------------------------------------------------------------------------------------------------

def write_mask(path, arr, nodata=None):
    """A mask as GDAL writes it: GeoTIFF, or PNG (through a MEM copy, as gdal_translate -of PNG)."""
    mem = gdal.GetDriverByName("MEM").Create("", arr.shape[1], arr.shape[0], 1, gdal.GDT_Byte)
    mem.GetRasterBand(1).WriteArray(arr)
    if nodata is not None:
        mem.GetRasterBand(1).SetNoDataValue(nodata)
    drv = "PNG" if str(path).endswith(".png") else "GTiff"
    gdal.GetDriverByName(drv).CreateCopy(str(path), mem)
    return str(path)


@pytest.fixture(scope="module")
def ev(d):
    """Two images whose prediction is known, their truth as 0/1 and as 0/255 masks (TIFF, PNG)."""
    rng = np.random.default_rng(5)
    images = d / "ev_images"
    images.mkdir()
    truths = []
    for k in range(2):
        pred = rng.random((40, 50)) < 0.3
        truth = np.where(rng.random((40, 50)) < 0.75, pred, rng.random((40, 50)) < 0.4)
        img = np.full((3, 40, 50), 1000, np.uint16)
        img[0][pred] = 8000
        make_raster(str(images / ("t%d.tif" % k)), img, descriptions=RGB)
        truths.append(truth.astype(np.uint8))
    folders = {}
    for name, ext, scale in (("01", ".tif", 1), ("0255", ".tif", 255), ("0255png", ".png", 255)):
        f = d / ("ev_masks_" + name)
        f.mkdir()
        for k, t in enumerate(truths):
            write_mask(f / ("t%d_mask%s" % (k, ext)), t * scale)
        folders[name] = str(f)
    return str(images), folders, truths


def test_0_255_masks_score_as_0_1_masks(d, ev):
    images, folders, truths = ev
    opts = SegmentOptions(device="cpu", tta=1, scales=(1.0,), cloud_mask="off", ood_check=False)
    ref = evaluate(str(d / "m.onnx"), images, folders["01"], opts)
    assert ref["notes"] == [] and 0.3 < ref["iou"] < 0.95
    for name in ("0255", "0255png"):
        res = evaluate(str(d / "m.onnx"), images, folders[name], opts)
        for k in ("precision", "recall", "f1", "iou", "mpa", "pixel_accuracy"):
            assert res[k] == pytest.approx(ref[k], abs=1e-12), (name, k)
        assert res["per_class"] == ref["per_class"]
        assert len(res["notes"]) == 1 and res["notes"][0].startswith("255 read as class 1 in 2 0/255 mask(s)")
    proc = run_cli(["evaluate", images, folders["0255png"], "--model", str(d / "m.onnx"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    cli_ref = evaluate(str(d / "m.onnx"), images, folders["01"], SegmentOptions(device="cpu"))
    assert proc.stdout.startswith("note: 255 read as class 1") and json.loads(
        proc.stdout.splitlines()[-1])["iou"] == pytest.approx(cli_ref["iou"], abs=1e-12)


def test_a_declared_nodata_value_is_honoured_and_other_values_refused(d, ev, tmp_path):
    images, folders, truths = ev
    t = truths[0] * 255
    t[:10] = 255
    path = write_mask(tmp_path / "nd.tif", t, nodata=255)     # 255 declared no data: not class 1
    truth, valid, assumed = read_mask(path, 2, True)
    assert assumed is None and np.array_equal(valid, t != 255) and truth[valid].max() == 0
    # 0/1 masks with 255 for "ignore" (undeclared): 255 not scored, with a note
    t = truths[0].copy()
    t[:10] = 255
    truth, valid, assumed = read_mask(write_mask(tmp_path / "ig.tif", t), 2, True)
    assert assumed == "ignore" and not valid[:10].any() and np.array_equal(truth[valid], truths[0][10:].ravel())
    # a value the model has no class for (not 255) is an error, not silently dropped
    bad = tmp_path / "bad_masks"
    bad.mkdir()
    write_mask(bad / "t0.tif", truths[0] * 2)
    proc = run_cli(["evaluate", images, str(bad), "--model", str(d / "m.onnx"), "--device", "cpu"])
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "has the values 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    (bad / "t0.tif").write_bytes(b"")                        # a zero-byte mask
    proc = run_cli(["evaluate", images, str(bad), "--model", str(d / "m.onnx"), "--device", "cpu"])
    assert proc.returncode == 2 and "cannot read the mask" in proc.stderr and "Traceback" not in proc.stderr
