"""The Tailings Mapper Processing provider: "Segment tailings / mining components", "Train a model
from polygons", "Change map between years", "Batch over facilities"."""
from qgis.core import QgsProcessingProvider

from ..qgis_glue.icons import icon
from .batch_algorithm import BatchAlgorithm
from .change_algorithm import ChangeAlgorithm
from .fit_algorithm import FitAlgorithm
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
        self.addAlgorithm(FitAlgorithm())
        self.addAlgorithm(ChangeAlgorithm())
        self.addAlgorithm(BatchAlgorithm())
