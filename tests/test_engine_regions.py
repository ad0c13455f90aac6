"""The banded sieve (bounded memory) gives exactly GDAL's global sieve on binary rasters."""
import numpy as np
import pytest
from osgeo import gdal

from inference.output.sieve import sieve_in_bands


def _mem(a):
    d = gdal.GetDriverByName("MEM").Create("", a.shape[1], a.shape[0], 1, gdal.GDT_Byte)
    b = d.GetRasterBand(1)
    b.SetNoDataValue(255)
    b.WriteArray(a)
    return d


def _noisy_and_globally_sieved(rng, shape, thr):
    """A noisy binary raster with scattered nodata, and GDAL's global sieve of it."""
    a = (rng.random(shape) > 0.55).astype(np.uint8)
    a[rng.random(a.shape) < 0.01] = 255
    d = _mem(a)
    b = d.GetRasterBand(1)
    gdal.SieveFilter(b, b.GetMaskBand(), b, thr, 4)
    return a, b.ReadAsArray()


@pytest.mark.parametrize("seed,thr,rows", [(0, 5, 100), (1, 20, 64), (2, 60, 100), (3, 9, 17)])
def test_banded_sieve_equals_global(seed, thr, rows):
    rng = np.random.default_rng(seed)
    a, want = _noisy_and_globally_sieved(rng, (600, 300), thr)
    d2 = _mem(a)
    sieve_in_bands(d2.GetRasterBand(1), thr, rows=rows)
    got = d2.GetRasterBand(1).ReadAsArray()
    assert (got != a).any()  # the sieve did something
    assert (got == 255).sum() == (a == 255).sum()  # nodata untouched
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rows", [None, 37])
def test_mean_confidence_is_the_mean_over_each_region(tmp_path, monkeypatch, rows):
    """mean_confidence of every polygon equals the confidence raster averaged over its pixels
    (also when it is summed in bands of rows that cut the polygons)."""
    if rows:
        monkeypatch.setattr("inference.output.region_stats.ROWS_PER_READ", rows)
    from engine_helpers import blobs, conv_model, make_raster, read
    from inference import SegmentOptions, segment
    from osgeo import ogr
    w = np.zeros((1, 3, 3, 3), np.float32)
    w[0, 0, 1, 1] = 30.0
    model = conv_model(str(tmp_path / "m.onnx"), weights=w, bias=-6.0)
    img = blobs(200, 260, seed=3, n=8)
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=["B4", "B3", "B2"])
    res = segment(r, model, str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0.0))
    conf = read(res.confidence_raster).astype(float)
    ds = ogr.Open(res.polygons)
    layer = ds.GetLayer()
    assert layer.GetFeatureCount() > 2
    gt = (500000.0, 10.0, 0, 7700000.0, 0, -10.0)
    for f in layer:
        g = f.GetGeometryRef()
        mem = gdal.GetDriverByName("MEM").Create("", conf.shape[1], conf.shape[0], 1, gdal.GDT_Byte)
        mem.SetGeoTransform(gt)
        vds = ogr.GetDriverByName("Memory").CreateDataSource("")
        vl = vds.CreateLayer("g", None, ogr.wkbPolygon)
        nf = ogr.Feature(vl.GetLayerDefn())
        nf.SetGeometry(g.Clone())
        vl.CreateFeature(nf)
        gdal.RasterizeLayer(mem, [1], vl, burn_values=[1])
        inside = mem.ReadAsArray() == 1
        assert inside.any()
        assert f.GetField("mean_confidence") == pytest.approx(conf[inside].mean(), abs=0.05)   # percent
    ds = None


@pytest.mark.parametrize("seed,thr,rows,strip,tail", [(0, 5, 100, 37, 0), (1, 20, 64, 100, 0), (2, 60, 100, 250, 0),
                                                     (3, 9, 17, 5, 0), (4, 20, 100, 37, 70), (5, 9, 64, 100, 1),
                                                     (6, 5, 100, 250, 600)])
