"""Distributed training groundwork: real parameter-server jobs (scheduler, server, two workers) on loopback.

This file is also the job's program: ``python tests/test_distributed.py --out DIR ...`` trains a small MLP as
one worker (the scheduler and server run it too and serve inside ``import mxnet``).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gluon_fashion  # noqa: F401  before MXNet: restores the numpy aliases it needs (Python 3.12)
import mxnet as mx  # next: as scheduler/server this import serves the job and exits
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mxnet import autograd, gluon

from gluon_fashion.data.samplers import EpochBatchSampler
from gluon_fashion.engine import CheckpointManager, RunLogger
from gluon_fashion.engine.distributed import (DistInfo, barrier, init_distributed, make_trainer, scale_for_workers,
                                              sync_parameters)
from gluon_fashion.engine.watchdog import WATCHDOG_EXIT_CODE, StepWatchdog
from gluon_fashion.errors import UserError
from gluon_fashion.fileio import atomic_save, atomic_write_json
from gluon_fashion.launcher import launch_local

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
# One thread per process: four processes share this machine's cores.
JOB_ENV = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1", "GLUON_FASHION_NO_PROGRESS": "1"}

NUM_SAMPLES = 97  # odd, so the sampler leaves one sample out to give two workers equal shares
BATCH = 8         # per worker
EPOCHS = 4
SEED = 5
BASE_LR = 0.05


# ------------------------------------------------------------------------ the model both sides train
def _regression_data():
    rng = np.random.RandomState(11)
    x = rng.normal(size=(NUM_SAMPLES, 4)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0], np.float32) + np.sin(2 * x[:, 0])).astype(np.float32)
    return x, y[:, None]


def _build_net(init_seed: int) -> gluon.nn.HybridSequential:
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(16, activation="relu", in_units=4), gluon.nn.Dense(1, in_units=16))
    mx.random.seed(init_seed)
    net.initialize(mx.init.Xavier())
    return net


def _lr(epoch: int) -> float:
    return BASE_LR * 0.5 ** epoch  # a schedule: must reach every worker's update


def _sampler(rank: int, num_workers: int) -> EpochBatchSampler:
    """Worker ``rank``'s batches, as the trainers draw them."""
    return EpochBatchSampler(NUM_SAMPLES, BATCH, seed=SEED, num_parts=num_workers, part_index=rank)


def _steps_per_epoch(num_workers: int) -> int:
    return len(_sampler(0, num_workers))


