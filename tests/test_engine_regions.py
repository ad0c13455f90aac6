"""The banded sieve (bounded memory) gives exactly GDAL's global sieve on binary rasters."""
import numpy as np
import pytest
from osgeo import gdal

from inference.vectorize import sieve_in_bands


def _mem(a):
    d = gdal.GetDriverByName("MEM").Create("", a.shape[1], a.shape[0], 1, gdal.GDT_Byte)
    b = d.GetRasterBand(1)
    b.SetNoDataValue(255)
    b.WriteArray(a)
    return d


@pytest.mark.parametrize("seed,thr,rows", [(0, 5, 100), (1, 20, 64), (2, 60, 100), (3, 9, 17)])
def test_banded_sieve_equals_global(seed, thr, rows):
    rng = np.random.default_rng(seed)
    a = (rng.random((600, 300)) > 0.55).astype(np.uint8)
    a[rng.random(a.shape) < 0.01] = 255
    d1 = _mem(a)
    b1 = d1.GetRasterBand(1)
    gdal.SieveFilter(b1, b1.GetMaskBand(), b1, thr, 4)
    d2 = _mem(a)
    sieve_in_bands(d2.GetRasterBand(1), thr, rows=rows)
    got, want = d2.GetRasterBand(1).ReadAsArray(), b1.ReadAsArray()
    assert (got != a).any()  # the sieve did something
    assert (got == 255).sum() == (a == 255).sum()  # nodata untouched
    np.testing.assert_array_equal(got, want)
