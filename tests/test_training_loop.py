"""The engine's training loop, the shared flags and staged fine-tuning, each test run against both trainers.

Both trainers train from random weights on a tiny converted sample (a few iterations per epoch).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from gluon_fashion.compat import params_by_structural_name
from gluon_fashion.convert import convert_imaterialist
from gluon_fashion.engine.checkpoint import read_checkpoint_meta
from gluon_fashion.engine.run import run_training
from gluon_fashion.engine.stages import StagePlan, backbone_stage, parse_stages
from gluon_fashion.errors import UserError
from gluon_fashion.synthetic import make_sample_dataset
from gluon_fashion.trainers import mask_rcnn, segmentation

MASK_RCNN_FLAGS = ["--network", "resnet18_v1b", "--no-pretrained", "--short", "160", "--max-size", "224",
                   "--rpn-train-pre-nms", "256", "--rpn-train-post-nms", "64", "--rcnn-num-sample", "32",
                   "--rpn-test-pre-nms", "256", "--rpn-test-post-nms", "32", "--lr", "0.01", "--lr-warmup", "0",
                   "--val-max-images", "1", "-j", "0"]
SEGMENTATION_FLAGS = ["--model", "deeplabv3", "--backbone", "resnet18", "--no-pretrained", "--base-size", "64",
                      "--crop-size", "48", "--ngpus", "0", "--workers", "0", "--lr", "0.01", "--batch-size", "2",
                      "--test-batch-size", "2"]
TRAINERS = {"mask_rcnn": (mask_rcnn, MASK_RCNN_FLAGS), "segmentation": (segmentation, SEGMENTATION_FLAGS)}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("GLUON_FASHION_NO_PROGRESS", "1")
    monkeypatch.setenv("GLUON_FASHION_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A converted sample: 4 training photos, 1 validation photo."""
    root = tmp_path_factory.mktemp("loop") / "sample"
    make_sample_dataset(root, num_train=5, num_test=0, seed=3, min_size=128, max_size=192, progress=False)
    convert_imaterialist(root, val_num=1, num_workers=1, progress=False)
    return root


def _args(task: str, data_root: Path, out: Path, *flags: str) -> argparse.Namespace:
    module, task_flags = TRAINERS[task]
    where = (["--save-prefix", f"{out}/"] if task == "mask_rcnn" else ["--logdir", str(out), "--checkname", "run"])
    return module.build_parser().parse_args(["--dataset-root", str(data_root), *where, *task_flags, *flags])


def _trainer(task: str, args: argparse.Namespace):
    return (mask_rcnn.MaskRCNNTrainer if task == "mask_rcnn" else segmentation.SegmentationTrainer)(args)


