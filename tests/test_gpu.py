"""GPU tests: ``pytest -m gpu tests/test_gpu.py`` on a machine with a CUDA build of MXNet (benchmarks/gpu/
gpu_check.py runs them). Every test here is skipped where MXNet sees no GPU (``mx.context.num_gpus() == 0``,
which is always the case with the CPU build), so the normal suite only collects them.

What they pin down: gluon_fashion replaces GluonCV's FPN RoI pooling on CPU contexts only (MXNet 1.9.1's CPU
``ROIAlign`` mishandles the skipped RoIs GluonCV relies on; its GPU kernel does not, and GPU nets keep
GluonCV's pooling), GluonCV's FPN Mask R-CNN trains on a GPU with finite losses, and a segmentation network
computes the same logits on GPU and CPU.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

# fp32 stays fp32 in cuBLAS/cuDNN on Ampere and later (no TF32 rounding) for the CPU/GPU comparisons below;
# read when the libraries initialise, so it is set before any GPU work of this process.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import gluon_fashion  # noqa: E402,F401  (numpy aliases MXNet needs)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FPN_MODEL = "mask_rcnn_fpn_resnet50_v1b_coco"
SMALL_BUDGET = ["--rpn-train-pre-nms", "300", "--rpn-train-post-nms", "100", "--rcnn-num-sample", "32",
                "--rpn-test-pre-nms", "300", "--rpn-test-post-nms", "50"]


def _num_gpus() -> int:
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:  # a CUDA build on a machine without a usable driver
        return 0


NUM_GPUS = _num_gpus()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(NUM_GPUS == 0, reason="needs a CUDA GPU and a CUDA build of MXNet "
                                                       "(mx.context.num_gpus() == 0)")]


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run(argv: List[str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable] + argv, cwd=str(REPO), env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv[:2])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def fpn_nets():
    """The same FPN Mask R-CNN built for a GPU and for the CPU (random initialisation, 3 classes)."""
    from gluon_fashion.models.mask_rcnn import build_mask_rcnn

    return (build_mask_rcnn(FPN_MODEL, [0, 1, 2], pretrained=False, ctx=mx.gpu(0)),
            build_mask_rcnn(FPN_MODEL, [0, 1, 2], pretrained=False, ctx=mx.cpu()))


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    """A small generated dataset, converted (the command-line tools, as a user runs them)."""
    root = tmp_path_factory.mktemp("gpu_sample") / "sample"
    _run(["tools/make_sample_dataset.py", "--out", str(root), "--num-train", "6", "--num-test", "1",
          "--min-size", "160", "--max-size", "240", "--no-progress"])
    _run(["tools/convert_imaterialist_to_coco.py", "--data_root", str(root), "--val_num", "1", "--num_workers", "1",
          "--no_progress"])
    return root


def test_fpn_roi_pooling_is_replaced_on_cpu_only(fpn_nets):
    gpu_net, cpu_net = fpn_nets
    gluoncv_method = type(gpu_net)._pyramid_roi_feats
    assert getattr(gpu_net._pyramid_roi_feats, "__func__", None) is gluoncv_method, \
        "a net built for a GPU must keep GluonCV's FPN RoI pooling"
    assert getattr(cpu_net._pyramid_roi_feats, "__func__", None) is not gluoncv_method, \
        "a net built for the CPU must pool its RoIs with gluon_fashion's replacement"


def _reference_pooling(features, rois: np.ndarray, roi_size, strides, min_stage: int, max_stage: int,
                       ctx: mx.Context) -> np.ndarray:
    """Every RoI pooled at every FPN level with plain ROIAlign, each RoI keeping its own level's result
    (GluonCV's level rule: floor(4 + log2(sqrt(area) / 224)), clipped; P6 is for the RPN only)."""
    top = max_stage - 1 if max_stage > 5 else max_stage
    w, h = rois[:, 3] - rois[:, 1] + 1, rois[:, 4] - rois[:, 2] + 1
    levels = np.clip(np.floor(4 + np.log2(np.sqrt(w * h) / 224.0 + 1e-6)), min_stage, top)
    out = None
    for i, level in enumerate(range(min_stage, top + 1)):
        pooled = mx.nd.contrib.ROIAlign(features[i], mx.nd.array(rois, ctx=ctx), roi_size, 1.0 / strides[i],
                                        sample_ratio=2).asnumpy()
        out = np.zeros_like(pooled) if out is None else out
        out[levels == level] = pooled[levels == level]
    assert len(set(levels.tolist())) == top - min_stage + 1, "the RoIs should cover every level"
    return out


def test_gpu_fpn_roi_pooling_matches_per_level_reference(fpn_nets):
    """GluonCV's pooling on the GPU (batch index -1 for other levels' RoIs) equals pooling every RoI at every
    level and keeping its own; so does gluon_fashion's CPU replacement."""
    gpu_net, cpu_net = fpn_nets
    rng = np.random.RandomState(0)
    strides, roi_size = list(gpu_net._strides), tuple(gpu_net._roi_size)
    side = 512
    maps = [rng.standard_normal((1, 4, side // s, side // s)).astype(np.float32) for s in strides]
    sizes = np.concatenate([rng.uniform(8, 40, 10), rng.uniform(120, 200, 10), rng.uniform(250, 400, 10),
                            rng.uniform(460, 500, 10)])
    x1 = rng.uniform(0, side - sizes)
    y1 = rng.uniform(0, side - sizes)
    rois = np.stack([np.zeros_like(sizes), x1, y1, x1 + sizes - 1, y1 + sizes - 1], axis=1).astype(np.float32)
    for net, ctx in ((gpu_net, mx.gpu(0)), (cpu_net, mx.cpu())):
        features = [mx.nd.array(m, ctx=ctx) for m in maps]
        pooled = net._pyramid_roi_feats(mx.nd, features, mx.nd.array(rois, ctx=ctx), roi_size, strides,
                                        roi_mode="align").asnumpy()
        expected = _reference_pooling(features, rois, roi_size, strides, net._min_stage, net._max_stage, ctx)
        assert np.all(np.isfinite(pooled)), f"non-finite pooled features on {ctx}"
        np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5, err_msg=f"FPN RoI pooling on {ctx}")


def test_fpn_mask_rcnn_training_step_on_gpu_gives_finite_losses(sample_root, tmp_path):
    out = tmp_path / "run"
    _run(["train_mask_rcnn.py", "--dataset-root", str(sample_root), "--use-fpn", "--network", "resnet50_v1b",
          "--no-pretrained", "--classes", "main", "--gpus", "0", "-j", "0", "--short", "160", "--max-size", "240",
          "--batch-size", "1", "--epochs", "1", "--lr", "0.0005", "--lr-warmup", "0", "--clip-gradient", "1",
          "--log-interval", "1", "--no-val", "--save-prefix", str(out) + "/"] + SMALL_BUDGET)
    config = json.loads(next(out.glob("*_config.json")).read_text())
    assert config["contexts"] == ["gpu(0)"]
    records = [json.loads(line) for line in next(out.glob("*_metrics.jsonl")).read_text().splitlines() if line]
    steps = [r for r in records if r["split"] == "train_iter"]
    assert len(steps) >= 3, records
    for record in steps:
        losses = {k: v for k, v in record["values"].items() if k.endswith("loss")}
        assert losses and all(math.isfinite(v) for v in losses.values()), record


def test_segmentation_forward_on_gpu_matches_cpu(tmp_path):
    from gluon_fashion.models.segmentation import build_segmentation_model, forward_logits

    kwargs = dict(backbone="resnet50", aux=False, base_size=160, crop_size=128, pretrained=False)
    gpu_net, _ = build_segmentation_model("deeplabv3", 14, [mx.gpu(0)], **kwargs)
    params = tmp_path / "deeplabv3.params"
    gpu_net.save_parameters(str(params))
    cpu_net, _ = build_segmentation_model("deeplabv3", 14, [mx.cpu()], **kwargs)
    cpu_net.load_parameters(str(params), ctx=mx.cpu())
    x = np.random.RandomState(0).standard_normal((2, 3, 128, 128)).astype(np.float32)
    on_gpu = forward_logits(gpu_net, mx.nd.array(x, ctx=mx.gpu(0))).asnumpy()
    on_cpu = forward_logits(cpu_net, mx.nd.array(x, ctx=mx.cpu())).asnumpy()
    assert on_gpu.shape == on_cpu.shape == (2, 14, 128, 128)
    relative = np.max(np.abs(on_gpu - on_cpu)) / max(np.max(np.abs(on_cpu)), 1e-12)
    assert relative <= 1e-3, f"GPU and CPU logits differ by {relative:.2e} of their largest magnitude"
    assert np.mean(on_gpu.argmax(1) == on_cpu.argmax(1)) >= 0.995
