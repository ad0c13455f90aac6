"""The names of a run's outputs in their folder: the files (``<stem>_classes.tif``...), the lock a
run holds while it writes them, the next free names, and the checks that the folder can take them
(writable, nothing overwritten unless asked).  Used by planning (which names them) and by
``writing.StagedOutputs`` (which reserves and commits them)."""
from __future__ import annotations

import os
import uuid
from typing import Dict, Mapping

from . import locks
from .errors import OptionError, OutputError


def output_names(out_dir: str, stem: str, opts) -> Dict[str, str]:
    """The files of a run named ``stem``; the ``*_style`` ones are the rasters' QGIS styles, the
    report is ``inference.report``'s."""
    out = {"classes": os.path.join(out_dir, stem + "_classes.tif"),
           "classes_style": os.path.join(out_dir, stem + "_classes.qml"),
           "report": os.path.join(out_dir, stem + "_report.json")}
    if opts.confidence:
        out["confidence"] = os.path.join(out_dir, stem + "_confidence.tif")
        out["confidence_style"] = os.path.join(out_dir, stem + "_confidence.qml")
    if opts.polygons:
        out["polygons"] = os.path.join(out_dir, stem + "_polygons.gpkg")
    return out


def output_paths(input_path: str, out_dir: str, opts) -> Dict[str, str]:
    if opts.prefix:
        check_prefix(opts.prefix)
    stem = opts.prefix or os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]
    return output_names(out_dir, stem, opts)


def check_prefix(prefix: str) -> None:
    """A prefix names files inside the output folder: no folder in it (``../x`` would write outside)."""
    seps = [s for s in (os.sep, os.altsep, "/", "\\") if s]
    if any(s in prefix for s in seps) or prefix in (".", ".."):
        raise OptionError("the prefix names the files inside the output folder, so it cannot hold a folder "
                          "(%r): choose the folder with the output folder option" % prefix, "prefix")
    if any(ord(c) < 32 for c in prefix):
        raise OptionError("the prefix %r holds control characters: file names cannot" % prefix, "prefix")


def output_kinds_renamed(outputs: Mapping[str, str], stem: str) -> Dict[str, str]:
    """The same outputs named ``stem``."""
    return {k: os.path.join(os.path.dirname(v), stem + "_" + os.path.basename(v).rsplit("_", 1)[1])
            for k, v in outputs.items()}


def lock_path(out_dir: str, stem: str) -> str:
    """The file a run holds while it writes the outputs named ``stem`` (``writing.reserve``)."""
    return os.path.join(out_dir, ".%s.tm-lock" % stem)


def names_taken(outputs: Mapping[str, str]) -> bool:
    first = next(iter(outputs.values()))
    stem = os.path.basename(first)[:-len("_classes.tif")]
    return any(os.path.exists(p) for p in outputs.values()) or os.path.exists(lock_path(os.path.dirname(first), stem))


def stems(stem: str):
    """``stem``, then ``stem-2``, ``stem-3``...: the names a run takes when ``unique_names``."""
    yield stem
    n = 2
    while True:
        yield "%s-%d" % (stem, n)
        n += 1


def choose_outputs(input_path: str, out_dir: str, opts) -> Dict[str, str]:
    """The output names, checked: the first free ones with ``unique_names``, else the given ones
    (an error when they exist, unless ``overwrite``)."""
    outputs = output_paths(input_path, out_dir, opts)
    if opts.unique_names and not opts.overwrite:
        stem = os.path.basename(outputs["classes"])[:-len("_classes.tif")]
        outputs = next(o for o in (output_names(out_dir, s, opts) for s in stems(stem)) if not names_taken(o))
    check_outputs(out_dir, outputs, opts.overwrite)
    return outputs


def check_outputs(out_dir: str, outputs: Mapping[str, str], overwrite: bool) -> None:
    """The folder is writable (or can be created: ``execute`` creates it); no output exists
    unless ``overwrite``."""
    check_folder(out_dir, "cannot write to output folder %s" % out_dir)
    existing = [p for p in outputs.values() if os.path.exists(p)]
    if existing and not overwrite and not _left_by_a_stopped_run(outputs):
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


def _left_by_a_stopped_run(outputs: Mapping[str, str]) -> bool:
    """The names' lock was left by a run that was killed, perhaps while it renamed its files: what
    is there is known when the run takes it over (``writing.StagedOutputs``), which checks again."""
    first = outputs["classes"]
    lock = lock_path(os.path.dirname(first), os.path.basename(first)[:-len("_classes.tif")])
    return os.path.exists(lock) and locks.is_stale(locks.read(lock))


def make_output_folder(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OutputError("cannot write to output folder %s: %s" % (out_dir, e.strerror or e)) from None