def test_streaming_sieve_equals_global(seed, thr, rows, strip, tail):
    """StreamSieve, fed strips of any height, emits exactly GDAL's global sieve."""
    from inference.output.sieve import StreamSieve
    rng = np.random.default_rng(seed)
    a, want = _noisy_and_globally_sieved(rng, (530, 240), thr)
    got = np.full_like(a, 77)
    seen = []

    def emit(rows_, y):
        seen.append(y)
        got[y:y + len(rows_)] = rows_

    s = StreamSieve(emit, a.shape[1], a.shape[0], thr, 255, rows=rows, tail=tail)
    for y in range(0, a.shape[0], strip):
        s.push(a[y:y + strip], y)
    s.close()
    assert seen == sorted(seen) and seen[0] == 0
    if 0 < tail < a.shape[0]:
        assert a.shape[0] - seen[-1] == tail        # the last band is the tail
    np.testing.assert_array_equal(got, want)


def test_streamed_and_post_hoc_sieve_give_the_same_classes(tmp_path):
    """With polygons the engine sieves while streaming; without, after the run: same raster."""
    from engine_helpers import blobs, conv_model, make_raster, read
    from inference import SegmentOptions, segment
    w = np.zeros((1, 3, 3, 3), np.float32)
    w[0, 0, 1, 1] = 30.0
    model = conv_model(str(tmp_path / "m.onnx"), weights=w, bias=-6.0, tile=64, overlap=16)
    img = blobs(300, 220, seed=5, n=30)
    img[0] += np.random.default_rng(1).integers(0, 1300, img[0].shape).astype(np.uint16)  # speckle
    r = make_raster(str(tmp_path / "r.tif"), img, descriptions=["B4", "B3", "B2"])
    a = segment(r, model, str(tmp_path / "a"), SegmentOptions(device="cpu", min_area_ha=0.3))
    b = segment(r, model, str(tmp_path / "b"), SegmentOptions(device="cpu", min_area_ha=0.3, polygons=False))
    raw = segment(r, model, str(tmp_path / "c"), SegmentOptions(device="cpu", min_area_ha=0.0, polygons=False))
    ca, cb = read(a.class_raster), read(b.class_raster)
    assert (ca == 1).sum() > 0
    assert (ca != read(raw.class_raster)).sum() > 20  # the sieve removed something
    np.testing.assert_array_equal(ca, cb)


def _sparse(rng, shape):
    """A two-class raster as a run makes them: mostly background, regions of 1 of every size
    (some with holes, some touching each other at corners), specks, a row all of 1, nodata and
    a cloud-masked patch (251) -- and rows of background between them."""
    a = np.zeros(shape, np.uint8)
    h, w = shape
    for _ in range(25):
        y, x = rng.integers(0, h - 40), rng.integers(0, w - 40)
        dy, dx = rng.integers(1, 40, 2)
        a[y:y + dy, x:x + dx] = 1
        if dy > 6 and dx > 6:
            a[y + 2:y + 2 + rng.integers(1, 4), x + 2:x + 2 + rng.integers(1, 4)] = 0   # a hole
    for _ in range(40):
        a[rng.integers(0, h), rng.integers(0, w)] = 1
    a[300] = 1
    a[400, 10:30] = 255
    a[420:430, 50:70] = 251
    a[430:432, 60:64] = 1
    a[500:505, :] = 255
    a[550:590] = 0                   # a comb between clear rows: notches open at the top and bottom,
    a[560:570, 20:120] = 1           # its background small in the comb's rows, one region with
    for x in range(25, 115, 10):     # the clear rows around it
        a[560:563, x:x + 2] = 0
        a[567:570, x + 4:x + 6] = 0
    return a


