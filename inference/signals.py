"""Stopping the command line: Ctrl-C (SIGINT), SIGTERM (what ``timeout``, systemd and Slurm send)
and SIGHUP (the terminal closed) all stop a run the same way: an :class:`Interrupted` (a
KeyboardInterrupt) on the main thread, the run's files removed, one ``error:`` line and the exit
status 128 + the signal's number.

A signal that arrives before the command line is ready (while its modules are imported) is held
and raised when it is (:meth:`Stop.arm`); a second signal while the first one's run is cleaning up
is only recorded (the cleanup is not cut short); and a run given :data:`STOP` as its ``cancel``
stops at its next check even when a library swallowed the interrupt.
"""
from __future__ import annotations

import signal

NAMES = {"SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)", "SIGHUP": "stopped: the terminal closed (SIGHUP)"}


class Interrupted(KeyboardInterrupt):
    """Raised on the main thread by a signal that stops the run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Stop:
    """The command line's handler of the signals that stop a run; ``STOP()``: whether one came."""

    def __init__(self):
        self.signum = None      # the first signal that came (a number), None before
        self.raising = False
        self._before = {}       # signal -> the handler before

    def install(self, raising: bool = False) -> None:
        """Handle the signals (only on the main thread); raise at once when ``raising``, else hold."""
        self.raising = raising
        for name in NAMES:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                before = signal.signal(sig, self._on)
            except (ValueError, OSError):   # not the main thread, or not a signal this system sends
                continue
            self._before.setdefault(sig, before)

    def arm(self) -> None:
        """From now on, raise; a signal held meanwhile is raised now."""
        self.install(raising=True)
        if self.signum is not None:
            raise Interrupted(self.signum)

    def restore(self) -> None:
        for sig, before in self._before.items():
            try:
                signal.signal(sig, before)
            except (ValueError, OSError, TypeError):
                pass
        self._before.clear()
        self.raising = False
        self.signum = None

    def _on(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.raising:
            raise Interrupted(signum)

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def message(self) -> str:
        name = signal.Signals(self.signum or signal.SIGINT).name
        return NAMES.get(name, "stopped by %s" % name)


STOP = Stop()
