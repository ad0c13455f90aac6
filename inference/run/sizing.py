"""A run's size before it runs: how long it should take and how much memory it needs.

Time: the network's work is counted in megapixel-passes (tiles x tile area x passes per tile);
each run records the seconds it took per megapixel-pass on its device for its model (a small
JSON file, :func:`speed_file`), and the next plan of that model on that device uses the last
measurement.  Without one, a conservative default (the shipped network on the CPU cores of
this machine), said to be a rough guess.

Memory: the sum of what a run holds (figures of ``bench/width_memory.py`` and of the shipped
network's onnxruntime session, measured): the process and the network's weights, the batches
and the network's activations, a strip of tiles across the whole width (read buffers,
blending, classes), the streamed sieve's band and the polygonised pieces, the writer's queue
and GDAL's block cache.  A run whose estimate exceeds the memory this machine has available is
refused at planning, naming the option that makes it smaller.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

from ..errors import OptionError

MB = 1024 * 1024
BASE_BYTES = 300 * MB             # Python, numpy, GDAL and onnxruntime loaded (measured: 250-300 MB)
ACTIVATION_BYTES_PX = 200         # the shipped network's onnxruntime peak per input pixel of a batch
#   (measured: 160-193 bytes a pixel at tiles of 448 and 896, batches 1-4; assumed for any model)
DEFAULT_S_PER_MPX_PASS_CORE = 2.5   # CPU seconds per megapixel-pass on one core, shipped network
#   (measured 0.6-0.9 s on 2 cores; doubled: a guess must not promise too much)
DEFAULT_S_PER_MPX_PASS_GPU = 0.1
IO_S_PER_MPX = 0.15               # reading, classifying, writing, sieving, polygonising a megapixel
#   (bench/width_memory.py: 300 Mpx in 28 s on 2 cores with a trivial network)
POST_S_PER_MPX = 0.03             # after streaming: polygonising, the report (per megapixel)
FIXED_S = 3.0                     # loading the network, opening the raster
MIN_RECORDED_MPX_PASSES = 0.5     # a run with less network work does not set the measured speed
LONG_RUN_S = 3600.0               # a run estimated above this gets a warning


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: bool          # from this device's last run of the model (else a rough guess)
    peak_bytes: int
    available_bytes: Optional[int]   # memory available on this machine now (None: unknown)

    def describe(self) -> str:
        """One line: ``about 12 min (measured on this computer); peak memory about 1.2 GB``."""
        how = "measured on this computer" if self.measured else "a rough guess: no run of this model here yet"
        text = "about %s (%s); peak memory about %s" % (duration(self.seconds), how, size_text(self.peak_bytes))
        if self.available_bytes:
            text += " of %s available" % size_text(self.available_bytes)
        return text


def duration(seconds: float) -> str:
    if seconds < 90:
        return "%.0f s" % max(1.0, seconds)
    if seconds < 90 * 60:
        return "%.0f min" % (seconds / 60.0)
    return "%.1f h" % (seconds / 3600.0)


def size_text(nbytes: float) -> str:
    return "%.1f GB" % (nbytes / 1024.0 ** 3) if nbytes >= 1024 ** 3 else "%.0f MB" % (nbytes / MB)


# -- time -------------------------------------------------------------------------------------
def speed_file() -> str:
    """Where the measured speeds are kept: ``TAILINGS_MAPPER_CACHE`` (a folder), else the user's
    cache folder (``XDG_CACHE_HOME`` or ~/.cache)/tailings_mapper."""
    folder = os.environ.get("TAILINGS_MAPPER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tailings_mapper")
    return os.path.join(folder, "speed.json")


def speed_key(device: str, model_name: str) -> str:
    return "%s/%s" % (device, model_name)


def _speeds() -> dict:
    try:
        with open(speed_file(), encoding="utf-8") as fh:
            d = json.load(fh)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def mpx_passes(p) -> float:
    """The network's work in a plan: tiles x tile area x passes per tile, in megapixels."""
    return p.tile_count * p.tile_size ** 2 * p.passes / 1e6


