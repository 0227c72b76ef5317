"""Training on several machines: MXNet's parameter-server kvstore (``dist_sync``, ``dist_device_sync``) or Horovod.

How a distributed run fits together (see :func:`make_trainer` for the gradient arithmetic):

* Every worker runs the same training script. :func:`init_distributed` connects it to the job and returns
  a :class:`DistInfo` (rank, number of workers, whether this worker is the master, rank 0).
* Each worker reads its own share of the same per-epoch permutation (:func:`shard_indices`). Shares have
  equal length, so every worker runs the same number of steps: in ``dist_sync`` a worker that stops early
  leaves the others waiting forever for its gradients.
* ``--batch-size`` is per worker; the global batch is ``batch_size * num_workers`` and ``--lr`` applies to
  the global batch. :func:`make_trainer` builds a ``gluon.Trainer`` for which ``trainer.step(batch_size)``
  averages the gradients over the global batch, exactly like one machine with the global batch.
* Only the master writes logs and checkpoints (``RunLogger(..., rank=dist.rank)``, ``if dist.is_master``).
* A parameter-server job has no failure detection: when a worker dies, the others wait for its gradients
  forever. :class:`StepWatchdog` bounds every step; past ``timeout_s`` it prints one clear error and ends the
  process with :data:`WATCHDOG_EXIT_CODE`, so the launcher (or the cluster's job system) sees a failure.
* :func:`barrier` lines all workers up (end of epoch, end of training) so they stop together.

Servers and the scheduler run the same script: ``import mxnet`` with ``DMLC_ROLE=server|scheduler`` serves
until the workers finish and then exits, so none of the code below runs there. :func:`launch_local` starts
a whole job (scheduler, servers, workers) on this machine over loopback, for trying things out and tests.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO

import mxnet as mx
import numpy as np
from mxnet.gluon.parameter import DeferredInitializationError

from ..compat import init_trainer_kvstore, kvstore_barrier, skip_kvstore_barrier_before_exit
from ..cpu_threads import threads_per_process
from ..errors import UserError
from ..fileio import atomic_save
from .context import epoch_seed

__all__ = [
    "DIST_KV_STORES", "DUMP_PARAMS_ENV", "LOCAL_KV_STORES", "LOOPBACK_ENV", "MASTER_WORK_TIMEOUT_FACTOR",
    "WATCHDOG_EXIT_CODE", "DistInfo", "StepWatchdog", "abandon_job", "barrier", "dump_final_parameters",
    "horovod_context",
    "init_distributed", "launch_local", "make_trainer", "scale_for_workers", "shard_indices", "sync_parameters",
]

log = logging.getLogger(__name__)

#: Parameter-server kvstores the trainers support (synchronous SGD, identical weights on every worker).
DIST_KV_STORES = ("dist_sync", "dist_device_sync")
#: Single-machine kvstores (gradients summed across this machine's devices).
LOCAL_KV_STORES = ("device", "local", "nccl")
#: Exit status of a worker stopped by :class:`StepWatchdog` (distinct from crashes and UserError's 2).
WATCHDOG_EXIT_CODE = 3
#: Environment every process of a :func:`launch_local` job gets: the parameter server talks over loopback only.
LOOPBACK_ENV = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_NODE_HOST": "127.0.0.1", "DMLC_INTERFACE": "lo"}
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


def shard_indices(num_samples: int, rank: int, num_workers: int, seed: int, epoch: int,
                  shuffle: bool = True, pad: bool = True) -> np.ndarray:
    """Worker ``rank``'s share of epoch ``epoch``'s sample order (dataset indices).

    Every worker computes the same permutation from ``(seed, epoch)`` (the one :class:`EpochBatchSampler`
    uses) and takes every ``num_workers``-th index starting at ``rank``: shares are disjoint and equally long.
    ``pad``: the order is extended by wrapping around to a multiple of ``num_workers`` (a few samples are seen
    twice); without it the remainder is dropped. Equal shares matter: with ``dist_sync`` a worker with
    fewer steps would leave the others waiting for its gradients at the end of the epoch.
    """
    if num_samples < 1:
        raise UserError(f"no training samples to share among {num_workers} worker(s)")
    if num_workers < 1 or not 0 <= rank < num_workers:
        raise ValueError(f"rank {rank} is not in 0..{num_workers - 1}")
    order = (np.random.RandomState(epoch_seed(seed, epoch)).permutation(num_samples) if shuffle
             else np.arange(num_samples))
    if pad:
        order = np.resize(order, math.ceil(num_samples / num_workers) * num_workers)  # repeats from the start
    else:
        order = order[: (num_samples // num_workers) * num_workers]
        if order.size == 0:
            raise UserError(f"{num_samples} training sample(s) cannot give each of {num_workers} workers one")
    return order[rank::num_workers]


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


# ---------------------------------------------------------------------------------------------------- launcher
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launcher dies (Linux), so no process outlives a killed launcher."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop_process_groups(procs: Dict[str, subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM every child's process group (the child and what it forked), then SIGKILL what is left.

    The SIGKILL round always runs: a leader that exited may have left forked helpers (data-loader processes).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace_s
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _pump(name: str, stream, output: TextIO, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with lock:
            output.write(f"[{name}] {line}\n")
            output.flush()
    stream.close()


def launch_local(command: Sequence[str], num_workers: int, num_servers: int = 1,
                 timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None,
                 kill_on_failure: bool = True, output: Optional[TextIO] = None,
                 server_grace_s: float = 30.0) -> int:
    """Run a parameter-server job on this machine, over loopback only; returns the job's exit status.

    Starts one scheduler, ``num_servers`` servers and ``num_workers`` workers, each running ``command``
    (servers and the scheduler exit inside ``import mxnet``) with ``DMLC_ROLE`` etc. set and every address
    pinned to 127.0.0.1 / ``lo`` (:data:`LOOPBACK_ENV`, applied after ``env`` so nothing can override it).
    Output lines are prefixed with ``[worker 0]``, ``[server 0]``, ``[scheduler]`` (numbered in start order;
    MXNet's rank may differ) and ``[launch]`` for the launcher's own messages.

    Returns 0 when every worker succeeded; else the exit status of the first process that failed
    (signals as 128+n), 124 when ``timeout`` seconds passed. ``kill_on_failure``: stop everything as soon
    as one process fails (otherwise wait for the other workers, e.g. to watch their watchdog fire).
    Every started process group is killed on return, on Ctrl-C and on SIGTERM.
    """
    command = list(command)
    if not command:
        raise UserError("no command to launch: put it after '--', e.g. -- python train_segmentation.py ...")
    if num_workers < 1:
        raise UserError(f"-n/--num-workers must be >= 1, got {num_workers}")
    if num_servers < 1:
        raise UserError(f"-s/--num-servers must be >= 1, got {num_servers}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout}")
    output = output if output is not None else sys.stdout
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            output.write(f"[launch] {message}\n")
            output.flush()

    job_env = dict(os.environ)
    job_env.update(env or {})
    job_env.update(LOOPBACK_ENV)
    job_env.update({"DMLC_PS_ROOT_PORT": str(_free_loopback_port()), "DMLC_NUM_SERVER": str(num_servers),
                    "DMLC_NUM_WORKER": str(num_workers), "PYTHONUNBUFFERED": "1"})
    # The workers share the cores (OpenMP threads spinning on an oversubscribed core slow everyone down);
    # the scheduler and servers barely compute. A user's OMP_NUM_THREADS (or one in ``env``) is kept as it is.
    worker_threads = {name: value for name, value in threads_per_process(num_workers).items()
                      if name not in (env or {})}
    helper_threads = {name: "1" for name in worker_threads}
    roles = [("scheduler", "scheduler")] + [(f"server {i}", "server") for i in range(num_servers)] \
        + [(f"worker {i}", "worker") for i in range(num_workers)]

    procs: Dict[str, subprocess.Popen] = {}
    pumps: List[threading.Thread] = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = None
    if in_main_thread:
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt

        previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    start = time.monotonic()
    try:
        try:
            for name, role in roles:
                # Own session per child: killpg reaches whatever it forks; Ctrl-C goes through the launcher.
                threads = worker_threads if role == "worker" else helper_threads
                procs[name] = subprocess.Popen(command, env=dict(job_env, DMLC_ROLE=role, **threads),
                                               stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise UserError(f"cannot start {command[0]!r}: {exc}") from None
        for name, proc in procs.items():
            thread = threading.Thread(target=_pump, args=(name, proc.stdout, output, lock), daemon=True)
            thread.start()
            pumps.append(thread)
        port = job_env["DMLC_PS_ROOT_PORT"]
        say(f"started scheduler (127.0.0.1:{port}), {num_servers} server(s), {num_workers} worker(s): "
            f"{' '.join(command)}")
        return _supervise(procs, timeout, kill_on_failure, server_grace_s, start, say)
    finally:
        _stop_process_groups(procs)
        for thread in pumps:
            thread.join(timeout=5)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _supervise(procs: Dict[str, subprocess.Popen], timeout: Optional[float], kill_on_failure: bool,
               server_grace_s: float, start: float, say) -> int:
    workers = [name for name in procs if name.startswith("worker")]
    done: Dict[str, int] = {}
    first_failure: Optional[int] = None
    workers_done_at: Optional[float] = None
    while True:
        for name, proc in procs.items():
            if name in done or proc.poll() is None:
                continue
            done[name] = status = _exit_status(proc.returncode)
            say(f"{name} exited with code {status} after {time.monotonic() - start:.1f} s")
            if status != 0 and first_failure is None:
                first_failure = status
                if kill_on_failure:
                    say(f"{name} failed: stopping all processes")
                    return status
        if all(name in done for name in procs):
            return first_failure or 0
        if all(name in done for name in workers):
            if first_failure is not None:
                say("all workers have stopped, at least one failed: stopping the scheduler and servers")
                return first_failure
            workers_done_at = workers_done_at or time.monotonic()
            if time.monotonic() - workers_done_at > server_grace_s:
                say(f"workers finished but the scheduler/servers did not exit within {server_grace_s:g} s: "
                    "stopping them")
                return 0
        if timeout is not None and time.monotonic() - start > timeout:
            say(f"timed out after {timeout:g} s: stopping all processes")
            return 124
        time.sleep(0.1)
