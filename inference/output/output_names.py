"""The names of a run's outputs in their folder: the files (``<stem>_classes.tif``...), the lock a
run holds while it writes them, the next free names, and the checks that the folder can take them
(writable, nothing overwritten unless asked).  Used by planning (which names them) and by
``staged.StagedOutputs`` (which reserves and commits them)."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Mapping, Optional

from . import locks
from ..errors import OptionError, OutputError


def output_names(out_dir: str, stem: str, opts) -> Dict[str, str]:
    """The files of a run named ``stem``; the ``*_style`` ones are the rasters' QGIS styles, the
    report is ``inference.output.report``'s."""
    out = {"classes": os.path.join(out_dir, stem + "_classes.tif"),
           "classes_style": os.path.join(out_dir, stem + "_classes.qml"),
           "report": os.path.join(out_dir, stem + "_report.json")}
    if opts.confidence:
        out["confidence"] = os.path.join(out_dir, stem + "_confidence.tif")
        out["confidence_style"] = os.path.join(out_dir, stem + "_confidence.qml")
    if opts.polygons:
        out["polygons"] = os.path.join(out_dir, stem + "_polygons.gpkg")
    return out


@dataclass(frozen=True)
class OutputNames:
    """A run's outputs in their folder, as planning decided them: the stem, the files by kind
    (:func:`output_names`), the lock the run holds while it writes them, and what it may do with
    names already taken (``overwrite``; ``unique``: take the next free stem)."""
    folder: str
    stem: str
    files: Mapping[str, str]
    overwrite: bool = False
    unique: bool = False

    @property
    def lock(self) -> str:
        """The file a run holds while it writes these outputs (``staged.StagedOutputs``)."""
        return lock_path(self.folder, self.stem)

    @property
    def layer(self) -> Optional[str]:
        """The polygon layer's name inside its GeoPackage (the file's name), when the run writes one."""
        return self.stem + "_polygons" if "polygons" in self.files else None

    @property
    def tiles_layer(self) -> Optional[str]:
        """The layer of scored tiles beside the polygons, when the run writes polygons."""
        return self.stem + "_tiles" if "polygons" in self.files else None

    def renamed(self, stem: str) -> "OutputNames":
        """The same outputs named ``stem``."""
        files = {k: os.path.join(self.folder, stem + os.path.basename(v)[len(self.stem):]) for k, v in self.files.items()}
        return OutputNames(self.folder, stem, MappingProxyType(files), self.overwrite, self.unique)

    def taken(self) -> bool:
        """A file of these names exists, or a run holds their lock."""
        return any(os.path.exists(p) for p in self.files.values()) or os.path.exists(self.lock)


def output_stem(input_path: str, opts) -> str:
    if opts.prefix:
        check_prefix(opts.prefix)
    return opts.prefix or os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]


def check_prefix(prefix: str) -> None:
    """A prefix names files inside the output folder: no folder in it (``../x`` would write outside)."""
    seps = [s for s in (os.sep, os.altsep, "/", "\\") if s]
    if any(s in prefix for s in seps) or prefix in (".", ".."):
        raise OptionError("the prefix names the files inside the output folder, so it cannot hold a folder "
                          "(%r): choose the folder with the output folder option" % prefix, "prefix")
    if any(ord(c) < 32 for c in prefix):
        raise OptionError("the prefix %r holds control characters: file names cannot" % prefix, "prefix")


def lock_path(out_dir: str, stem: str) -> str:
    """The file a run holds while it writes the outputs named ``stem``."""
    return os.path.join(out_dir, ".%s.tm-lock" % stem)


def stems(stem: str):
    """``stem``, then ``stem-2``, ``stem-3``...: the names a run takes when ``unique_names``."""
    yield stem
    n = 2
    while True:
        yield "%s-%d" % (stem, n)
        n += 1


def choose_outputs(input_path: str, out_dir: str, opts) -> OutputNames:
    """The output names, checked: the first free ones with ``unique_names``, else the given ones
    (an error when they exist, unless ``overwrite``)."""
    stem = output_stem(input_path, opts)
    unique = bool(opts.unique_names and not opts.overwrite)
    names = OutputNames(out_dir, stem, MappingProxyType(output_names(out_dir, stem, opts)), bool(opts.overwrite),
                        unique)
    if unique:
        names = next(n for n in (names.renamed(s) for s in stems(stem)) if not n.taken())
    check_outputs(names)
    return names


def check_outputs(names: OutputNames) -> None:
    """The folder is writable (or can be created: ``execute`` creates it); no output exists
    unless ``overwrite``."""
    out_dir, outputs, overwrite = names.folder, names.files, names.overwrite
    check_folder(out_dir, "cannot write to output folder %s" % out_dir)
    existing = [p for p in outputs.values() if os.path.exists(p)]
    if existing and not overwrite and not _left_by_a_stopped_run(names):
        raise OutputError("output exists: %s (choose another folder or prefix, or allow overwriting)"
                          % ", ".join(os.path.basename(p) for p in existing))


def check_folder(folder: str, cannot: str) -> None:
    """``folder`` can take new files: it is a writable folder, or it can be made (its nearest
    existing parent is a writable folder); else an :class:`OutputError` beginning ``cannot``."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError("%s: %s exists and is not a folder" % (cannot, folder))
    if os.path.isdir(folder):
        try:
            probe = os.path.join(folder, ".tm-write-test-%s" % uuid.uuid4().hex[:8])
            with open(probe, "w") as fh:
                fh.write("x")
            os.remove(probe)
        except OSError as e:
            raise OutputError("%s: %s" % (cannot, e.strerror or e)) from None
        return
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError("%s: %s is a file, not a folder" % (cannot, parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("%s: %s is not writable" % (cannot, parent))


def _left_by_a_stopped_run(names: OutputNames) -> bool:
    """The names' lock was left by a run that was killed, perhaps while it renamed its files: what
    is there is known when the run takes it over (``staged.StagedOutputs``), which checks again."""
    return os.path.exists(names.lock) and locks.is_stale(locks.read(names.lock))


def make_output_folder(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OutputError("cannot write to output folder %s: %s" % (out_dir, e.strerror or e)) from None
