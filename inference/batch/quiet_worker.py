"""A Dask worker's preload (``LocalCluster(preload=...)``): the worker ignores the terminal's Ctrl-C
and hang-up, which reach every process of the batch; the batch's own process handles them and
closes the cluster, and with it its workers (without a traceback from each)."""
import signal


def dask_setup(worker) -> None:
    for name in ("SIGINT", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except ValueError:   # (not the worker's main thread: left as it is)
                pass
