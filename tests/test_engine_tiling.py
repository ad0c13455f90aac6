"""Engine: tiled, blended inference does not depend on tile size, overlap or batch size, and
matches a whole-image numpy computation of the model's function."""
import numpy as np
import pytest

from engine_helpers import (assert_matches_reference, blobs, conv_model, make_raster, read, reference_classes,
                            reference_prob, rounding_safe)
from inference import SegmentOptions, segment
from inference.tiling import blend_weights, positions

RGB = ["B4", "B3", "B2"]
H, W = 170, 200     # not square, not a multiple of any tile size used


def _conv_weights(k=5, seed=7):
    """Band 0 averaged over the k x k window (so a bright disc gives a positive logit), plus
    noise on every band and tap: the output depends on all neighbours, borders matter."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.6, size=(1, 3, k, k))
    w[0, 0] += 40.0 / (k * k)
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiling")
    img = blobs(H, W, seed=11, n=9)
    img[:, 120:140, 20:45] = 0          # a nodata patch (all bands)
    img[1, 10:14, 150:160] = 0          # nodata in one band only
    valid = (img != 0).all(axis=0)
    raster = make_raster(str(d / "scene.tif"), img, descriptions=RGB)
    w5 = _conv_weights(5)
    conv = conv_model(str(d / "conv5.onnx"), weights=w5, kernel=5, bias=-8.0, tile=64, overlap=16)
    w1 = np.array([12.0, -3.0, 2.0], np.float32).reshape(1, 3, 1, 1)
    pix = conv_model(str(d / "pix.onnx"), weights=w1, kernel=1, bias=-2.2, tile=64, overlap=16)
    return dict(dir=d, img=img, valid=valid, raster=raster, conv=conv, w5=w5, pix=pix, w1=w1)


_runs = {}


def _run(scene, model, tile, overlap, batch):
    key = (model, tile, overlap, batch)
    if key not in _runs:
        out = scene["dir"] / ("%s_%d_%d_%d" % (model, tile, overlap, batch))
        res = segment(scene["raster"], scene[model], str(out),
                      SegmentOptions(tile_size=tile, overlap=overlap, batch=batch, device="cpu", polygons=False))
        _runs[key] = (read(res.class_raster), read(res.confidence_raster), res)
    return _runs[key]


def test_single_tile_equals_whole_image_reference(scene):
    """One (padded) tile covering the whole raster is exactly the whole-image computation."""
    cls, conf, res = _run(scene, "conv", 256, 0, 1)
    assert res.tiles == 1
    prob = reference_prob(scene["img"], scene["w5"], -8.0, valid=scene["valid"])
    assert_matches_reference(cls, conf, prob, scene["valid"], 0.995, positive=(0.05, 0.5))  # a real mix


# (tile, overlap, batch).  The 5 x 5 kernel reaches 2 px past a tile edge; with an overlap of
# 16 px or more the blend hides that to a few percent.  With a short overlap (8, 12 px) the
# pixels next to a seam keep a visible share of the zero-padded edge: classes still agree,
# confidences are looser (linear ramp: edge pixels weigh 0.5 / overlap).
CONV_CONFIGS = [(64, 16, 4), (64, 16, 1), (32, 16, 3), (128, 32, 5), (64, 32, 7), (96, 24, 4),
                (32, 8, 3), (48, 12, 2)]


@pytest.mark.parametrize("tile, overlap, batch", CONV_CONFIGS)
def test_conv_model_invariant_to_tiling(scene, tile, overlap, batch):
    base_cls, base_conf, _ = _run(scene, "conv", 256, 0, 1)
    cls, conf, res = _run(scene, "conv", tile, overlap, batch)
    assert res.tiles > 1 or tile >= max(H, W)
    valid = scene["valid"]
    # nodata is nodata whatever the tiling
    np.testing.assert_array_equal(cls == 255, ~valid)
    np.testing.assert_array_equal(conf == 255, ~valid)
    agree = (cls[valid] == base_cls[valid]).mean()
    assert agree >= 0.995, agree
    d = np.abs(conf[valid].astype(int) - base_conf[valid].astype(int))
    p99, mean, top = np.percentile(d, 99), d.mean(), d.max()
    if overlap >= 16:
        assert p99 <= 5 and mean <= 0.5 and top <= 15, (mean, p99, top)
    else:
        assert p99 <= 8 and mean <= 0.5 and top <= 20, (mean, p99, top)


def test_tile_borders_matter_for_this_model(scene):
    """Sanity check of the test itself: without blending (overlap 0) the seams show, so the
    invariance above is the engine's merit, not a model that ignores its neighbours."""
    base_cls, base_conf, _ = _run(scene, "conv", 256, 0, 1)
    cls, conf, _ = _run(scene, "conv", 32, 0, 4)
    d = np.abs(conf.astype(int) - base_conf.astype(int))[scene["valid"]]
    assert d.max() >= 10


