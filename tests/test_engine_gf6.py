"""Engine: GF-6 PMS / WFV deliveries (GeoTIFF + XML) read as top-of-atmosphere reflectance."""
import math
import os

import numpy as np
import pytest
from osgeo import gdal, osr

from engine_helpers import pixel_model
from inference import InputError, SegmentOptions, plan

XML = """<?xml version="1.0" encoding="UTF-8" ?>
<ProductMetaData>
    <SatelliteID>GF6</SatelliteID>
    <SensorID>{sensor}</SensorID>
    <ReceiveStationID>MYC</ReceiveStationID>
    <OrbitID>20356</OrbitID>
    <ProduceType>STANDARD</ProduceType>
    <SceneID>5730316</SceneID>
    <ProductID>1120000001</ProductID>
    <ProductLevel>LEVEL1A</ProductLevel>
    <ProductQuality>PASSED</ProductQuality>
    <ProductFormat>GEOTIFF</ProductFormat>
    <ProduceTime>2021-07-16 02:11:45</ProduceTime>
    <Bands>{bands}</Bands>
    <ScenePath>0</ScenePath>
    <SceneRow>0</SceneRow>
    <SatPath>0</SatPath>
    <SatRow>0</SatRow>
    <SceneCount>1</SceneCount>
    <SceneShift>1</SceneShift>
    <StartTime>2021-07-15 11:02:25</StartTime>
    <EndTime>2021-07-15 11:02:35</EndTime>
    <CenterTime>2021-07-15 11:02:30</CenterTime>
    <ImageGSD>8</ImageGSD>
    <WidthInPixels>64</WidthInPixels>
    <HeightInPixels>64</HeightInPixels>
    <WidthInMeters>512</WidthInMeters>
    <HeightInMeters>512</HeightInMeters>
    <CloudPercent>0</CloudPercent>
    <RollViewingAngle>0.5</RollViewingAngle>
    <PitchViewingAngle>0.0</PitchViewingAngle>
    <RollSatelliteAngle>0.5</RollSatelliteAngle>
    <PitchSatelliteAngle>0.0</PitchSatelliteAngle>
    <YawSatelliteAngle>0.0</YawSatelliteAngle>
    <SolarAzimuth>140.2</SolarAzimuth>
    <SolarZenith>{zenith}</SolarZenith>
    <SatelliteAzimuth>100.1</SatelliteAzimuth>
    <SatelliteZenith>2.3</SatelliteZenith>
    <GainMode>G0,G0,G0,G0</GainMode>
    <IntegrationTime>0.0008</IntegrationTime>
    <IntegrationLevel>S3,S3,S3,S3</IntegrationLevel>
    <MapProjection>UTM</MapProjection>
    <EarthEllipsoid>WGS84</EarthEllipsoid>
    <ZoneNo>50</ZoneNo>
    <ResamplingKernel>CC</ResamplingKernel>
    <HeightMode>MEAN</HeightMode>
    <MtfCorrection>LAB</MtfCorrection>
    <RelativeCorrectionData></RelativeCorrectionData>
    <TopLeftLatitude>39.903</TopLeftLatitude>
    <TopLeftLongitude>116.497</TopLeftLongitude>
    <TopRightLatitude>39.903</TopRightLatitude>
    <TopRightLongitude>116.503</TopRightLongitude>
    <BottomRightLatitude>39.897</BottomRightLatitude>
    <BottomRightLongitude>116.503</BottomRightLongitude>
    <BottomLeftLatitude>39.897</BottomLeftLatitude>
    <BottomLeftLongitude>116.497</BottomLeftLongitude>
    <CenterLatitude>39.9</CenterLatitude>
    <CenterLongitude>116.5</CenterLongitude>
</ProductMetaData>
"""
GAINS_2021 = {"PMS": [0.0821, 0.0671, 0.0518, 0.0310]}
ESUN = {"PMS": [1945.50, 1832.38, 1558.18, 1090.77]}


