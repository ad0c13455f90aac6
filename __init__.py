"""Tailings Mapper: a QGIS plugin that segments mining tailings ponds in satellite imagery.

The plugin folder is named ``tailings_mapper``; QGIS (and qgis_process, through
``initProcessing``) calls :func:`classFactory`.  Packages the plugin installed for the
user (onnxruntime) live in a folder of its own that is put on ``sys.path`` here.
"""


def classFactory(iface):  # noqa: N802 (QGIS API)
    from .qgis_glue import deps
    deps.add_to_path()
    from .plugin import TailingsMapperPlugin
    return TailingsMapperPlugin(iface)
