"""Errors the engine raises on purpose.

Every front end (command line, QgsTask, Processing) shows ``str(error)`` of a
:class:`TailingsError` as a one-line message to the user; anything else is a bug.
"""


class TailingsError(Exception):
    """Base of every error that is the user's input, not a bug."""


class OptionError(TailingsError):
    """An option has a value the engine cannot use (out of range, not among the choices, or
    contradicting the model, e.g. a tile size the network does not take).  ``option`` names it
    (an ``inference.run.options`` name) when one option alone is at fault, so that a front end can
    say where: the command line's flag, the Processing parameter."""

    def __init__(self, message: str, option=None):
        super().__init__(message)
        self.option = option


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


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none), at most
    ``limit`` characters: what a one-line error message quotes of a library's exception."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