def _worker_main(argv) -> int:
    """One worker of the test job: trains, writes its final weights; rank 0 also logs and checkpoints."""
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--die-rank", type=int, default=-1)
    p.add_argument("--die-at-step", type=int, default=-1)
    p.add_argument("--dist-timeout", type=float, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    dist = init_distributed("dist_sync", connect_timeout_s=120)
    # Different initial weights per worker on purpose: the first step must give everyone rank 0's.
    net = _build_net(init_seed=100 + dist.rank)
    trainer = make_trainer(net.collect_params(), "sgd", {"learning_rate": BASE_LR, "momentum": 0.9}, dist)
    sync_parameters(net.collect_params(), trainer, dist)
    prefix = str(out / f"run_rank{dist.rank}" / "mlp")
    logger = RunLogger(prefix, {"batch_size": BATCH, "workers": dist.num_workers}, rank=dist.rank)
    checkpoints = CheckpointManager(prefix, {"task": "segmentation", "model": "mlp", "classes": []})
    watchdog = StepWatchdog(args.dist_timeout)
    x_all, y_all = _regression_data()
    loss_fn = gluon.loss.L2Loss()
    sampler = _sampler(dist.rank, dist.num_workers)
    epoch_losses, iteration = [], 0
    for epoch in range(EPOCHS):
        trainer.set_learning_rate(_lr(epoch))
        sampler.set_epoch(epoch)
        total = 0.0
        for batch in sampler:
            with watchdog.guard(f"step {iteration}"):
                if dist.rank == args.die_rank and iteration == args.die_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no clean-up, no message
                x, y = mx.nd.array(x_all[batch]), mx.nd.array(y_all[batch])
                with autograd.record():
                    loss = loss_fn(net(x), y)
                loss.backward()
                trainer.step(BATCH)
                total += float(loss.mean().asscalar())
            iteration += 1
        epoch_losses.append(total / len(sampler))
        logger.log_metrics(iteration, "train_epoch", epoch=epoch, loss=epoch_losses[-1])
        # The epoch's last push/pull finishes here, under the watchdog, not inside rank 0's unguarded save.
        barrier(dist, watchdog, f"end of epoch {epoch}")
        if dist.is_master:
            checkpoints.save(net, trainer, epoch, iteration)
        barrier(dist, watchdog, f"rank 0 checkpoint after epoch {epoch}")
    atomic_save(out / f"final_rank{dist.rank}.params", net.save_parameters)
    atomic_write_json(out / f"losses_rank{dist.rank}.json", {"epoch_losses": epoch_losses, "iterations": iteration})
    logger.close()
    watchdog.close()
    return 0


def _reference_weights(num_workers: int, path: Path) -> dict:
    """One process, global batch = BATCH * num_workers made of the workers' batches: what dist_sync must equal."""
    net = _build_net(init_seed=100)  # rank 0's initial weights
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": BASE_LR, "momentum": 0.9}, kvstore=None)
    x_all, y_all = _regression_data()
    loss_fn = gluon.loss.L2Loss()
    samplers = [_sampler(rank, num_workers) for rank in range(num_workers)]
    for epoch in range(EPOCHS):
        trainer.set_learning_rate(_lr(epoch))
        for sampler in samplers:
            sampler.set_epoch(epoch)
        for batches in zip(*samplers):  # step by step, the workers' batches together
            batch = np.concatenate(batches)
            with autograd.record():
                loss = loss_fn(net(mx.nd.array(x_all[batch])), mx.nd.array(y_all[batch]))
            loss.backward()
            trainer.step(len(batch))
    net.save_parameters(str(path))
    return _load_weights(path)


def _load_weights(path: Path) -> dict:
    """{structural name ('0.weight', ...): array} of a saved .params file."""
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def _run_job(tmp_path: Path, *extra: str, kill_on_failure: bool = True, timeout: float = 150):
    output = io.StringIO()
    started = time.monotonic()
    code = launch_local([sys.executable, str(THIS_FILE), "--out", str(tmp_path), *extra], num_workers=2,
                        num_servers=1, timeout=timeout, env=JOB_ENV, kill_on_failure=kill_on_failure,
                        output=output)
    return code, output.getvalue(), time.monotonic() - started


def _exits(text: str) -> dict:
    """{'worker 0': (code, seconds), ...} from the launcher's '[launch] NAME exited with code C after S s'."""
    return {name: (int(code), float(seconds)) for name, code, seconds
            in re.findall(r"\[launch\] (\w+(?: \d+)?) exited with code (\d+) after ([\d.]+) s", text)}


# ------------------------------------------------------------------------ real jobs
def test_dist_sync_job_matches_single_machine_with_global_batch(tmp_path):
    code, text, _ = _run_job(tmp_path)
    assert code == 0, text
    first, second = (_load_weights(tmp_path / f"final_rank{rank}.params") for rank in (0, 1))
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    # dist_sync + make_trainer + step(per-worker batch) == one machine, global batch, same lr and schedule.
    reference = _reference_weights(2, tmp_path / "reference.params")
    assert sorted(reference) == sorted(first) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    for name in first:
        np.testing.assert_allclose(first[name], reference[name], rtol=1e-4, atol=1e-5, err_msg=name)
    losses = json.loads((tmp_path / "losses_rank0.json").read_text())
    assert losses["iterations"] == EPOCHS * _steps_per_epoch(2)
    assert losses["epoch_losses"][-1] < 0.5 * losses["epoch_losses"][0], losses
    # Only the master wrote run files and checkpoints; they are complete and loadable.
    rank0 = tmp_path / "run_rank0"
    assert not (tmp_path / "run_rank1").exists()
    for name in ("mlp_config.json", "mlp_train.log", "mlp_metrics.jsonl", f"mlp_{EPOCHS - 1:04d}.params",
                 "mlp_last.params", "mlp_last.states", "mlp_last.json"):
        assert (rank0 / name).is_file(), name
    last = _load_weights(rank0 / "mlp_last.params")
    for name in first:
        np.testing.assert_array_equal(last[name], first[name], err_msg=name)
    metrics = [json.loads(line) for line in (rank0 / "mlp_metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))


def test_dead_worker_makes_the_other_stop_within_the_timeout(tmp_path):
    timeout = 4.0
    # Rank 1 dies at the start of step 3. Its step-2 push is asynchronous, so it may or may not have reached
    # the server: rank 0 stalls in step 3 (waiting for step 2's sum) or in step 4 (waiting for step 3's).
    code, text, _ = _run_job(tmp_path, "--die-rank", "1", "--die-at-step", "3", "--dist-timeout",
                                   str(timeout), kill_on_failure=False)
    exits = _exits(text)
    codes = sorted(code for code, _ in (exits[f"worker {i}"] for i in range(2)))
    assert codes == [WATCHDOG_EXIT_CODE, 128 + signal.SIGKILL], text
    assert code == 128 + signal.SIGKILL  # the first failure is the job's status
    dead_at = next(s for c, s in exits.values() if c == 128 + signal.SIGKILL)
    stopped_at = next(s for c, s in exits.values() if c == WATCHDOG_EXIT_CODE)
    assert timeout - 1.5 <= stopped_at - dead_at <= timeout + 10, text
    assert re.search(r"ERROR   distributed training stalled: step [34] did not finish within 4 s", text), text
    assert not (tmp_path / "final_rank0.params").exists()


def test_launcher_stops_the_job_when_a_worker_dies(tmp_path):
    # No watchdog: without kill_on_failure the survivor would wait forever; the launcher must not.
    code, text, elapsed = _run_job(tmp_path, "--die-rank", "0", "--die-at-step", "3", timeout=150)
    assert code == 128 + signal.SIGKILL, text
    assert "failed: stopping all processes" in text
    assert elapsed < 60, text


# ------------------------------------------------------------------------ launcher plumbing (no MXNet job)
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_launcher_timeout_kills_every_process_and_its_children(tmp_path):
    program = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(os.path.join({str(tmp_path)!r}, os.environ["DMLC_ROLE"] + str(os.getpid())), "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
    """)
    output = io.StringIO()
    started = time.monotonic()
    code = launch_local([sys.executable, "-c", program], num_workers=2, num_servers=1, timeout=3, output=output)
    assert code == 124
    assert time.monotonic() - started < 30
    assert "timed out after 3 s" in output.getvalue()
    pids = [int(pid) for f in tmp_path.iterdir() for pid in f.read_text().split()]
    assert len(pids) == 8  # scheduler, server, two workers, each with a child
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


def test_sigterm_to_the_launcher_cli_stops_every_process(tmp_path):
    program = (f"import os, time; open(os.path.join({str(tmp_path)!r}, str(os.getpid())), 'w').close(); "
               "time.sleep(120)")
    cli = subprocess.Popen([sys.executable, str(REPO / "tools" / "launch_local.py"), "-n", "2", "--timeout", "100",
                            "--", sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [int(f.name) for f in tmp_path.iterdir()]
        assert len(pids) == 4  # scheduler, server, two workers
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 130 and "interrupted" in err, out + err
    assert not [pid for pid in pids if _alive(pid)]


def test_launcher_sets_loopback_environment_and_prefixes_output():
    program = ("import os; print(' '.join(os.environ[k] for k in ('DMLC_ROLE', 'DMLC_PS_ROOT_URI', "
               "'DMLC_NODE_HOST', 'DMLC_INTERFACE', 'DMLC_NUM_WORKER', 'DMLC_NUM_SERVER')))")
    output = io.StringIO()
    code = launch_local([sys.executable, "-c", program], num_workers=2, num_servers=1, timeout=60,
                        env={"DMLC_PS_ROOT_URI": "10.0.0.1"}, output=output)
    lines = output.getvalue().splitlines()
    assert code == 0
    assert "[scheduler] scheduler 127.0.0.1 127.0.0.1 lo 2 1" in lines
    assert "[server 0] server 127.0.0.1 127.0.0.1 lo 2 1" in lines
    assert sum(line == f"[worker {i}] worker 127.0.0.1 127.0.0.1 lo 2 1" for i in (0, 1) for line in lines) == 2


def test_launcher_splits_the_cores_between_workers_unless_the_user_set_threads(monkeypatch):
    from gluon_fashion import cpu_threads
    program = "import os; print(os.environ['DMLC_ROLE'], os.environ.get('OMP_NUM_THREADS'))"
    monkeypatch.setattr(cpu_threads, "physical_cores", lambda: 4)
    for user_set, worker, other in ((False, "2", "1"), (True, "9", "9")):
        monkeypatch.setattr(cpu_threads, "USER_SET", user_set)
        monkeypatch.setenv("OMP_NUM_THREADS", "9")
        output = io.StringIO()
        assert launch_local([sys.executable, "-c", program], num_workers=2, num_servers=1, timeout=60,
                            output=output) == 0
        lines = output.getvalue().splitlines()
        assert sum(line.endswith(f"] worker {worker}") for line in lines) == 2, lines
        assert f"[server 0] server {other}" in lines and f"[scheduler] scheduler {other}" in lines
    monkeypatch.setattr(cpu_threads, "USER_SET", False)
    output = io.StringIO()  # the caller's env is what it asks for
    assert launch_local([sys.executable, "-c", program], num_workers=2, num_servers=1, timeout=60,
                        env={"OMP_NUM_THREADS": "3"}, output=output) == 0
    lines = output.getvalue().splitlines()
    assert {"[scheduler] scheduler 3", "[server 0] server 3"} <= set(lines)
    assert sum(line.endswith("] worker 3") for line in lines) == 2, lines


def test_launcher_cli_reports_first_failure_and_bad_usage():
    cli = [sys.executable, str(REPO / "tools" / "launch_local.py")]
    run = subprocess.run(cli + ["-n", "1", "-s", "1", "--timeout", "60", "--", sys.executable, "-c",
                                "import os, sys; sys.exit(7 if os.environ['DMLC_ROLE'] == 'worker' else 0)"],
                         capture_output=True, text=True, timeout=90)
    assert run.returncode == 7, run.stdout + run.stderr
    assert "[launch] worker 0 exited with code 7" in run.stdout
    run = subprocess.run(cli + ["-n", "0", "--", "true"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "error: -n/--num-workers must be >= 1" in run.stderr


# ------------------------------------------------------------------------ watchdog
def test_watchdog_stops_a_stalled_block_and_leaves_finished_ones_alone():
    program = textwrap.dedent("""
        import time
        from gluon_fashion.engine.watchdog import StepWatchdog
        watchdog = StepWatchdog(1.0)
        for i in range(3):
            with watchdog.guard(f"step {i}"):
                time.sleep(0.3)
        time.sleep(1.5)  # outside any guard: not watched
        print("quick steps passed", flush=True)
        with watchdog.guard("step 3"):
            time.sleep(30)
        print("not reached")
    """)
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert run.returncode == WATCHDOG_EXIT_CODE, run.stderr
    assert run.stdout.strip() == "quick steps passed"
    assert "error: distributed training stalled: step 3 did not finish within 1 s" in run.stderr
    assert time.monotonic() - started < 25


def test_worker_that_cannot_join_stops_after_the_connect_timeout():
    with socket.socket() as sock:  # a loopback port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, DMLC_ROLE="worker", DMLC_PS_ROOT_URI="127.0.0.1", DMLC_NODE_HOST="127.0.0.1",
               DMLC_INTERFACE="lo", DMLC_PS_ROOT_PORT=str(port), DMLC_NUM_SERVER="1", DMLC_NUM_WORKER="1")
    program = ("from gluon_fashion.engine.distributed import init_distributed\n"
               "init_distributed('dist_sync', connect_timeout_s=2)\nprint('joined')")
    run = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == WATCHDOG_EXIT_CODE, run.stdout + run.stderr
    assert "joining the dist_sync job did not finish within 2 s" in run.stderr
    assert "joined" not in run.stdout


def test_disabled_watchdog_guards_nothing():
    watchdog = StepWatchdog(0)
    assert not watchdog.enabled
    with watchdog.guard("step 0"):
        time.sleep(0.05)
    watchdog.close()


# ------------------------------------------------------------------------ init, sharding, scaling
@pytest.mark.parametrize("name", ["local", "device", None])
def test_single_machine_kvstores_are_rank_0_of_1(name):
    dist = init_distributed(name)
    assert (dist.rank, dist.num_workers, dist.is_dist, dist.is_master, dist.kvstore) == (0, 1, False, True, None)
    assert dist.global_batch_size(4) == 4


def test_horovod_missing_is_a_clear_user_error():
    if importlib.util.find_spec("horovod") is not None:
        pytest.skip("horovod is installed here")
    with pytest.raises(UserError, match=r"Horovod is not installed .*pip install horovod\[mxnet\]"):
        init_distributed("device", horovod=True)


@pytest.mark.parametrize("name, message", [
    ("dist_async", "dist_async is not supported"),
    ("dist_sinc", "'dist_sinc' is not known"),
    ("dist_sync", "DMLC_ROLE, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER, DMLC_NUM_WORKER are not set"),
])
def test_bad_kv_store_settings_are_user_errors(name, message, monkeypatch):
    for var in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match=re.escape(message)):
        init_distributed(name)
    with pytest.raises(UserError, match="exclude each other"):
        init_distributed("dist_sync", horovod=True)


@settings(max_examples=60, deadline=None)
@given(num_samples=st.integers(1, 300), num_workers=st.integers(1, 9), batch_size=st.integers(1, 6),
       epoch=st.integers(0, 5))
def test_worker_shares_are_equal_and_disjoint(num_samples, num_workers, batch_size, epoch):
    def share(rank):
        sampler = EpochBatchSampler(num_samples, batch_size, seed=SEED, num_parts=num_workers, part_index=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    if num_samples // num_workers < batch_size:
        with pytest.raises(UserError, match="make no batch"):
            share(0)
        return
    shares = [share(rank) for rank in range(num_workers)]
    # Equal shares: every worker runs the same number of full steps, or dist_sync would wait forever.
    assert {len(batches) for batches in shares} == {num_samples // num_workers // batch_size}
    assert all(len(batch) == batch_size for batches in shares for batch in batches)
    joined = [index for batches in shares for batch in batches for index in batch]
    assert len(set(joined)) == len(joined) and set(joined) <= set(range(num_samples))  # disjoint
    # Less than one batch per worker, plus the remainder of the split, is left out of the epoch.
    assert num_samples - len(joined) < num_workers * (batch_size + 1)
    assert share(num_workers - 1) == shares[-1]  # every worker derives the same permutation


def test_worker_shares_change_with_epoch_and_seed():
    def share(seed, epoch, shuffle=True, length=100, parts=2, part=1):
        sampler = EpochBatchSampler(length, 1, shuffle=shuffle, seed=seed, num_parts=parts, part_index=part)
        sampler.set_epoch(epoch)
        return [index for batch in sampler for index in batch]

    base = share(seed=0, epoch=0)
    assert base != share(seed=0, epoch=1) and base != share(seed=1, epoch=0)
    assert share(0, 0, shuffle=False, length=7, parts=3, part=0) == [0, 3]  # 7th sample left out: equal shares
    assert share(0, 0, shuffle=False, length=7, parts=3, part=1) == [1, 4]


def test_scale_for_workers_divides_rescale_grad_and_keeps_lr():
    params = {"learning_rate": 0.1, "momentum": 0.9}
    scaled = scale_for_workers(params, 4)
    assert scaled == {"learning_rate": 0.1, "momentum": 0.9, "rescale_grad": 0.25}
    assert params == {"learning_rate": 0.1, "momentum": 0.9}  # caller's dict untouched
    assert scale_for_workers({"rescale_grad": 0.5}, 2)["rescale_grad"] == 0.25


def test_single_machine_trainer_and_barrier_are_plain():
    net = _build_net(0)
    dist = DistInfo(kv_store="device")
    trainer = make_trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, dist)
    assert isinstance(trainer, gluon.Trainer) and trainer.optimizer.rescale_grad == 1.0
    barrier(dist)  # returns at once without a job


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
