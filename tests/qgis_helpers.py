"""Small rasters, tiny ONNX models and waiting helpers for the plugin (QGIS) tests."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Optional, Sequence

import numpy as np


def tiny_model(path: str, bands: Sequence[str] = ("S2:B04", "S2:B03", "S2:B02"), tile: int = 64,
               overlap: int = 8, gsd: float = 10.0, classes=("background", "tailings"),
               min_area_ha: float = 0.0, unlike_everything: bool = False) -> str:
    """A 1x1 convolution + sigmoid: tailings where the first input band's reflectance > 0.5.
    ``unlike_everything``: with statistics of "training data" (of its ``logits`` tensor) that no
    raster of these tests is like: every tile is unreliable, every scene unlike them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tailings_mapper.inference.model.metadata import ClassInfo, ModelInfo
    from tailings_mapper.inference.model.formats import write_metadata
    c = len(bands)
    w = np.zeros((1, c, 1, 1), np.float32)
    w[0, 0, 0, 0] = 20.0
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([-10.0], np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    colours = ["#000000", "#e6550d", "#3182bd", "#31a354"]
    info = ModelInfo(name=os.path.splitext(os.path.basename(path))[0], bands=list(bands), gsd_m=gsd,
                     tile_size=tile, tile_overlap=overlap,
                     classes=[ClassInfo(i, n, colours[i % 4]) for i, n in enumerate(classes)],
                     task="binary", units="reflectance", scale=[0.0001] * c, offset=[0.0] * c,
                     mean=[0.0] * c, std=[1.0] * c, activation="none", threshold=0.5, min_area_ha=min_area_ha,
                     description="test model: red reflectance > 0.5")
    if unlike_everything:
        info = dataclasses.replace(info, extra={"ood": {
            "feature": "logits", "mean": [100.0], "std": [1.0], "components": [[1.0]], "variances": [1.0],
            "maha_q95": 1.0, "res_q95": 0.0, "reflectance_low": [0.0] * c, "reflectance_high": [1.0] * c,
            "out_of_range_q95": 0.01, "tiles": 10}})
    write_metadata(model, info)
    onnx.save(model, path)
    return path


def s2_raster(path: str, size: int = 300, descriptions: Optional[Sequence[str]] = ("B4", "B3", "B2"),
              epsg: int = 32723, squares=((40, 40, 80),), pixel: float = 10.0) -> str:
    """A uint16 GeoTIFF, DN 1000 everywhere and DN 8000 in the red band inside ``squares``
    (row, col, side): what the tiny model calls tailings."""
    from osgeo import gdal, osr
    n = len(descriptions) if descriptions else 3
    ds = gdal.GetDriverByName("GTiff").Create(path, size, size, n, gdal.GDT_UInt16, options=["TILED=YES"])
    ds.SetGeoTransform((500000.0, pixel, 0, 7700000.0, 0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(n):
        arr = np.full((size, size), 1000 + 100 * i, np.uint16)
        if i == 0:
            for r, c, s in squares:
                arr[r:r + s, c:c + s] = 8000
        b = ds.GetRasterBand(i + 1)
        b.WriteArray(arr)
        b.SetNoDataValue(0)
        if descriptions:
            b.SetDescription(descriptions[i])
    ds.FlushCache()
    ds = None
    return path


def wait_for(predicate, timeout: float = 60.0, step: float = 0.02) -> bool:
    """Process Qt events until ``predicate()`` is true or ``timeout`` seconds pass."""
    from qgis.PyQt.QtCore import QCoreApplication
    end = time.time() + timeout
    while time.time() < end:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(step)
    QCoreApplication.processEvents()
    return predicate()


def wait_task(task, timeout: float = 120.0):
    """Wait until a SegmentTask has emitted ``done``; returns (ok, outcome)."""
    assert wait_for(lambda: task.ok is not None, timeout), "task did not finish in %s s" % timeout
    return task.ok, task.outcome


@contextlib.contextmanager
def plugin_env(tmp_path, monkeypatch, qgis_iface, model: str, out_dir: Optional[str] = None,
               panel_visible: Optional[bool] = None):
    """Clean plugin settings around a test: a user models folder (yielded, as a path) named by
    ``TAILINGS_MAPPER_MODELS``, the chosen model, an output folder (default ``tmp_path/out``); then
    the settings reset and the project emptied."""
    from qgis.core import QgsProject
    from tailings_mapper.qgis_glue.settings import Settings
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("TAILINGS_MAPPER_MODELS", str(models))
    s = Settings()
    s.reset()
    s.set("model", model)
    s.set("out_dir", out_dir or str(tmp_path / "out"))
    if panel_visible is not None:
        s.set("panel_visible", panel_visible)
    qgis_iface.messageBar().clear_messages()
    try:
        yield models
    finally:
        s.reset()
        QgsProject.instance().removeAllMapLayers()
        QgsProject.instance().layerTreeRoot().removeAllChildren()


def panel_run_network(plugin, folder, squares):
    """The panel runs the shipped network without its veto (its veto leaves synthetic ground
    unflagged), loaded as a file, on bright ``squares`` of a 448 px scene in ``folder``:
    ``(the raster, the run's polygon layer)``."""
    from qgis.core import QgsProject, QgsRasterLayer
    from training.ship_veto import unvetoed
    raster = s2_raster(str(folder / "scene.tif"), size=448, squares=squares)
    lyr = QgsRasterLayer(raster, "scene")
    QgsProject.instance().addMapLayer(lyr)
    plugin.show_panel(True)
    plugin.dock.set_layer(lyr)
    assert plugin.dock.models.add_user_model(unvetoed("tailings", str(folder / "network.onnx")))
    task = plugin.dock.run()
    assert wait_for(lambda: task.ok is not None, 120) and task.ok, task.outcome
    return raster, [x for x in task.layers if x.customProperty("tailings_mapper/result") == "polygons"][0]


def processing_with_provider():
    """``(processing, registry)`` with the plugin's Processing provider registered (the caller
    removes it: ``registry.removeProvider(registry.providerById("tailings_mapper"))``)."""
    import processing
    from qgis.core import QgsApplication
    from tailings_mapper.processing_provider.provider import TailingsProvider
    reg = QgsApplication.processingRegistry()
    if reg.providerById("tailings_mapper") is None:
        reg.addProvider(TailingsProvider())
    return processing, reg


def recording_feedback():
    """A Processing feedback that keeps what an algorithm says: ``.info`` and ``.warn`` (lists)."""
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.info, self.warn = [], []

        def pushInfo(self, text):  # noqa: N802
            self.info.append(text)

        def pushWarning(self, text):  # noqa: N802
            self.warn.append(text)

    return Feedback()
