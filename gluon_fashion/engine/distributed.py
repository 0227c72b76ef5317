"""Training on several machines: MXNet's parameter-server kvstore (``dist_sync``, ``dist_device_sync``) or Horovod.

How a distributed run fits together (see :func:`make_trainer` for the gradient arithmetic):

* Every worker runs the same training script. :func:`init_distributed` connects it to the job and returns
  a :class:`DistInfo` (rank, number of workers, whether this worker is the master, rank 0).
* Each worker reads its own share of the same per-epoch permutation: the trainers give their batch sampler
  ``num_parts=dist.num_workers, part_index=dist.rank`` (:mod:`gluon_fashion.data.samplers`). Shares have
  equal length, so every worker runs the same number of steps: in ``dist_sync`` a worker that stops early
  leaves the others waiting forever for its gradients.
* ``--batch-size`` is per worker; the global batch is ``batch_size * num_workers`` and ``--lr`` applies to
  the global batch. :func:`make_trainer` builds a ``gluon.Trainer`` for which ``trainer.step(batch_size)``
  averages the gradients over the global batch, exactly like one machine with the global batch.
* Only the master writes logs and checkpoints (``RunLogger(..., rank=dist.rank)``, ``if dist.is_master``).
* A parameter-server job has no failure detection: when a worker dies, the others wait for its gradients
  forever. :class:`~gluon_fashion.engine.watchdog.StepWatchdog` bounds every step, and joining the job; past
  its timeout it ends the process with a clear error, so the launcher (or the cluster's job system) sees a
  failure.
* :func:`barrier` lines all workers up (end of epoch, end of training) so they stop together.

Servers and the scheduler run the same script: ``import mxnet`` with ``DMLC_ROLE=server|scheduler`` serves
until the workers finish and then exits, so none of the code below runs there. :mod:`gluon_fashion.launcher`
starts a whole job (scheduler, servers, workers) on this machine over loopback, for trying things out and tests.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import mxnet as mx
from mxnet.gluon.parameter import DeferredInitializationError

from ..compat import init_trainer_kvstore, kvstore_barrier, skip_kvstore_barrier_before_exit
from ..errors import UserError
from ..fileio import atomic_save
from .watchdog import StepWatchdog

__all__ = [
    "DIST_KV_STORES", "DUMP_PARAMS_ENV", "LOCAL_KV_STORES", "MASTER_WORK_TIMEOUT_FACTOR", "DistInfo",
    "abandon_job", "barrier", "dump_final_parameters", "horovod_context", "init_distributed", "make_trainer",
    "scale_for_workers", "sync_parameters",
]

log = logging.getLogger(__name__)

#: Parameter-server kvstores the trainers support (synchronous SGD, identical weights on every worker).
DIST_KV_STORES = ("dist_sync", "dist_device_sync")
#: Single-machine kvstores (gradients summed across this machine's devices).
LOCAL_KV_STORES = ("device", "local", "nccl")
#: The barrier after worker 0's validation and checkpoints waits this many ``--dist-timeout``s: that work is
#: not guarded on worker 0 and may take far longer than a training step, but a dead worker 0 must still end
#: the others.
MASTER_WORK_TIMEOUT_FACTOR = 20
#: Debug hook read by the trainers: a folder where every worker writes its final weights (see
#: :func:`dump_final_parameters`).
DUMP_PARAMS_ENV = "GLUON_FASHION_DUMP_PARAMS_DIR"
_REQUIRED_ENV = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
_LAUNCH_HINT = ("start the job with a launcher: python tools/launch_local.py -n 2 -s 1 -- <command> on one "
                "machine, or mxnet's tools/launch.py (dmlc_tracker) across machines")


@dataclass
class DistInfo:
    """Where this process stands in a (possibly distributed) run."""

    kv_store: str
    kvstore: Optional[Any] = None  # the mx.kv.KVStore of a dist_* run, else None
    rank: int = 0
    num_workers: int = 1
    horovod: bool = False

    @property
    def is_dist(self) -> bool:
        """True in a multi-worker job (parameter server or Horovod), even with a single worker."""
        return self.kvstore is not None or self.horovod

    @property
    def is_master(self) -> bool:
        """Rank 0: the only worker that writes logs, metrics and checkpoints."""
        return self.rank == 0

    def global_batch_size(self, batch_size: int) -> int:
        """Samples per optimizer step over all workers for a per-worker ``batch_size``."""
        return batch_size * self.num_workers

    def describe(self) -> str:
        """One line for the log, e.g. 'dist_sync: worker 0 of 2 (master)'."""
        if not self.is_dist:
            return f"single machine (kvstore {self.kv_store})"
        kind = "horovod" if self.horovod else self.kv_store
        return f"{kind}: worker {self.rank} of {self.num_workers}" + (" (master)" if self.is_master else "")


def init_distributed(kv_store: Optional[str], horovod: bool = False, connect_timeout_s: Optional[float] = None,
                     flag: str = "--kvstore") -> DistInfo:
    """Join the job named by the kvstore flag (or Horovod) and return this worker's :class:`DistInfo`.

    ``kv_store``: one of :data:`LOCAL_KV_STORES` (single machine; nothing is created here, gluon.Trainer does
    it) or :data:`DIST_KV_STORES` (creates the parameter-server kvstore; needs the ``DMLC_*`` variables a
    launcher sets). ``connect_timeout_s``: give up with a clear error when the scheduler, servers or other
    workers do not all show up in time (None waits forever, as MXNet does). ``flag``: the trainer's option
    name, used in error messages.
    """
    name = (kv_store or "device").strip()
    if horovod:
        if name.startswith("dist"):
            raise UserError(f"{flag} {name} and --horovod exclude each other: Horovod does its own "
                            f"all-reduce; use {flag} device with --horovod")
        return _init_horovod(name)
    if name == "dist_async":
        raise UserError(f"{flag} dist_async is not supported: asynchronous updates run the optimizer on the "
                        "servers, which ignores the trainers' learning-rate schedule and cannot save optimizer "
                        f"states in checkpoints; use {flag} dist_sync (or dist_device_sync with GPUs)")
    if name in LOCAL_KV_STORES:
        return DistInfo(kv_store=name)
    if name not in DIST_KV_STORES:
        raise UserError(f"{flag} {name!r} is not known: choose one of "
                        f"{', '.join(LOCAL_KV_STORES + DIST_KV_STORES)}")
    missing = [var for var in _REQUIRED_ENV if not os.environ.get(var)]
    if missing:
        raise UserError(f"{flag} {name} needs the environment of a distributed job, but "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: {_LAUNCH_HINT}")
    role = os.environ["DMLC_ROLE"]
    if role != "worker":
        # Servers and the scheduler never get here (import mxnet serves and exits), unless the variable is wrong.
        raise UserError(f"DMLC_ROLE={role!r}: the training script runs as 'worker'; servers and the scheduler "
                        "are started by the launcher with DMLC_ROLE=server / scheduler")
    hint = ("check that the scheduler address/port and DMLC_NUM_WORKER / DMLC_NUM_SERVER match the processes "
            "actually started")
    with StepWatchdog(connect_timeout_s, hint=hint) as watchdog, watchdog.guard(f"joining the {name} job"):
        kvstore = mx.kv.create(name)
    info = DistInfo(kv_store=name, kvstore=kvstore, rank=kvstore.rank, num_workers=kvstore.num_workers)
    log.info("joined %s", info.describe())
    return info


def abandon_job(dist: DistInfo) -> None:
    """Call when this worker stops on an error: its exit then skips the job's closing barrier.

    At exit, an MXNet parameter-server worker waits until every other worker exits too. After an error on
    one worker the others never get there (they wait for its gradients until their watchdog ends them), so
    the failed worker would hang instead of exiting with its error, and the launcher would not notice the
    failure. No-op outside parameter-server jobs.
    """
    if dist.kvstore is None:
        return
    with contextlib.suppress(Exception):  # already failing: this must not mask the real error
        skip_kvstore_barrier_before_exit(dist.kvstore)


def _init_horovod(kv_store: str) -> DistInfo:
    try:
        import horovod.mxnet as hvd
    except ImportError as exc:
        raise UserError(f"Horovod is not installed ({exc}): pip install horovod[mxnet] (built against this "
                        "MXNet, e.g. HOROVOD_WITH_MXNET=1), or use the parameter server (kvstore dist_sync) "
                        "instead") from None
    hvd.init()
    info = DistInfo(kv_store=kv_store, rank=hvd.rank(), num_workers=hvd.size(), horovod=True)
    log.info("joined %s", info.describe())
    return info


def horovod_context(use_gpu: bool) -> mx.Context:
    """This process's device in a Horovod job (one process per GPU): GPU ``local_rank``, else the CPU."""
    import horovod.mxnet as hvd
    return mx.gpu(hvd.local_rank()) if use_gpu else mx.cpu()


