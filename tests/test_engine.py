"""Training engine: devices, schedules, checkpoints and resume, run logs, plots, progress helpers."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluon_fashion.data.samplers import EpochBatchSampler
from gluon_fashion.engine.plots import read_metrics
from gluon_fashion.engine import (CheckpointManager, NonFiniteLossError, PolySchedule, RunLogger, Throughput,
                                  WarmupStepSchedule, check_finite, epoch_seed, parse_gpus, plot_metrics, progress,
                                  read_checkpoint_meta, seed_everything, split_batch)
from gluon_fashion.engine.distributed import DistInfo
from gluon_fashion.engine.run import TrainingRun, run_training
from gluon_fashion.errors import UserError

# The package re-exports the function progress(), which hides the submodule of the same name.
progress_module = importlib.import_module("gluon_fashion.engine.progress")

META = {"task": "segmentation", "model": "tiny_mlp", "build_kwargs": {"hidden": 8},
        "classes": [{"id": 0, "name": "shirt"}, {"id": 1, "name": "pants"}], "image_scale": {"crop": 32}}


# ---------------------------------------------------------------- contexts
def test_parse_gpus_empty_means_cpu():
    assert parse_gpus("") == [mx.cpu(0)]
    assert parse_gpus(None, num_cpu_contexts=2) == [mx.cpu(0), mx.cpu(1)]


@pytest.mark.parametrize("value", ["a,b", "-1", "0,,1", "1.5", "0,0"])
def test_parse_gpus_rejects_malformed_values(value):
    with pytest.raises(UserError, match="--gpus"):
        parse_gpus(value)


def test_parse_gpus_checks_available_count(monkeypatch):
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    assert parse_gpus("0, 1") == [mx.gpu(0), mx.gpu(1)]
    with pytest.raises(UserError, match=r"--gpus.*GPU 3.*found 2 GPU"):
        parse_gpus("0,3")
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)
    with pytest.raises(UserError, match="found 0 GPU.*empty to run on CPU"):
        parse_gpus("0")


def test_split_batch():
    contexts = [mx.cpu(0), mx.cpu(1)]
    assert split_batch(8, contexts) == 4
    assert split_batch(1, [mx.cpu(0)]) == 1
    for bad in (1, 5, 0):
        with pytest.raises(UserError, match=r"--batch-size .*2 device.*cpu\(0\), cpu\(1\)"):
            split_batch(bad, contexts)


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), np.random.rand(), mx.nd.random.uniform(shape=(3,)).asnumpy().tolist()

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def test_epoch_seed_deterministic_and_distinct():
    assert epoch_seed(1, 3) == epoch_seed(1, 3)
    seeds = {epoch_seed(seed, epoch) for seed in range(4) for epoch in range(4)}
    assert len(seeds) == 16  # seed 1/epoch 0 must not equal seed 0/epoch 1


# ---------------------------------------------------------------- schedules
def test_warmup_step_schedule_key_iterations():
    base, per_epoch, warm, factor = 0.02, 100, 50, 1 / 3
    schedule = WarmupStepSchedule(base, per_epoch, decay_epochs=[2, 4], factor=0.1, warmup_iters=warm,
                                  warmup_factor=factor)

    def expected(it):  # written from the recipe, not from the implementation
        lr = base * (0.1 if it >= 200 else 1) * (0.1 if it >= 400 else 1)
        if it < warm:
            lr *= factor + (1 - factor) * it / warm
        return lr

    for it in (0, 1, 25, 49, 50, 51, 199, 200, 201, 399, 400, 10_000):
        assert schedule(it) == pytest.approx(expected(it), rel=1e-12), it
    assert schedule(0) == pytest.approx(base / 3)
    assert schedule(25) == pytest.approx(base * 2 / 3)
    assert schedule(199) == pytest.approx(base) and schedule(200) == pytest.approx(base / 10)
    constant = WarmupStepSchedule(base, per_epoch, [2], warmup_iters=warm, warmup_mode="constant")
    assert constant(49) == pytest.approx(base / 3) and constant(50) == pytest.approx(base)


def test_poly_schedule_key_iterations():
    schedule = PolySchedule(0.1, total_iters=1000, power=0.9)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert schedule(1000) == 0.0 and schedule(1500) == 0.0
    assert 0 < schedule(999) < 1e-3
    warm = PolySchedule(0.1, total_iters=1000, power=0.9, warmup_iters=100, warmup_factor=0.1)
    assert warm(0) == pytest.approx(0.01)
    assert warm(50) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert warm(100) == pytest.approx(0.1)
    assert warm(550) == pytest.approx(0.1 * (1 - 450 / 900) ** 0.9)
    floor = PolySchedule(0.1, total_iters=10, final_lr=1e-4)
    assert floor(10) == pytest.approx(1e-4) and floor(5) == pytest.approx(1e-4 + (0.1 - 1e-4) * 0.5 ** 0.9)
    values = [warm(i) for i in range(100, 1001)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("build", [
    lambda: WarmupStepSchedule(0.0, 10, [1]),
    lambda: WarmupStepSchedule(0.1, 0, [1]),
    lambda: WarmupStepSchedule(0.1, 10, [3, 1]),
    lambda: WarmupStepSchedule(0.1, 10, [1], warmup_mode="cosine"),
    lambda: PolySchedule(0.1, 100, warmup_iters=100),
    lambda: PolySchedule(0.1, 0),
])
def test_schedules_reject_bad_settings(build):
    with pytest.raises(UserError):
        build()


# ---------------------------------------------------------------- checkpoints
def _tiny_net(seed: int = 0):
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, in_units=3, activation="relu"), gluon.nn.Dense(2, in_units=8))
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05, "momentum": 0.9, "wd": 1e-4})
    return net, trainer


def _train_steps(net, trainer, steps: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    loss_fn = gluon.loss.L2Loss()
    for _ in range(steps):
        x = mx.nd.array(rng.rand(4, 3))
        y = mx.nd.array(rng.rand(4, 2))
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(4)


def _weights(net):
    return {name: p.data().asnumpy().copy() for name, p in net._collect_params_with_prefix().items()}


def _momenta(trainer):
    return {k: v.asnumpy().copy() for k, v in trainer._updaters[0].states.items()}


def test_checkpoint_round_trip_restores_weights_and_optimizer(tmp_path):
    net, trainer = _tiny_net(0)
    _train_steps(net, trainer, 3)
    manager = CheckpointManager(str(tmp_path / "run" / "tiny"), META, metric_name="mIoU")
    path = manager.save(net, trainer, epoch=0, iteration=3, metric=0.25)
    assert path == str(tmp_path / "run" / "tiny_0000.params")
    for name in ("tiny_0000", "tiny_last"):
        for suffix in (".params", ".states", ".json"):
            assert (tmp_path / "run" / (name + suffix)).is_file()

    meta = read_checkpoint_meta(path)
    assert meta["task"] == "segmentation" and meta["model"] == "tiny_mlp" and meta["classes"] == META["classes"]
    assert meta["build_kwargs"] == {"hidden": 8} and meta["image_scale"] == {"crop": 32}
    assert meta["metric"] == {"name": "mIoU", "value": 0.25} and meta["epoch"] == 0 and meta["iteration"] == 3
    assert meta["resume"]["epoch"] == 1 and meta["resume"]["batch_in_epoch"] == 0
    assert meta["gluon_fashion_version"] and meta["time"]

    fresh, fresh_trainer = _tiny_net(seed=99)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(fresh).values(), _weights(net).values()))
    resume = CheckpointManager(str(tmp_path / "run" / "tiny"), META).restore(manager.last_path, fresh, fresh_trainer)
    assert resume["epoch"] == 1 and resume["iteration"] == 3 and resume["batch_in_epoch"] == 0
    for name, value in _weights(net).items():
        np.testing.assert_array_equal(_weights(fresh)[name], value)
    expected_momenta = _momenta(trainer)
    assert expected_momenta and any(np.abs(v).sum() > 0 for v in expected_momenta.values())
    for key, value in _momenta(fresh_trainer).items():
        np.testing.assert_array_equal(value, expected_momenta[key])

    # Continuing both must give identical weights: only true if the momentum buffers came back.
    _train_steps(net, trainer, 2, seed=5)
    _train_steps(fresh, fresh_trainer, 2, seed=5)
    for name, value in _weights(net).items():
        np.testing.assert_allclose(_weights(fresh)[name], value, rtol=1e-6, atol=1e-7)


def test_mid_epoch_save_updates_only_last_and_records_position(tmp_path):
    net, trainer = _tiny_net()
    prefix = str(tmp_path / "m")
    manager = CheckpointManager(prefix, META)
    manager.save(net, trainer, epoch=2, iteration=30)
    path = manager.save(net, trainer, epoch=3, iteration=35, batch_in_epoch=5)
    assert path == manager.last_path
    assert not os.path.exists(prefix + "_0003.params") and not os.path.exists(prefix + "_0003.json")
    meta = read_checkpoint_meta(manager.last_path)
    assert meta["kind"] == "mid_epoch"
    assert {k: meta["resume"][k] for k in ("epoch", "iteration", "batch_in_epoch")} == \
        {"epoch": 3, "iteration": 35, "batch_in_epoch": 5}
    manager.save(net, trainer, epoch=3, iteration=37, extra={"batch_in_epoch": 7, "reason": "interval"})
    meta = read_checkpoint_meta(prefix + "_last")
    assert meta["resume"]["batch_in_epoch"] == 7 and meta["extra"]["reason"] == "interval"
    assert read_checkpoint_meta(prefix + "_0002.json")["resume"]["epoch"] == 3


def test_save_interval(tmp_path):
    net, trainer = _tiny_net()
    prefix = str(tmp_path / "m")
    manager = CheckpointManager(prefix, META, save_interval=2)
    for epoch in range(8):
        manager.save(net, trainer, epoch=epoch, iteration=10 * (epoch + 1))
    manager.update_best(net, 7, 80, 0.5)
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.endswith(".json")] == ["m_0001.json", "m_0003.json", "m_0005.json", "m_0007.json",
                                                         "m_best.json", "m_last.json"]
    assert "m_0000.params" not in names and "m_0000.states" not in names
    assert read_checkpoint_meta(manager.last_path)["epoch"] == 7
    assert not [n for n in names if n.startswith(".")]  # no staging or temporary leftovers


def test_best_written_only_on_improvement_and_kept_across_resume(tmp_path):
    net, trainer = _tiny_net()
    prefix = str(tmp_path / "m")
    manager = CheckpointManager(prefix, META, metric_name="mIoU")
    assert manager.best_metric is None
    assert manager.update_best(net, 0, 10, 0.30)
    best_params, best_json = prefix + "_best.params", prefix + "_best.json"
    stamp = (os.stat(best_params).st_mtime_ns, os.stat(best_json).st_mtime_ns, open(best_params, "rb").read())

    _train_steps(net, trainer, 1)  # weights change, but a worse metric must not replace the best file
    assert not manager.update_best(net, 1, 20, 0.20)
    assert not manager.update_best(net, 1, 20, 0.30)
    assert not manager.update_best(net, 1, 20, float("nan"))
    assert (os.stat(best_params).st_mtime_ns, os.stat(best_json).st_mtime_ns, open(best_params, "rb").read()) == stamp
    assert read_checkpoint_meta(best_json)["metric"]["value"] == 0.30

    manager.save(net, trainer, epoch=1, iteration=20)
    assert manager.update_best(net, 1, 20, 0.40)
    assert manager.best_metric == 0.40 and manager.best_epoch == 1
    assert read_checkpoint_meta(best_json)["metric"] == {"name": "mIoU", "value": 0.40}
    assert open(best_params, "rb").read() != stamp[2]
    assert not os.path.exists(prefix + "_best.states")

    manager.save(net, trainer, epoch=2, iteration=30)
    assert read_checkpoint_meta(manager.last_path)["resume"]["best_metric"] == 0.40
    fresh, fresh_trainer = _tiny_net(3)
    resumed = CheckpointManager(prefix, META, metric_name="mIoU")
    state = resumed.restore(prefix + "_last", fresh, fresh_trainer)
    assert state["best_metric"] == 0.40 and state["best_epoch"] == 1
    assert resumed.best_metric == 0.40
    assert not resumed.update_best(fresh, 3, 40, 0.35)
    assert read_checkpoint_meta(best_json)["metric"]["value"] == 0.40


class _Boom(RuntimeError):
    pass


def test_failed_save_leaves_no_partial_files_and_keeps_previous(tmp_path, monkeypatch):
    net, trainer = _tiny_net()
    prefix = str(tmp_path / "m")
    manager = CheckpointManager(prefix, META)
    manager.save(net, trainer, epoch=0, iteration=10)
    before = {n: open(tmp_path / n, "rb").read() for n in os.listdir(tmp_path)}

    real_save = net.save_parameters

    def crash_midway(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        with open(path, "r+b") as handle:  # half-written file, then the "crash"
            handle.truncate(os.path.getsize(path) // 2)
        raise _Boom("disk full")

    _train_steps(net, trainer, 1)
    monkeypatch.setattr(net, "save_parameters", crash_midway)
    with pytest.raises(_Boom):
        manager.save(net, trainer, epoch=1, iteration=20)
    after = {n: open(tmp_path / n, "rb").read() for n in os.listdir(tmp_path)}
    assert after == before  # nothing new under any name, previous checkpoint untouched

    def crash_in_states(path):
        raise _Boom("killed")

    monkeypatch.setattr(net, "save_parameters", real_save)
    monkeypatch.setattr(trainer, "save_states", crash_in_states)
    with pytest.raises(_Boom):
        manager.save(net, trainer, epoch=1, iteration=20)
    assert {n: open(tmp_path / n, "rb").read() for n in os.listdir(tmp_path)} == before


def test_restore_detects_params_newer_than_json(tmp_path):
    net, trainer = _tiny_net()
    prefix = str(tmp_path / "m")
    manager = CheckpointManager(prefix, META)
    manager.save(net, trainer, epoch=0, iteration=10)
    other, _ = _tiny_net(seed=5)
    _train_steps(net, trainer, 1)
    manager.save(net, trainer, epoch=1, iteration=11, batch_in_epoch=1)
    other.save_parameters(manager.last_path)  # as if killed after renaming .params, before the .json
    with pytest.raises(UserError, match=r"m_last\.params.*sha1"):
        manager.restore(manager.last_path, *_tiny_net(1))
    # "--resume latest" falls back to the newest intact epoch checkpoint instead of failing or starting over.
    assert manager.resolve_resume("latest") == prefix + "_0000.params"
    os.unlink(prefix + "_0000.states")
    with pytest.raises(UserError, match="--resume latest: no intact checkpoint"):
        manager.resolve_resume("latest")


def test_restore_errors_name_the_file(tmp_path):
    net, trainer = _tiny_net()
    manager = CheckpointManager(str(tmp_path / "m"), META)
    with pytest.raises(UserError, match=r"nothing_last\.json"):
        manager.restore(str(tmp_path / "nothing_last.params"), net, trainer)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.params").write_bytes(b"x")
    with pytest.raises(UserError, match=r"bad\.json.*not valid JSON"):
        manager.restore(str(tmp_path / "bad.params"), net, trainer)
    manager.save(net, trainer, epoch=0, iteration=1)
    other = CheckpointManager(str(tmp_path / "o"), dict(META, classes=[{"id": 0, "name": "shirt"}]))
    with pytest.raises(UserError, match="different classes"):
        other.restore(manager.last_path, net, trainer)
    os.unlink(manager.last_path)
    with pytest.raises(UserError, match=r"m_last\.params is missing"):
        manager.restore(manager.last_path, net, trainer)


def test_resume_paths_and_fresh_run_guard(tmp_path):
    net, trainer = _tiny_net()
    with pytest.raises(UserError, match="--resume latest: no checkpoint yet"):
        CheckpointManager(str(tmp_path / "not_yet" / "m"), META).resolve_resume("latest")
    manager = CheckpointManager(str(tmp_path / "m"), META)
    assert manager.resolve_resume("") is None and manager.resolve_resume(None) is None
    manager.ensure_new_run()
    manager.save(net, trainer, epoch=0, iteration=1)
    assert manager.resolve_resume("latest") == manager.last_path
    assert manager.resolve_resume(manager.epoch_path(0)) == manager.epoch_path(0)
    with pytest.raises(UserError, match="x.params: neither a checkpoint"):
        manager.resolve_resume("x.params")
    with pytest.raises(UserError, match="--save-prefix.*--resume latest"):
        manager.ensure_new_run()


def test_manager_rejects_incomplete_meta():
    with pytest.raises(ValueError, match="classes"):
        CheckpointManager("x", {"task": "segmentation", "model": "m"})
    with pytest.raises(ValueError, match="task"):
        CheckpointManager("x", dict(META, task="detection"))


def test_read_checkpoint_meta_missing(tmp_path):
    with pytest.raises(UserError, match=r"run_0001\.json is missing"):
        read_checkpoint_meta(str(tmp_path / "run_0001.params"))


def test_every_checkpoint_load_verifies_the_weights_and_names_mxnets_reason(tmp_path):
    from gluon_fashion.engine.checkpoint import load_checkpoint_weights
    from gluon_fashion.models.pretrained import load_state_matching

    net, trainer = _tiny_net()
    manager = CheckpointManager(str(tmp_path / "m"), META)
    path = manager.save(net, trainer, epoch=0, iteration=1)
    other, _ = _tiny_net(seed=3)
    assert load_checkpoint_weights(other, path)["epoch"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(_weights(other).values(), _weights(net).values()))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])  # cut short, as by a kill while saving or an interrupted copy
    killed = r"m_0000\.params does not match its \.json \(sha1 differs\): the run was probably killed while saving"
    with pytest.raises(UserError, match=killed):
        load_checkpoint_weights(other, path)
    with pytest.raises(UserError, match=killed):  # --pretrained-weights with a checkpoint of this project
        load_state_matching(other, path, mx.cpu())
    # A description without sha1s (an older checkpoint): MXNet's own reason, not its traceback header.
    meta = json.loads(open(path[: -len(".params")] + ".json").read())
    del meta["files"]
    with pytest.raises(UserError) as error:
        load_checkpoint_weights(other, path, meta=meta)
    message = str(error.value)
    assert message.startswith(f"cannot load weights {path} into tiny_mlp: ") and "Traceback" not in message
    assert "Invalid NDArray file format" in message and "\n" not in message


# ---------------------------------------------------------------- run logger
def _event_tags(folder):
    """Scalar tags in TensorBoard event files (TFRecord framing: u64 length, u32 crc, data, u32 crc)."""
    from tensorboardX.proto import event_pb2
    tags = []
    for name in os.listdir(folder):
        data = open(os.path.join(folder, name), "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            tags += [(v.tag, event.step, round(v.simple_value, 5)) for v in event.summary.value]
    return tags


def test_run_logger_writes_config_log_metrics_and_tensorboard(tmp_path):
    prefix = str(tmp_path / "logs" / "run1" / "mask_rcnn")
    config = argparse.Namespace(lr=0.01, gpus="", epochs=3, decay=(8, 11))
    run = RunLogger(prefix, config)
    run.logger.info("epoch %d done", 0)
    run.log_metrics(10, "train_iter", epoch=0, loss=np.float32(1.5), lr=0.01, bad=float("nan"))
    run.log_metrics(1, "val", epoch=0, segm_mAP=0.125)
    run.close()

    assert json.load(open(prefix + "_config.json")) == {"lr": 0.01, "gpus": "", "epochs": 3, "decay": [8, 11]}
    log_text = open(prefix + "_train.log").read()
    assert "epoch 0 done" in log_text and "INFO" in log_text
    lines = [json.loads(line) for line in open(prefix + "_metrics.jsonl")]
    assert [(r["split"], r["step"], r["epoch"]) for r in lines] == [("train_iter", 10, 0), ("val", 1, 0)]
    assert lines[0]["values"] == {"loss": 1.5, "lr": 0.01, "bad": None}
    assert isinstance(lines[0]["time"], float)
    tags = _event_tags(prefix + "_tensorboard")
    assert ("train_iter/loss", 10, 1.5) in tags and ("val/segm_mAP", 1, 0.125) in tags
    assert not any(tag.endswith("/bad") for tag, _, _ in tags)
    assert run.logger.propagate and not run.logger.handlers  # close() hands logging back untouched

    resumed = RunLogger(prefix, vars(config) | {"lr": 0.005})
    resumed.logger.info("resumed run")
    resumed.close()
    log_text = open(prefix + "_train.log").read()
    assert "epoch 0 done" in log_text and "resumed run" in log_text
    assert json.load(open(prefix + "_config.json"))["lr"] == 0.005
    kept = [n for n in os.listdir(tmp_path / "logs" / "run1") if n.startswith("mask_rcnn_config.")]
    assert len(kept) == 2 and any(json.load(open(tmp_path / "logs" / "run1" / n)).get("lr") == 0.01 for n in kept)


def test_run_logger_other_ranks_write_nothing(tmp_path):
    run = RunLogger(str(tmp_path / "logs" / "r"), {"lr": 1}, rank=1)
    run.logger.info("hidden")
    run.log_metrics(1, "train_iter", loss=1.0)
    run.close()
    assert not (tmp_path / "logs").exists()


# ---------------------------------------------------------------- plots
def _synthetic_metrics(path):
    rng = np.random.RandomState(0)
    schedule = WarmupStepSchedule(0.01, 50, [3], warmup_iters=20)
    with open(path, "w") as handle:
        for step in range(200):
            values = {"rpn_loss": 1.0 / (1 + step / 30) + 0.05 * rng.rand(),
                      "mask_loss": 0.7 * np.exp(-step / 80) + 0.05 * rng.rand(),
                      "lr": schedule(step), "samples_s": 8 + rng.rand()}
            handle.write(json.dumps({"time": step, "split": "train_iter", "step": step, "epoch": step // 50,
                                     "values": values}) + "\n")
        for epoch in range(4):
            handle.write(json.dumps({"time": 0, "split": "val", "step": 50 * (epoch + 1), "epoch": epoch,
                                     "values": {"segm_mAP": 0.1 + 0.05 * epoch, "bbox_mAP": 0.12 + 0.06 * epoch}})
                         + "\n")
        handle.write(json.dumps({"split": "val", "step": 50, "epoch": 0, "values": {"segm_mAP": 0.11}}) + "\n")
        handle.write('{"split": "train_iter", "step": 2')  # torn last line of a killed run


def test_plot_metrics_writes_pngs(tmp_path):
    metrics = tmp_path / "run_metrics.jsonl"
    _synthetic_metrics(metrics)
    written = plot_metrics(str(metrics), str(tmp_path / "run"))
    assert sorted(os.path.basename(p) for p in written) == ["run_losses.png", "run_lr.png", "run_val.png"]
    for path in written:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000
    metrics_read = read_metrics(str(metrics))
    assert metrics_read["val"]["segm_mAP"][0] == (50, 0, 0.11)  # a step logged again (resume) keeps its last value
    assert len(metrics_read["train_iter"]["lr"]) == 200  # torn last line skipped
    folder = tmp_path / "plots"
    folder.mkdir()
    assert sorted(os.path.basename(p) for p in plot_metrics(str(metrics), str(folder))) == \
        ["losses.png", "lr.png", "val.png"]


def test_plot_metrics_empty_or_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_metrics(str(tmp_path / "empty.jsonl"), str(tmp_path / "e")) == []
    assert plot_metrics(str(tmp_path / "absent.jsonl"), str(tmp_path / "a")) == []
    (tmp_path / "val_only.jsonl").write_text(json.dumps({"split": "val", "step": 3, "values": {"mIoU": 0.4}}) + "\n")
    assert [os.path.basename(p) for p in plot_metrics(str(tmp_path / "val_only.jsonl"), str(tmp_path / "v"))] \
        == ["v_val.png"]
    assert os.listdir(tmp_path) and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# ---------------------------------------------------------------- progress helpers
def test_check_finite_names_loss_and_iteration():
    check_finite({"loss": 1.0, "mask": mx.nd.array([0.5, 0.2])}, 3)
    with pytest.raises(NonFiniteLossError, match=r"iteration 17 .*rcnn_mask=nan.*--lr") as info:
        check_finite({"rpn": 0.3, "rcnn_mask": mx.nd.array([float("nan")])}, 17)
    assert isinstance(info.value, UserError)
    with pytest.raises(NonFiniteLossError, match="box=inf"):
        check_finite({"box": np.float32("inf")}, 1)


def test_throughput_rate(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    meter = Throughput(window=2)  # reset at t=0
    meter.update(10)  # t=1
    meter.update(30)  # t=2
    meter.update(30)  # t=3
    assert meter.rate == pytest.approx(30.0)  # last two updates: 60 samples in 2 s
    assert meter.total == 70
    assert meter.overall == pytest.approx(70 / 4)


def test_progress_env_var_disables(monkeypatch):
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")
    assert progress(range(3)).disable
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "0")
    bar = progress(range(3), desc="epoch 0")
    assert not bar.disable and list(bar) == [0, 1, 2]


# ---------------------------------------------------------------- resume end to end
def _run_training(prefix, epochs, stop_after=None, save_every=None, resume=None):
    """Tiny training loop written the way trainers should: per-epoch sampler, lr from the iteration."""
    data_rng = np.random.RandomState(42)
    inputs, targets = data_rng.rand(24, 3), data_rng.rand(24, 2)
    net, trainer = _tiny_net(seed=0)
    manager = CheckpointManager(prefix, META)
    schedule = WarmupStepSchedule(0.05, iters_per_epoch=6, decay_epochs=[1], warmup_iters=4)
    sampler = EpochBatchSampler(24, batch_size=4, seed=11)
    start_epoch, iteration, skip = 0, 0, 0
    if resume:
        state = manager.restore(manager.resolve_resume(resume), net, trainer)
        start_epoch, iteration, skip = state["epoch"], state["iteration"], state["batch_in_epoch"]
    loss_fn = gluon.loss.L2Loss()
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch, skip=skip if epoch == start_epoch else 0)
        for batch_in_epoch, indices in enumerate(sampler, start=skip if epoch == start_epoch else 0):
            trainer.set_learning_rate(schedule(iteration))
            with autograd.record():
                loss = loss_fn(net(mx.nd.array(inputs[indices])), mx.nd.array(targets[indices]))
            loss.backward()
            trainer.step(len(indices))
            iteration += 1
            if stop_after is not None and iteration == stop_after:
                return net  # "killed": nothing after the last save survives
            if save_every and iteration % save_every == 0 and batch_in_epoch + 1 < len(sampler):
                manager.save(net, trainer, epoch, iteration, batch_in_epoch=batch_in_epoch + 1)
        manager.save(net, trainer, epoch, iteration)
    return net


def test_killed_mid_epoch_then_resumed_matches_uninterrupted_run(tmp_path):
    reference = _run_training(str(tmp_path / "ref" / "m"), epochs=3)
    # Killed at iteration 10 (epoch 1, batch 4); the last save was mid-epoch at iteration 9 (batch 3).
    _run_training(str(tmp_path / "run" / "m"), epochs=3, stop_after=10, save_every=3)
    meta = read_checkpoint_meta(str(tmp_path / "run" / "m_last.params"))
    assert (meta["resume"]["epoch"], meta["resume"]["iteration"], meta["resume"]["batch_in_epoch"]) == (1, 9, 3)
    resumed = _run_training(str(tmp_path / "run" / "m"), epochs=3, resume="latest")
    for name, value in _weights(reference).items():
        np.testing.assert_allclose(_weights(resumed)[name], value, rtol=1e-5, atol=1e-7)


_SAVER_SCRIPT = """
import sys
from gluon_fashion.engine import CheckpointManager  # first: restores the numpy aliases MXNet needs (3.12)
import mxnet as mx
from mxnet import gluon
net = gluon.nn.Dense(512, in_units=512)
net.initialize()
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
manager = CheckpointManager(sys.argv[1], {"task": "segmentation", "model": "dense", "classes": []})
step = 0
while True:
    net.weight.set_data(mx.nd.full((512, 512), step))
    # Epoch numbers 0, 1, 2 in turn: three epoch checkpoints replaced over and over, so disk use stays bounded.
    manager.save(net, trainer, epoch=step % 3, iteration=step)
    if step == 2:
        print("saving", flush=True)
    step += 1