def _metrics(trainer) -> list:
    with open(trainer.logger.metrics_path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _trained_weights(trainer) -> dict:
    """{structural name (the same in every run): (parameter name, values)} of the parameters the recipe trains."""
    with mx.autograd.pause():  # sizes the parameters whose shapes GluonCV infers at the first forward pass
        trainer.net(mx.nd.zeros((1, 3, 160, 160)))
    # On CPU that pass may let oneDNN rewrite convolution weights into its own layout, asynchronously: let it
    # finish before reading them (a read during it once gave a stage-3 weight that seemed to change).
    mx.nd.waitall()
    return {key: (param.name, param.data().asnumpy().copy())
            for key, param in params_by_structural_name(trainer.net).items() if param.name in trainer.trained_params}


def _changed(before: dict, after: dict) -> set:
    """Parameter names (of ``before``'s run) whose values differ."""
    return {name for key, (name, values) in before.items() if not np.array_equal(values, after[key][1])}


# ------------------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_both_spellings_of_each_shared_flag_reach_one_setting(task):
    parser = TRAINERS[task][0].build_parser()
    pairs = [(["--kv-store", "local"], ["--kvstore", "local"], "kv_store", "local"),
             (["-j", "3"], ["--workers", "3"], "num_workers", 3),
             (["--num-workers", "3"], ["--workers", "3"], "num_workers", 3),
             (["--wd", "0.001"], ["--weight-decay", "0.001"], "wd", 0.001),
             (["--save-iter-interval", "7"], ["--save-iters", "7"], "save_iter_interval", 7),
             (["--disable-hybridization"], ["--no-hybridize"], "disable_hybridization", True),
             (["--gpus", "0,1"], ["--ngpus", "2"], "gpus", "0,1"),
             (["--gpus", ""], ["--ngpus", "0"], "gpus", "")]
    for first, second, dest, value in pairs:
        one, other = parser.parse_args(first), parser.parse_args(second)
        assert getattr(one, dest) == getattr(other, dest) == value, (first, second)
    # Errors name the spelling that was typed.
    with pytest.raises(UserError, match="--weight-decay must be >= 0"):
        _trainer(task, parser.parse_args(["--weight-decay", "-1"]))
    with pytest.raises(UserError, match="--ngpus 1 asks for 1 GPU"):
        _trainer(task, parser.parse_args(["--ngpus", "1"]))
    with pytest.raises(UserError, match=r"--gpus '0' asks for GPU 0 .* leave --gpus empty"):
        _trainer(task, parser.parse_args(["--gpus", "0"]))


def test_train_stages_are_parsed_and_checked():
    stages = parse_stages("0:heads, 2:stage3+:0.5 ,4:all:0.1")
    assert [(s.start_epoch, s.group, s.lr_factor) for s in stages] == [(0, "heads", 1.0), (2, "stage3+", 0.5),
                                                                        (4, "all", 0.1)]
    for bad, message in (("1:heads", "first stage must start at epoch 0"), ("0:heads,0:all", "must increase"),
                         ("0:body", "unknown group 'body'"), ("0:all:0", "not a positive number"),
                         ("heads", "START_EPOCH:GROUP")):
        with pytest.raises(UserError, match=message):
            parse_stages(bad)
    names = ["resnetv1b_conv0_weight", "resnetv1b_layers2_conv0_weight", "resnetv1b_layers4_conv0_weight",
             "maskrcnn0_rpn0_conv1_weight", "deeplabv30_resnetv1b_layers3_conv0_weight", "deeplabv30__deeplabhead0_conv1_bias",
             "resnetv1b_down4_batchnorm0_gamma"]
    assert [backbone_stage(n) for n in names] == [0, 2, 4, None, 3, None, 4]
    plan = StagePlan(parse_stages("0:heads,1:stage3+:0.5,3:all"), names)
    assert plan.params_for("heads") == {names[3], names[5]}
    assert plan.params_for("stage3+") == {names[2], names[3], names[4], names[5], names[6]}
    assert [plan.lr_factor(e) for e in range(5)] == [1.0, 0.5, 0.5, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------- loop
@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_one_loop_writes_the_same_files_and_records_for_both_trainers(task, data_root, tmp_path):
    trainer = _trainer(task, _args(task, data_root, tmp_path / "a", "--epochs", "2", "--log-interval", "2",
                                   "--save-iter-interval", "3"))
    result = run_training(trainer)
    iters = trainer.iters_per_epoch
    assert iters == 2 if task == "segmentation" else iters == 4
    prefix = trainer.prefix
    for suffix in ("_config.json", "_train.log", "_metrics.jsonl", "_0000.params", "_0001.states", "_last.json",
                   "_best.json", "_val_metrics.json", "_losses.png", "_lr.png", "_val.png", "_train_epoch.png"):
        assert Path(prefix + suffix).is_file(), suffix
    records = _metrics(trainer)
    # One train_iter record per --log-interval updates, its step the number of updates done.
    steps = [r["step"] for r in records if r["split"] == "train_iter"]
    assert steps == list(range(2, 2 * iters + 1, 2))
    assert [r["step"] for r in records if r["split"] == "train_epoch"] == [iters, 2 * iters]
    assert [(r["epoch"], r["step"]) for r in records if r["split"] == "val"] == [(0, iters), (1, 2 * iters)]
    validation = json.loads(Path(prefix + "_val_metrics.json").read_text())
    assert (validation["epoch"], validation["iteration"]) == (1, 2 * iters)
    assert result["best"] == read_checkpoint_meta(prefix + "_best.json")["metric"]["value"]
    assert result["metric"] == ("segm_mAP" if task == "mask_rcnn" else "mIoU")
    log_text = Path(prefix + "_train.log").read_text()
    assert f"[epoch 1][batch {iters}/{iters}]" in log_text
    # Mid-epoch saves count updates over the whole run (every 3rd); the last one stays behind the epoch saves.
    mid = [line for line in log_text.splitlines() if "batch" in line and "of the epoch" in line]
    expected = [(i - 1) // iters for i in range(3, 2 * iters + 1, 3) if i % iters]
    assert [int(line.split("(epoch ")[1].split(",")[0]) for line in mid] == expected


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_start_epoch_skips_ahead_in_both_trainers(task, data_root, tmp_path):
    trainer = _trainer(task, _args(task, data_root, tmp_path, "--epochs", "3", "--start-epoch", "2",
                                   "--log-interval", "1", "--val-interval", "5"))
    result = run_training(trainer)
    records = [r for r in _metrics(trainer) if r["split"] == "train_iter"]
    iters = trainer.iters_per_epoch
    assert [r["step"] for r in records] == list(range(2 * iters + 1, 3 * iters + 1))
    assert {r["epoch"] for r in records} == {2} and result["iteration"] == 3 * iters


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_staged_fine_tuning_freezes_then_trains_and_survives_resume(task, data_root, tmp_path):
    # Stage "heads" for epoch 0 only; the run stops after it, at the stage boundary.
    first = _trainer(task, _args(task, data_root, tmp_path, "--epochs", "1", "--log-interval", "1",
                                 "--train-stages", "0:heads,1:stage3+:0.5"))
    initial = _trained_weights(first)
    heads = {name for name, _ in initial.values() if backbone_stage(name) is None}
    assert heads and len(heads) < len(initial)
    run_training(first)
    after_heads = _trained_weights(first)
    changed = _changed(initial, after_heads)
    assert changed and changed <= heads  # nothing of the backbone moved, the heads did
    meta = read_checkpoint_meta(first.prefix + "_last.json")
    assert meta["train_stages"] == "0:heads,1:stage3+:0.5"

    # Resumed without the flag: the checkpoint's plan, now in stage 2 (heads + stages 3-4 at half the rate).
    resumed = _trainer(task, _args(task, data_root, tmp_path, "--epochs", "2", "--log-interval", "1",
                                   "--resume", "latest"))
    run_training(resumed)
    after_stage2 = _trained_weights(resumed)
    moved = _changed(after_heads, after_stage2)
    assert any((backbone_stage(n) or 0) >= 3 for n in moved)
    assert all(backbone_stage(n) is None or backbone_stage(n) >= 3 for n in moved), sorted(n for n in moved if (backbone_stage(n) or 0) < 3 and backbone_stage(n) is not None)
    lrs = {r["step"]: r["values"]["lr"] for r in _metrics(resumed) if r["split"] == "train_iter"}
    iters = resumed.iters_per_epoch
    assert lrs[iters + 1] == pytest.approx(0.5 * resumed.schedule(iters))
    assert "stage 1:stage3+:0.5 trains" in Path(resumed.prefix + "_train.log").read_text()


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_resume_after_a_kill_keeps_one_record_per_step_and_whole_epoch_summaries(task, data_root, tmp_path):
    flags = ("--epochs", "1", "--log-interval", "1", "--save-iter-interval", "2", "--batch-size", "1")
    first = _trainer(task, _args(task, data_root, tmp_path, *flags))
    assert first.iters_per_epoch == 4
    step, calls = first.train_step, []

    def killed_at_the_fourth_step(batch):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return step(batch)

    first.train_step = killed_at_the_fourth_step
    with pytest.raises(RuntimeError, match="killed"):
        run_training(first)
    assert [r["step"] for r in _metrics(first)] == [1, 2, 3]  # the save was after step 2
    assert read_checkpoint_meta(first.prefix + "_last.json")["resume"]["batch_in_epoch"] == 2

    resumed = _trainer(task, _args(task, data_root, tmp_path, *flags, "--resume", "latest"))
    run_training(resumed)
    records = _metrics(resumed)
    losses = [r["values"]["loss"] for r in records if r["split"] == "train_iter"]
    assert [r["step"] for r in records if r["split"] == "train_iter"] == [1, 2, 3, 4]  # step 3 once, the redone one
    (epoch,) = [r for r in records if r["split"] == "train_epoch"]
    assert epoch["values"]["loss"] == pytest.approx(np.mean(losses), rel=1e-6)  # all four batches, not two

    # Another class set is refused, naming the flag; another image scale is a warning.
    other_classes = _args(task, data_root, tmp_path, *flags, "--resume", "latest", "--classes", "0-3")
    with pytest.raises(UserError, match="other --classes"):
        run_training(_trainer(task, other_classes))
    scale = ["--short", "176"] if task == "mask_rcnn" else ["--base-size", "72"]
    rescaled = _trainer(task, _args(task, data_root, tmp_path, "--epochs", "2", "--log-interval", "1",
                                    "--batch-size", "1", "--resume", "latest", *scale))
    run_training(rescaled)
    log_text = Path(rescaled.prefix + "_train.log").read_text()
    assert "the checkpoint was trained with other --" in log_text and "continuing with this run's" in log_text


def test_progress_bar_never_shows_a_stale_count_with_the_losses(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GLUON_FASHION_NO_PROGRESS")  # stderr is captured, so tqdm redraws every 30 s at most
    run_training(_trainer("segmentation", _args("segmentation", data_root, tmp_path, "--epochs", "1",
                                                "--batch-size", "1")))
    drawn = [part for part in capsys.readouterr().err.replace("\r", "\n").splitlines() if "epoch 0:" in part]
    assert any("4/4" in part for part in drawn)
    # A forced redraw after every step used to print "0/4 [..., loss=...]" four times: tqdm writes its
    # count back only on its own redraws.
    assert not [part for part in drawn if "loss=" in part and " 0/4 " in part]


@pytest.mark.parametrize("task", sorted(TRAINERS))
def test_each_epoch_summary_counts_the_truncated_photos_left_out(task, data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    train_json = json.loads((root / "annotations" / "rle_instances_train.json").read_text())
    photo = root / "train" / train_json["images"][0]["file_name"]
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 3])
    trainer = _trainer(task, _args(task, root, tmp_path / "run", "--epochs", "2", "--no-val"))
    run_training(trainer)
    summaries = [line for line in Path(trainer.prefix + "_train.log").read_text().splitlines()
                 if " epoch 0: " in line or " epoch 1: " in line]
    assert len(summaries) == 2, summaries
    assert all(line.endswith("samples/s, 1 truncated image(s) left out") for line in summaries), summaries
