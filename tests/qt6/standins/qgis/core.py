"""Stand-in for QGIS 4's ``qgis.core``: the classes the plugin imports, with QGIS 4's names, signatures
and enums (scoped only).  What the suite does not exercise is left out, so that a new use shows up as an
ImportError here rather than passing unchecked."""
import os
import tempfile
from enum import IntEnum, IntFlag

from PyQt6.QtCore import QObject, QSettings, pyqtSignal
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import QApplication

from ._layers import (QgsCoordinateReferenceSystem, QgsLayerTreeGroup, QgsLayerTreeLayer,  # noqa: F401
                      QgsMapLayer, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer)
from ._processing import *  # noqa: F401,F403
from ._processing import QgsProcessingRegistry
from ._qgis import Qgis, need

__all__ = None  # (everything public)
del __all__


class QgsMessageLog(QObject):
    messages = []   # (message, tag, level): what the plugin logged

    @staticmethod
    def logMessage(message, tag="", level=Qgis.MessageLevel.Warning, notifyUser=True):  # noqa: N802,N803
        need(level, Qgis.MessageLevel, "QgsMessageLog.logMessage level")
        QgsMessageLog.messages.append((str(message), str(tag), level))


class QgsTask(QObject):
    class Flag(IntFlag):
        CanCancel = 1 << 1
        CancelWithoutPrompt = 1 << 2
        Hidden = 1 << 3
        Silent = 1 << 4
        AllFlags = (1 << 1) | (1 << 2)

    Flags = Flag

    class TaskStatus(IntEnum):
        Queued = 0
        OnHold = 1
        Running = 2
        Complete = 3
        Terminated = 4

    progressChanged = pyqtSignal(float)
    statusChanged = pyqtSignal(int)
    begun = pyqtSignal()
    taskCompleted = pyqtSignal()
    taskTerminated = pyqtSignal()

    def __init__(self, description="", flags=Flag.AllFlags):
        super().__init__()
        self._description = description
        self._flags = need(flags, QgsTask.Flag, "QgsTask flags")
        self._cancelled, self._progress = False, 0.0

    def description(self):
        return self._description

    def cancel(self):
        self._cancelled = True

    def isCanceled(self):  # noqa: N802
        return self._cancelled

    def setProgress(self, progress):  # noqa: N802
        self._progress = float(progress)
        self.progressChanged.emit(self._progress)

    def progress(self):
        return self._progress


class QgsTaskManager(QObject):
    def __init__(self):
        super().__init__()
        self.tasks = []

    def addTask(self, task, priority=0):  # noqa: N802
        if not isinstance(task, QgsTask):
            raise TypeError("addTask(): a QgsTask expected")
        self.tasks.append(task)   # queued, never run: the suite constructs, it does not execute
        return len(self.tasks)


class QgsApplication(QApplication):
    _registry = None
    _tasks = None

    def __init__(self, argv, GUIenabled=True, profileFolder="", platformName="desktop"):  # noqa: N803
        super().__init__(list(argv))

    @staticmethod
    def processingRegistry():  # noqa: N802
        if QgsApplication._registry is None:
            QgsApplication._registry = QgsProcessingRegistry()
        return QgsApplication._registry

    @staticmethod
    def taskManager():  # noqa: N802
        if QgsApplication._tasks is None:
            QgsApplication._tasks = QgsTaskManager()
        return QgsApplication._tasks

    @staticmethod
    def getThemeIcon(name, fillColor=None, strokeColor=None):  # noqa: N802,N803
        if not isinstance(name, str):
            raise TypeError("getThemeIcon(): a str expected")
        return QIcon()

    @staticmethod
    def qgisSettingsDirPath():  # noqa: N802
        """The profile folder (QGIS4/profiles/default on QGIS 4): a temporary folder here."""
        return os.environ.get("QT6_SUITE_PROFILE") or tempfile.gettempdir()


class QgsSettings(QSettings):
    """QgsSettings is a QSettings; here one ini file of the suite's own."""

    def __init__(self, *args):
        super().__init__(os.environ.get("QT6_SUITE_SETTINGS") or os.path.join(tempfile.gettempdir(), "qt6suite.ini"),
                         QSettings.Format.IniFormat)


class QgsMapLayerProxyModel:
    Filter = Qgis.LayerFilter      # QGIS 4 keeps this alias; Filters is the flags type
    Filters = Qgis.LayerFilter


