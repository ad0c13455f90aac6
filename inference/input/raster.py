"""Opening input rasters with GDAL: checks, ground sample distance, Sentinel-2 folders.

Only GDAL's Python bindings are used: they ship with every QGIS, rasterio does not.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from osgeo import gdal, osr

from .. import provenance
from .band_names import band_names
from ..errors import InputError, TailingsError, first_line
from ..areas import metres_per_degree
from ..grid import Grid

gdal.UseExceptions()
osr.UseExceptions()

# WGS84 ellipsoid
@dataclass(frozen=True)
class RasterInfo:
    path: str                 # what GDAL opens (a file, or the XML text of a VRT we built)
    label: str                # the user's input as given
    width: int
    height: int
    count: int
    geotransform: Tuple[float, ...]
    wkt: str
    descriptions: List[str]         # what names each band (band_names: description, metadata, VRT source, file name)
    nodata: List[Optional[float]]
    dtypes: List[str]
    scales: List[Optional[float]]   # declared DN->physical scale per band (None = not declared)
    offsets: List[Optional[float]]
    geographic: bool
    gsd_m: Tuple[float, float]      # (x, y) pixel size in metres at the raster centre
    band_files: Optional[Tuple[str, ...]] = None  # for Sentinel-2 folders: the file of each band
    name_sources: Tuple[str, ...] = ()   # where each band's name was read ("" when nowhere)
    product: Optional[object] = None     # products.Product: what the product metadata says
    block_size: Tuple[int, int] = (256, 256)   # band 1's GDAL block (what a read decodes at once)
    pixel_interleaved: bool = False      # every band's values in each block (one read decodes them all)

    @property
    def band_bytes(self) -> Tuple[int, ...]:
        """Bytes per pixel of each band."""
        return tuple(gdal.GetDataTypeSize(gdal.GetDataTypeByName(d)) // 8 for d in self.dtypes)

    @property
    def grid(self) -> Grid:
        """Its grid (geotransform arithmetic: :class:`grid.Grid`)."""
        return Grid(self.geotransform, self.width, self.height, self.wkt, self.label)

    @property
    def srs(self) -> osr.SpatialReference:
        s = osr.SpatialReference()
        s.ImportFromWkt(self.wkt)
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return s


def open_dataset(path: str, label: Optional[str] = None) -> gdal.Dataset:
    try:
        ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as e:
        raise InputError("cannot open %s as a raster: %s" % (label or path, first_line(e))) from None
    if ds is None:
        raise InputError("cannot open %s as a raster" % (label or path))
    return ds


def open_input(input_path: str, calibration: Optional[str] = None) -> RasterInfo:
    """The input as the engine reads it, with what its product metadata says (``products``): a
    Sentinel-2 SAFE folder or zip, or a folder of band files (stacked on 10 m: ``RasterInfo.path``
    is then the VRT's XML text, ``band_files`` its files), a GF-6 delivery with its XML, or any
    raster file."""
    from .products import gf6, sentinel2
    safe = sentinel2.find_safe(input_path)
    if safe is not None:
        xml, files, product = sentinel2.open_safe(safe[0], safe[1], input_path)
        return replace(inspect(xml, label=input_path, band_files=files), product=product)
    if os.path.isdir(input_path):
        xml, files, product = sentinel2.open_band_folder(input_path)
        return replace(inspect(xml, label=input_path, band_files=files), product=product)
    if not os.path.exists(input_path):
        raise InputError("input not found: %s" % input_path)
    info = inspect(input_path)
    product = gf6.read_product(input_path, info.count, calibration)
    if product is None:
        return info
    info = replace(info, product=product)
    if len(product.band_names) == info.count and not any(info.name_sources):
        info = replace(info, descriptions=list(product.band_names), name_sources=("product metadata",) * info.count)
    return info


def is_vrt_xml(path: str) -> bool:
    return path.lstrip().startswith("<VRTDataset")


def _declared_scale(ds, b) -> Tuple[Optional[float], Optional[float]]:
    s, o = b.GetScale(), b.GetOffset()
    if s not in (None, 1.0) or o not in (None, 0.0):
        return (s if s is not None else 1.0), (o if o is not None else 0.0)
    for md in (b.GetMetadata() or {}, ds.GetMetadata() or {}):
        for key in ("SCALE", "scale_factor", "SCALE_FACTOR"):
            if key in md:
                off = next((md[ok] for ok in ("OFFSET", "add_offset", "ADD_OFFSET") if ok in md), 0.0)
                return _float(md[key]), _float(off)   # text: nan, which the run refuses when it reads it
    return None, None


def _float(text) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def inspect(path: str, label: Optional[str] = None, band_files=None) -> RasterInfo:
    """Open and check a raster; raise :class:`InputError` for what the engine cannot use."""
    ds = open_dataset(path, label)
    try:
        if ds.RasterCount == 0:
            raise InputError("%s has no raster bands" % (label or path))
        gt = ds.GetGeoTransform(can_return_null=True)
        wkt = ds.GetProjection()
        if not wkt or gt is None:
            raise InputError("%s has no coordinate reference system or georeferencing; assign a CRS "
                             "(e.g. with gdal_edit.py -a_srs or QGIS's Assign Projection) first" % (label or path))
        if gt[2] != 0 or gt[4] != 0:
            raise InputError("%s is a rotated raster; warp it to a north-up grid first (gdalwarp)" % (label or path))
        srs = osr.SpatialReference()
        srs.ImportFromWkt(wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        descriptions, name_sources = band_names(ds, path)
        nodata, dtypes, scales, offsets = [], [], [], []
        for i in range(1, ds.RasterCount + 1):
            b = ds.GetRasterBand(i)
            nodata.append(b.GetNoDataValue())
            dtypes.append(gdal.GetDataTypeName(b.DataType))
            s, o = _declared_scale(ds, b)
            scales.append(s)
            offsets.append(o)
        info = RasterInfo(path=path, label=label or path, width=ds.RasterXSize, height=ds.RasterYSize,
                          count=ds.RasterCount, geotransform=tuple(gt), wkt=wkt, descriptions=descriptions,
                          nodata=nodata, dtypes=dtypes, scales=scales, offsets=offsets,
                          geographic=bool(srs.IsGeographic()), gsd_m=(0.0, 0.0),
                          band_files=tuple(band_files) if band_files else None,
                          name_sources=tuple(name_sources),
                          block_size=tuple(ds.GetRasterBand(1).GetBlockSize()),
                          pixel_interleaved=ds.GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE") == "PIXEL")
        return replace(info, gsd_m=pixel_size_m(info))
    finally:
        ds = None


def pixel_size_m(info: RasterInfo, row: Optional[float] = None) -> Tuple[float, float]:
    """Pixel size in metres: CRS units for projected CRSs, ellipsoidal for geographic ones
    (at ``row``, default the centre row)."""
    grid = info.grid
    (sx, sy), srs = grid.pixel_size, info.srs
    if srs.IsGeographic():
        lat = grid.xy(0, info.height / 2.0 if row is None else row)[1]
        mx, my = metres_per_degree(lat)
        return sx * mx, sy * my
    unit = srs.GetLinearUnits() or 1.0
    return sx * unit, sy * unit


def _pixel_areas_m2(info: RasterInfo) -> List[float]:
    """Pixel areas at the centres of the first and last rows (and on the equator when the raster
    crosses it).  (At a row's edge on a pole a pixel would have no area.)"""
    if not info.geographic:
        x, y = info.gsd_m
        return [x * y]
    rows = [0.5, max(0.5, info.height - 0.5)]
    grid = info.grid
    top, bottom = grid.xy(0, 0)[1], grid.xy(0, info.height)[1]
    if (top > 0) != (bottom > 0):   # (crosses the equator: at the row of latitude 0)
        rows.append(grid.pixel_of(grid.gt[0], 0.0)[1])
    return [x * y for x, y in (pixel_size_m(info, r) for r in rows)]


def min_pixel_area_m2(info: RasterInfo) -> float:
    """The smallest pixel area over the raster (geographic CRSs: in the row nearest a pole)."""
    return min(_pixel_areas_m2(info))


def max_pixel_area_m2(info: RasterInfo) -> float:
    """The largest pixel area over the raster (geographic CRSs: in the row nearest the equator)."""
    return max(_pixel_areas_m2(info))


def scene_date(path: str) -> Optional[str]:
    """A scene's acquisition date (YYYY[-MM[-DD]]): what its product says, else the date a run
    recorded in it (TM_DATE), else a date in its name (YYYYMMDD, YYYY-MM-DD, or a lone year)."""
    import re
    try:
        r = open_input(path)
        if r.product is not None and r.product.date:
            return r.product.date
        if not r.band_files and os.path.isfile(path):
            ds = gdal.Open(path)
            recorded = (provenance.read(ds.GetMetadata()).date or "").strip() if ds is not None else ""
            ds = None
            if re.fullmatch(r"(19|20)\d{2}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?", recorded):
                return recorded
    except (TailingsError, RuntimeError, OSError):   # not a product the engine reads: its name may say
        pass
    name = os.path.basename(path.rstrip("/"))
    m = re.search(r"(19|20)\d{2}[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])", name)
    if m:
        d = re.sub(r"[-_]", "", m.group(0))
        return "%s-%s-%s" % (d[:4], d[4:6], d[6:8])
    m = re.search(r"(?<!\d)(19|20)\d{2}(?!\d)", name)
    return m.group(0) if m else None
