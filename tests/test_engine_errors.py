"""Engine: bad input gives a clear TailingsError (API) or a one-line error and non-zero exit (CLI),
and never leaves partial output; cancelling leaves nothing; progress is monotonic."""
import contextlib
import gc
import os
import shutil
import stat
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from engine_helpers import (all_files, true_m2, blobs, conv_model, make_raster, our_meta, pixel_model, read, run_cli,
                            set_props)
from inference import (BandMappingError, Cancelled, InputError, ModelError, OutputError, SegmentOptions,
                       TailingsError, segment)

RGB = ["B4", "B3", "B2"]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    return tmp_path_factory.mktemp("errors")


@pytest.fixture(scope="module")
def model(d):
    return pixel_model(str(d / "model.onnx"), [10, 0, 0], -2.0)


@pytest.fixture(scope="module")
def good(d):
    return make_raster(str(d / "good.tif"), blobs(80, 90, seed=2), descriptions=RGB)


def _truncated(d, name="truncated", side=300, keep=None):
    """A GeoTIFF cut short: by default after half its bytes; ``keep`` bytes (e.g. inside the header)."""
    p = str(d / (name + ".tif"))
    full = make_raster(str(d / (name + "_full.tif")), blobs(side, side, seed=1), descriptions=RGB)
    with open(full, "rb") as fh:
        data = fh.read()
    with open(p, "wb") as fh:
        fh.write(data[: keep or len(data) // 2])
    return p


def _not_a_raster(d):
    p = str(d / "notes.tif")
    with open(p, "w") as fh:
        fh.write("not a raster\n")
    return p


def _bad_model(d, kind):
    p = str(d / ("bad_%s.onnx" % kind))
    if kind == "bytes":
        with open(p, "wb") as fh:
            fh.write(np.random.default_rng(0).bytes(2000))
    elif kind == "no_bands":
        conv_model(p, kernel=1)
        meta = our_meta(p)
        del meta["bands"]
        import json
        set_props(p, {"tailings_mapper": json.dumps(meta)})
    elif kind == "contradictory":
        conv_model(p, kernel=1, n_out=3, classes=["background", "tailings"])
    elif kind == "no_meta":   # runs on the raster's first bands, as Deepness does: here it needs 6
        conv_model(p, kernel=1, meta=False, bands=("S2:B02", "S2:B03", "S2:B04", "S2:B08", "S2:B11", "S2:B12"))
    return p


# (name, how to build (input, model, api options, cli extra args), expected error class, words in the message)
CASES = {
    "truncated_geotiff": (lambda d, m, g: (_truncated(d), m, {}, []), InputError, ["truncated.tif"]),
    "truncated_header": (lambda d, m, g: (_truncated(d, "truncated_header", 60, keep=200), m, {}, []), InputError, ["truncated_header.tif"]),
    "not_a_raster": (lambda d, m, g: (_not_a_raster(d), m, {}, []), InputError, ["notes.tif"]),
    "missing_input": (lambda d, m, g: (str(d / "nope.tif"), m, {}, []), InputError, ["not found", "nope.tif"]),
    "too_few_bands": (lambda d, m, g: (make_raster(str(d / "two.tif"), blobs(30, 30, nb=2), descriptions=["B4", "B3"]),
                                       m, {}, []), BandMappingError, ["S2:B02", "2 bands"]),
    "band_does_not_exist": (lambda d, m, g: (g, m, {"bands": {"S2:B04": 7, "S2:B03": 2, "S2:B02": 1}},
                                             ["--bands", "7,2,1"]), BandMappingError,
                            ["band 7", "does not exist", "only 3 bands"]),
    "unknown_preset": (lambda d, m, g: (g, m, {"preset": "landsat"}, ["--preset", "landsat"]), BandMappingError,
                       ["landsat"]),
    "all_nodata": (lambda d, m, g: (make_raster(str(d / "empty.tif"), np.zeros((3, 70, 80), np.uint16),
                                                descriptions=RGB), m, {}, []), InputError, ["no valid pixels"]),
    "no_crs": (lambda d, m, g: (make_raster(str(d / "nocrs.tif"), blobs(30, 30), descriptions=RGB, srs=False),
                                m, {}, []), InputError, ["no coordinate reference system"]),
    "model_not_onnx": (lambda d, m, g: (g, _bad_model(d, "bytes"), {}, []), ModelError, ["not a valid ONNX"]),
    "model_no_metadata": (lambda d, m, g: (g, _bad_model(d, "no_meta"), {}, []), BandMappingError,
                          ["first 6 bands", "only 3 bands"]),
    "model_missing_bands": (lambda d, m, g: (g, _bad_model(d, "no_bands"), {}, []), ModelError, ["'bands'"]),
    "model_contradictory": (lambda d, m, g: (g, _bad_model(d, "contradictory"), {}, []), ModelError,
                            ["3 channels", "2 classes"]),
}


def _check_clean(out):
    gc.collect()
    assert all_files(str(out)) == [], all_files(str(out))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_api(d, model, good, case):
    build, exc, words = CASES[case]
    inp, mdl, opts, _ = build(d, model, good)
    out = d / ("api_" + case)
    with pytest.raises(exc) as e:
        segment(inp, mdl, str(out), SegmentOptions(device="cpu", **opts))
    assert isinstance(e.value, TailingsError)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (case, msg)
    del e
    _check_clean(out)


def _assert_cli_error(proc, words=()):
    assert proc.returncode not in (0, 3), (proc.returncode, proc.stderr)   # 3: an internal error (a bug)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_cli(d, model, good, case):
    build, exc, words = CASES[case]
    inp, mdl, _, args = build(d, model, good)
    out = d / ("cli_" + case)
    proc = run_cli(["segment", inp, "--model", mdl, "--out", str(out), "--device", "cpu"] + args)
    _assert_cli_error(proc, words)
    assert proc.returncode == 2
    _check_clean(out)


# --------------------------------------------------------------------------------------------------
# Output folder
# --------------------------------------------------------------------------------------------------

def test_output_below_a_regular_file(d, model, good):
    blocker = d / "a_file"
    blocker.write_text("x")
    out = blocker / "out"
    with pytest.raises(OutputError, match="cannot write to output folder"):
        segment(good, model, str(out), SegmentOptions(device="cpu"))
    proc = run_cli(["segment", good, "--model", model, "--out", str(out)])
    _assert_cli_error(proc, ["output folder"])
    assert blocker.read_text() == "x"


def test_output_is_a_regular_file(d, model, good):
    out = d / "out_is_file"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="not a folder"):
        segment(good, model, str(out), SegmentOptions(device="cpu"))
    _assert_cli_error(run_cli(["segment", good, "--model", model, "--out", str(out)]), ["not a folder"])
    assert out.read_text() == "keep me"


@contextlib.contextmanager
def _read_only_folder(path):
    """A folder nobody can write into: chmod 555, and where that does not stop root, the immutable
    attribute (chattr +i).  Yields False when neither works here."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    immutable = False
    try:
        if _writable(path) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0
        yield not _writable(path)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", path], capture_output=True)
        os.chmod(path, 0o755)


def _writable(path):
    probe = os.path.join(path, ".probe")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False


def test_output_folder_not_writable(d, model, good):
    out = str(d / "read_only")
    with _read_only_folder(out) as ok:
        if not ok:
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        with pytest.raises(OutputError) as e:
            segment(good, model, out, SegmentOptions(device="cpu"))
        assert "cannot write to output folder" in str(e.value) and out in str(e.value)
        _assert_cli_error(run_cli(["segment", good, "--model", model, "--out", out]), ["cannot write"])
        assert all_files(out) == []


def test_existing_output_needs_overwrite(d, model, good):
    out = d / "existing"
    first = segment(good, model, str(out), SegmentOptions(device="cpu"))
    before = {f: os.path.getmtime(out / f) for f in all_files(str(out))}
    cls_before = read(first.class_raster)
    assert cls_before.max() == 1
    with pytest.raises(OutputError) as e:
        segment(good, model, str(out), SegmentOptions(device="cpu", threshold=0.99))
    assert "good_classes.tif" in str(e.value) and "overwrit" in str(e.value)
    proc = run_cli(["segment", good, "--model", model, "--out", str(out), "--threshold", "0.99"])
    _assert_cli_error(proc, ["output exists"])
    assert {f: os.path.getmtime(out / f) for f in all_files(str(out))} == before
    np.testing.assert_array_equal(read(first.class_raster), cls_before)
    # With overwrite it runs, and the new result replaces the old one.
    proc = run_cli(["segment", good, "--model", model, "--out", str(out), "--threshold", "0.99", "--overwrite"])
    assert proc.returncode == 0, proc.stderr
    assert all_files(str(out)) == sorted(before)
    assert read(first.class_raster).max() == 0
    res = segment(good, model, str(out), SegmentOptions(device="cpu", overwrite=True))
    np.testing.assert_array_equal(read(res.class_raster), cls_before)
    assert all_files(str(out)) == sorted(before)


def test_smaller_than_one_tile_runs(d, model):
    img = np.full((3, 40, 50), 1000, np.uint16)
    img[0, 5:20, 10:30] = 3000
    r = make_raster(str(d / "tiny.tif"), img, descriptions=RGB)
    res = segment(r, model, str(d / "tiny_out"), SegmentOptions(device="cpu", tile_size=64))
    cls = read(res.class_raster)
    assert cls.shape == (40, 50)
    expected = np.zeros((40, 50), np.uint8)
    expected[5:20, 10:30] = 1
    np.testing.assert_array_equal(cls, expected)
    assert res.tiles == 1 and res.stats[1]["count"] == 1
    assert res.stats[1]["area_ha"] == pytest.approx(true_m2(300 * 100, r) / 1e4, rel=1e-5)   # (true area)


# --------------------------------------------------------------------------------------------------
# Cancel and progress
# --------------------------------------------------------------------------------------------------

def _many_regions(d):
    """> 200 separate regions, so that polygon measuring checks for cancel too."""
    img = np.full((3, 130, 130), 1000, np.uint16)
    for y in range(2, 128, 6):
        for x in range(2, 128, 6):
            img[0, y:y + 3, x:x + 3] = 3000
    return make_raster(str(d / "many.tif"), img, descriptions=RGB)


def test_cancel_after_first_progress(d, model, good):
    out = d / "cancel_first"
    seen = []

    def progress(f, msg):
        seen.append(f)
    with pytest.raises(Cancelled) as e:
        segment(good, model, str(out), SegmentOptions(device="cpu"), progress=progress, cancel=lambda: bool(seen))
    assert seen
    _check_clean(out)           # at once ...
    del e
    _check_clean(out)           # ... and once the traceback (and what it held open) is gone


@pytest.mark.parametrize("resample", [False, True])
def test_cancel_at_every_check_leaves_nothing(d, model, resample, monkeypatch):
    """Cancel at the 1st, 2nd, ... check until the run completes: every cancelled run leaves an
    empty folder, the run that completes leaves exactly the outputs; no temporary folder is left."""
    import tempfile
    tmp_root = d / ("tmp_root_%s" % resample)
    tmp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))
    src = _many_regions(d)
    if resample:
        src = make_raster(str(d / "many5m.tif"), gdal.Open(src).ReadAsArray(), descriptions=RGB, pixel=5.0)
    opts = dict(device="cpu", tile_size=64, overlap=16, batch=2)
    n_checks = 0
    for n in range(1, 200):
        calls = []

        def cancel():
            calls.append(1)
            return len(calls) >= n
        out = d / ("cancel_%s_%d" % (resample, n))
        cancelled = False
        try:
            res = segment(src, model, str(out), SegmentOptions(**opts), cancel=cancel)
        except Cancelled:
            cancelled = True
            assert all_files(str(out)) == []
        if cancelled:
            _check_clean(out)          # also once the exception is gone
            n_checks = n
            continue
        assert sorted(f for f in all_files(str(out)) if not f.endswith((".aux.xml", ".qml"))) == [
            os.path.basename(res.class_raster), os.path.basename(res.confidence_raster),
            os.path.basename(res.polygons), os.path.basename(res.report)]
        assert sorted(f for f in all_files(str(out)) if f.endswith(".qml")) == [
            os.path.basename(res.class_raster)[:-4] + ".qml", os.path.basename(res.confidence_raster)[:-4] + ".qml"]
        assert not [f for f in all_files(str(out)) if f.startswith(".")]
        break
    else:
        pytest.fail("never completed")
    assert n_checks >= 5
    assert os.listdir(tmp_root) == []


def test_progress_is_monotonic_and_ends_at_one(d, model):
    src = _many_regions(d)
    values = []
    segment(src, model, str(d / "progress"), SegmentOptions(device="cpu", tile_size=32, overlap=8),
            progress=lambda f, m: values.append((f, m)))
    fs = [f for f, _ in values]
    assert len(fs) > 5
    assert all(0.0 <= f <= 1.0 for f in fs)
    assert all(b >= a for a, b in zip(fs, fs[1:])), fs
    assert fs[0] == 0.0 and fs[-1] == 1.0
    assert all(isinstance(m, str) for _, m in values)