def scale_for_workers(optimizer_params: Optional[Dict[str, Any]], num_workers: int) -> Dict[str, Any]:
    """``optimizer_params`` for a parameter-server trainer: ``rescale_grad`` divided by ``num_workers``.

    The convention: ``--batch-size`` is per worker, the global batch is ``batch_size * num_workers``, and
    ``--lr`` is used as given, for the global batch. With ``dist_sync`` the kvstore *sums* the gradients of
    all workers, and ``trainer.step(batch_size)`` multiplies by ``rescale_grad / batch_size``; dividing
    ``rescale_grad`` by the number of workers turns that sum into the mean over the global batch, so the
    update equals a single-machine step with the global batch and the same ``lr`` (as Horovod's
    DistributedTrainer does). Learning rates tuned for a smaller global batch may need the usual linear
    scaling, which is the caller's choice, not done here.
    """
    params = dict(optimizer_params or {})
    params["rescale_grad"] = float(params.get("rescale_grad", 1.0)) / num_workers
    return params


def make_trainer(params, optimizer: str, optimizer_params: Optional[Dict[str, Any]], dist: DistInfo):
    """A ``gluon.Trainer`` for this run on which ``trainer.step(per_worker_batch)`` is always right.

    Single machine: ``gluon.Trainer(..., kvstore=dist.kv_store)`` as before. Parameter server: the dist
    kvstore with ``update_on_kvstore=False`` and :func:`scale_for_workers`. In MXNet 1.9.1 Gluon would
    otherwise run the optimizer on the servers, where (1) ``trainer.set_learning_rate`` never arrives (the
    optimizer is pickled to the servers once, at the first step), so learning-rate schedules are silently
    ignored, and (2) ``trainer.save_states`` fails ("Cannot save states for distributed training"). With
    ``update_on_kvstore=False`` the kvstore sums gradients across workers and every worker applies the same
    update locally. Horovod: ``hvd.DistributedTrainer`` (it averages over workers itself).
    Call :func:`sync_parameters` before the first training step.
    """
    from mxnet import gluon

    if dist.horovod:
        import horovod.mxnet as hvd
        return hvd.DistributedTrainer(params, optimizer, optimizer_params)
    if dist.kvstore is None:
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=dist.kv_store)
    # Resuming initialises the kvstore inside trainer.load_states, before sync_parameters runs.
    _plain_layout(params.values() if hasattr(params, "values") else params)
    return gluon.Trainer(params, optimizer, scale_for_workers(optimizer_params, dist.num_workers),
                         kvstore=dist.kvstore, update_on_kvstore=False)


