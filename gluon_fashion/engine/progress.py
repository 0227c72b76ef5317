"""Progress bars, throughput and the NaN/inf guard shared by the training loops."""
from __future__ import annotations

import collections
import os
import sys
import time
from typing import Iterable, Mapping, Optional

import numpy as np
from tqdm import tqdm

from ..errors import UserError

NO_PROGRESS_ENV = "GLUON_FASHION_NO_PROGRESS"


def progress_disabled() -> bool:
    """True when the user set GLUON_FASHION_NO_PROGRESS=1 (or any value other than '', '0', 'false')."""
    return os.environ.get(NO_PROGRESS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
             unit: str = "batch", disable: Optional[bool] = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr; refreshes often on a terminal, at most every 30 s when logged to a file/CI."""
    if disable is None:
        disable = progress_disabled()
    interactive = sys.stderr.isatty()
    options = dict(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                   mininterval=0.2 if interactive else 30.0, smoothing=0.05, file=sys.stderr)
    options.update(kwargs)
    return tqdm(iterable, **options)


class Throughput:
    """Samples per second over the last ``window`` updates (``rate``) and since the start (``overall``)."""

    def __init__(self, window: int = 20):
        self._events: collections.deque = collections.deque(maxlen=window + 1)
        self.reset()

    def reset(self) -> None:
        """Start counting again (e.g. after validation, whose time should not count)."""
        now = time.perf_counter()
        self._events.clear()
        self._events.append((now, 0))
        self._start = now
        self.total = 0

    def update(self, n: int) -> None:
        """Record that ``n`` more samples were processed."""
        self.total += n
        self._events.append((time.perf_counter(), self.total))

    @property
    def rate(self) -> float:
        """Recent samples/s (0.0 before the first update)."""
        (t0, n0), (t1, n1) = self._events[0], self._events[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def overall(self) -> float:
        """Samples/s since the last reset."""
        elapsed = time.perf_counter() - self._start
        return self.total / elapsed if elapsed > 0 else 0.0


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite; training cannot continue from this state."""


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    return np.asarray(value, dtype=np.float64)


def check_finite(values: Mapping[str, object], iteration: int) -> None:
    """Raise NonFiniteLossError naming each loss that is NaN/inf at ``iteration`` (values: floats or arrays)."""
    bad = []
    for name, value in values.items():
        array = _as_numpy(value)
        if not np.all(np.isfinite(array)):
            kind = "nan" if np.any(np.isnan(array)) else "inf"
            bad.append(f"{name}={kind}")
    if bad:
        raise NonFiniteLossError(
            f"loss became non-finite at iteration {iteration} ({', '.join(bad)}); training stopped. "
            "Try a lower --lr (e.g. half), a longer learning-rate warm-up, or check the annotations; "
            "resume from the last checkpoint once fixed")
