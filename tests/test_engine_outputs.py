"""Engine: every run gets its own outputs; names are never reused or shared between runs."""
import os
import threading

import numpy as np
import pytest

from engine_helpers import blobs, make_raster, pixel_model, read
from inference import OutputError, SegmentOptions, execute, open_model, plan

RGB = ["B4", "B3", "B2"]


@pytest.fixture
def scene(tmp_path):
    model = open_model(pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0))
    raster = make_raster(str(tmp_path / "r.tif"), blobs(200, 240, seed=4), descriptions=RGB)
    return tmp_path, model, raster


def _files(folder):
    return sorted(f for f in os.listdir(folder))


def test_two_runs_of_the_same_names_at_once_write_two_complete_sets(scene):
    tmp, model, raster = scene
    out = str(tmp / "out")
    opts = SegmentOptions(device="cpu", prefix="same_second", unique_names=True, batch=1)
    plans = [plan(raster, model, opts, out), plan(raster, model, opts, out)]
    assert plans[0].outputs == plans[1].outputs           # planned in the same second: the same names
    results, errors = [None, None], []

    def run(k):
        try:
            results[k] = execute(plans[k])
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    a, b = results
    assert {a.class_raster, b.class_raster} == {os.path.join(out, "same_second_classes.tif"),
                                               os.path.join(out, "same_second-2_classes.tif")}
    assert a.polygons != b.polygons and a.confidence_raster != b.confidence_raster
    np.testing.assert_array_equal(read(a.class_raster), read(b.class_raster))
    assert [f for f in _files(out) if not f.endswith(".aux.xml")] == sorted(
        s + f for s in ("same_second", "same_second-2")
        for f in ("_classes.tif", "_classes.qml", "_confidence.tif", "_confidence.qml", "_polygons.gpkg",
                                    "_report.json"))
    from osgeo import ogr
    for r in (a, b):   # each GeoPackage's layer is named after its own file
        ds = ogr.Open(r.polygons)
        assert ds.GetLayer(0).GetName() == os.path.splitext(os.path.basename(r.polygons))[0] == r.layer_name
        ds = None


def test_a_name_taken_after_planning(scene):
    tmp, model, raster = scene
    out = str(tmp / "out")
    unique = plan(raster, model, SegmentOptions(device="cpu", prefix="x", unique_names=True), out)
    given = plan(raster, model, SegmentOptions(device="cpu", prefix="x"), out)
    execute(given)
    # the same plan again: a new set of names with unique_names, else a refusal (nothing overwritten)
    assert execute(unique).class_raster.endswith("x-2_classes.tif")
    before = os.path.getmtime(os.path.join(out, "x_classes.tif"))
    with pytest.raises(OutputError, match="output exists: x_classes.tif"):
        execute(given)
    assert os.path.getmtime(os.path.join(out, "x_classes.tif")) == before
    assert not [f for f in os.listdir(out) if f.startswith(".")]   # no temporary file, no lock left
    # a plan made now skips the taken names at once
    assert plan(raster, model, SegmentOptions(prefix="x", unique_names=True), out).outputs["classes"].endswith(
        "x-3_classes.tif")


def test_a_run_holding_the_names_is_not_joined(scene):
    tmp, model, raster = scene
    out = tmp / "out"
    out.mkdir()
    (out / ".busy.tm-lock").write_text("")     # another run is writing busy_* right now
    with pytest.raises(OutputError, match="another run is writing busy"):
        execute(plan(raster, model, SegmentOptions(device="cpu", prefix="busy"), str(out)))
    res = execute(plan(raster, model, SegmentOptions(device="cpu", prefix="busy", unique_names=True), str(out)))
    assert os.path.basename(res.class_raster) == "busy-2_classes.tif"


