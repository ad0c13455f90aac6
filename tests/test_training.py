"""Training side: smoke training run, export vs torch, shipped models have cards and valid metadata.

Seconds only: tiny nets on 64 px crops.  Tests that need the shared tiles skip when the
folder is absent (``<repo>/../shared/data/tailings_s2_brazil`` or $TAILINGS_DATA).
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
gdal = pytest.importorskip("osgeo.gdal")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from engine_helpers import needs_shared_tiles  # noqa: E402
from training import configs, data as D, losses, nets  # noqa: E402
from training.export import WithActivation, compare_with_torch, export  # noqa: E402
from training.train import build_model, seed_all, train  # noqa: E402

DATA = D.default_data_dir()
needs_data = pytest.mark.shared_tiles if DATA else needs_shared_tiles()   # ($TAILINGS_DATA, else ../shared)


def _tiny_data(tmp_path, n=6):
    """A folder of the first ``n`` shared tiles, symlinked, with their sites."""
    sites = D.read_sites(DATA)
    names = sorted(sites)[:n]
    from training.evaluate import link_tiles
    link_tiles(DATA, names, str(tmp_path))
    with open(tmp_path / "sites.csv", "w") as f:
        f.write("tile,site\n" + "".join("%s,%s\n" % (t, sites[t]) for t in names))
    return str(tmp_path)


@needs_data
def test_short_training_lowers_loss_and_exports_a_model_the_engine_runs(tmp_path):
    torch.set_num_threads(2)
    folder = _tiny_data(tmp_path / "data")
    cfg = configs.get("tiny", epochs=4, samples_per_epoch=16)
    run = str(tmp_path / "run")
    tiles = D.load_folder(folder, cfg["bands"])
    tr, va = D.split_by_site(tiles, cfg["val_fraction"], cfg["split_seed"])
    assert not ({t.site for t in tr} & {t.site for t in va})
    mean, std = D.band_stats(tr)
    fixed = D.CropSampler(tr, 64, mean, std, None, seed=123, pos_p=1.0)
    x, y = next(fixed.epoch(8, 8))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    crit = losses.build(cfg["loss"])
    seed_all(0)
    m0 = build_model(cfg).eval()
    with torch.no_grad():
        before = float(crit(m0(x), y))
    train(cfg, folder, run, seed=0, log=lambda *_: None)
    ck = torch.load(os.path.join(run, "last.pt"), weights_only=True)
    m1 = build_model(cfg)
    m1.load_state_dict(ck["model"])
    m1.eval()
    with torch.no_grad():
        after = float(crit(m1(x), y))
    assert after < before, (before, after)
    assert os.path.isfile(os.path.join(run, "history.png"))
    hist = json.load(open(os.path.join(run, "history.json")))
    assert len(hist) == 4 and all("val_iou@0.5" in h for h in hist)

    out = str(tmp_path / "tiny.onnx")
    res = export(run, out, which="last")
    assert res["max_abs_diff"] < 1e-4
    from inference.model.opened import read_info
    info = read_info(out)
    assert info.bands == ["S2:B04", "S2:B03", "S2:B02"] and info.scale == [1e-4] * 3
    assert info.extra["split"]["val_sites"]
    img = os.path.join(folder, "images", os.listdir(os.path.join(folder, "images"))[0])
    r = subprocess.run([sys.executable, "-m", "inference", "segment", img, "--model", out,
                        "--out", str(tmp_path / "seg"), "--tile", "64", "--overlap", "8"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cls = [l.split(":", 1)[1].strip() for l in r.stdout.splitlines() if l.startswith("classes:")][0]
    ds = gdal.Open(cls)
    assert (ds.RasterXSize, ds.RasterYSize) == (448, 448)
    ds = None


@needs_data
def test_resume_continues_where_it_stopped(tmp_path):
    torch.set_num_threads(2)
    folder = _tiny_data(tmp_path / "data", n=4)
    run = str(tmp_path / "run")
    train(configs.get("tiny", epochs=1, samples_per_epoch=4), folder, run, seed=1, log=lambda *_: None)
    logs = []
    train(configs.get("tiny", epochs=2, samples_per_epoch=4), folder, run, seed=1, resume=True, log=logs.append)
    assert any("resumed" in l for l in logs)
    assert [h["epoch"] for h in json.load(open(os.path.join(run, "history.json")))] == [1, 2]


@needs_data
def test_warm_start_on_every_site_keeps_the_normalisation_and_trains_without_validation(tmp_path):
    torch.set_num_threads(2)
    folder = _tiny_data(tmp_path / "data", n=6)
    first, final = str(tmp_path / "first"), str(tmp_path / "final")
    train(configs.get("tiny", epochs=1, samples_per_epoch=4), folder, first, seed=0, log=lambda *_: None)
    init = torch.load(os.path.join(first, "last.pt"), weights_only=True)
    tiles = D.load_folder(folder, configs.get("tiny")["bands"])
    assert not np.allclose(D.band_stats(tiles)[0], init["mean"])   # every site has other statistics...
    cfg = configs.get("tiny", epochs=2, samples_per_epoch=4, val_sites=[])
    train(cfg, folder, final, seed=0, init=os.path.join(first, "last.pt"), log=lambda *_: None)
    run = json.load(open(os.path.join(final, "run.json")))
    assert run["split"]["val_tiles"] == [] and len(run["split"]["train_tiles"]) == len(tiles)
    assert np.allclose(run["mean"], init["mean"]) and np.allclose(run["std"], init["std"])  # ...the weights' kept
    hist = json.load(open(os.path.join(final, "history.json")))
    assert [h["epoch"] for h in hist] == [1, 2] and not any("val_iou@0.5" in h for h in hist)
    best = torch.load(os.path.join(final, "best.pt"), weights_only=True)
    assert best["epoch"] == 2 and best["val"] == {}
    logs = []   # resumed without --init: still the normalisation it started with
    train(configs.get("tiny", epochs=3, samples_per_epoch=4, val_sites=[]), folder, final, seed=0, resume=True,
          log=logs.append)
    assert any("resumed" in l for l in logs)
    assert np.allclose(json.load(open(os.path.join(final, "run.json")))["mean"], init["mean"])
    assert torch.load(os.path.join(final, "best.pt"), weights_only=True)["epoch"] == 3
    with pytest.raises(ValueError, match="threshold"):
        export(final, str(tmp_path / "nothreshold.onnx"))
    res = export(final, str(tmp_path / "final.onnx"), threshold=0.4)
    from inference.model.opened import read_info
    info = read_info(res["path"])
    assert info.threshold == pytest.approx(0.4) and np.allclose(info.mean, init["mean"])
    assert info.extra["split"]["val_sites"] == []


@pytest.mark.parametrize("arch,kw", [("unet_small", {"base": 4}), ("rst_deeplab", {"width": 0.5, "aspp_ch": 16,
                                                                                    "dec_ch": 16}),
                                     ("effunet", {"dec": (16, 16, 16, 8, 8)}),
                                     ("effunet", {"dec": (16, 16, 16, 8, 8), "encoder": "b4_s2"})])
def test_export_agrees_with_torch(tmp_path, arch, kw):
    torch.manual_seed(0)
    net = nets.build(arch, 3, 1, pretrained=False, **kw)
    for mod in net.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    w = WithActivation(net).eval()
    p = str(tmp_path / "m.onnx")
    torch.onnx.export(w, (torch.randn(1, 3, 64, 64),), p, input_names=["input"], output_names=["probability"],
                      dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "probability": {0: "b", 2: "h", 3: "w"}},
                      opset_version=17, dynamo=False)
    assert compare_with_torch(w, p, 3, sizes=(64, 96)) < 1e-4


def test_fp16_weights_halve_the_file_and_agree_with_torch(tmp_path):
    import onnx
    from onnx import TensorProto
    from training.export import round_weights_fp16, store_weights_fp16
    torch.manual_seed(0)
    net = nets.build("effunet", 3, 1, pretrained=False, dec=(16, 16, 16, 8, 8))
    w = WithActivation(net).eval()
    p32, p16 = str(tmp_path / "m32.onnx"), str(tmp_path / "m16.onnx")
    args = dict(input_names=["input"], output_names=["probability"], opset_version=17, dynamo=False,
                do_constant_folding=False,   # as export(fp16_weights=True) does
                dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "probability": {0: "b", 2: "h", 3: "w"}})
    torch.onnx.export(w, (torch.randn(1, 3, 64, 64),), p32, **args)
    proto = onnx.load(p32)
    assert store_weights_fp16(proto) > 10
    onnx.checker.check_model(proto)
    onnx.save(proto, p16)
    assert all(t.data_type != TensorProto.FLOAT for t in proto.graph.initializer)
    assert os.path.getsize(p16) < 0.6 * os.path.getsize(p32)
    assert compare_with_torch(w, p16, 3, sizes=(64,)) > 1e-6    # the weights did change...
    round_weights_fp16(net)
    assert compare_with_torch(w, p16, 3, sizes=(64, 96)) < 1e-5  # ...to float16 values, nothing else


def test_pretrained_rgb_weights_extend_to_extra_bands():
    w = torch.randn(32, 3, 3, 3)
    w4 = nets.extend_first_conv(w, 4)
    assert w4.shape == (32, 4, 3, 3)
    assert torch.allclose(w4[:, :3], w * 0.75) and torch.allclose(w4[:, 3], w.mean(1) * 0.75)
    # a constant standardised input gives the same response as with RGB only
    assert torch.allclose(w4.sum(1), w.sum(1), atol=1e-5)
    if nets.pretrained_lite0_path() and os.path.isfile(nets.pretrained_lite0_path()):
        enc = nets.EffLite0Encoder(in_ch=4, pretrained=True)
        assert enc.pretrained_loaded and enc._conv_stem.weight.shape[1] == 4


def test_losses_decrease_towards_the_target():
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[:, 2:5, 2:5] = 1
    y[:, 0, 0] = 255
    good = (y.float() * 2 - 1)[:, None] * 6
    for spec in ("bce", "focal", "dice", "focal+dice", "bce:1+dice:0.5"):
        l = losses.build(spec)
        assert float(l(good, y)) < float(l(-good, y)), spec


def test_split_is_by_site():
    tiles = [D.Tile("t%d" % i, np.zeros((3, 4, 4), np.float32), np.zeros((4, 4), np.uint8), str(i // 3))
             for i in range(30)]
    tr, va = D.split_by_site(tiles, 0.2, seed=0)
    assert va and tr and not ({t.site for t in tr} & {t.site for t in va})
    assert len(tr) + len(va) == 30


def test_half_resolution_batches_are_2x2_means_of_a_window():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 0.3, (3, 96, 96)).astype(np.float32)
    mask = (rng.random((96, 96)) < 0.3).astype(np.uint8)
    mask[:10] = 255
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    s = D.CropSampler([D.Tile("t", img, mask, "0")], 64, mean, std, None, seed=1, pos_p=0.5, half_p=0.5, half_size=16)
    sizes = set()
    for x, y in s.epoch(2, 40):
        sizes.add(x.shape[-1])
        assert x.shape[-2:] == y.shape[-2:]
        if x.shape[-1] != 16:
            continue
        raw = x[0] * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
        found = [(r, c) for r in range(96 - 31) for c in range(96 - 31)
                 if np.allclose(D.downsample2(img[:, r:r + 32, c:c + 32]) * (y[0] != 255), raw, atol=1e-5)]
        assert found, "a half-resolution crop is not the 2 x 2 means of any 32 px window"
        assert any(np.array_equal(D.downsample_mask2(mask[r:r + 32, c:c + 32]), y[0]) for r, c in found)
    assert sizes == {16, 64}   # both kinds of batch occur at half_p 0.5


def test_downsample_mask2_takes_the_majority():
    m = np.array([[1, 1, 0, 1, 255, 255, 0, 255],
                  [1, 0, 0, 1, 255, 1, 0, 255]], np.uint8)
    # blocks: three 1s -> 1; a 2-2 tie -> the lower id 0; three 255 -> nodata; 0/255 tie -> 0
    assert D.downsample_mask2(m).tolist() == [[1, 0, 255, 0]]


def test_validation_scores_the_engine_inference_settings():
    """train.predict with flips and scales averages the views as the engine does (reference: torch's
    flips, 2 x 2 average pooling and bilinear upsampling)."""
    import torch.nn.functional as F
    from training.train import predict
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 5, padding=2))
    x = np.random.default_rng(2).normal(0, 1, (3, 64, 64)).astype(np.float32)
    got = predict(net, x, "cpu", tta=4, scales=(1.0, 0.5))
    with torch.no_grad():
        t = torch.from_numpy(x[None])
        ref = 0
        for scaled in (t, F.avg_pool2d(t, 2)):
            for dims in ([], [-1], [-2], [-2, -1]):
                z = torch.sigmoid(net(scaled.flip(dims) if dims else scaled))
                z = z.flip(dims) if dims else z
                ref = ref + F.interpolate(z, size=(64, 64), mode="bilinear", align_corners=False)
        ref = (ref / 8)[0, 0].numpy()
    assert got.shape == (64, 64)
    assert np.abs(got - ref).max() < 1e-5
    one = predict(net, x, "cpu")
    assert np.abs(one - ref).max() > 1e-3   # the views do change the result


def test_sentinel2_b4_encoder_reproduces_the_csmask_network():
    """The plain-torch EfficientNet-B4 loaded from ukis-csmask's ONNX file computes what that file
    computes (its encoder's features at strides 2..32, fp16 there), and maps RGB inputs by name."""
    pytest.importorskip("ukis_csmask")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    path = nets.csmask_onnx_path()
    m = onnx.load(path)
    names = ["/model/encoder/_blocks.%d/Add_output_0" % i for i in (1, 5, 9, 21, 31)]
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT16, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(0, 1, (1, 4, 256, 256)).astype(np.float32)  # the file's fixed size
    ref = sess.run(names, {sess.get_inputs()[0].name: x})
    enc = nets.EffB4Encoder(4, True, ("blue", "green", "red", "nir")).eval()
    with torch.no_grad():
        got = enc(torch.from_numpy(x))
    for r, g in zip(ref, got):
        r = r.astype(np.float32)
        assert r.shape == tuple(g.shape)
        assert np.abs(r - g.numpy()).max() <= 1e-2 * np.abs(r).max()   # fp16 rounding there, ~0.3 %
    rgb = nets.EffB4Encoder(3, True, ("S2:B04", "S2:B03", "S2:B02"))
    w4 = enc._conv_stem.weight.detach()
    assert torch.allclose(rgb._conv_stem.weight.detach(), w4[:, [2, 1, 0]] * (4 / 3))


def test_rasterize_polygon_labels(tmp_path):
    ogr = pytest.importorskip("osgeo.ogr")
    osr = pytest.importorskip("osgeo.osr")
    r = str(tmp_path / "img.tif")
    ds = gdal.GetDriverByName("GTiff").Create(r, 20, 20, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform([500000, 10, 0, 7000000, 0, -10])
    s = osr.SpatialReference()
    s.ImportFromEPSG(32723)
    ds.SetProjection(s.ExportToWkt())
    ds = None
    v = str(tmp_path / "lab.geojson")
    with open(v, "w") as f:
        json.dump({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"cls": "tailings"},
             "geometry": {"type": "Polygon", "coordinates": [[[500000, 7000000], [500100, 7000000], [500100, 6999900],
                                                              [500000, 6999900], [500000, 7000000]]]}}],
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32723"}}}, f)
    m = str(tmp_path / "mask.tif")
    cmap = D.rasterize_labels(r, v, "cls", m)
    assert cmap == {"tailings": 1}
    ds = gdal.Open(m)
    a = ds.ReadAsArray()
    ds = None
    assert a[:10, :10].all() and a.sum() == 100


def _shipped():
    return sorted(glob.glob(os.path.join(REPO, "models", "*.onnx")))


def test_every_shipped_model_has_a_card_and_valid_metadata():
    from inference.model.opened import read_info
    for p in _shipped():
        card = os.path.splitext(p)[0] + ".md"
        assert os.path.isfile(card), "no model card for %s" % p
        info = read_info(p)
        assert info.bands and info.classes and 0 < info.threshold < 1
        assert os.path.getsize(p) < 50e6
        text = open(card).read().lower()
        for word in ("validation", "threshold", "sentinel-2", "gf-6", "training time"):
            assert word in text, "model card %s does not mention %r" % (card, word)


def test_shipped_tailings_model_is_binary_and_reads_bands_by_name():
    p = os.path.join(REPO, "models", "tailings.onnx")
    if not os.path.isfile(p):
        pytest.skip("models/tailings.onnx not shipped yet")
    from inference.model.opened import read_info
    info = read_info(p)
    assert info.task == "binary" and info.name == "tailings"
    assert [c.name for c in info.classes] == ["background", "tailings"]
    assert info.gsd_m == 10 and set(info.bands) == {"S2:B02", "S2:B03", "S2:B04"}
    assert "val_sites" in info.extra["split"]


class _Runs:
    """Stands for a pickled object that runs code when loaded."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoints_load_weights_only(tmp_path):
    """Checkpoints load with weights_only: numpy scalars of earlier checkpoints are allowed, any
    other object is refused; new checkpoints hold plain Python numbers."""
    from training.train import load_checkpoint, plain
    old = str(tmp_path / "old.pt")
    torch.save({"model": {"w": torch.ones(2)}, "best_iou": np.float64(0.5), "val": {"t": np.float32(0.25)}}, old)
    ck = load_checkpoint(old)
    assert float(ck["best_iou"]) == 0.5 and float(ck["val"]["t"]) == 0.25
    bad = str(tmp_path / "bad.pt")
    torch.save({"model": {}, "x": _Runs()}, bad)
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        load_checkpoint(bad)
    assert plain({"a": [np.int64(3), (np.float32(0.5),)]}) == {"a": [3, (0.5,)]}
    assert type(plain({"a": [np.int64(3)]})["a"][0]) is int