def record_speed(p, device: str, tiles: int, seconds: float) -> None:
    """Remember how fast a finished run of ``p`` went on ``device`` (``tiles`` streamed --
    read, inferred, blended, written -- in ``seconds``); never the run's failure.  Runs of less
    than :data:`MIN_RECORDED_MPX_PASSES` are not recorded: their time is mostly fixed costs."""
    work = tiles * p.tile_size ** 2 * p.passes / 1e6
    if work < MIN_RECORDED_MPX_PASSES or not seconds > 0:
        return
    d = _speeds()
    d[speed_key(device, p.info.name)] = {"s_per_mpx_pass": seconds / work, "cores": os.cpu_count() or 1}
    path = speed_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".speed-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(d, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def estimate_seconds(p, device: str):
    """``(seconds, measured)``: from the last run of this model on ``device``, else the default."""
    rec = _speeds().get(speed_key(device, p.info.name))
    rate = rec.get("s_per_mpx_pass") if isinstance(rec, dict) else None
    w, h = p.work_size
    fixed = FIXED_S + POST_S_PER_MPX * w * h / 1e6
    if isinstance(rate, (int, float)) and 0 < rate < 1e6:
        return fixed + rate * mpx_passes(p), True
    cores = p.threads or os.cpu_count() or 1
    net = DEFAULT_S_PER_MPX_PASS_GPU if device == "cuda" else DEFAULT_S_PER_MPX_PASS_CORE / cores
    return fixed + net * mpx_passes(p) + IO_S_PER_MPX * w * h / 1e6, False


# -- memory -----------------------------------------------------------------------------------
def estimate_bytes(p) -> int:
    """Peak memory of running ``p`` (see the module's description)."""
    from .stream import WRITE_QUEUE, write_queue_strips
    from ..output.polygons import PIECE_ROWS
    from ..output.sieve import sieve_band_rows
    info = p.info
    T, O = p.tile_size, p.overlap
    B = min(p.batch, p.tile_count)     # (a batch's pages beyond its tiles are never touched)
    cin, K = len(info.bands), max(1, info.channels)
    W, H = p.work_size
    rows = min(T, H)
    stride = max(1, T - O)
    try:
        weights = os.path.getsize(p.model.path)
    except OSError:
        weights = 0
    net = (2 * B * cin * T * T * 4                     # the batches (two in turn)
           + B * T * T * ACTIVATION_BYTES_PX           # the network's activations
           + 3 * B * K * T * T * 4)                     # its outputs, averaged over passes
    read_bytes = 2 if all(t in ("Byte", "UInt16", "Int16", "Int8") for t in p.raster.dtypes) else 4
    strip = W * rows * (2 * cin * read_bytes + 3      # two read buffers, their valid masks, a copy
                        + 4 * K + 4                    # the blend accumulator and weights
                        + 10)                          # classification's temporaries
    writer = min(WRITE_QUEUE, write_queue_strips(W, stride)) * stride * W * 2
    after = 0
    if p.options.polygons and not p.resample:
        thr_rows = min(H, p.sieve_px)
        band = sieve_band_rows(W)
        after = 2 * (band + thr_rows + stride) * W             # the sieve's band, joined once
        after += (min(4, os.cpu_count() or 1) + 2) * PIECE_ROWS * W * 3   # pieces (values, foreground), GDAL's work
    return int(BASE_BYTES + 3 * weights + net + strip + writer + after + p.gdal.cache_bytes)


def available_bytes() -> Optional[int]:
    """Memory this process can still take: the system's available memory (Linux: MemAvailable;
    within a container's cgroup limit), else the physical memory; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        if limit.isdigit():
            left = int(limit) - used
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            avail = _windows_available()
    return avail


def _windows_available() -> Optional[int]:
    try:
        import ctypes

        class Status(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]
        s = Status()
        s.dwLength = ctypes.sizeof(Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(s)):
            return int(s.ullAvailPhys)
    except (ImportError, AttributeError, OSError, ValueError):   # not Windows, or no answer: unknown
        pass
    return None


def estimate(p, device: str) -> Estimate:
    seconds, measured = estimate_seconds(p, device)
    return Estimate(seconds=seconds, measured=measured, peak_bytes=estimate_bytes(p),
                    available_bytes=available_bytes())


def check(p, est: Estimate) -> Optional[str]:
    """Refuse a plan whose memory estimate exceeds what is available (:class:`OptionError`
    naming the option that makes it smaller); the warning a long run gets, or None."""
    if est.available_bytes and est.peak_bytes > est.available_bytes:
        T, B = p.tile_size, p.batch
        if B > 1:
            fix, option = "a smaller --batch (now %d) or --tile (now %d)" % (B, T), "batch"
        else:
            fix, option = "a smaller --tile (now %d)" % T, "tile_size"
        raise OptionError("this run would need about %s of memory and this machine has %s available: use %s"
                          % (size_text(est.peak_bytes), size_text(est.available_bytes), fix), option)
    if est.seconds > LONG_RUN_S:
        return ("this run may take %s (%s): a smaller extent or area of interest, fewer test-time passes "
                "(--tta 1) or scales (--scales 1) make it shorter"
                % (duration(est.seconds), "measured speed" if est.measured else "a rough guess"))
    return None
