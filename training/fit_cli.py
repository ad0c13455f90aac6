"""``python -m training fit`` and ``corrections-check``: their arguments and what they print."""
from __future__ import annotations

import signal
import sys

from .fit_options import BY_NAME, add_fit_arguments, values_from_arguments


def add_parsers(sub) -> None:
    f = sub.add_parser("fit", help="train a model from polygons drawn on rasters (or fine-tune one from corrections)")
    add_fit_arguments(f)
    c = sub.add_parser("corrections-check", help="learning from corrections on the demo scene, measured: flagged area "
                                                 "before/after, validation IoU before/after")
    c.add_argument("--data", default=None)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--json", help="write the result here")
    c.add_argument("--partial", action="store_true", help="the western half of the shipped model's "
                                                          "detections deleted, the others left as they were, learnt "
                                                          "as corrections of its run")


def run_fit(a) -> int:
    from .engine import Cancelled, OptionError, TailingsError
    from .fit import fit
    from .fit_present import lines
    stop = {"now": False}

    def on_sigint(*_):
        if stop["now"]:
            raise KeyboardInterrupt
        stop["now"] = True
        print("\nstopping after this step; the best epoch so far is kept (Ctrl-C again to abort)", file=sys.stderr)
    old = signal.signal(signal.SIGINT, on_sigint)
    last = {"msg": ""}

    def progress(fraction, message):
        if message.startswith("epoch") and ":" in message and message != last["msg"]:
            last["msg"] = message
        if sys.stderr.isatty():
            sys.stderr.write("\r%3d%% %-70s" % (100 * fraction, message[:70]))
            sys.stderr.flush()
    try:
        res = fit(**values_from_arguments(a), progress=progress, cancel=lambda: stop["now"], log=print)
    except Cancelled as e:
        print("cancelled: %s" % e, file=sys.stderr)
        return 130
    except OptionError as e:
        print("error: %s%s" % ("%s: " % BY_NAME[e.option].flag_name if e.option in BY_NAME else "", e),
              file=sys.stderr)
        return 2
    except (TailingsError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, old)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    for line in lines(res):
        print(line)
    return 0


def run_corrections_check(a) -> int:
    from .engine import TailingsError

    from . import data
    from .corrections_check import main
    try:
        main(a.data or data.default_data_dir(), a.epochs, {}, a.json, "partial" if a.partial else "area")
    except (TailingsError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0