PIX_CONFIGS = [(64, 16, 4), (32, 0, 1), (48, 8, 3), (128, 0, 2), (256, 0, 1), (16, 4, 16), (200, 100, 1)]


@pytest.mark.parametrize("tile, overlap, batch", PIX_CONFIGS)
def test_pixel_model_identical_to_numpy(scene, tile, overlap, batch):
    cls, conf, _ = _run(scene, "pix", tile, overlap, batch)
    prob = reference_prob(scene["img"], scene["w1"], -2.2, valid=scene["valid"])
    safe = assert_matches_reference(cls, conf, prob, scene["valid"], 0.999, positive=(0.05, 0.6))
    # and identical to every other tiling, pixel for pixel (rounding-safe pixels)
    other_cls, other_conf, _ = _run(scene, "pix", 64, 16, 4)
    np.testing.assert_array_equal(cls[safe], other_cls[safe])
    np.testing.assert_array_equal(conf[safe], other_conf[safe])


@pytest.mark.parametrize("h, w", [(40, 50), (64, 64), (30, 150), (65, 17)])
def test_raster_smaller_than_or_equal_to_a_tile(tmp_path, h, w):
    img = blobs(h, w, seed=h + w, n=3)
    r = make_raster(str(tmp_path / "small.tif"), img, descriptions=RGB)
    wts = _conv_weights(3, seed=5)
    m = conv_model(str(tmp_path / "m.onnx"), weights=wts, kernel=3, bias=-6.0, tile=64, overlap=16)
    res = segment(r, m, str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0))
    cls, conf = read(res.class_raster), read(res.confidence_raster)
    assert cls.shape == (h, w)
    prob = reference_prob(img, wts, -6.0)
    cls_ref, conf_ref = reference_classes(prob)
    safe = rounding_safe(prob)
    if h <= 64 and w <= 64:
        # A single padded tile: exact.
        np.testing.assert_array_equal(cls[safe], cls_ref[safe])
        np.testing.assert_array_equal(conf[safe], conf_ref[safe])
    else:
        assert (cls == cls_ref).mean() >= 0.995
        assert np.abs(conf.astype(int) - conf_ref).max() <= 15


def test_positions_cover_and_stay_inside():
    for length in (1, 15, 16, 17, 63, 64, 65, 100, 170, 1000):
        for tile, overlap in ((16, 0), (16, 4), (64, 16), (64, 32), (256, 0)):
            ps = positions(length, tile, overlap)
            assert ps[0] == 0 and ps == sorted(set(ps))
            if length <= tile:
                assert ps == [0]
                continue
            assert ps[-1] == length - tile
            # consecutive tiles overlap by at least `overlap`, and cover everything
            for a, b in zip(ps, ps[1:]):
                assert b - a <= tile - overlap
    w = blend_weights(64, 16)
    assert w.shape == (64, 64) and w.min() > 0 and w.max() == 1.0
    # two neighbours cross-fading over the overlap weigh about one together
    row = w[32]
    stride = 64 - 16
    s = row[stride:] + row[:64 - stride]
    assert np.allclose(s, 1.0, atol=0.05)


def test_block_cache_sized_by_width_not_height_and_restored(tmp_path):
    """The engine raises GDAL's block-cache cap to hold one strip's blocks (the need grows with
    the raster's width, never its height) and gives the user's cap back after the run."""
    from osgeo import gdal
    from inference import plan
    m = conv_model(str(tmp_path / "m.onnx"), tile=64, overlap=16)
    need = {}
    for w, h in ((64, 300), (64, 3000), (640, 300)):
        img = np.full((3, h, w), 1000, np.uint16)
        path = make_raster(str(tmp_path / ("r%dx%d.tif" % (w, h))), img, descriptions=["B4", "B3", "B2"])
        need[(w, h)] = plan(path, m).gdal.cache_bytes
    assert need[(64, 300)] == need[(64, 3000)] > 0
    assert need[(640, 300)] > need[(64, 300)]
    before = gdal.GetCacheMax()
    try:
        gdal.SetCacheMax(1024 * 1024)
        seen = []
        segment(str(tmp_path / "r640x300.tif"), m, str(tmp_path / "out"), SegmentOptions(device="cpu"),
                progress=lambda f, msg: seen.append(gdal.GetCacheMax()))
        assert max(seen) == need[(640, 300)] > 1024 * 1024   # raised during the run ...
        assert gdal.GetCacheMax() == 1024 * 1024             # ... and restored after it
    finally:
        gdal.SetCacheMax(before)


