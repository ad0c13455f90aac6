"""A run's size before it runs: bounds on tile, batch and processing resolution, the minimum
area against the window, a raster reaching a pole, the plan's time and memory estimates (and
the refusal and warning they give), ``segment --dry-run``, progress from the first strip, and
the buffers that must not grow with the raster's width."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine_helpers import REPO, all_files, blobs, conv_model, features, make_raster, run_cli
from inference import SegmentOptions, plan
from inference.run import sizing
from inference.__main__ import Bar
from inference.errors import ModelError, OptionError
from inference.run.execute import execute
from inference.run.stream import WRITE_QUEUE_BYTES, write_queue_strips
from inference.output.sieve import SIEVE_BAND_PIXELS, StreamSieve, sieve_band_rows

RGB = ["B4", "B3", "B2"]


@pytest.fixture(autouse=True)
def speed_cache(tmp_path, monkeypatch):
    """Each test's own measured speeds (never the user's cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TAILINGS_MAPPER_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("size")


@pytest.fixture(scope="module")
def model(d):
    return conv_model(str(d / "small.onnx"), tile=64, overlap=16)


@pytest.fixture(scope="module")
def raster(d):
    return make_raster(str(d / "scene.tif"), blobs(200, 300, seed=3), descriptions=RGB)


def cli(args, cache):
    return run_cli(list(args), env={"TAILINGS_MAPPER_CACHE": str(cache)})


# -- bounds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, words", [
    ("--tile", "16384", "from 16 to 4096"), ("--batch", "100000", "between 1 and 256"),
    ("--gsd", "0.001", "between 0.01 and 10000"), ("--gsd", "0.01", "at most 8 times finer"),
    ("--min-area", "1e12", "larger than the whole area"),
])
def test_sizes_out_of_bounds_are_one_error_line_and_nothing_written(d, model, raster, speed_cache, flag, value, words):
    out = d / ("out" + flag + value)
    proc = cli(["segment", raster, "--model", model, "--out", str(out), flag, value], speed_cache)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: %s: " % flag) and words in lines[0], proc.stderr
    assert not out.exists()


def test_a_model_declaring_huge_tiles_is_refused_naming_it(d, raster):
    big = conv_model(str(d / "huge_tiles.onnx"), tile=65536, overlap=16)
    with pytest.raises(OptionError) as e:
        plan(raster, big, SegmentOptions(device="cpu"))
    assert "huge_tiles" in str(e.value) and "65536" in str(e.value) and e.value.option == "tile_size"
    p = plan(raster, big, SegmentOptions(device="cpu", tile_size=128))   # a tile it can run: fine
    assert p.tile_size == 128
    fixed = conv_model(str(d / "huge_fixed.onnx"), tile=8192, overlap=16, fixed_hw=8192)
    with pytest.raises(ModelError, match="huge_fixed"):   # nothing the user can choose fixes it
        plan(raster, fixed, SegmentOptions(device="cpu"))


def test_a_minimum_area_just_under_the_window_runs(d, model, raster):
    p = plan(raster, model, SegmentOptions(device="cpu", min_area_ha=599.0))   # the window: 600 ha
    assert p.sieve_px == 59900
    with pytest.raises(OptionError, match="600 ha"):
        plan(raster, model, SegmentOptions(device="cpu", min_area_ha=601.0))


def test_a_raster_reaching_the_pole_runs_with_a_minimum_area(d, tmp_path):
    # EPSG:4326, 30 degrees tall, its top row on the pole: its pixels there have almost no area
    r = make_raster(str(d / "pole.tif"), blobs(300, 300, seed=2), epsg=4326, origin=(0.0, 90.0), pixel=0.1,
                    descriptions=RGB)
    m = conv_model(str(d / "coarse.onnx"), gsd=5680.0, tile=64, overlap=16)
    # (a pixel in the top row: 9.7 m x 11.2 km, 10.8 ha; at the bottom, 60 degrees north: 5,600 ha)
    p = plan(r, m, SegmentOptions(device="cpu", min_area_ha=5000.0), str(tmp_path / "o"))
    thr = p.sieve_px
    assert 400 < thr < 500
    res = execute(p)
    feats, _ = features(res.polygons)
    assert feats and all(np.isfinite(a) and a > 0 for _, a, _, _ in feats)
    assert all(np.isfinite(s["area_ha"]) for s in res.stats.values())


