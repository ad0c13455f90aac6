"""Stand-in Processing classes with QGIS 4's constructor signatures (keyword names and order as in
src/core/processing/qgsprocessingparameters.h) and QGIS 4's enums only: a source type is a
``Qgis.ProcessingSourceType``, a number type a ``Qgis.ProcessingNumberParameterType``, a flag a
``Qgis.ProcessingParameterFlag``; an int or a QGIS 3 spelling is refused as PyQt6 refuses it."""
import sys
import tempfile

from ._qgis import Qgis, need

Source = Qgis.ProcessingSourceType
_MAX = sys.float_info.max


class QgsProcessing:
    TEMPORARY_OUTPUT = "TEMPORARY_OUTPUT"


class QgsProcessingException(Exception):
    pass


class QgsProcessingContext:
    def __init__(self):
        self._project = None

    def copyThreadSafeSettings(self, other):  # noqa: N802
        pass

    def setProject(self, project):  # noqa: N802
        self._project = project

    def project(self):
        return self._project


class QgsProcessingFeedback:
    def __init__(self, logFeedback=True):  # noqa: N803
        self.lines = []
        self._cancelled = False

    def pushInfo(self, text):  # noqa: N802
        self.lines.append(text)

    pushWarning = pushCommandInfo = pushDebugInfo = reportError = pushInfo

    def setProgress(self, value):  # noqa: N802
        pass

    def setProgressText(self, text):  # noqa: N802
        pass

    def isCanceled(self):  # noqa: N802
        return self._cancelled


class QgsProcessingUtils:
    @staticmethod
    def tempFolder(context=None):  # noqa: N802
        return tempfile.gettempdir()


class QgsProcessingParameterDefinition:
    def __init__(self, name, description="", defaultValue=None, optional=False, help=""):  # noqa: N803,A002
        if not isinstance(name, str) or not name:
            raise TypeError("a parameter needs a name")
        self._name, self._description, self._default = name, str(description), defaultValue
        self._flags = Qgis.ProcessingParameterFlag(Qgis.ProcessingParameterFlag.Optional if optional else 0)
        self._help = help

    def name(self):
        return self._name

    def description(self):
        return self._description

    def defaultValue(self):  # noqa: N802
        return self._default

    def flags(self):
        return self._flags

    def setFlags(self, flags):  # noqa: N802
        self._flags = need(flags, Qgis.ProcessingParameterFlag, "%s.setFlags" % type(self).__name__)

    def setHelp(self, text):  # noqa: N802
        self._help = str(text)

    def help(self):
        return self._help


class QgsProcessingDestinationParameter(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, optional=False, createByDefault=True):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        self._create = bool(createByDefault)


class QgsProcessingParameterBoolean(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, optional=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)


class QgsProcessingParameterString(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, multiLine=False, optional=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)


class QgsProcessingParameterNumber(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", type=Qgis.ProcessingNumberParameterType.Integer,  # noqa: A002
                 defaultValue=None, optional=False, minValue=-_MAX + 1, maxValue=_MAX):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        self._type = need(type, Qgis.ProcessingNumberParameterType, "QgsProcessingParameterNumber type")
        self._min, self._max = float(minValue), float(maxValue)

    def dataType(self):  # noqa: N802
        return self._type

    def setMinimum(self, value):  # noqa: N802
        self._min = float(value)

    def setMaximum(self, value):  # noqa: N802
        self._max = float(value)


