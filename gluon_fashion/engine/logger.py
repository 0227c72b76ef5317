"""Run logging: full configuration, a readable text log, metrics as JSON lines, TensorBoard scalars and
images (sample predictions at each validation, ``log_image``).

Their file names are listed with the rest of a run's output in README.md, "What a run writes". The
configuration is written atomically. The text log and the metrics JSONL are append-only streams (not atomic
files; resuming appends to them), and readers skip a torn last line. The JSONL gets one object per
``log_metrics`` call, e.g. ``{"time": 1700000000.123, "split": "train_iter", "step": 120, "epoch": 0,
"values": {"loss": 1.23, "lr": 0.01}}``; non-finite values are written as null (JSON has no NaN).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..fileio import atomic_save, atomic_write_json

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOGGER_NAME = "gluon_fashion"


def jsonable(value: Any) -> Any:
    """``value`` converted to plain JSON types (numpy scalars/arrays, tuples, paths, namespaces, contexts)."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "asnumpy"):  # a one-element mx.nd.NDArray
        return jsonable(value.asnumpy().tolist())
    return str(value)


class _TqdmSafeHandler(logging.StreamHandler):
    """Console handler that prints above active tqdm bars instead of tearing them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never crash training
            self.handleError(record)


class RunLogger:
    """Configuration, text log, metrics JSONL and TensorBoard for one run; only rank 0 writes files."""

    def __init__(self, save_prefix: str, config: Any, rank: int = 0, level: int = logging.INFO):
        self.prefix = str(save_prefix)
        self.rank = rank
        self.is_main = rank == 0
        self.config = jsonable(config)
        self.config_path = self.prefix + "_config.json"
        self.log_path = self.prefix + "_train.log"
        self.metrics_path = self.prefix + "_metrics.jsonl"
        self.tensorboard_dir = self.prefix + "_tensorboard"
        self._writer = None
        self._metrics_file = None

        # Library modules log under "gluon_fashion.*"; one set of handlers here covers them all.
        self.logger = logging.getLogger(LOGGER_NAME)
        self._saved_logger_state = (self.logger.level, self.logger.propagate)
        self.logger.setLevel(level)
        self.logger.propagate = False
        self._handlers: list[logging.Handler] = []
        formatter = logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT)
        console = _TqdmSafeHandler(sys.stderr)
        console.setLevel(level if self.is_main else logging.WARNING)
        console.setFormatter(formatter)
        self._add_handler(console)
        if not self.is_main:
            return

        Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        log_file.setFormatter(formatter)
        self._add_handler(log_file)
        self._write_config()
        self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter
        self._writer = SummaryWriter(logdir=self.tensorboard_dir, flush_secs=30)
        self.logger.info("run files: %s_{config.json,train.log,metrics.jsonl,tensorboard/}", self.prefix)

    def _add_handler(self, handler: logging.Handler) -> None:
        self.logger.addHandler(handler)
        self._handlers.append(handler)

    def _write_config(self) -> None:
        # A resumed run may change flags; keep the earlier configuration instead of overwriting it silently.
        if os.path.exists(self.config_path):
            try:
                with open(self.config_path, encoding="utf-8") as handle:
                    previous = json.load(handle)
            except (OSError, ValueError):
                previous = None
            if previous != self.config:
                stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                kept = f"{self.prefix}_config.{stamp}.json"
                os.replace(self.config_path, kept)
                self.logger.warning("configuration differs from the one already in %s; the earlier one is "
                                    "kept as %s", self.config_path, kept)
        atomic_write_json(self.config_path, self.config, indent=2)
        self.logger.info("configuration: %s", json.dumps(self.config, sort_keys=True))

    def log_metrics(self, step: int, split: str, epoch: Optional[int] = None, **values: Any) -> None:
        """Append one metrics record (JSONL) and write each value as TensorBoard scalar ``split/name``."""
        if not self.is_main:
            return
        clean = {name: jsonable(value) for name, value in values.items()}
        for name, value in clean.items():
            if isinstance(value, list) and len(value) == 1:
                clean[name] = value = value[0]
        record: dict = {"time": round(time.time(), 3), "split": split, "step": int(step)}
        if epoch is not None:
            record["epoch"] = int(epoch)
        record["values"] = clean
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()
        for name, value in clean.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{split}/{name}", value, global_step=int(step))

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """Write an H x W x 3 uint8 RGB picture to TensorBoard as image ``tag`` at ``step`` (main worker only)."""
        if not self.is_main or self._writer is None:
            return
        image = np.asarray(rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"log_image({tag!r}): expected H x W x 3 uint8 RGB, got {image.shape} {image.dtype}")
        self._writer.add_image(tag, image, global_step=int(step), dataformats="HWC")

    def rewind(self, step: int) -> int:
        """Forget every metrics record after ``step`` (a resumed run redoes those steps); returns how many.

        The JSONL file is rewritten without them (atomically), so it holds one record per step and split;
        TensorBoard is reopened with ``purge_step`` so it hides its copies too.
        """
        if not self.is_main:
            return 0
        self._metrics_file.close()
        kept, dropped = [], 0
        with open(self.metrics_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    superseded = int(json.loads(line)["step"]) > step
                except (ValueError, KeyError, TypeError):
                    superseded = True  # a line torn by the kill
                if superseded:
                    dropped += 1
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if dropped:
            atomic_save(self.metrics_path, lambda tmp: Path(tmp).write_text("".join(kept), encoding="utf-8"))
            self.logger.info("resuming at step %d: %d metrics record(s) of the steps redone from here dropped from %s",
                             step, dropped, self.metrics_path)
        self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter
        self._writer.close()
        self._writer = SummaryWriter(logdir=self.tensorboard_dir, flush_secs=30, purge_step=step + 1)
        return dropped

    def flush(self) -> None:
        """Push buffered TensorBoard events and log lines to disk."""
        if self._writer is not None:
            self._writer.flush()
        for handler in self._handlers:
            handler.flush()

    def close(self) -> None:
        """Flush and release files and logging handlers (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()
        if self._handlers:
            self.logger.setLevel(self._saved_logger_state[0])
            self.logger.propagate = self._saved_logger_state[1]
        self._handlers = []

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