# -- estimates ----------------------------------------------------------------------------------
def test_memory_beyond_what_is_available_is_refused_with_the_option_that_fixes_it(d, model, raster, monkeypatch):
    monkeypatch.setattr(sizing, "available_bytes", lambda: 200 * sizing.MB)
    with pytest.raises(OptionError) as e:
        plan(raster, model, SegmentOptions(device="cpu", batch=8))
    assert e.value.option == "batch" and "--batch (now 8)" in str(e.value) and "200 MB available" in str(e.value)
    with pytest.raises(OptionError) as e:
        plan(raster, model, SegmentOptions(device="cpu", batch=1))
    assert e.value.option == "tile_size" and "--tile (now 64)" in str(e.value)
    monkeypatch.setattr(sizing, "available_bytes", lambda: 64 * 1024 * sizing.MB)
    p = plan(raster, model, SegmentOptions(device="cpu", batch=8))
    assert p.estimate.available_bytes == 64 * 1024 * sizing.MB
    # the estimate grows with the tile and the batch (what the refusal tells the user to change)
    big = plan(raster, model, SegmentOptions(device="cpu", batch=8, tile_size=512))   # (one tile: a batch of one)
    assert big.estimate.peak_bytes > p.estimate.peak_bytes + 512 * 512 * sizing.ACTIVATION_BYTES_PX * 0.9
    more = plan(raster, model, SegmentOptions(device="cpu", batch=8, tile_size=96))   # 12 tiles: batches of 8
    assert more.estimate.peak_bytes > p.estimate.peak_bytes + 8 * (96 ** 2 - 64 ** 2) * sizing.ACTIVATION_BYTES_PX


def test_time_comes_from_the_last_measured_run_and_a_long_one_is_warned(d, raster, tmp_path, speed_cache):
    m = conv_model(str(d / "timed.onnx"), tile=256, overlap=32)
    big = make_raster(str(d / "big.tif"), blobs(600, 700, seed=4), descriptions=RGB)
    p = plan(big, m, SegmentOptions(device="cpu"), str(tmp_path / "o"))
    assert not p.estimate.measured and "rough guess" in p.estimate.describe()
    assert not (speed_cache / "speed.json").exists()
    execute(p)
    with open(speed_cache / "speed.json") as fh:
        rate = json.load(fh)["cpu/timed"]["s_per_mpx_pass"]
    assert 0 < rate < 100
    again = plan(big, m, SegmentOptions(device="cpu"))
    assert again.estimate.measured and "measured on this computer" in again.estimate.describe()
    assert again.estimate.seconds == pytest.approx(
        sizing.FIXED_S + sizing.POST_S_PER_MPX * 0.42 + rate * sizing.mpx_passes(again))
    assert not any("may take" in w for w in again.warnings)
    # a device as slow as an hour for this raster: the plan says so before it runs
    with open(speed_cache / "speed.json", "w") as fh:
        json.dump({"cpu/timed": {"s_per_mpx_pass": 4000.0 / sizing.mpx_passes(again)}}, fh)
    slow = plan(big, m, SegmentOptions(device="cpu"))
    assert any(w.startswith("this run may take 67 min (measured speed)") for w in slow.warnings)


def test_the_estimate_covers_the_measured_peak_memory(d, model, raster, tmp_path, speed_cache):
    code = ("import sys, runpy; sys.argv = ['inference'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('inference', run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n    pass\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    img = blobs(1200, 1500, seed=6)
    r = make_raster(str(tmp_path / "wide.tif"), img, descriptions=RGB)
    args = [r, "--model", model, "--out", str(tmp_path / "o"), "--tile", "256", "--batch", "4"]
    est = plan(r, model, SegmentOptions(device="cpu", tile_size=256, batch=4)).estimate.peak_bytes
    proc = subprocess.run([sys.executable, "-c", code, "segment"] + args, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO, TAILINGS_MAPPER_CACHE=str(speed_cache)))
    assert proc.returncode == 0, proc.stderr
    peak = int(proc.stdout.strip().splitlines()[-1]) * 1024
    assert peak <= est <= 3 * peak, (peak, est)


