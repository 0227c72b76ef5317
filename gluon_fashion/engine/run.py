"""The training run both trainers are: its set-up, its files, and the one training loop.

A trainer subclasses :class:`TrainingRun` and supplies only what is its own (a template method, as
detectron2's ``TrainerBase.train``):

* ``__init__``: ``super().__init__(args)`` (flags checked, distributed job joined, devices chosen), then its
  paths and checkpoint description, ending with :meth:`TrainingRun.open_run`;
* :meth:`build`: network, data, optimizer; sets the attributes listed on the class;
* :meth:`train_step`: one batch in, forward and backward, named losses out (the engine checks them and
  updates the weights);
* :meth:`validate`: a :class:`Validation` (the checkpoint metric, scalars to log, details for the JSON file).

The engine owns everything else: resume, the epoch and iteration loop, the step watchdog, throughput, the
log and metrics cadence, mid-epoch saves, staged fine-tuning, and the end of each epoch (barrier, worker 0
validates, checkpoints and plots, barrier). :meth:`TrainingRun.fit` is the whole loop.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import mxnet as mx

from ..errors import UserError
from ..fileio import atomic_write_json
from .checkpoint import read_checkpoint_meta
from .context import parse_gpus
from .distributed import (MASTER_WORK_TIMEOUT_FACTOR, DistInfo, abandon_job, barrier, dump_final_parameters,
                          horovod_context, init_distributed, sync_parameters)
from .flags import check_bounds, check_shared_flags, flag_name
from .interrupt import StepBoundaryInterrupt
from .logger import RunLogger
from .plots import plot_metrics_or_warn
from .progress import Throughput, check_finite, progress
from .stages import StagePlan
from .watchdog import StepWatchdog

log = logging.getLogger("gluon_fashion.engine.run")


@dataclass
class Validation:
    """What a trainer's validation returns: ``metric`` decides the best checkpoint (higher is better),
    ``scalars`` go to the metrics JSONL and TensorBoard, ``details`` to ``<prefix>_val_metrics.json``."""

    metric: float
    scalars: Dict[str, float]
    details: Dict = field(default_factory=dict)


class _Averages:
    """Running sums of named losses, for means over a logging window or an epoch."""

    def __init__(self) -> None:
        self.sums: Dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float]) -> None:
        self.count += 1
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def means(self) -> Dict[str, float]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}

    def clear(self) -> None:
        self.sums, self.count = {}, 0


class TrainingRun:
    """Base of the Mask R-CNN and segmentation trainers; :func:`run_training` drives it.

    Set by ``__init__`` here: ``args``, ``dist``, ``contexts``. Set by the subclass before :meth:`open_run`:
    ``prefix`` (path prefix of the run's files), ``checkpoints`` (its CheckpointManager), ``resume_path``.
    Set by :meth:`build`: ``net``, ``trainer`` (gluon.Trainer), ``train_loader`` over ``batches`` (an
    ``EpochTaggedBatches``) over ``trainset`` (whose ``truncated_images``, when it has them, each epoch's summary
    counts), ``iters_per_epoch``, ``schedule`` (iteration -> learning rate), ``batch_size``
    (per worker), ``lr`` (base rate, for the log), ``trained_params`` (names of the parameters the default
    recipe trains; staged fine-tuning picks among them).
    """

    #: Lower bounds of the trainer's own numeric flags (destination -> smallest valid value).
    flag_bounds: Mapping[str, float] = {}
    #: Checkpoint description entries (dotted paths into its JSON) a resumed run must share with the checkpoint:
    #: path -> (the flags that set it, whether a difference is refused; otherwise it is a warning).
    resume_settings: Mapping[str, Tuple[str, bool]] = {}

    def __init__(self, args: argparse.Namespace):
        check_shared_flags(args)
        check_bounds(args, self.flag_bounds)
        self.args = args
        self.dist: DistInfo = init_distributed(args.kv_store, args.horovod, connect_timeout_s=args.dist_timeout,
                                               flag=flag_name(args, "kv_store"))
        if self.dist.horovod:  # one process per GPU
            self.contexts: List[mx.Context] = [horovod_context(bool(args.gpus))]
        else:
            self.contexts = parse_gpus(args.gpus, args.cpu_contexts, flag=flag_name(args, "gpus"))
        self._compiled = False  # hybridized for the current set of trained parameters

    # ------------------------------------------------------------------ what a trainer supplies
    def build(self) -> None:
        """Network, data, optimizer: everything :meth:`fit` needs (see the class docstring)."""
        raise NotImplementedError

    def train_step(self, batch) -> Dict[str, float]:
        """Forward and backward on one batch; returns the named losses as floats, ``"loss"`` their total."""
        raise NotImplementedError

    def validate(self, epoch: int, iteration: int) -> Validation:
        """Score the current weights on the validation data."""
        raise NotImplementedError

    def describe(self) -> str:
        """One log line saying what is trained on what."""
        return type(self).__name__

    def hybridize(self) -> None:
        """Compile the network (again); called before each epoch whose trained parameters changed."""
        if not self.args.disable_hybridization:
            self.net.hybridize()

    # ------------------------------------------------------------------ set-up and teardown
    def open_run(self, config: Mapping) -> None:
        """Start the run's log files and watchdog, then :meth:`build`; on a failed build close them again
        and leave the distributed job, so the other workers stop instead of waiting."""
        self.logger = RunLogger(self.prefix, dict(config), rank=self.dist.rank)
        # Only dist_sync steps are watched; rank 0's validation and saving happen outside any guard.
        self.watchdog = StepWatchdog(self.args.dist_timeout if self.dist.is_dist else 0)
        try:
            self.build()
        except BaseException:
            abandon_job(self.dist)
            self.watchdog.close()
            self.logger.close()
            raise

    def plot(self) -> None:
        """Redraw the run's PNG plots from its metrics (a warning, not a failure, when plotting fails)."""
        plot_metrics_or_warn(self.logger.metrics_path, self.prefix)

    def close(self) -> None:
        """Flush and close the run's files and stop the watchdog."""
        self.watchdog.close()
        self.logger.flush()
        self.logger.close()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Dict:
        """Train (resuming if asked); returns the best metric, its epoch, the iteration count and the last
        validation's details. Ctrl-C stops at the next step boundary (engine/interrupt.py)."""
        with StepBoundaryInterrupt() as self.interrupt:
            return self._fit()

    def _fit(self) -> Dict:
        args = self.args
        # The checkpoint's description, read once: its stage plan and settings are checked before it is loaded.
        resumed_meta = read_checkpoint_meta(self.resume_path) if self.resume_path else {}
        self.stages = StagePlan.from_flag(args.train_stages, args.epochs, self.trained_params,
                                          recorded=resumed_meta.get("train_stages"))
        if self.stages:
            self.checkpoints.meta["train_stages"] = self.stages.spec
        start_epoch, iteration, skip = self._start_position(resumed_meta)
        log.info("%s; %d iterations per epoch, %s%s", self.describe(), self.iters_per_epoch, self.schedule,
                 "; " + self.stages.describe() if self.stages else "")
        speed, self.last_validation = Throughput(), None
        for epoch in range(start_epoch, args.epochs):
            self._enter_stage(epoch)
            self.batches.set_epoch(epoch, skip)
            window, epoch_losses = _Averages(), _Averages()
            if skip:  # resumed mid-epoch: the epoch's summary covers the batches done before the checkpoint too
                epoch_losses.sums, epoch_losses.count = dict(self._resumed_losses["sums"]), self._resumed_losses["count"]
            bar = progress(self.train_loader, total=self.iters_per_epoch - skip, desc=f"epoch {epoch}")
            speed.reset()
            for batch_in_epoch, batch in enumerate(bar, start=skip + 1):
                with self.interrupt.deferred():
                    iteration = self._iterate(epoch, batch_in_epoch, batch, iteration, speed, window, epoch_losses,
                                              bar)
                self.interrupt.check()
            bar.close()
            skip = 0
            means = epoch_losses.means()
            with self.interrupt.deferred():
                self.logger.log_metrics(iteration, "train_epoch", epoch=epoch, samples_s=speed.overall, **means)
            left_out = len(getattr(getattr(self, "trainset", None), "truncated_images", ()))
            log.info("epoch %d: %s, %.2f samples/s%s", epoch, _format(means), speed.overall,
                     f", {left_out} truncated image(s) left out" if left_out else "")
            self._end_epoch(epoch, iteration)
        if start_epoch >= args.epochs:
            log.info("nothing to train: the checkpoint already finished epoch %d of %d", start_epoch - 1, args.epochs)
        barrier(self.dist, self.watchdog, "end of training")
        dump_final_parameters(self.net, self.dist)
        return {"metric": self.checkpoints.metric_name, "best": self.checkpoints.best_metric,
                "best_epoch": self.checkpoints.best_epoch, "iteration": iteration, "last": self.last_validation}

    def _iterate(self, epoch: int, batch_in_epoch: int, batch, iteration: int, speed: Throughput,
                 window: _Averages, epoch_losses: _Averages, bar) -> int:
        """One step with its bookkeeping (losses, logs, mid-epoch save); returns the new iteration count."""
        lr = self.schedule(iteration) * self.stages.lr_factor(epoch)
        with self.watchdog.guard(f"step {iteration}"):
            losses = self.step(batch, iteration, lr)
        iteration += 1
        speed.update(self.batch_size)
        window.add(losses)
        epoch_losses.add(losses)
        # refresh=False: tqdm redraws on its own cadence, with its count; a forced redraw every step
        # would show the count tqdm has not yet written back (0/N) and flood logs that are not a terminal.
        bar.set_postfix(loss=f"{epoch_losses.means()['loss']:.3f}", lr=f"{lr:.2e}",
                        samples_s=f"{speed.rate:.2f}", refresh=False)
        if iteration % self.args.log_interval == 0:
            means = window.means()
            window.clear()
            self.logger.log_metrics(iteration, "train_iter", epoch=epoch, lr=lr, samples_s=speed.rate,
                                    **means)
            log.info("[epoch %d][batch %d/%d] lr %.2e, %.2f samples/s, %s", epoch, batch_in_epoch,
                     self.iters_per_epoch, lr, speed.rate, _format(means))
        if (self.args.save_iter_interval and iteration % self.args.save_iter_interval == 0
                and batch_in_epoch < self.iters_per_epoch and self.dist.is_master):
            self.checkpoints.save(self.net, self.trainer, epoch, iteration, batch_in_epoch=batch_in_epoch,
                                  extra={"epoch_losses": {"sums": epoch_losses.sums,
                                                          "count": epoch_losses.count}})
        return iteration

    def step(self, batch, iteration: int, lr: float) -> Dict[str, float]:
        """One optimizer update at learning rate ``lr``: the trainer's forward and backward, then the update;
        returns the losses."""
        losses = self.train_step(batch)
        check_finite(losses, iteration)  # before the update: a NaN must not reach the weights
        self.trainer.set_learning_rate(lr)
        self.trainer.step(self.batch_size)
        return losses

    def _start_position(self, resumed_meta: Mapping) -> tuple:
        """(epoch, iteration, batches of that epoch already done): resumed, synchronised, ``--start-epoch``."""
        epoch, iteration, skip = 0, 0, 0
        self._resumed_losses = {"sums": {}, "count": 0}
        if self.resume_path:
            self._check_resumable(resumed_meta)
            state = self.checkpoints.restore(self.resume_path, self.net, self.trainer, ctx=self.contexts)
            epoch, iteration, skip = state["epoch"], state["iteration"], state["batch_in_epoch"]
            recorded = (state["meta"].get("extra") or {}).get("epoch_losses")
            if skip and recorded:
                self._resumed_losses = recorded
        sync_parameters(self.net.collect_params(), self.trainer, self.dist)  # every worker starts from rank 0's
        if self.dist.is_dist:
            log.info("%s: global batch %d (%d per worker), learning rate %g for the global batch",
                     self.dist.describe(), self.dist.global_batch_size(self.batch_size), self.batch_size, self.lr)
        if self.args.start_epoch is not None:
            if self.resume_path:
                log.warning("--start-epoch %d overrides the checkpoint's position (epoch %d, iteration %d)",
                            self.args.start_epoch, epoch, iteration)
            epoch, iteration, skip = self.args.start_epoch, self.args.start_epoch * self.iters_per_epoch, 0
        if self.resume_path or self.args.start_epoch is not None:
            self.logger.rewind(iteration)  # the records of the steps this run redoes would stand twice
        return epoch, iteration, skip

    def _check_resumable(self, meta: Mapping) -> None:
        """Refuse (or warn about) resuming a checkpoint made with other settings, naming the flags."""
        for path, (flags, refuse) in self.resume_settings.items():
            theirs, ours = _lookup(meta, path), _lookup(self.checkpoints.meta, path)
            if theirs is None or theirs == ours:
                continue
            message = (f"--resume {self.args.resume}: the checkpoint was trained with other {flags} "
                       f"({_brief(theirs)}) than this run ({_brief(ours)})")
            if refuse:
                raise UserError(message + f"; resume with the checkpoint's {flags} or start a new run")
            log.warning("%s; continuing with this run's", message)

    def _enter_stage(self, epoch: int) -> None:
        """Apply the epoch's fine-tuning stage; recompile when the trained parameters changed (always at the
        first epoch of a process)."""
        changed = self.stages.apply(self.net.collect_params(), epoch)
        if changed or not self._compiled:
            self.hybridize()
            self._compiled = True

    def _validation_due(self, epoch: int) -> bool:
        last = epoch + 1 == self.args.epochs
        return not self.args.no_val and ((epoch + 1) % self.args.val_interval == 0 or last)

    def _end_epoch(self, epoch: int, iteration: int) -> None:
        """All workers meet (the epoch's last gradient exchange ends under the watchdog); worker 0 validates,
        saves the epoch checkpoint, updates the best one and draws the plots; all meet again, with a longer
        timeout, since that work is not guarded on worker 0."""
        barrier(self.dist, self.watchdog, f"end of epoch {epoch}")
        if self.dist.is_master:
            metric = None
            result = self.validate(epoch, iteration) if self._validation_due(epoch) else None
            # Ctrl-C stops a validation at once (it may take minutes); the files after it are written whole.
            with self.interrupt.deferred():
                if result is not None:
                    self.logger.log_metrics(iteration, "val", epoch=epoch, **result.scalars)
                    atomic_write_json(self.prefix + "_val_metrics.json",
                                      dict(result.details, epoch=epoch, iteration=iteration), indent=2)
                    metric, self.last_validation = result.metric, result.details
                self.checkpoints.save(self.net, self.trainer, epoch, iteration, metric=metric)
                if metric is not None:
                    self.checkpoints.update_best(self.net, epoch, iteration, metric)
                self.plot()
            self.interrupt.check()
        barrier(self.dist, self.watchdog, f"worker 0's validation and checkpoint after epoch {epoch}",
                timeout_s=MASTER_WORK_TIMEOUT_FACTOR * self.args.dist_timeout)


def _lookup(document: Mapping, path: str) -> Any:
    """``document["a"]["b"]`` for path "a.b" (None where it is missing)."""
    value: Any = document
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _brief(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in values.items())


def run_training(run: TrainingRun) -> Dict:
    """``run.fit()``, leaving the distributed job on any failure and closing the run in every case."""
    try:
        return run.fit()
    except BaseException:
        abandon_job(run.dist)
        raise
    finally:
        run.close()


__all__ = ["TrainingRun", "Validation", "run_training"]
