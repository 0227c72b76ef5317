"""Checkpoints that every tool can load from the path alone, and exact resume after a crash or SIGKILL.

A checkpoint is ``<base>.params`` (weights), ``<base>.states`` (optimizer states; not in "best"
checkpoints) and ``<base>.json`` (its description, below); which bases a run writes (epoch, ``_last``,
``_best``) is listed in README.md, "What a run writes".

A checkpoint is complete when its ``.json`` exists and the sha1 recorded in it matches the ``.params``
(and ``.states``) beside it. Each file is written atomically under a hidden staging name, the staged files
are renamed into place together, and the ``.json`` is renamed last; a kill in the microseconds between
those renames is caught by the sha1 check on restore.

The ``.json`` holds the caller's ``meta`` (required keys: ``task`` "mask_rcnn"|"segmentation", ``model``,
``classes``; usual extras: ``build_kwargs``, ``image_scale``) plus::

    "epoch": epoch that produced these weights (0-based), "iteration": optimizer updates done so far,
    "kind": "epoch" | "mid_epoch" | "best", "metric": {"name", "value"} or null,
    "files": {"params": {"name", "sha1", "bytes"}, "states": {...}},
    "resume": {"epoch": E, "iteration": I, "batch_in_epoch": K, "best_metric", "best_epoch"},
    "extra": {...}, "gluon_fashion_version", "time", "format", "format_version"

Resume semantics: start epoch ``E`` with the global iteration counter at ``I`` and skip the first ``K``
batches of epoch ``E`` (``K == 0`` after an end-of-epoch save, when ``E`` is the next epoch). Skipping is exact
only if the epoch's sample order depends on ``(seed, epoch)`` alone, as with the batch samplers of
:mod:`gluon_fashion.data.samplers`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
from typing import Optional, Tuple

from .. import __version__
from ..errors import UserError
from ..fileio import atomic_save, atomic_write_json
from .logger import jsonable

__all__ = ["CheckpointManager", "checkpoint_base", "load_checkpoint_weights", "mxnet_error_reason",
           "read_checkpoint_meta", "verify_checkpoint", "CHECKPOINT_FORMAT", "TASKS"]

CHECKPOINT_FORMAT = "gluon_fashion.checkpoint"
FORMAT_VERSION = 1
TASKS = ("mask_rcnn", "segmentation")
_SUFFIXES = (".params", ".json", ".states")
log = logging.getLogger(__name__)


def checkpoint_base(path: str) -> str:
    """``x.params`` / ``x.json`` / ``x.states`` / ``x`` -> ``x`` (the name every checkpoint file shares)."""
    path = os.fspath(path)
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def read_checkpoint_meta(params_path: str) -> dict:
    """The JSON description beside a checkpoint (``.params`` path, ``.json`` path or common base)."""
    json_path = checkpoint_base(params_path) + ".json"
    if not os.path.exists(json_path):
        raise UserError(f"checkpoint {params_path}: description {json_path} is missing (a checkpoint is "
                        "complete only once its .json is written; was the run killed while saving?)")
    try:
        with open(json_path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"checkpoint description {json_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{json_path} is not a gluon_fashion checkpoint description "
                        f"(no \"format\": \"{CHECKPOINT_FORMAT}\")")
    return meta


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: str) -> dict:
    return {"name": os.path.basename(path), "sha1": _sha1(path), "bytes": os.path.getsize(path)}


def _staging_name(final_path: str) -> str:
    head, tail = os.path.split(final_path)
    return os.path.join(head, f".{tail}.staged")


def _verify(path: str, record: Optional[dict], checkpoint: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"checkpoint {checkpoint}: {path} is missing")
    if record and record.get("sha1") and _sha1(path) != record["sha1"]:
        raise UserError(f"checkpoint {checkpoint}: {path} does not match its .json (sha1 differs): the run was "
                        "probably killed while saving it (or the file was cut short when copied); use an "
                        "intact checkpoint, such as an epoch checkpoint (<prefix>_NNNN.params), instead")


def verify_checkpoint(params_path: str, meta: Optional[dict] = None) -> dict:
    """The description of a checkpoint (``.params`` path, ``.json`` path or common base) whose weights file
    exists and has the sha1 its ``.json`` records (``meta``: that description, if already read).

    UserError otherwise, saying that a kill while saving (or a cut-short copy) is the likely cause.
    Checkpoints written before sha1s were recorded are only checked for presence.
    """
    meta = read_checkpoint_meta(params_path) if meta is None else meta
    _verify(checkpoint_base(params_path) + ".params", (meta.get("files") or {}).get("params"), params_path)
    return meta


def mxnet_error_reason(exc: Exception) -> str:
    """The line of an MXNet error that says what failed (``Check failed: ... Invalid NDArray file format``):
    MXNet's messages start with a traceback header and the C++ source location instead."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Traceback (most recent call last)", "File "))]
    reason = reasons[-1] if reasons else type(exc).__name__
    return reason[len("MXNetError: "):] if reason.startswith("MXNetError: ") else reason


