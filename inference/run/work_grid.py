"""The working grid: the raster as the network sees it (the plan's window and bands, warped to the
working GSD when the plan resamples; the cloud mask's classification on the same grid)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from osgeo import gdal

from ..input import raster as rasterlib
from ..areas import metres_per_degree
from ..errors import InputError, first_line
from ..grid import Grid


@dataclass
class WorkGrid:
    """The raster as the network sees it: the window of the bands the model reads, on the
    model's GSD when the source's differs (``ds`` is open for reading)."""
    ds: gdal.Dataset
    width: int
    height: int
    gt: Tuple[float, ...]
    wkt: str
    nodata: List[Optional[float]]
    floating: bool
    view_gt: Tuple[float, ...]   # the window on the source grid
    view_size: Tuple[int, int]
    mask_ds: Optional[gdal.Dataset] = None   # the mask's classification on this grid (nearest)
    mask_lut: Optional[np.ndarray] = None    # its values -> mask classes (masks.CLOUD...; 0: none)

    @property
    def grid(self) -> Grid:
        """Its grid (geotransform arithmetic: :class:`~inference.grid.Grid`)."""
        return Grid(self.gt, self.width, self.height, self.wkt)


def open_grid(p, workdir: str, mask_raster: Optional[str] = None) -> WorkGrid:
    """Virtual rasters in ``workdir``: the window and bands of the source (``view.vrt``), warped
    to the model's GSD when the plan resamples (``work.vrt``); ``mask_raster`` (a scene
    classification, ``p.mask``'s values) warped onto that grid (``mask.vrt``, nearest)."""
    src = p.raster.path
    if rasterlib.is_vrt_xml(src):  # a Sentinel-2 folder's stack, built by the plan
        path = os.path.join(workdir, "s2_stack.vrt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(src)
        src = path
    c0, r0, w0, h0 = p.window
    view = os.path.join(workdir, "view.vrt")
    gdal.Translate(view, src, format="VRT", bandList=list(p.mapping.source_bands), srcWin=[c0, r0, w0, h0])
    view_ds = gdal.Open(view)
    view_gt, wkt = view_ds.GetGeoTransform(), view_ds.GetProjection()
    work = view
    if p.resample:
        gsd = p.work_gsd_m
        gt = view_gt
        if p.raster.geographic:
            mx, my = metres_per_degree(Grid(gt, w0, h0).xy(0, h0 / 2.0)[1])
            xres, yres = gsd / mx, gsd / my
        else:
            unit = p.raster.srs.GetLinearUnits() or 1.0
            xres = yres = gsd / unit
        work = os.path.join(workdir, "work.vrt")
        # Whole working pixels that cover the window (GDAL would round the size to the nearest
        # pixel and drop the last source rows/columns when they fill less than half of one).
        nx = max(1, int(np.ceil(w0 * abs(gt[1]) / xres - 1e-6)))
        ny = max(1, int(np.ceil(h0 * abs(gt[5]) / yres - 1e-6)))
        gdal.Warp(work, view_ds, format="VRT", xRes=xres, yRes=yres,
                  outputBounds=[gt[0], gt[3] - ny * yres, gt[0] + nx * xres, gt[3]],
                  resampleAlg="average" if gsd > p.src_gsd_m else "bilinear")
    view_ds = None
    with p.gdal.here():   # (GeoTIFF sources take GDAL_NUM_THREADS when opened)
        ds = gdal.Open(work)
    nb = ds.RasterCount
    floating = any(ds.GetRasterBand(i + 1).DataType in (gdal.GDT_Float32, gdal.GDT_Float64) for i in range(nb))
    grid = WorkGrid(ds, ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(), wkt,
                    [ds.GetRasterBand(i + 1).GetNoDataValue() for i in range(nb)], floating, view_gt, (w0, h0))
    if mask_raster is not None:
        from ..input.masks import lookup
        bounds = list(grid.grid.bounds)
        mpath, first = os.path.join(workdir, "mask.vrt"), os.path.join(workdir, "mask_band1.vrt")
        try:
            gdal.Translate(first, mask_raster, format="VRT", bandList=[1])
            gdal.Warp(mpath, first, format="VRT", outputBounds=bounds, width=grid.width, height=grid.height,
                      dstSRS=wkt, resampleAlg="near", dstNodata=0, warpOptions=["SOURCE_EXTRA=2"])
            grid.mask_ds = gdal.Open(mpath)
        except RuntimeError as e:
            raise InputError("cannot read the scene classification %s: %s" % (mask_raster, first_line(e))) from None
        grid.mask_lut = lookup(p.mask.table)
    return grid
