"""Engine: one way in (a frozen plan, then its execution; one network session), and one option
table from which the command line's arguments are generated and which checks every value."""
import argparse
import dataclasses
import os

import numpy as np
import pytest

from engine_helpers import blobs, make_raster, pixel_model, read, run_cli
from inference import OPTIONS, OptionError, SegmentOptions, execute, open_model, plan
from inference.run import options as optlib
from inference.scores.evaluate import evaluate

RGB = ["B4", "B3", "B2"]


@pytest.fixture
def scene(tmp_path):
    model = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)
    raster = make_raster(str(tmp_path / "r.tif"), blobs(90, 110, seed=3), descriptions=RGB)
    return tmp_path, model, raster


def test_planning_loads_no_network_and_one_plan_runs_on_one_session(scene, ort_sessions):
    tmp, model, raster = scene
    m = open_model(model)
    p = plan(raster, m, SegmentOptions(device="cpu", batch=2), str(tmp / "a"))
    for _ in range(5):  # a panel checks every edit with a plan
        plan(raster, m, SegmentOptions(device="cpu", threshold=0.4), str(tmp / "a"))
    assert ort_sessions == []
    a = execute(p)
    assert len(ort_sessions) == 1
    b = execute(p.with_outputs(str(tmp / "b")))   # the same plan again, elsewhere: the same session
    assert len(ort_sessions) == 1
    np.testing.assert_array_equal(read(a.class_raster), read(b.class_raster))
    assert a.class_raster == p.outputs["classes"] and os.path.isfile(a.class_raster)
    # a plan given a model name opens the model itself: one more session, for that run
    execute(plan(raster, model, SegmentOptions(device="cpu"), str(tmp / "c")))
    assert len(ort_sessions) == 2


def test_plan_is_immutable_and_holds_what_it_resolved(scene):
    tmp, model, raster = scene
    p = plan(raster, model, SegmentOptions(device="cpu", tta=2), str(tmp / "out"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tile_size = 32
    with pytest.raises(TypeError):
        p.outputs["classes"] = "elsewhere.tif"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.options.tta = 4
    assert p.tta == 2 and p.mapping.source_bands == [1, 2, 3] and p.info.name == "m"
    assert set(p.outputs) == {"classes", "classes_style", "confidence", "confidence_style", "polygons", "report"}
    assert not os.path.exists(str(tmp / "out"))


def test_evaluate_loads_the_network_once_for_all_images(tmp_path, ort_sessions):
    model = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    for k in range(3):
        img = blobs(40, 50, seed=k)
        make_raster(str(tmp_path / "im" / ("t%d.tif" % k)), img, descriptions=RGB)
        make_raster(str(tmp_path / "mk" / ("t%d.tif" % k)), (img[:1] > 3000).astype(np.uint8), nodata=None)
    res = evaluate(model, str(tmp_path / "im"), str(tmp_path / "mk"), SegmentOptions(device="cpu"))
    assert res["images"] == 3 and len(ort_sessions) == 1


def test_every_option_reads_back_its_text_form():
    for o in OPTIONS:
        samples = [o.default] + list(o.choices[:2])
        samples += {"int": [int(o.minimum or 0) + 16 * (o.multiple_of or 1)], "float": [0.25] + ([7698500.5] if o.maximum is None else []),
                    "extent": [(1.0, 2.0, 3.5, 4.0)], "bands": ["3,2,1", {"S2:B04": 3, "S2:B03": 2}],
                    "text": ["2021-07-15"] if o.name == "date" else ["north_pit"], "aoi": ["aoi.gpkg"]}.get(o.kind, [])
        for v in samples:
            if v is None:
                assert o.parse(o.format(v)) is None
                continue
            v = o.check(v)
            back = o.parse(o.format(v))
            assert o.format(back) == o.format(v), (o.name, v)
            if not isinstance(v, dict):   # a mapping by name stays text until the plan knows the model
                assert back == v, (o.name, v, o.format(v))


@pytest.mark.parametrize("name, text, words", [
    ("tile_size", "12", ["multiple of 8"]), ("tile_size", "big", ["whole number"]),
    ("tta", "3", ["1, 2, 4, 8"]), ("scales", "1,0.3", ["1, 0.5, 0.25"]), ("scales", "1;0.5", ["commas"]),
    ("threshold", "1", ["between 0 and 1"]), ("batch", "0", ["between 1 and 256"]), ("device", "tpu", ["auto, cuda, cpu"]),
    ("extent", "1,2,3", ["xmin,ymin,xmax,ymax"]), ("min_area_ha", "-2", ["at least 0"]),
    ("date", "July 2021", ["YYYY-MM-DD"]), ("date", "2021-13-01", ["YYYY-MM-DD"]),
])
def test_bad_values_are_option_errors_that_name_the_option(name, text, words):
    with pytest.raises(OptionError) as e:
        optlib.from_texts({name: text})
    assert e.value.option == name
    for w in words:
        assert w in str(e.value)


def test_command_line_arguments_are_generated_from_the_table():
    ap = argparse.ArgumentParser()
    optlib.add_arguments(ap)
    flags = {a.dest: a.option_strings[0] for a in ap._actions if a.option_strings and a.dest != "help"}
    assert set(flags) == {o.name for o in OPTIONS if "cli" in o.fronts}
    assert flags["tile_size"] == "--tile" and flags["min_area_ha"] == "--min-area" and flags["scales"] == "--scales"
    ns = ap.parse_args(["--tile", "128", "--scales", "1,0.5", "--tta", "4", "--no-confidence", "--date", "2021"])
    assert optlib.from_arguments(ns) == SegmentOptions(tile_size=128, scales=(1.0, 0.5), tta=4, confidence=False,
                                                       date="2021")
    assert "one of 1, 2, 4, 8" in next(a.help for a in ap._actions if a.dest == "tta")


def test_date_is_recorded_in_the_outputs(scene):
    """The option the change maps need (issue: change maps between years): the scene's date, in
    the class raster's and the polygon layer's metadata; absent when not given."""
    from osgeo import gdal, ogr
    tmp, model, raster = scene
    res = execute(plan(raster, model, SegmentOptions(device="cpu", date="2021-07-15"), str(tmp / "dated")))
    assert gdal.Open(res.class_raster).GetMetadataItem("TM_DATE") == "2021-07-15"
    ds = ogr.Open(res.polygons)
    assert ds.GetLayer(0).GetMetadataItem("TM_DATE") == "2021-07-15"
    ds = None
    res = execute(plan(raster, model, SegmentOptions(device="cpu"), str(tmp / "undated")))
    assert gdal.Open(res.class_raster).GetMetadataItem("TM_DATE") is None
    r = run_cli(["segment", raster, "--model", model, "--out", str(tmp / "cli"), "--date", "2019"])
    assert r.returncode == 0, r.stderr
    assert gdal.Open(str(tmp / "cli" / "r_classes.tif")).GetMetadataItem("TM_DATE") == "2019"
    r = run_cli(["segment", raster, "--model", model, "--out", str(tmp / "cli2"), "--date", "2019-02-30"])
    assert r.returncode == 2 and r.stderr.startswith("error: --date: ") and "Traceback" not in r.stderr