def test_gdal_decodes_on_one_thread_while_the_network_takes_every_core(scene, monkeypatch):
    """On the CPU with a thread per core the network has every core: GDAL decodes and compresses
    on one thread; with cores left over (fewer network threads, or a GPU) on all of them;
    GDAL_NUM_THREADS, when set, wins."""
    import os
    from inference import plan
    monkeypatch.delenv("GDAL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    threads = lambda **kw: plan(scene["raster"], scene["conv"], SegmentOptions(device="cpu", **kw)).gdal.threads
    assert threads() == "1" == threads(threads=4)
    assert threads(threads=2) == "ALL_CPUS"
    monkeypatch.setenv("GDAL_NUM_THREADS", "3")
    assert threads() == "3" == threads(threads=2)


@pytest.mark.parametrize("threads", ["0", "1"])
def test_network_on_its_own_thread_or_inline_gives_the_same_rasters(scene, monkeypatch, threads):
    """The next batch is filled while the last is inferred (two batch buffers in turn): the
    rasters are those of the inline loop, for batches of 1 and 3 tiles."""
    for batch in (1, 3):
        want_cls, want_conf, _ = _run(scene, "conv", 64, 16, batch)
        monkeypatch.setenv("TM_INFER_THREAD", threads)
        monkeypatch.setenv("TM_IO_THREADS", threads)   # reads on a thread too, or nothing threaded
        out = scene["dir"] / ("infer_%s_%d" % (threads, batch))
        res = segment(scene["raster"], scene["conv"], str(out),
                      SegmentOptions(tile_size=64, overlap=16, batch=batch, device="cpu", polygons=False))
        np.testing.assert_array_equal(read(res.class_raster), want_cls)
        np.testing.assert_array_equal(read(res.confidence_raster), want_conf)
        assert res.tiles == _run(scene, "conv", 64, 16, batch)[2].tiles


def test_the_next_batch_is_queued_before_the_last_is_blended(scene, monkeypatch):
    """The network goes from one batch to the next without waiting for the blending: with a slow
    blend, every batch but the first is being inferred before the one before it is blended (and
    the rasters are those of the inline loop)."""
    import time
    import inference.run.stream as stream
    want_cls, want_conf, _ = _run(scene, "conv", 64, 16, 3)
    events = []
    infer, add, last = stream.TileNetwork.__call__, stream.Blender.add, []

    def network(self, batch, n):
        events.append("infer")
        return infer(self, batch, n)

    def blend(self, probs, x):   # (the tiles of one batch: views of one network output)
        if not last or probs.base is not last[-1]:
            time.sleep(0.03)     # a slow blend: the next batch has long been handed over
            events.append("blend")
            last.append(probs.base)
        add(self, probs, x)

    monkeypatch.setattr(stream.TileNetwork, "__call__", network)
    monkeypatch.setattr(stream.Blender, "add", blend)
    res = segment(scene["raster"], scene["conv"], str(scene["dir"] / "queued"),
                  SegmentOptions(tile_size=64, overlap=16, batch=3, device="cpu", polygons=False))
    n = events.count("infer")
    assert n > 5 and events.count("blend") == n
    blends = [i for i, e in enumerate(events) if e == "blend"]
    # the k-th batch (from 0) is blended once the (k + 1)-th is in the network
    assert all(events[:b].count("infer") >= min(n, k + 2) for k, b in enumerate(blends)), events
    np.testing.assert_array_equal(read(res.class_raster), want_cls)
    np.testing.assert_array_equal(read(res.confidence_raster), want_conf)


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
def test_strips_without_data_between_strips_with_data(tmp_path, batch):
    """A strip's last batch is inferred while the next strip is read and filled: strips whose
    tiles are all nodata (none to infer) in between, and batches of any size, give the numpy
    result pixel for pixel (rounding-safe pixels)."""
    img = blobs(150, 130, seed=5, n=7)
    img[:, 30:95] = 0                  # rows that hold whole strips of tiles (tile 32, overlap 8)
    img[:, 120:150, 60:130] = 0        # and part of the last strips
    valid = (img != 0).all(axis=0)
    raster = make_raster(str(tmp_path / "gaps.tif"), img, descriptions=RGB)
    w1 = np.array([12.0, -3.0, 2.0], np.float32).reshape(1, 3, 1, 1)
    m = conv_model(str(tmp_path / "pix.onnx"), weights=w1, kernel=1, bias=-2.2, tile=32, overlap=8)
    res = segment(raster, m, str(tmp_path / "out"), SegmentOptions(batch=batch, device="cpu", polygons=False))
    cls, conf = read(res.class_raster), read(res.confidence_raster)
    prob = reference_prob(img, w1, -2.2, valid=valid)
    assert_matches_reference(cls, conf, prob, valid, 0.999, positive=(0.05, 0.6))
    np.testing.assert_array_equal(cls == 255, ~valid)