@pytest.mark.parametrize("seed,thr", [(0, 3), (1, 12), (2, 40), (3, 400)])
def test_a_two_class_raster_is_sieved_between_its_clear_rows_only_with_the_same_result(seed, thr):
    from inference.output.sieve import busy_rows, sieve_array
    rng = np.random.default_rng(seed)
    a = _sparse(rng, (640, 200))
    want, got = a.copy(), a.copy()
    sieve_array(want, thr, 255)                     # every row
    sieve_array(got, thr, 255, two_classes=True)    # the rows between clear rows
    assert (want != a).any()                        # the sieve did something
    np.testing.assert_array_equal(got, want)
    if thr > a.shape[1]:
        return                                      # (a clear row is no bigger than thr: all sieved)
    sieved = sum(b - y for y, b in busy_rows(a))
    assert sieved < 0.8 * len(a)                    # and skipped rows
    assert all(((a[y] == a[y, 0]).all() and a[y, 0] < 250) for y in range(len(a))
               if not any(y0 <= y < y1 for y0, y1 in busy_rows(a)))   # only clear ones


@pytest.mark.parametrize("seed,thr,rows,strip,tail", [(0, 5, 100, 37, 0), (1, 20, 64, 100, 70), (2, 60, 200, 250, 0)])
def test_streaming_sieve_of_two_classes_equals_global(seed, thr, rows, strip, tail):
    from inference.output.sieve import StreamSieve, sieve_array
    rng = np.random.default_rng(seed)
    a = _sparse(rng, (640, 200))
    want = a.copy()
    sieve_array(want, thr, 255)
    got = np.full_like(a, 77)

    def emit(rows_, y):
        got[y:y + len(rows_)] = rows_

    s = StreamSieve(emit, a.shape[1], a.shape[0], thr, 255, rows=rows, tail=tail, two_classes=True)
    for y in range(0, a.shape[0], strip):
        s.push(a[y:y + strip].copy(), y)
    s.close()
    np.testing.assert_array_equal(got, want)


def test_mean_confidence_burnt_when_not_on_the_grid(tmp_path, monkeypatch):
    """A band whose polygons are not on the pixel grid is burnt (fid as value): the same means,
    and the layer's filters are cleared again for what reads it next."""
    from engine_helpers import blobs, conv_model, make_raster
    from inference import SegmentOptions, segment
    from inference.output import region_stats
    from osgeo import ogr
    w = np.zeros((1, 3, 3, 3), np.float32)
    w[0, 0, 1, 1] = 30.0
    model = conv_model(str(tmp_path / "m.onnx"), weights=w, bias=-6.0)
    r = make_raster(str(tmp_path / "r.tif"), blobs(200, 260, seed=3, n=8), descriptions=["B4", "B3", "B2"])
    res = segment(r, model, str(tmp_path / "out"), SegmentOptions(device="cpu", min_area_ha=0.0))
    ds = ogr.Open(res.polygons)
    layer = ds.GetLayer()
    want = {f.GetFID(): f.GetField("mean_confidence") for f in layer}
    assert len(want) > 2
    like = gdal.Open(res.class_raster)
    by_spans = region_stats.mean_confidence_by_fid(ds, layer.GetName(), like, res.confidence_raster, lambda: False)
    monkeypatch.setattr(region_stats, "_spans", lambda *a: None)
    burnt = region_stats.mean_confidence_by_fid(ds, layer.GetName(), like, res.confidence_raster, lambda: False)
    for (s, c) in (by_spans, burnt):
        for fid, mean in want.items():
            assert round(float(s[fid] / c[fid]), 1) == pytest.approx(mean, abs=0.05)
    np.testing.assert_array_equal(by_spans[1], burnt[1])
    cid = next(iter(layer)).GetField("class_id")
    s, c = region_stats.mean_confidence_by_fid(ds, layer.GetName(), like, res.confidence_raster, lambda: False,
                                               class_id=cid + 1000)
    assert not c.any()   # no polygon of that class
    layer.ResetReading()
    assert len(list(layer)) == len(want)   # no filter left on the layer