def _delivery(tmp_path, sensor="PMS", zenith=25.31, nb=4, xml=True):
    stem = str(tmp_path / ("GF6_%s_E116.5_N39.9_20210715_L1A1120000001-MUX" % sensor))
    ds = gdal.GetDriverByName("GTiff").Create(stem + ".tiff", 64, 64, nb, gdal.GDT_UInt16)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32650)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((443000.0, 8.0, 0, 4417000.0, 0, -8.0))
    for i in range(nb):
        ds.GetRasterBand(i + 1).WriteArray(np.full((64, 64), 400 + 50 * i, np.uint16))
    ds = None
    if xml:
        with open(stem + ".xml", "w") as f:
            f.write(XML.format(sensor=sensor, zenith=zenith, bands=",".join(str(i + 1) for i in range(nb))))
    return stem + ".tiff"


def _by_hand(band, dn, zenith=25.31, doy=196):
    """rho = pi L d^2 / (ESUN cos theta), d from the textbook formula (not the engine's)."""
    d = 1 - 0.01673 * math.cos(0.0172 * (doy - 4))
    return math.pi * GAINS_2021["PMS"][band] * dn * d * d / (ESUN["PMS"][band] * math.cos(math.radians(zenith)))


@pytest.fixture
def model(tmp_path):
    return pixel_model(str(tmp_path / "m.onnx"), [10, 0, 0], -2.0)   # reads S2:B04, B03, B02 (red, green, blue)


def test_pms_delivery_is_top_of_atmosphere_reflectance(tmp_path, model):
    raster = _delivery(tmp_path)
    p = plan(raster, model, SegmentOptions(device="cpu"))
    prod = p.raster.product
    assert prod.sensor == "GF6 PMS" and prod.date == "2021-07-15"
    assert p.raster.descriptions == ["GF6-PMS:B1", "GF6-PMS:B2", "GF6-PMS:B3", "GF6-PMS:B4"]
    assert p.mapping.source_bands == [3, 2, 1]        # red, green, blue by common name
    for s in p.scalings:                              # DN 400 + 50 (band - 1)
        dn = 400 + 50 * (s.band - 1)
        assert dn * s.scale + s.offset == pytest.approx(_by_hand(s.band - 1, dn), rel=0.01), s
        assert "CRESDA's 2021 coefficients" in s.why
    assert p.options.date == "2021-07-15"


def test_an_elevation_given_as_zenith_is_noticed(tmp_path, model):
    raster = _delivery(tmp_path, zenith=90 - 25.31)   # the sun's elevation under the zenith's name
    p = plan(raster, model, SegmentOptions(device="cpu"))
    assert any("is the sun's elevation" in n for n in p.notes), p.notes
    s = p.scalings[0]
    assert 450 * s.scale == pytest.approx(_by_hand(2, 450), rel=0.01)


def test_gf6_without_its_xml_and_bad_deliveries(tmp_path, model):
    (tmp_path / "u").mkdir()
    unknown = _delivery(tmp_path / "u", sensor="MSS")
    with pytest.raises(InputError, match="GF-6 sensor 'MSS' is not one Tailings Mapper knows"):
        plan(unknown, model, SegmentOptions(device="cpu"))
    (tmp_path / "n").mkdir()
    bare = _delivery(tmp_path / "n", xml=False)
    with pytest.raises(InputError, match="has no delivery XML"):
        plan(bare, model, SegmentOptions(device="cpu", preset="gf6-pms"))
    p = plan(bare, model, SegmentOptions(device="cpu", preset="gf6-pms", date="2021-07-15"))
    assert any("without its delivery XML" in w and "10:30" in w for w in p.warnings), p.warnings
    # the assumed sun at 10:30 local solar time is close to the delivery's on this date and place
    assert p.scalings[0].scale * 450 == pytest.approx(_by_hand(2, 450), rel=0.05)
    # a year the table does not have: the last one it has, said
    later = plan(bare, model, SegmentOptions(device="cpu", preset="gf6-pms", date="2025-07-15"))
    assert any("no GF-6 PMS calibration for 2025" in w and "2022" in w for w in later.warnings)