def load_checkpoint_weights(net, params_path: str, ctx=None, meta: Optional[dict] = None, **load_kwargs) -> dict:
    """Verify a checkpoint (:func:`verify_checkpoint`) and load its weights into ``net``; returns its description.

    The one way the trainers (``--resume``, ``--eval``) and every tool load a checkpoint's weights.
    ``meta``: the description when the caller has read it already (to build the net; not read again, the
    weights are still verified against it); ``load_kwargs`` go to ``net.load_parameters``
    (``ignore_extra=True``, ...). UserError naming the file when it is incomplete, differs from its ``.json``,
    or does not fit ``net`` (MXNet's reason, in one line).
    """
    meta = verify_checkpoint(params_path, meta)
    path = checkpoint_base(params_path) + ".params"
    try:
        net.load_parameters(path, ctx=ctx, **load_kwargs)
    except Exception as exc:  # MXNet raises AssertionError/MXNetError/ValueError on mismatches and bad files
        raise UserError(f"cannot load weights {path} into {meta.get('model')}: {mxnet_error_reason(exc)}") from None
    return meta


def _is_intact(base: str) -> bool:
    """True when ``base.json`` is readable and every file it lists exists with the recorded sha1."""
    try:
        meta = read_checkpoint_meta(base)
        for record in (meta.get("files") or {}).values():
            _verify(os.path.join(os.path.dirname(base), record["name"]), record, base)
    except (UserError, KeyError, TypeError):
        return False
    return True


def distinct_figures(value: float, previous: Optional[float], decimals: int = 4) -> Tuple[str, str]:
    """``value`` and ``previous`` (None: "none") printed with ``decimals`` decimals, or with as many
    significant digits as it takes to tell them apart: an improvement from 0.00003 to 0.00004 must not read
    as a tie ("0.0000 (previous 0.0000)")."""
    if previous is None:
        return f"{value:.{decimals}f}", "none"
    shown = (f"{value:.{decimals}f}", f"{previous:.{decimals}f}")
    digits = 1
    while shown[0] == shown[1] and digits <= 17:
        shown = (f"{value:.{digits}g}", f"{previous:.{digits}g}")
        digits += 1
    return shown