"""


def test_sigkill_during_saves_never_leaves_a_bad_complete_checkpoint(tmp_path):
    prefix = str(tmp_path / "m")
    child = subprocess.Popen([sys.executable, "-c", _SAVER_SCRIPT, prefix], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"saving"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    manager = CheckpointManager(prefix, {"task": "segmentation", "model": "dense", "classes": []})
    epochs = sorted(int(n[2:6]) for n in os.listdir(tmp_path) if re.fullmatch(r"m_\d{4}\.json", n))
    assert epochs == [0, 1, 2]
    loaded, detected = [], []
    for path in [manager.epoch_path(epoch) for epoch in epochs] + [manager.last_path]:
        net = gluon.nn.Dense(512, in_units=512)
        net.initialize()
        try:
            state = manager.restore(path, net, gluon.Trainer(net.collect_params(), "sgd"))
        except UserError as exc:  # killed between the renames of this checkpoint: detected, never loaded silently
            assert "sha1" in str(exc)
            detected.append(path)
            continue
        # A checkpoint that loads holds the weights of the step its .json names.
        assert np.all(net.weight.data().asnumpy() == state["meta"]["iteration"])
        if path != manager.last_path:
            assert state["meta"]["iteration"] % 3 == state["meta"]["epoch"]
        loaded.append(path)
    assert len(detected) <= 1 and len(loaded) >= 3  # the kill interrupts at most the one save in progress


class _ScriptedRun(TrainingRun):
    """A TrainingRun (the shell the two trainers share) whose build or fit fails on request."""

    def __init__(self, prefix, fail_in):
        self.args = argparse.Namespace(dist_timeout=0)
        self.dist, self.prefix, self.fail_in = DistInfo(kv_store="device"), prefix, fail_in
        self.open_run({"fail_in": fail_in})

    def build(self):
        if self.fail_in == "build":
            raise _Boom("build")

    def fit(self):
        self.logger.log_metrics(0, "train_iter", epoch=0, loss=1.0)
        if self.fail_in == "fit":
            raise _Boom("fit")
        return {"fitted": True}


@pytest.mark.parametrize("fail_in", ["build", "fit", None])
def test_training_run_releases_its_log_handlers_whatever_happens(tmp_path, fail_in):
    import logging

    library_logger = logging.getLogger("gluon_fashion")
    before = list(library_logger.handlers)
    prefix = str(tmp_path / "run")
    if fail_in == "build":
        with pytest.raises(_Boom):
            _ScriptedRun(prefix, fail_in)
    else:
        run = _ScriptedRun(prefix, fail_in)
        assert len(library_logger.handlers) > len(before)  # the run's console and file handlers
        if fail_in == "fit":
            with pytest.raises(_Boom):
                run_training(run)
        else:
            assert run_training(run) == {"fitted": True}
        assert run.logger._metrics_file is None
    assert library_logger.handlers == before
    assert json.loads(Path(prefix + "_config.json").read_text())["fail_in"] == fail_in


def test_a_new_best_is_logged_with_the_digits_that_tell_it_from_the_previous(tmp_path, caplog):
    net, _ = _tiny_net()
    manager = CheckpointManager(str(tmp_path / "m"), META, metric_name="segm_mAP")
    with caplog.at_level("INFO", logger="gluon_fashion"):
        assert manager.update_best(net, 0, 10, 0.00003)
        assert manager.update_best(net, 1, 20, 0.00004)
        assert not manager.update_best(net, 2, 30, 0.00004)  # a tie is no new best
    lines = [r.getMessage() for r in caplog.records if "new best" in r.getMessage()]
    assert len(lines) == 2
    assert "segm_mAP 0.0000 at epoch 0 (previous none)" in lines[0]
    assert "segm_mAP 4e-05 at epoch 1 (previous 3e-05)" in lines[1]
