"""Ctrl-C (SIGINT) during training: stop at the next step boundary, never inside a library call.

A KeyboardInterrupt raised at an arbitrary bytecode can land inside MXNet's Python wrappers, a logging
handler, a checkpoint write or TensorBoard's writer (whose queue and worker thread an exception in the middle
of ``put`` can leave waiting on each other at shutdown). :class:`StepBoundaryInterrupt` therefore only
records the first SIGINT; the loop calls :meth:`~StepBoundaryInterrupt.check` between steps, which raises
KeyboardInterrupt there (the CLI then exits with 130). A second SIGINT raises at once, for a step that hangs.
Outside :meth:`~StepBoundaryInterrupt.deferred` blocks (validation, which may run for minutes) SIGINT raises
immediately, as Python's default handler does. It also lets ``kill -USR1 <pid>`` print every thread's stack
(``faulthandler``), so a training that seems stuck can be looked into without stopping it.
"""
from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import sys
import threading
from typing import Iterator

__all__ = ["StepBoundaryInterrupt"]

log = logging.getLogger(__name__)


class StepBoundaryInterrupt:
    """Defers SIGINT to step boundaries while installed (a context manager; a no-op outside the main thread)."""

    def __init__(self) -> None:
        self.requested = False
        self._deferring = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> "StepBoundaryInterrupt":
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
            if hasattr(signal, "SIGUSR1"):
                with contextlib.suppress(Exception):  # stderr may lack a file descriptor (captured)
                    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _on_sigint(self, signum: int, frame) -> None:
        if self.requested or not self._deferring:
            raise KeyboardInterrupt
        self.requested = True
        # A plain write: a logging call here could re-enter a handler the main thread is inside of.
        with contextlib.suppress(Exception):
            sys.stderr.write("\nCtrl-C: stopping after this step (press Ctrl-C again to stop at once)\n")
            sys.stderr.flush()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block, a first SIGINT is only recorded (see :meth:`check`)."""
        outer, self._deferring = self._deferring, True
        try:
            yield
        finally:
            self._deferring = outer

    def check(self) -> None:
        """Raise KeyboardInterrupt if SIGINT arrived in a deferred block (call it at a step boundary)."""
        if self.requested:
            raise KeyboardInterrupt

