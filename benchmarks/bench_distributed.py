#!/usr/bin/env python
"""Training throughput of a small CPU model: one process vs. 1 and 2 parameter-server workers on this machine.

    python benchmarks/bench_distributed.py [--steps 150 --batch-size 64 --hidden 256,1024]

For each MLP width it runs, with one compute thread per process:
  single     one process, plain gluon.Trainer (no kvstore): the baseline
  dist x1    1 worker + 1 server + scheduler (dist_sync): the parameter server's cost per step
  dist x2    2 workers + 1 server + scheduler (dist_sync), each worker with --batch-size samples
and prints samples/s (all workers together, timed between two barriers after --warmup steps) and the
speed-up over the baseline. Everything runs over loopback on one machine: see the notes it prints.
The script is also the job's program (``--role-run``), started by launch_local.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import subprocess
import tempfile
import time
from pathlib import Path

import gluon_fashion  # noqa: F401  before MXNet: restores the numpy aliases it needs (Python 3.12)
import mxnet as mx  # next: as scheduler/server this import serves the job and exits
import numpy as np
from mxnet import autograd, gluon

from gluon_fashion.data.samplers import EpochBatchSampler
from gluon_fashion.engine.distributed import DistInfo, barrier, init_distributed, make_trainer, sync_parameters
from gluon_fashion.launcher import launch_local

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}
NUM_SAMPLES = 8192
FEATURES = 256
CLASSES = 10


def _build(hidden: int) -> gluon.nn.HybridSequential:
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(hidden, activation="relu", in_units=FEATURES),
            gluon.nn.Dense(hidden, activation="relu", in_units=hidden), gluon.nn.Dense(CLASSES, in_units=hidden))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    return net


def _train(dist: DistInfo, hidden: int, steps: int, warmup: int, batch_size: int) -> dict:
    """Train ``warmup + steps`` steps; returns the timed part's figures (this worker's view)."""
    rng = np.random.RandomState(1)
    x_all = rng.normal(size=(NUM_SAMPLES, FEATURES)).astype(np.float32)
    y_all = rng.randint(0, CLASSES, NUM_SAMPLES).astype(np.float32)
    net = _build(hidden)
    trainer = make_trainer(net.collect_params(), "sgd", {"learning_rate": 0.05, "momentum": 0.9}, dist)
    sync_parameters(net.collect_params(), trainer, dist)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    # This worker's share of epoch 0's order, as the trainers' samplers give it.
    sampler = EpochBatchSampler(NUM_SAMPLES, 1, seed=0, num_parts=dist.num_workers, part_index=dist.rank)
    share = np.array([index for batch in sampler for index in batch])
    started = None
    for step in range(warmup + steps):
        if step == warmup:
            barrier(dist)
            mx.nd.waitall()
            started = time.perf_counter()
        batch = share[(step * batch_size) % (len(share) - batch_size):][:batch_size]
        x, y = mx.nd.array(x_all[batch]), mx.nd.array(y_all[batch])
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch_size)
        loss.mean().asscalar()
    barrier(dist)
    mx.nd.waitall()
    elapsed = time.perf_counter() - started
    params = sum(p.data().size for p in net.collect_params().values())
    return {"seconds": elapsed, "samples_s": dist.global_batch_size(batch_size) * steps / elapsed,
            "params": int(params), "workers": dist.num_workers}


def _role_run(args) -> int:
    dist = init_distributed("dist_sync", connect_timeout_s=120)
    result = _train(dist, args.hidden_one, args.steps, args.warmup, args.batch_size)
    if dist.is_master:
        Path(args.result).write_text(json.dumps(result))
    return 0


def _dist_run(workers: int, hidden: int, args, scratch: Path) -> dict:
    result_path = scratch / f"dist_{workers}_{hidden}.json"
    log = io.StringIO()
    command = [sys.executable, os.path.abspath(__file__), "--role-run", "--hidden-one", str(hidden),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--result", str(result_path)]
    code = launch_local(command, num_workers=workers, num_servers=1, timeout=args.timeout, env=ONE_THREAD,
                        output=log)
    if code != 0:
        sys.stderr.write(log.getvalue())
        raise SystemExit(f"the {workers}-worker job failed with exit code {code}")
    return json.loads(result_path.read_text())


def _single_run(hidden: int, args) -> dict:
    # A child process, so that it runs with one compute thread like each worker.
    program = ("import json, sys; sys.argv = [sys.argv[0]]; import bench_distributed as b; "
               "from gluon_fashion.engine.distributed import DistInfo; "
               f"print(json.dumps(b._train(DistInfo(kv_store='device'), {hidden}, {args.steps}, {args.warmup}, "
               f"{args.batch_size})))")
    run = subprocess.run([sys.executable, "-c", program], env=dict(os.environ, **ONE_THREAD),
                         cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True, text=True,
                         timeout=args.timeout)
    if run.returncode != 0:
        raise SystemExit(f"the single-process run failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150, help="timed steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="per worker (default: %(default)s)")
    p.add_argument("--hidden", default="256,1024", help="MLP widths to try (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run (default: %(default)s)")
    p.add_argument("--role-run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hidden-one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role_run:
        return _role_run(args)

    print(f"CPU cores: {os.cpu_count()}, one compute thread per process, batch {args.batch_size} per worker, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps, MXNet {mx.__version__}")
    print(f"{'model':<22} {'run':<10} {'workers':>7} {'global batch':>12} {'samples/s':>10} {'vs single':>9}")
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as scratch:
        for hidden in (int(h) for h in args.hidden.split(",")):
            base = _single_run(hidden, args)
            model = f"MLP {hidden} ({base['params'] / 1e6:.2f}M p)"
            rows = [("single", base), ("dist x1", _dist_run(1, hidden, args, Path(scratch))),
                    ("dist x2", _dist_run(2, hidden, args, Path(scratch)))]
            for name, result in rows:
                print(f"{model:<22} {name:<10} {result['workers']:>7} "
                      f"{args.batch_size * result['workers']:>12} {result['samples_s']:>10.0f} "
                      f"{result['samples_s'] / base['samples_s']:>8.2f}x", flush=True)
    print("notes: all processes share this machine's cores (scheduler and server too) and talk over loopback, "
          "which has no real network latency or bandwidth limit; the figures show the parameter server's "
          "per-step cost, not multi-machine scaling.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