# -- the dry run ------------------------------------------------------------------------------
def test_dry_run_prints_the_plan_and_writes_nothing(d, model, raster, tmp_path, speed_cache):
    out = tmp_path / "dry"
    proc = cli(["segment", raster, "--model", model, "--out", str(out), "--dry-run", "--tta", "2",
                "--preview", str(out / "p.png")], speed_cache)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for words in ("input: %s (300 x 200 px, 3 bands, UInt16)" % raster,
                  "band S2:B04 <- raster band 1: physical = raw x 0.0001 + 0",
                  "cloud mask: none", "grid: EPSG:32723 (WGS 84 / UTM zone 23S), pixel 10 x 10 (GSD 10.00 m)",
                  "working grid: 300 x 200 px at 10.00 m", "tiles: 24 of 64 x 64 px, overlap 16, batches of 4; "
                  "2 network passes per tile", "output classes: %s" % (out / "scene_classes.tif"),
                  "output polygons: %s" % (out / "scene_polygons.gpkg"), "output preview: %s" % (out / "p.png"),
                  "estimate: about ", "peak memory about "):
        assert words in text, (words, text)
    assert not out.exists() and not speed_cache.exists()
    # into a folder that exists: nothing added to it (no lock, no file)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    proc = cli(["segment", raster, "--model", model, "--out", str(out), "--dry-run"], speed_cache)
    assert proc.returncode == 0 and all_files(str(out)) == ["keep.txt"]


# -- progress ---------------------------------------------------------------------------------
def test_progress_moves_within_the_first_strip(d, model, tmp_path):
    r = make_raster(str(tmp_path / "long.tif"), blobs(100, 2000, seed=7), descriptions=RGB)
    p = plan(r, model, SegmentOptions(device="cpu", batch=2), str(tmp_path / "o"))
    per_strip, total = 42, 84   # 2000 x 100 px in tiles of 64, stride 48: 2 strips of 42
    seen = []
    execute(p, lambda f, m: seen.append((f, m)))
    first_strip = [f for f, m in seen if m.startswith("tile ") and int(m.split()[1]) <= per_strip]
    # every batch of 2 tiles moves it (streaming is 85 % of the bar)
    assert len(first_strip) >= per_strip // 2 and first_strip[0] == pytest.approx(0.85 * 2 / total)
    assert first_strip == sorted(first_strip)


def test_the_bar_shows_an_eta_from_the_start(capsys, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("inference.__main__.time.time", lambda: now[0])
    bar = Bar(True, expected=600.0)
    bar(0.0, "loading model")
    assert "eta ~600s" in capsys.readouterr().err
    now[0] += 30
    bar(0.002, "tile 3 of 1500")   # under a percent, and a second later: shown
    err = capsys.readouterr().err
    assert "0.2%" in err and "eta 14970s" in err
    bar(0.0021, "tile 4 of 1500")   # the same second: not redrawn
    assert capsys.readouterr().err == ""
    unknown = Bar(True)
    unknown(0.0, "loading model")
    assert "eta estimating" in capsys.readouterr().err


# -- memory flat in the width -----------------------------------------------------------------
@pytest.mark.parametrize("width", [10980, 100000, 400000])
def test_the_buffers_held_across_strips_are_bounded_in_pixels(width):
    assert sieve_band_rows(width) * width <= max(SIEVE_BAND_PIXELS, 256 * width)
    assert write_queue_strips(width, 384) * 2 * width * 384 <= max(WRITE_QUEUE_BYTES, 2 * 2 * width * 384)


def test_the_streamed_sieve_holds_one_band_of_a_wide_raster():
    W, H, stride, thr = 100000, 3000, 384, 1   # (a threshold of 1 px: no GDAL sieve, the same bands)
    emitted, held = [], []
    sieve = StreamSieve(lambda rows, y: emitted.append((y, len(rows))), W, H, thr, 255, tail=448 + thr)
    for y in range(0, H, stride):
        rows = np.zeros((min(stride, H - y), W), np.uint8)
        sieve.push(rows, y)
        held.append(sieve.n + len(sieve.carry))
    sieve.close()
    assert sum(n for _, n in emitted) == H and [y for y, _ in emitted] == sorted(y for y, _ in emitted)
    assert max(held) <= sieve_band_rows(W) + thr + 2 * stride   # not the 2048 rows of a narrow raster
    assert sieve_band_rows(W) < 2048
