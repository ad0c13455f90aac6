"""Change that is real: two runs of a tiny context model (a 31 x 31 convolution) over two
overlapping windows of one synthetic scene disagree near their rasters' edges; that disagreement
is uncertain change, the certain change stays under 2 % of the compared ground, a pond removed
between the years stays certain, and a facility outside the compared ground is "not covered"."""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine_helpers import blobs, conv_model, facilities_gpkg, make_raster, read, run_cli
from inference import SegmentOptions, segment
from inference.change import change
from inference.change.doubt import EDGE_PX, MARGIN_MIN, MARGIN_SUM, evidence, margin

H, W, WIN, OFF = 200, 260, 200, 60       # the scene, each window's width, the second window's offset
ORIGIN = (500000.0, 7700000.0)
POND = (100, 130, 16)                    # row, column (of the scene), radius: away from every window edge
K = 31


def _scene(pond: bool) -> np.ndarray:
    rng = np.random.default_rng(7)
    img = 4000.0 - blobs(H, W, seed=3, n=14).astype(float)   # dark discs (tailings) on bright ground
    img += rng.normal(0, 100, img.shape)
    yy, xx = np.mgrid[0:H, 0:W]
    r, c, rad = POND
    img[0][(yy - r) ** 2 + (xx - c) ** 2 < (2.5 * rad) ** 2] = 3000.0   # (room around the pond)
    if pond:
        img[0][(yy - r) ** 2 + (xx - c) ** 2 < rad ** 2] = 1000.0
    return np.clip(img, 1, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("uncertain")
    wts = np.zeros((1, 3, K, K), np.float32)
    wts[0, 0] = -200.0 / (K * K)     # tailings where the neighbourhood is dark: the zero padding at an edge is dark
    model = conv_model(str(d / "m.onnx"), kernel=K, weights=wts, bias=200 * 0.2, tile=96, overlap=32)
    out = {}
    for name, pond, c0, date in (("a", True, 0, "2019"), ("b", True, OFF, "2021"), ("b_gone", False, OFF, "2021")):
        r = make_raster(str(d / ("%s.tif" % name)), _scene(pond)[:, :, c0:c0 + WIN],
                        origin=(ORIGIN[0] + 10.0 * c0, ORIGIN[1]))
        res = segment(r, model, str(d / name), SegmentOptions(device="cpu", date=date, polygons=(name == "a")))
        out[name] = res
    out["dir"] = d
    return out


def _pond_ha(class_raster, c0=0):
    """The pond as the first run found it (hectares, 10 m pixels on the central meridian)."""
    r, c, rad = POND
    cls = read(class_raster)
    yy, xx = np.mgrid[0:cls.shape[0], 0:cls.shape[1]]
    near = (yy - r) ** 2 + (xx + c0 - c) ** 2 < (2 * rad) ** 2
    n = int((cls[near] == 1).sum())
    assert n > 0.4 * np.pi * rad * rad
    return n * 0.01 / 0.9996 ** 2


def _transitions(s, uncertain):
    return {(t["from"], t["to"]): t["area_ha"] for t in s["transitions"] if t["uncertain"] is uncertain}


def test_same_imagery_change_is_uncertain(runs, tmp_path):
    a, b = runs["a"].class_raster, runs["b"].class_raster
    ca, cb = read(a)[:, OFF:], read(b)[:, :WIN - OFF]
    raw = float((ca != cb).mean())
    assert raw > 0.05     # (the two runs do disagree: the rule has something to do)
    res = change([a, b], str(tmp_path / "out"))
    s = res.summary
    compared = s["compared_area_ha"]
    assert compared == pytest.approx(H * (WIN - OFF) * 0.01 / 0.9996 ** 2, rel=1e-3)
    assert s["certain_change_ha"] < 0.02 * compared
    assert s["certain_change_ha"] + s["uncertain_change_ha"] == pytest.approx(raw * compared, rel=0.01)
    unc = _transitions(s, True)
    assert unc[("tailings", "background")] > 0 and unc[("background", "tailings")] > 0
    assert not res.warnings     # (both runs wrote their confidence)
    # the transition raster: uncertain change has its own codes, named and styled grey
    ds = gdal.Open(res.outputs["transitions"])
    band = ds.GetRasterBand(1)
    code = band.ReadAsArray()
    band.GetNoDataValue()   # (GDAL reads the .aux.xml lazily)
    names = band.GetCategoryNames()
    assert names[6] == "uncertain: tailings -> background" and names[5] == "uncertain: background -> tailings"
    assert ds.GetMetadata()["TM_UNCERTAIN_CODE"] == "4 + from x 2 + to"
    assert band.GetRasterColorTable().GetColorEntry(6)[:3] == (0x9a, 0x9a, 0x9a)
    ds = None
    px = 0.01 / 0.9996 ** 2
    assert np.isin(code, (5, 6)).sum() * px == pytest.approx(s["uncertain_change_ha"], rel=1e-3)
    # where certain and uncertain change lies: uncertain change near an edge of one window (or unsure)
    conf_a = read(runs["a"].confidence_raster)[:, OFF:]
    conf_b = read(runs["b"].confidence_raster)[:, :WIN - OFF]
    cols = np.arange(WIN - OFF)[None, :].repeat(H, 0)
    rows = np.arange(H)[:, None].repeat(WIN - OFF, 1)
    from_edge = np.minimum.reduce([rows, H - 1 - rows, cols, WIN - OFF - 1 - cols + 0 * rows])   # b's left, a's right
    ma = margin(conf_a, ca_all := read(runs["a"].class_raster)[:, OFF:], evidence(runs["a"].class_raster).threshold)
    mb = margin(conf_b, read(runs["b"].class_raster)[:, :WIN - OFF], evidence(runs["b"].class_raster).threshold)
    assert ca_all.shape == ma.shape
    sure = (np.minimum(ma, mb) >= MARGIN_MIN) & (ma.astype(int) + mb >= MARGIN_SUM)
    far = (from_edge > EDGE_PX + 1) & sure
    assert not np.isin(code[far], (5, 6)).any()
    assert "uncertain: tailings -&gt; background" in open(res.outputs["transitions_style"]).read()
    # the tables, the polygons and the report
    rows_t = list(csv.reader(open(res.outputs["transition_table"])))
    unc_row = next(r for r in rows_t if r[1] == "uncertain: tailings")
    assert float(unc_row[2]) == pytest.approx(unc[("tailings", "background")], abs=1e-3)
    by = {r[1]: r for r in csv.reader(open(res.outputs["change_by_class"]))}
    assert by["class"][-2:] == ["uncertain_gain_ha", "uncertain_loss_ha"]
    assert float(by["tailings"][-1]) == pytest.approx(unc[("tailings", "background")], abs=1e-3)
    src = ogr.Open(res.outputs["polygons"])
    feats = [(f["change"], f["uncertain"]) for f in src.GetLayer(0)]
    src = None
    assert ("uncertain", 1) in feats and all(u == (c == "uncertain") for c, u in feats)
    html = open(res.outputs["report"], encoding="utf-8").read()
    assert "uncertain</b>" in html and "uncertain: tailings" in html and "%d pixels of the edge" % EDGE_PX in html


def test_a_pond_removed_is_certain(runs, tmp_path):
    a, gone = runs["a"].class_raster, runs["b_gone"].class_raster
    res = change([a, gone], str(tmp_path / "out"))
    s = res.summary
    r, c, rad = POND
    lost = _transitions(s, False)[("tailings", "background")]
    code = read(res.outputs["transitions"])
    cc = c - OFF
    yy, xx = np.mgrid[0:code.shape[0], 0:code.shape[1]]
    near = (yy - r) ** 2 + (xx - cc) ** 2 < (2 * rad) ** 2
    px = 0.01 / 0.9996 ** 2
    pond_lost = (code[near] == 2).sum() * px
    # the pond's loss is certain but for its one-pixel rim, where the runs were close to their threshold
    assert 0.8 * _pond_ha(a) < pond_lost <= _pond_ha(a)
    assert lost >= pond_lost - 1e-3     # (the summary rounds to 4 decimals)
    assert s["certain_change_ha"] - pond_lost < 0.02 * s["compared_area_ha"]    # (the rest as with the same imagery)
    assert (code[r - 5:r + 5, cc - 5:cc + 5] == 2).all()       # the pond's middle: tailings -> background, certain
    # the same removal where the second run was unsure of its class: uncertain
    d = tmp_path / "unsure"
    os.makedirs(d)
    for p in (gone, runs["b_gone"].confidence_raster):
        shutil.copy(p, d / os.path.basename(p))
    ds = gdal.Open(str(d / os.path.basename(runs["b_gone"].confidence_raster)), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    conf = band.ReadAsArray()
    t = evidence(gone).threshold
    assert t is not None          # (a binary model's run: its threshold is recorded)
    # the pond's eastern half: background, but on the fence (half of MARGIN_MIN from the threshold)
    conf[r - rad:r + rad, cc:cc + rad] = round(100 * (1 - t * (1 - MARGIN_MIN / 200)))
    band.WriteArray(conf)
    ds = None
    res2 = change([a, str(d / os.path.basename(gone))], str(tmp_path / "out2"))
    code2 = read(res2.outputs["transitions"])
    assert (code2[r - 3:r + 3, cc + 2:cc + 8] == 6).all() and (code2[r - 3:r + 3, cc - 8:cc - 2] == 2).all()
    lost2 = _transitions(res2.summary, False)[("tailings", "background")]
    assert (lost - lost2) == pytest.approx(pond_lost / 2, rel=0.2)


def _facilities(path, boxes):
    return facilities_gpkg(path, boxes, ORIGIN)


def test_cli_polygons_old_run_and_not_covered(runs, tmp_path):
    """Through the command line: year 1 as its polygon layer (its run's confidence found through its
    class raster), year 2 an older run without a confidence raster, a facility west of the
    compared ground (scene columns 0-60: only the first window has it)."""
    old = tmp_path / "old"
    os.makedirs(old)
    shutil.copy(runs["b_gone"].class_raster, old / os.path.basename(runs["b_gone"].class_raster))
    b_old = str(old / os.path.basename(runs["b_gone"].class_raster))
    dams = _facilities(tmp_path / "dams.gpkg", {"POND": (80, 110, 120, 150), "WEST": (20, 5, 60, 45)})
    out = tmp_path / "out"
    p = run_cli(["change", runs["a"].polygons + "|layername=" + runs["a"].layer_name, b_old, "--out", str(out),
                 "--facilities", dams, "--facility-field", "dam_id"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("tailings -> background: ") for line in lines)
    assert any(line.startswith("uncertain: background -> tailings: ") for line in lines)
    assert "not covered (outside the compared ground): WEST" in lines
    warn = [line for line in lines if line.startswith("warning: ")]
    assert len(warn) == 1 and "no confidence raster" in warn[0] and "unless near its raster's edge" in warn[0]
    s = json.load(open(out / "summary.json"))
    chg = next(line for line in lines if line.startswith("change: "))
    assert chg.startswith("change: %.2f ha certain, %.2f ha uncertain" % (s["certain_change_ha"], s["uncertain_change_ha"]))
    assert s["facilities"]["WEST"] == "not covered" and s["facilities_not_covered"] == ["WEST"]
    assert s["facilities"]["POND"]["2019"]["tailings"] > 3
    # the pond: certain loss (its polygons agree with the run, and the run was sure, away from the edges)
    pond = _pond_ha(runs["a"].class_raster)
    assert {(t["from"], t["to"]): t["area_ha"] for t in s["transitions"]
            if not t["uncertain"]}[("tailings", "background")] > 0.8 * pond
    # edges still make the rest uncertain without the confidence raster
    assert s["uncertain_change_ha"] > 0.03 * s["compared_area_ha"]
    assert s["certain_change_ha"] < 0.02 * s["compared_area_ha"] + pond
    rows = list(csv.reader(open(out / "change_class_areas.csv")))
    assert [r[2:] for r in rows if r[0] == "WEST"] == [["not covered", "not covered"]] * 2
    assert any(r[:2] == ["WEST", "not covered"] for r in csv.reader(open(out / "change_transitions.csv")))
    assert "not covered: outside the compared ground" in open(out / "change_report.html", encoding="utf-8").read()


def test_tiles_overlapping_in_a_strip(runs, tmp_path):
    """Two windows that overlap in a strip narrower than twice EDGE_PX (tiles meeting at their
    edges): every pixel of the strip is near one window's own edge, so none of their disagreement
    is certain, however sure each run was."""
    c0 = 150                         # the first window is columns 0-199: a strip of 50 columns
    d = runs["dir"]
    r = make_raster(str(d / "strip.tif"), _scene(True)[:, :, c0:], origin=(ORIGIN[0] + 10.0 * c0, ORIGIN[1]))
    model = str(d / "m.onnx")
    strip = segment(r, model, str(d / "strip"), SegmentOptions(device="cpu", date="2021", polygons=False))
    a = runs["a"].class_raster
    disagree = int((read(a)[:, c0:WIN] != read(strip.class_raster)[:, :WIN - c0]).sum())
    assert disagree > 0              # (the runs disagree in the strip: something to be uncertain of)
    res = change([a, strip.class_raster], str(tmp_path / "out"))
    s = res.summary
    assert s["compared_area_ha"] == pytest.approx(H * (WIN - c0) * 0.01 / 0.9996 ** 2, rel=1e-3)
    assert s["certain_change_ha"] == 0
    assert s["uncertain_change_ha"] == pytest.approx(disagree * 0.01 / 0.9996 ** 2, rel=0.01)