def _plain_layout(params) -> None:
    """Give every initialised parameter fresh arrays in MXNet's plain layout (same values, same devices).

    An inference forward pass on CPU (a model builder's, the deferred-shape pass) lets oneDNN reorder
    convolution weights in place into its blocked layout. MXNet 1.9.1's parameter server mishandles such an
    array when the kvstore is initialised: rank 0's value never reaches the server, which dies with "init N
    first" (seen with DeepLabV3, also when resuming; gone with MXNET_MKLDNN_ENABLED=0). Copying into the
    array keeps the blocked layout; reset_ctx allocates new arrays.
    """
    for param in params:
        param.reset_ctx(param.list_ctx())  # a deferred parameter only keeps its devices


def sync_parameters(params, trainer, dist: DistInfo) -> None:
    """Give every worker rank 0's weights now (no-op on a single machine); every worker must call it.

    Call once after the weights are final for the start of training (initialised, pretrained or resumed)
    and before the first forward pass. Without it Gluon copies rank 0's weights only inside the first
    ``trainer.step``, after the other workers computed their first gradients on their own weights, so step
    one mixes gradients of different models. Parameters still waiting for deferred initialisation cannot be
    sent: run one forward pass (outside ``autograd.record``) first.
    """
    if not dist.is_dist:
        return
    deferred = []
    for param in params.values():
        try:
            param.list_data()
        except DeferredInitializationError:
            deferred.append(param.name)
    if deferred:
        raise RuntimeError(f"sync_parameters: {len(deferred)} parameter(s) are not initialised yet (deferred "
                           f"shapes, e.g. {deferred[0]}): run one forward pass before syncing")
    if dist.horovod:
        import horovod.mxnet as hvd
        hvd.broadcast_parameters(params, root_rank=0)
        return
    _plain_layout(params.values())
    # What Gluon would do lazily in the first step: rank 0 pushes every weight to the servers and every worker
    # pulls it. Then wait: those pulls run asynchronously, and the first gradient push of the same key may
    # reach the server before a pull and replace the stored weights, so that worker would start from zeros
    # (seen with Mask R-CNN on a loaded machine when this used trainer.allreduce_grads()).
    init_trainer_kvstore(trainer)
    mx.nd.waitall()


