"""The trainers under a real parameter-server job: scheduler, server and two workers on loopback (CPU).

``train_segmentation.py --kvstore dist_sync`` and ``train_mask_rcnn.py --kv-store dist_sync`` run under
:func:`launch_local`. Every process starts in a folder of its own, as on machines that share no disk, so the
tests see which worker wrote what; the resume test gives them one shared folder instead. Workers dump their
final weights through the trainers' debug hook (``$GLUON_FASHION_DUMP_PARAMS_DIR``).

This file is also the job's program: ``python tests/test_distributed_trainers.py --workdirs DIR SCRIPT ARGS``
makes ``DIR/<pid>/``, changes into it and runs ``SCRIPT`` (a trainer) with ``ARGS`` as its command line;
``--workdir DIR`` runs every process in ``DIR`` itself.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Optional

import gluon_fashion  # noqa: F401  before MXNet: restores the numpy aliases it needs (Python 3.12)
import mxnet as mx  # next: as scheduler/server this import serves the job and exits
import numpy as np
import pytest

from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.engine.distributed import DUMP_PARAMS_ENV
from gluon_fashion.launcher import launch_local
from gluon_fashion.synthetic import make_sample_dataset

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
NUM_TRAIN = 8  # photos in the training split after the converter keeps 2 for validation


def _job_main(argv) -> int:
    """One process of the job: run the trainer script in its folder (see the module docstring)."""
    flag, folder, script, *args = argv
    assert flag in ("--workdirs", "--workdir"), argv
    workdir = Path(folder) / str(os.getpid()) if flag == "--workdirs" else Path(folder)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    sys.argv = [script] + args
    runpy.run_path(script, run_name="__main__")  # the script ends with sys.exit(main())
    return 0


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    """A converted sample dataset: 8 training and 2 validation photos (128-160 px)."""
    root = tmp_path_factory.mktemp("data") / "imaterialist"
    make_sample_dataset(root, num_train=NUM_TRAIN + 2, num_test=0, seed=3, min_size=128, max_size=160,
                        progress=False)
    convert_imaterialist(root, val_num=2, num_workers=1, progress=False)
    return root


def _run_job(tmp_path: Path, script: str, args, shared: Optional[Path] = None, dumps: str = "dumps",
             timeout: float = 150):
    """Launch ``script args`` as a two-worker dist job; returns (exit code, output, {folder: its files}).

    Each process runs in ``tmp_path/procs/<pid>/``, or all in ``shared``; final weights go to ``tmp_path/dumps``.
    """
    workdirs = tmp_path / "procs"
    env = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1", "GLUON_FASHION_NO_PROGRESS": "1",
           "GLUON_FASHION_CACHE": str(tmp_path / "cache"), "MXNET_HOME": str(tmp_path / "mxnet_home"),
           DUMP_PARAMS_ENV: str(tmp_path / dumps)}
    where = ["--workdir", str(shared)] if shared else ["--workdirs", str(workdirs)]
    output = io.StringIO()
    code = launch_local([sys.executable, str(THIS_FILE), *where, str(REPO / script), *args], num_workers=2,
                        num_servers=1, timeout=timeout, env=env, output=output)
    folders = [shared] if shared else list(workdirs.iterdir())
    written = {folder: sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
               for folder in folders}
    return code, output.getvalue(), written


def _same_trained_weights(dumps: Path) -> dict:
    """Worker 0's final weights, after checking worker 1 ended with the same (BatchNorm statistics aside:
    each worker keeps its own, as documented)."""
    assert sorted(p.name for p in dumps.iterdir()) == ["worker0.params", "worker1.params"]
    first, second = _load(dumps / "worker0.params"), _load(dumps / "worker1.params")
    assert sorted(first) == sorted(second)
    trained = [name for name in first if not name.endswith(("running_mean", "running_var"))]
    assert len(trained) > 50
    for name in trained:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    return first


def _load(path: Path) -> dict:
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def test_segmentation_dist_sync_two_workers(sample_root, tmp_path):
    epochs, per_worker = 6, 4  # 8 photos / (2 workers x 4) = one step per epoch, each on every photo
    args = ["--model", "deeplabv3", "--backbone", "resnet50", "--no-pretrained", "--dataset-root",
            str(sample_root), "--base-size", "64", "--crop-size", "48", "--ngpus", "0", "--workers", "0",
            "--batch-size", str(per_worker), "--test-batch-size", "2", "--epochs", str(epochs), "--lr", "0.01",
            "--log-interval", "1", "--save-interval", str(epochs), "--kvstore", "dist_sync",
            "--dist-timeout", "120", "--checkname", "dist"]
    code, text, written = _run_job(tmp_path, "train_segmentation.py", args)
    assert code == 0, text

    # Both workers end with the same weights (dist_sync: every step applies the same summed gradient).
    first = _same_trained_weights(tmp_path / "dumps")

    # Only worker 0 wrote run files; the other worker's folder stayed empty (scheduler/server made none).
    writers = {folder: files for folder, files in written.items() if files}
    assert len(written) == 2 and len(writers) == 1, (written, text)
    (folder, files), = writers.items()
    run = "train_logs/imaterialist/deeplabv3/dist/deeplabv3_resnet50"
    for suffix in ("_config.json", "_train.log", "_metrics.jsonl", f"_{epochs - 1:04d}.params",
                   f"_{epochs - 1:04d}.states", "_last.params", "_last.states", "_best.params", "_val_metrics.json",
                   "_losses.png"):
        assert run + suffix in files, (suffix, files)
    log_text = (folder / (run + "_train.log")).read_text()
    assert f"dist_sync: worker 0 of 2 (master): global batch {2 * per_worker} ({per_worker} per worker)" in log_text
    # The checkpoint holds worker 0's final weights.
    last = _load(folder / (run + "_last.params"))
    for name in first:
        np.testing.assert_array_equal(last[name], first[name], err_msg=name)

    records = [json.loads(line) for line in (folder / (run + "_metrics.jsonl")).read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train_iter"]
    assert [(r["step"], r["epoch"]) for r in steps] == [(i + 1, i) for i in range(epochs)]
    assert [r["epoch"] for r in records if r["split"] == "val"] == list(range(epochs))
    # Worker 0's loss (its half of the photos, 14 classes): the first step is from the random
    # initialisation; training brings it well below that, although single steps are noisy (BatchNorm over
    # 4 small crops).
    losses = [r["values"]["loss"] for r in steps]
    assert all(np.isfinite(losses)) and np.mean(losses[1:]) < 0.85 * losses[0], losses


def test_mask_rcnn_dist_sync_two_workers(sample_root, tmp_path):
    args = ["--dataset-root", str(sample_root), "--save-prefix", "runs/", "--network", "resnet18_v1b",
            "--no-pretrained", "--short", "128", "--max-size", "160", "--rpn-train-pre-nms", "256",
            "--rpn-train-post-nms", "64", "--rcnn-num-sample", "32", "--rpn-test-pre-nms", "256",
            "--rpn-test-post-nms", "32", "-j", "0", "--epochs", "1", "--batch-size", "1", "--lr", "0.01",
            "--lr-warmup", "2", "--val-max-images", "1", "--log-interval", "1", "--kv-store", "dist_sync",
            "--dist-timeout", "120"]
    code, text, written = _run_job(tmp_path, "train_mask_rcnn.py", args)
    assert code == 0, text

    first = _same_trained_weights(tmp_path / "dumps")

    writers = {folder: files for folder, files in written.items() if files}
    assert len(written) == 2 and len(writers) == 1, (written, text)
    (folder, files), = writers.items()
    run = "runs/mask_rcnn_resnet18_v1b_imaterialist"
    for suffix in ("_config.json", "_train.log", "_metrics.jsonl", "_0000.params", "_last.states", "_best.params",
                   "_val_metrics.json"):
        assert run + suffix in files, (suffix, files)
    log_text = (folder / (run + "_train.log")).read_text()
    assert "dist_sync: worker 0 of 2 (master): global batch 2 (1 per worker)" in log_text
    last = _load(folder / (run + "_last.params"))
    for name in first:
        np.testing.assert_array_equal(last[name], first[name], err_msg=name)

    # 8 photos / (2 workers x 1) = 4 steps; the losses fall from the random initialisation (from about 6: with
    # BatchNorm learning its statistics a fresh net's first loss is no longer inflated by unnormalised logits).
    records = [json.loads(line) for line in (folder / (run + "_metrics.jsonl")).read_text().splitlines()]
    losses = [r["values"]["loss"] for r in records if r["split"] == "train_iter"]
    assert len(losses) == 4 and np.mean(losses[-2:]) < 0.8 * losses[0], losses


def test_segmentation_dist_sync_resume_on_a_shared_folder(sample_root, tmp_path):
    shared = tmp_path / "shared"
    args = ["--model", "deeplabv3", "--backbone", "resnet50", "--no-pretrained", "--dataset-root",
            str(sample_root), "--base-size", "64", "--crop-size", "48", "--ngpus", "0", "--workers", "0",
            "--batch-size", "4", "--test-batch-size", "2", "--lr", "0.01", "--log-interval", "1", "--no-val",
            "--kvstore", "dist_sync", "--dist-timeout", "120", "--checkname", "resume"]
    code, text, _ = _run_job(tmp_path, "train_segmentation.py", args + ["--epochs", "1"], shared=shared)
    assert code == 0, text
    code, text, _ = _run_job(tmp_path, "train_segmentation.py", args + ["--epochs", "2", "--resume", "latest"],
                             shared=shared, dumps="dumps_resumed")
    assert code == 0, text
    assert "_last.params: epoch 1, iteration 1, skipping 0 batch(es)" in text, text
    # Every worker loaded the weights and the optimizer's momentum: with momentum 0.9, a worker that started
    # the resumed step from fresh optimizer states would end with different weights.
    _same_trained_weights(tmp_path / "dumps_resumed")
    run = shared / "train_logs/imaterialist/deeplabv3/resume/deeplabv3_resnet50"
    records = [json.loads(line) for line in Path(f"{run}_metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"]) for r in records if r["split"] == "train_iter"] == [(1, 0), (2, 1)]
    assert json.loads(Path(f"{run}_last.json").read_text())["resume"]["iteration"] == 2


_HOROVOD = importlib.util.find_spec("horovod") is not None


@pytest.mark.parametrize("script, flags, message", [
    ("train_segmentation.py", ["--kvstore", "dist_sync"], "error: --kvstore dist_sync needs the environment of a "
                                                          "distributed job, but DMLC_ROLE"),
    ("train_segmentation.py", ["--kvstore", "dist_async"], "error: --kvstore dist_async is not supported"),
    ("train_segmentation.py", ["--dist-timeout", "-1"], "error: --dist-timeout must be >= 0, got -1"),
    # Both of GluonCV's spellings work in both trainers, and errors name the one typed.
    ("train_segmentation.py", ["--kv-store", "dist_async"], "error: --kv-store dist_async is not supported"),
    ("train_mask_rcnn.py", ["--kvstore", "dist_async"], "error: --kvstore dist_async is not supported"),
    ("train_mask_rcnn.py", ["--kv-store", "dist_sync"], "error: --kv-store dist_sync needs the environment of a "
                                                        "distributed job, but DMLC_ROLE"),
    ("train_mask_rcnn.py", ["--dist-timeout", "-1"], "error: --dist-timeout must be >= 0"),
    pytest.param("train_segmentation.py", ["--horovod"], "error: Horovod is not installed",
                 marks=pytest.mark.skipif(_HOROVOD, reason="horovod is installed here")),
    pytest.param("train_mask_rcnn.py", ["--horovod"], "error: Horovod is not installed",
                 marks=pytest.mark.skipif(_HOROVOD, reason="horovod is installed here")),
])
def test_distributed_flags_are_checked_before_any_work(script, flags, message, tmp_path, monkeypatch, capsys):
    for var in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    devices = ["--ngpus", "0"] if script == "train_segmentation.py" else ["--gpus", ""]
    code = module.main(["--no-pretrained", "--dataset-root", str(tmp_path / "no_data"), *devices, *flags])
    assert code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, no data looked at


if __name__ == "__main__":
    sys.exit(_job_main(sys.argv[1:]))