class QgsProcessingParameterEnum(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", options=(), allowMultiple=False, defaultValue=None,  # noqa: N803
                 optional=False, usesStaticStrings=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        self._options = [str(o) for o in options]
        self._static = bool(usesStaticStrings)

    def options(self):
        return list(self._options)


class QgsProcessingParameterFile(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", behavior=Qgis.ProcessingFileParameterBehavior.File, extension="",
                 defaultValue=None, optional=False, fileFilter=""):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        self._behavior = need(behavior, Qgis.ProcessingFileParameterBehavior, "QgsProcessingParameterFile behavior")


class QgsProcessingParameterFeatureSource(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", types=(), defaultValue=None, optional=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        self._types = [need(t, Source, "QgsProcessingParameterFeatureSource types") for t in types]


class QgsProcessingParameterField(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, parentLayerParameterName="",  # noqa: N803
                 type=Qgis.ProcessingFieldParameterDataType.Any, allowMultiple=False, optional=False,  # noqa: A002
                 defaultToAllFields=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)
        need(type, Qgis.ProcessingFieldParameterDataType, "QgsProcessingParameterField type")
        self._parent = parentLayerParameterName


class QgsProcessingParameterMultipleLayers(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", layerType=Source.VectorAnyGeometry, defaultValue=None,  # noqa: N803
                 optional=False):
        super().__init__(name, description, defaultValue, optional)
        self._layer_type = need(layerType, Source, "QgsProcessingParameterMultipleLayers layerType")


class QgsProcessingParameterExtent(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, optional=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)


class QgsProcessingParameterRasterLayer(QgsProcessingParameterDefinition):
    def __init__(self, name, description="", defaultValue=None, optional=False):  # noqa: N803
        super().__init__(name, description, defaultValue, optional)


class QgsProcessingParameterFolderDestination(QgsProcessingDestinationParameter):
    pass


class QgsProcessingParameterRasterDestination(QgsProcessingDestinationParameter):
    pass


class QgsProcessingParameterFileDestination(QgsProcessingDestinationParameter):
    def __init__(self, name, description="", fileFilter="", defaultValue=None, optional=False,  # noqa: N803
                 createByDefault=True):  # noqa: N803
        super().__init__(name, description, defaultValue, optional, createByDefault)
        self._filter = str(fileFilter)


class QgsProcessingParameterVectorDestination(QgsProcessingDestinationParameter):
    def __init__(self, name, description="", type=Source.VectorAnyGeometry, defaultValue=None,  # noqa: A002
                 optional=False, createByDefault=True):  # noqa: N803
        super().__init__(name, description, defaultValue, optional, createByDefault)
        self._type = need(type, Source, "QgsProcessingParameterVectorDestination type")


class QgsProcessingOutputDefinition:
    def __init__(self, name, description=""):
        self._name, self._description = name, description

    def name(self):
        return self._name


class QgsProcessingOutputVectorLayer(QgsProcessingOutputDefinition):
    def __init__(self, name, description="", type=Source.VectorAnyGeometry):  # noqa: A002
        super().__init__(name, description)
        self._type = need(type, Source, "QgsProcessingOutputVectorLayer type")


class QgsProcessingOutputRasterLayer(QgsProcessingOutputDefinition):
    pass


class QgsProcessingOutputFile(QgsProcessingOutputDefinition):
    pass


class QgsProcessingOutputNumber(QgsProcessingOutputDefinition):
    pass


class QgsProcessingOutputString(QgsProcessingOutputDefinition):
    pass


class QgsProcessingLayerPostProcessorInterface:
    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        raise NotImplementedError


class QgsProcessingAlgorithm:
    def __init__(self):
        self._params, self._outputs = [], []
        self._provider = None

    def addParameter(self, definition, createOutput=True):  # noqa: N802,N803
        if not isinstance(definition, QgsProcessingParameterDefinition):
            raise TypeError("addParameter(): a QgsProcessingParameterDefinition expected, got %r" % (definition,))
        if any(p.name() == definition.name() for p in self._params):
            return False
        self._params.append(definition)
        return True

    def addOutput(self, definition):  # noqa: N802
        if not isinstance(definition, QgsProcessingOutputDefinition):
            raise TypeError("addOutput(): a QgsProcessingOutputDefinition expected, got %r" % (definition,))
        self._outputs.append(definition)
        return True

    def parameterDefinitions(self):  # noqa: N802
        return list(self._params)

    def outputDefinitions(self):  # noqa: N802
        return list(self._outputs)

    def initAlgorithm(self, configuration=None):  # noqa: N802
        raise NotImplementedError

    def initialize(self, configuration=None):
        self.initAlgorithm(configuration or {})

    def flags(self):
        return Qgis.ProcessingAlgorithmFlag.SupportsBatch | Qgis.ProcessingAlgorithmFlag.CanCancel

    def canExecute(self):  # noqa: N802
        return True, ""

    def checkParameterValues(self, parameters, context):  # noqa: N802
        return True, ""

    def provider(self):
        return self._provider


class QgsProcessingProvider:
    def __init__(self):
        self._algs = []

    def addAlgorithm(self, algorithm):  # noqa: N802
        if not isinstance(algorithm, QgsProcessingAlgorithm):
            raise TypeError("addAlgorithm(): a QgsProcessingAlgorithm expected")
        algorithm._provider = self
        algorithm.initialize({})
        self._algs.append(algorithm)
        return True

    def algorithms(self):
        return list(self._algs)

    def refreshAlgorithms(self):  # noqa: N802
        self._algs = []
        self.loadAlgorithms()

    def loadAlgorithms(self):  # noqa: N802
        raise NotImplementedError


class QgsProcessingRegistry:
    def __init__(self):
        self._providers = {}

    def addProvider(self, provider):  # noqa: N802
        if not isinstance(provider, QgsProcessingProvider):
            raise TypeError("addProvider(): a QgsProcessingProvider expected")
        self._providers[provider.id()] = provider
        provider.refreshAlgorithms()
        return True

    def removeProvider(self, provider):  # noqa: N802
        return self._providers.pop(provider.id() if not isinstance(provider, str) else provider, None) is not None

    def providerById(self, provider_id):  # noqa: N802
        return self._providers.get(provider_id)