class QgsFieldProxyModel:
    class Filter(IntFlag):
        String = 1
        Int = 2
        LongLong = 4
        Double = 8
        Numeric = 2 | 4 | 8
        Date = 16
        Time = 32
        HideReadOnly = 64
        DateTime = 128
        Binary = 256
        Boolean = 512
        AllTypes = 1 | 2 | 4 | 8 | 16 | 32 | 128 | 256 | 512

    Filters = Filter


class QgsWkbTypes:
    GeometryType = Qgis.GeometryType


class QgsProviderRegistry:
    _instance = None

    @staticmethod
    def instance():
        if QgsProviderRegistry._instance is None:
            QgsProviderRegistry._instance = QgsProviderRegistry()
        return QgsProviderRegistry._instance

    def decodeUri(self, providerKey, uri):  # noqa: N802,N803
        return {"path": uri.split("|")[0]}


class QgsCoordinateTransformContext:
    pass


class QgsCoordinateTransform:
    def __init__(self, source=None, destination=None, context=None):
        self._s, self._d = source, destination

    def transformBoundingBox(self, rect, direction=None, handle180Crossover=False):  # noqa: N802,N803
        return rect


class QgsGeometry:
    def __init__(self, other=None):
        self._wkt = getattr(other, "_wkt", "")

    @staticmethod
    def fromWkt(wkt):  # noqa: N802
        g = QgsGeometry()
        g._wkt = wkt
        return g

    def asWkt(self, precision=17):  # noqa: N802
        return self._wkt

    def isNull(self):  # noqa: N802
        return not self._wkt

    def isEmpty(self):  # noqa: N802
        return not self._wkt


class QgsRasterFileWriter:
    @staticmethod
    def driverForExtension(extension):  # noqa: N802
        return {"tif": "GTiff", "tiff": "GTiff", "vrt": "VRT"}.get(extension.lower().lstrip("."), "")


class QgsReadWriteContext:
    pass


class QgsVectorFileWriter:
    class WriterError(IntEnum):
        NoError = 0
        ErrDriverNotFound = 1
        ErrCreateDataSource = 2
        ErrCreateLayer = 3
        ErrAttributeTypeUnsupported = 4
        ErrAttributeCreationFailed = 5
        ErrProjection = 6
        ErrFeatureWriteFailed = 7
        ErrInvalidLayer = 8
        ErrSavingMetadata = 9
        Canceled = 10

    class ActionOnExistingFile(IntEnum):
        CreateOrOverwriteFile = 0
        CreateOrOverwriteLayer = 1
        AppendToLayerNoNewFields = 2
        AppendToLayerAddFields = 3

    class SaveVectorOptions:
        def __init__(self):
            self.driverName, self.layerName, self.fileEncoding = "GPKG", "", "UTF-8"
            self.onlySelectedFeatures = False
            self.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile


class QgsFeatureRequest:
    class Flag(IntFlag):     # (QGIS 4: Qgis.FeatureRequestFlag, reached through the class as here)
        NoFlags = 0
        NoGeometry = 1
        SubsetOfAttributes = 2
        ExactIntersect = 4

    def __init__(self):
        self._flags = QgsFeatureRequest.Flag.NoFlags

    def setFlags(self, flags):  # noqa: N802
        self._flags = flags
        return self

    def flags(self):
        return self._flags


class QgsField:
    def __init__(self, name="", type=None, typeName="", len=0, prec=0):  # noqa: A002,N803
        self._name, self._type = name, type

    def name(self):
        return self._name


class QgsFillSymbol:
    @staticmethod
    def createSimple(properties):  # noqa: N802
        return QgsFillSymbol()


class QgsRuleBasedRenderer:
    class Rule:
        def __init__(self, symbol, maximumScale=0, minimumScale=0, filterExp="", label="", description="",  # noqa: N803
                     elseRule=False):  # noqa: N803
            self._children, self._label = [], label

        def appendChild(self, rule):  # noqa: N802
            self._children.append(rule)

        def children(self):
            return list(self._children)

    def __init__(self, root):
        self._root = root

    def rootRule(self):  # noqa: N802
        return self._root

    def clone(self):
        return QgsRuleBasedRenderer(self._root)

    @staticmethod
    def convertFromRenderer(renderer, layer=None):  # noqa: N802
        return QgsRuleBasedRenderer(QgsRuleBasedRenderer.Rule(None))


class QgsVectorDataProvider:
    class Capability(IntFlag):   # (QGIS 4: Qgis.VectorProviderCapability)
        NoCapabilities = 0
        AddFeatures = 1
        DeleteFeatures = 2
        ChangeAttributeValues = 4
        AddAttributes = 8