class CheckpointManager:
    """Writes epoch/last/best checkpoints for one run and restores them for ``--resume``.

    ``meta`` describes the model (see module docstring); ``metric_name`` labels the validation metric
    (higher is better, e.g. "segm_mAP" or "mIoU").
    """

    def __init__(self, prefix: str, meta: dict, save_interval: int = 1, metric_name: str = "metric"):
        meta = dict(meta)
        if "model" not in meta and "architecture" in meta:
            meta["model"] = meta["architecture"]
        missing = [key for key in ("task", "model", "classes") if key not in meta]
        if missing:
            raise ValueError(f"checkpoint meta lacks {missing}; expected at least task, model, classes")
        if meta["task"] not in TASKS:
            raise ValueError(f"checkpoint meta task must be one of {TASKS}, got {meta['task']!r}")
        if save_interval < 1:
            raise UserError(f"checkpoint save interval must be >= 1 epoch, got {save_interval}")
        self.prefix = os.fspath(prefix)
        self.meta = jsonable(meta)
        self.save_interval = int(save_interval)
        self.metric_name = metric_name
        self._best_metric: Optional[float] = None
        self._best_epoch: Optional[int] = None
        self._latest: Optional[dict] = None  # what the last save wrote, to hard-link instead of re-saving

    # ---------------------------------------------------------------- paths
    @property
    def last_path(self) -> str:
        """``<prefix>_last.params``: what ``--resume latest`` loads."""
        return self.prefix + "_last.params"

    @property
    def best_path(self) -> str:
        return self.prefix + "_best.params"

    def epoch_path(self, epoch: int) -> str:
        return f"{self.prefix}_{epoch:04d}.params"

    @property
    def best_metric(self) -> Optional[float]:
        return self._best_metric

    @property
    def best_epoch(self) -> Optional[int]:
        return self._best_epoch

    def has_checkpoint(self) -> bool:
        """True when this prefix already holds a complete ``_last`` checkpoint."""
        return os.path.exists(self.prefix + "_last.json")

    def resolve_resume(self, resume: Optional[str], flag: str = "--resume") -> Optional[str]:
        """``--resume`` value -> the ``.params`` path to load; "" / None -> None (a fresh run).

        "latest" (or "last"): ``<prefix>_last.params``; if a kill left it inconsistent, the newest intact epoch
        checkpoint (with a warning). Otherwise a checkpoint (its ``.params``, ``.json`` or common base) or a
        prefix whose ``_last`` checkpoint to load. UserError when there is nothing to resume from.
        """
        if not resume:
            return None
        if resume in ("latest", "last"):
            if self.has_checkpoint():
                if _is_intact(self.prefix + "_last"):
                    return self.last_path
                log.warning("%s is incomplete (the run was killed while replacing it); looking for the newest "
                            "intact epoch checkpoint", self.last_path)
            for _, base in reversed(self._epoch_checkpoints()):
                if _is_intact(base):
                    return base + ".params"
            if self.has_checkpoint() or self._epoch_checkpoints():
                raise UserError(f"{flag} {resume}: no intact checkpoint under {self.prefix}_* (files do not match "
                                "their .json); pass a checkpoint path explicitly or start a new run elsewhere")
            raise UserError(f"{flag} {resume}: no checkpoint yet at {self.last_path}")
        for candidate in (checkpoint_base(resume) + ".params", resume + "_last.params"):
            if os.path.isfile(candidate) and os.path.isfile(checkpoint_base(candidate) + ".json"):
                return candidate
        raise UserError(f"{flag} {resume}: neither a checkpoint (.params with its .json) nor a prefix with a "
                        "_last checkpoint")

    def ensure_new_run(self, flag: str = "--save-prefix") -> None:
        """Refuse to start a fresh run over an existing run's checkpoints (they would be overwritten)."""
        if self.has_checkpoint() or os.path.exists(self.prefix + "_best.json"):
            raise UserError(f"{flag} {self.prefix}: checkpoints of an earlier run are already there; "
                            "continue it with --resume latest or choose another prefix")

    # ---------------------------------------------------------------- writing
    def _resume_state(self, epoch: int, iteration: int, batch_in_epoch: int) -> dict:
        mid_epoch = batch_in_epoch > 0
        return {"epoch": epoch if mid_epoch else epoch + 1, "iteration": int(iteration),
                "batch_in_epoch": int(batch_in_epoch), "best_metric": self._best_metric,
                "best_epoch": self._best_epoch}

    def _describe(self, kind: str, epoch: int, iteration: int, metric: Optional[float], resume: dict,
                  extra: Optional[dict]) -> dict:
        doc = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION}
        doc.update(self.meta)
        doc.update({
            "kind": kind, "epoch": int(epoch), "iteration": int(iteration),
            "metric": None if metric is None else {"name": self.metric_name, "value": jsonable(float(metric))},
            "resume": resume, "extra": jsonable(extra or {}),
            "gluon_fashion_version": __version__,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return doc

    def _stage(self, final_path: str, writer, reuse_from: Optional[str]) -> str:
        staged = _staging_name(final_path)
        if reuse_from is not None:
            # Same bytes as a file written moments ago: a hard link costs no time or disk.
            if os.path.exists(staged):
                os.unlink(staged)
            try:
                os.link(reuse_from, staged)
            except OSError:
                atomic_save(staged, lambda tmp: shutil.copyfile(reuse_from, tmp))
        else:
            atomic_save(staged, writer)
        return staged

    def _write_set(self, base: str, net, trainer, doc: dict, reuse: Optional[dict] = None) -> dict:
        """Write ``base.params`` (+ ``.states``) then ``base.json``; returns {suffix: final path}."""
        finals = {".params": base + ".params"}
        writers = {".params": net.save_parameters}
        if trainer is not None:
            finals[".states"] = base + ".states"
            writers[".states"] = trainer.save_states
        staged = {}
        try:
            for suffix, final in finals.items():
                source = (reuse or {}).get(suffix)
                staged[suffix] = self._stage(final, writers[suffix], source)
            records = {suffix.lstrip("."): dict(_file_record(path), name=os.path.basename(finals[suffix]))
                       for suffix, path in staged.items()}
            doc = dict(doc, files=records)
            for suffix, path in staged.items():
                os.replace(path, finals[suffix])
            staged = {}
            atomic_write_json(base + ".json", doc, indent=2)
        finally:
            for path in staged.values():
                if os.path.exists(path):
                    os.unlink(path)
        return finals

    def save(self, net, trainer, epoch: int, iteration: int, metric: Optional[float] = None,
             extra: Optional[dict] = None, batch_in_epoch: Optional[int] = None) -> str:
        """Save after ``iteration`` optimizer updates; returns the written ``.params`` path.

        End of epoch (``batch_in_epoch`` None or 0): writes ``<prefix>_<epoch:04d>.*`` every
        ``save_interval`` epochs and always updates ``<prefix>_last.*``. Mid-epoch (``batch_in_epoch=k > 0``
        batches of ``epoch`` done; may also come as ``extra["batch_in_epoch"]``): updates only ``_last``.
        """
        extra = dict(extra or {})
        if batch_in_epoch is None:
            batch_in_epoch = int(extra.get("batch_in_epoch") or 0)
        extra["batch_in_epoch"] = batch_in_epoch
        kind = "mid_epoch" if batch_in_epoch > 0 else "epoch"
        resume = self._resume_state(epoch, iteration, batch_in_epoch)
        doc = self._describe(kind, epoch, iteration, metric, resume, extra)
        written = None
        if kind == "epoch" and (epoch + 1) % self.save_interval == 0:
            written = self._write_set(f"{self.prefix}_{epoch:04d}", net, trainer, doc)
        last = self._write_set(self.prefix + "_last", net, trainer, doc, reuse=written)
        self._latest = {"epoch": epoch, "iteration": iteration, "params": last[".params"]}
        path = (written or last)[".params"]
        log.info("saved checkpoint %s (epoch %d, iteration %d%s)", path, epoch, iteration,
                 f", batch {batch_in_epoch} of the epoch" if batch_in_epoch else "")
        return path

    def update_best(self, net, epoch: int, iteration: int, metric: float) -> bool:
        """Write ``<prefix>_best.*`` when ``metric`` beats the best so far (higher is better); True if it did."""
        metric = float(metric)
        if not math.isfinite(metric) or (self._best_metric is not None and metric <= self._best_metric):
            return False
        previous = self._best_metric
        self._best_metric, self._best_epoch = metric, int(epoch)
        resume = self._resume_state(epoch, iteration, 0)
        doc = self._describe("best", epoch, iteration, metric, resume, {})
        latest = self._latest
        reuse = ({".params": latest["params"]}
                 if latest and (latest["epoch"], latest["iteration"]) == (epoch, iteration)
                 and os.path.exists(latest["params"]) else None)
        self._write_set(self.prefix + "_best", net, None, doc, reuse=reuse)
        shown, shown_previous = distinct_figures(metric, previous)
        log.info("new best %s %s at epoch %d (previous %s) -> %s", self.metric_name, shown, epoch, shown_previous,
                 self.best_path)
        return True

    def _epoch_checkpoints(self) -> list[tuple[int, str]]:
        folder, stem = os.path.split(self.prefix)
        pattern = re.compile(re.escape(stem) + r"_(\d{4,})\.json$")
        found = []
        if not os.path.isdir(folder or "."):
            return found
        for name in os.listdir(folder or "."):
            match = pattern.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(folder, name[: -len(".json")])))
        return sorted(found)

    # ---------------------------------------------------------------- reading
    def restore(self, resume_path: str, net, trainer=None, ctx=None) -> dict:
        """Load weights (and optimizer states when ``trainer`` is given) and return the resume state.

        Returns ``{"epoch", "iteration", "batch_in_epoch", "best_metric", "best_epoch", "path", "meta"}``.
        The best metric is taken from ``<prefix>_best.json`` of this manager's prefix (the file on disk is
        what "best" must beat); without one, the next validation writes it.
        """
        base = checkpoint_base(resume_path)
        meta = read_checkpoint_meta(resume_path)
        for key in ("task", "classes"):
            if meta.get(key) != self.meta.get(key):
                raise UserError(f"checkpoint {resume_path} was trained with a different {key} "
                                f"({_short(meta.get(key))}) than this run ({_short(self.meta.get(key))})")
        files = meta.get("files") or {}
        params_path = base + ".params"
        load_checkpoint_weights(net, params_path, ctx=ctx, meta=meta)
        if trainer is not None:
            states_path = base + ".states"
            if "states" in files:
                _verify(states_path, files["states"], resume_path)
                trainer.load_states(states_path)
            else:
                log.warning("%s has no optimizer states (.states); the optimizer (momentum) starts fresh",
                            resume_path)
        resume = dict(meta.get("resume") or {"epoch": meta.get("epoch", -1) + 1,
                                             "iteration": meta.get("iteration", 0)})
        resume.setdefault("batch_in_epoch", 0)
        self._best_metric, self._best_epoch = None, None
        best_json = self.prefix + "_best.json"
        if os.path.exists(best_json):
            best = read_checkpoint_meta(best_json)
            if best.get("metric") and best["metric"].get("value") is not None:
                self._best_metric = float(best["metric"]["value"])
                self._best_epoch = best.get("epoch")
        resume["best_metric"], resume["best_epoch"] = self._best_metric, self._best_epoch
        resume["path"] = params_path
        resume["meta"] = meta
        log.info("resumed from %s: epoch %d, iteration %d, skipping %d batch(es) of that epoch; best %s",
                 params_path, resume["epoch"], resume["iteration"], resume["batch_in_epoch"],
                 "none yet" if self._best_metric is None else f"{self._best_metric:.4f} (epoch {self._best_epoch})")
        return resume


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

