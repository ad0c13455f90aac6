"""Errors the engine raises on purpose.

Every front end (command line, QgsTask, Processing) shows ``str(error)`` of a
:class:`TailingsError` as a one-line message to the user; anything else is a bug.
"""


class TailingsError(Exception):
    """Base of every error that is the user's input, not a bug."""


class ModelError(TailingsError):
    """The model file is missing, not ONNX, or its metadata is absent or contradictory."""


class InputError(TailingsError):
    """The input raster cannot be read or cannot be used (no CRS, no valid pixels...)."""


class BandMappingError(TailingsError):
    """The raster's bands cannot be mapped onto the model's inputs."""


class OutputError(TailingsError):
    """The output folder cannot be written, or an output exists and overwrite was not asked."""


class ProviderError(TailingsError):
    """The requested onnxruntime execution provider (e.g. CUDA) is not usable."""


class Cancelled(TailingsError):
    """The run was cancelled by the caller; nothing that looks complete was left behind."""
