"""The Tailings Mapper Processing provider: later algorithms (training data export,
evaluation, change detection...) go here next to "Segment tailings / mining components"."""
from qgis.core import QgsProcessingProvider

from ..qgis_glue.icons import icon
from .segment_algorithm import SegmentAlgorithm


class TailingsProvider(QgsProcessingProvider):
    def id(self):
        return "tailings_mapper"

    def name(self):
        return "Tailings Mapper"

    def longName(self):  # noqa: N802
        return "Tailings Mapper: segmentation of mining tailings and other mining components"

    def icon(self):
        return icon()

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(SegmentAlgorithm())