def dump_final_parameters(net, dist: DistInfo) -> Optional[str]:
    """Debug hook: with ``$GLUON_FASHION_DUMP_PARAMS_DIR`` set, write this worker's weights to
    ``<dir>/worker<rank>.params``; returns the path (None when the variable is unset).

    Checkpoints hold worker 0's weights only; this lets a test, or someone debugging a cluster, check that
    every worker ended a ``dist_sync`` run with the same weights. Every worker calls it at the end of training.
    """
    folder = os.environ.get(DUMP_PARAMS_ENV, "").strip()
    if not folder:
        return None
    path = os.path.join(folder, f"worker{dist.rank}.params")
    if os.path.exists(path):
        log.warning("%s=%s: replacing %s", DUMP_PARAMS_ENV, folder, path)
    os.makedirs(folder, exist_ok=True)
    atomic_save(path, net.save_parameters)
    log.info("%s: worker %d's final weights written to %s", DUMP_PARAMS_ENV, dist.rank, path)
    return path


def barrier(dist: DistInfo, watchdog: Optional[StepWatchdog] = None, what: str = "barrier",
            timeout_s: Optional[float] = None) -> None:
    """Wait until every worker got here (no-op on a single machine); guarded by ``watchdog`` if given.

    Pending asynchronous work (the last steps' push/pull) is finished first, so a dead peer is noticed here
    rather than later in an unguarded call. Use it at the end of training so all workers stop together, and
    after rank-0-only work (validation, checkpoints) when the next step must not start early.
    """
    if not dist.is_dist:
        return
    guard = watchdog.guard(what, timeout_s) if watchdog is not None else contextlib.nullcontext()
    with guard:
        mx.nd.waitall()
        if dist.horovod:
            import horovod.mxnet as hvd
            hvd.allreduce(mx.nd.zeros((1,)), name=f"barrier.{what}").wait_to_read()
        else:
            kvstore_barrier(dist.kvstore)
