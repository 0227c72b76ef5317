"""The step watchdog of distributed workers: a guarded block that overruns ends the process with a clear
error and :data:`WATCHDOG_EXIT_CODE`, instead of waiting forever on a dead peer (see :class:`StepWatchdog`)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Iterator, Optional

__all__ = ["WATCHDOG_EXIT_CODE", "StepWatchdog"]

log = logging.getLogger(__name__)

#: Exit status of a worker stopped by :class:`StepWatchdog` (distinct from crashes and UserError's 2).
WATCHDOG_EXIT_CODE = 3


class StepWatchdog:
    """Ends this process with a clear message when a guarded block (a training step, a barrier) overruns.

    A ``dist_sync`` worker whose peer died blocks inside MXNet forever, waiting for gradients that never come.
    Wrap each step: ``with watchdog.guard(f"step {i}"): ...``; when a block runs longer than its timeout,
    the watchdog logs an error naming the block and calls ``os._exit(WATCHDOG_EXIT_CODE)`` (a thread cannot
    interrupt the blocked C++ call; exiting is the only way out). Outside guards nothing is watched, so
    rank 0 may validate or save for as long as it needs. ``timeout_s`` None or <= 0 disables the watchdog.
    The guarded block should include a synchronisation point (``asscalar()``, ``mx.nd.waitall()``): MXNet
    runs the kvstore's push/pull asynchronously, and only a wait on its result can stall.
    """

    def __init__(self, timeout_s: Optional[float], exit_code: int = WATCHDOG_EXIT_CODE, hint: str = ""):
        self.timeout_s = float(timeout_s) if timeout_s and timeout_s > 0 else None
        self.exit_code = exit_code
        self.hint = hint or ("a peer worker or server has probably died or hangs (check its log); raise "
                             "--dist-timeout if steps are legitimately this slow")
        self._cond = threading.Condition()
        self._deadline: Optional[float] = None
        self._what = ""
        self._armed_for = 0.0
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.timeout_s is not None

    @contextlib.contextmanager
    def guard(self, what: str, timeout_s: Optional[float] = None) -> Iterator[None]:
        """Watch the enclosed block: it must finish within ``timeout_s`` (default: the watchdog's)."""
        limit = self.timeout_s if timeout_s is None else (float(timeout_s) if timeout_s > 0 else None)
        if limit is None:
            yield
            return
        self._arm(what, limit)
        try:
            yield
        finally:
            self._disarm()

    def _arm(self, what: str, limit: float) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("StepWatchdog used after close()")
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="StepWatchdog", daemon=True)
                self._thread.start()
            self._what, self._armed_for = what, limit
            self._deadline = time.monotonic() + limit
            self._cond.notify()

    def _disarm(self) -> None:
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._fire()

    def _fire(self) -> None:
        message = (f"distributed training stalled: {self._what} did not finish within {self._armed_for:g} s "
                   f"(pid {os.getpid()}); {self.hint}. Stopping this worker (exit code {self.exit_code}) instead "
                   "of waiting forever")
        with contextlib.suppress(Exception):
            if log.hasHandlers():
                log.error(message)  # RunLogger's console and file handlers flush every record
            else:
                sys.stderr.write(f"error: {message}\n")
                sys.stderr.flush()
        os._exit(self.exit_code)

    def close(self) -> None:
        """Stop watching (the thread ends); later guards raise."""
        with self._cond:
            self._closed = True
            self._deadline = None
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "StepWatchdog":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