def test_styles_are_written_with_the_outputs(scene):
    """A .qml beside each GeoTIFF and the polygons' default style in the GeoPackage, from the
    model's classes, by the engine alone (what QGIS loads when the files are opened: test_plugin)."""
    import xml.etree.ElementTree as ET
    from osgeo import ogr
    tmp, model, raster = scene
    res = execute(plan(raster, model, SegmentOptions(device="cpu"), str(tmp / "out")))
    qml = ET.parse(res.class_raster[:-4] + ".qml").getroot()
    entries = qml.findall("./pipe/rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        ("1", "tailings", model.info.classes[1].color)]          # no entry for the background
    assert ET.parse(res.confidence_raster[:-4] + ".qml").getroot().find("./pipe/rasterrenderer").get(
        "type") == "singlebandgray"
    ds = ogr.Open(res.polygons)
    styles = ds.GetLayerByName("layer_styles")
    rows = [(f.GetField("f_table_name"), f.GetField("useAsDefault"), f.GetField("styleQML")) for f in styles]
    assert len(rows) == 1 and rows[0][:2] == (res.layer_name, 1)
    renderer = ET.fromstring(rows[0][2].split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    assert [c.get("label") for c in renderer.find("categories")] == ["tailings"]
    ds = None


def test_raster_compression_is_an_option_and_changes_no_value(scene):
    from osgeo import gdal
    tmp, model, raster = scene
    has_zstd = "ZSTD" in gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST")
    runs = {}
    for choice in ("auto", "deflate", "zstd") if has_zstd else ("auto", "deflate"):
        r = execute(plan(raster, model, SegmentOptions(device="cpu", compression=choice), str(tmp / choice)))
        runs[choice] = r
        for path in (r.class_raster, r.confidence_raster):
            ds = gdal.Open(path)
            want = "DEFLATE" if choice == "deflate" or not has_zstd else "ZSTD"
            assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == want, (choice, path)
            ds = None
    for r in runs.values():
        np.testing.assert_array_equal(read(r.class_raster), read(runs["deflate"].class_raster))
        np.testing.assert_array_equal(read(r.confidence_raster), read(runs["deflate"].confidence_raster))
    from inference.errors import OptionError
    with pytest.raises(OptionError):
        plan(raster, model, SegmentOptions(compression="lzw"), str(tmp / "x"))


def test_rows_written_in_strips_of_any_height_and_order_read_back_as_written(tmp_path):
    """The writer hands GDAL whole rows of blocks and holds the part of one until the rows below it
    come: strips that do not end on a block, strips out of order, and label bands all land."""
    from osgeo import gdal
    from inference.output.writing import GeoTiffWriter
    rng = np.random.default_rng(3)
    H, W = 600, 300
    want = rng.integers(0, 4, size=(2, H, W), dtype=np.uint8)
    gt, wkt = (0, 10, 0, 0, 0, -10), ""
    for name, order in (("in_order", [(0, 70), (70, 333), (333, 512), (512, 600)]),
                        ("out_of_order", [(0, 100), (300, 400), (100, 300), (400, 600)])):
        path = str(tmp_path / (name + ".tif"))
        w = GeoTiffWriter(path, W, H, gt, wkt, 255, labels=[("a", None)])
        for y0, y1 in order:
            w.write(want[:, y0:y1], y0)
        w.close()
        ds = gdal.Open(path)
        got = ds.ReadAsArray()
        ds = None
        np.testing.assert_array_equal(got, want, err_msg=name)
    path = str(tmp_path / "one_band.tif")
    w = GeoTiffWriter(path, W, H, gt, wkt, 255)
    for y0 in range(0, H, 90):
        w.write(want[0, y0:y0 + 90], y0)
    w.close()
    np.testing.assert_array_equal(read(path), want[0])


@pytest.mark.parametrize("text", ["tailings", 'a "quoted" name', "it's", "x<y & z>", "two\nlines\tand tab", "Área (m²)"])
def test_style_attributes_read_back_as_written(text):
    """Class names in the styles' XML attributes come back unchanged, whatever they hold."""
    import xml.etree.ElementTree as ET
    from inference.output.styles import quoteattr
    assert ET.fromstring("<c label=%s/>" % quoteattr(text)).get("label") == text
