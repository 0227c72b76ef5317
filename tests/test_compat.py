"""gluon_fashion.compat: the version check, and each patch of GluonCV/MXNet internals on small real objects."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model, model_store
from mxnet import autograd, gluon
from mxnet.gluon import nn

from gluon_fashion import compat
from gluon_fashion.errors import UserError
from gluon_fashion.launcher import launch_local
from gluon_fashion.models.segmentation import SHAPE_FREE_FORWARDS

REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


# ------------------------------------------------------------------------------------------- version check
def _fake_versions(monkeypatch, mxnet_version: str, gluoncv_version: str) -> None:
    monkeypatch.setattr(compat, "_mxnet_version", lambda: mxnet_version)
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: gluoncv_version if name == "gluoncv" else real_version(name))


def test_installed_versions_are_the_ones_patched_for():
    assert compat.installed_versions() == {"mxnet": compat.MXNET_VERSION, "gluoncv": compat.GLUONCV_VERSION}
    assert (compat.MXNET_VERSION, compat.GLUONCV_VERSION) == ("1.9.1", "0.10.5.post0")
    assert compat.version_mismatches() == {}
    compat.check_versions()  # no error, nothing to warn about


def test_every_patch_is_listed_with_a_reason():
    expected = {"rpn_budgets", "set_rpn_budgets", "feature_strides", "replace_fpn_roi_pooling", "add_attribute_output",
                "make_shape_free", "resize_param_shape", "set_batchnorm_global_stats",
                "set_symbol_batchnorm_global_stats", "set_syncbn_devices",
                "params_by_structural_name", "load_param_data", "model_store_sha1", "kvstore_barrier",
                "skip_kvstore_barrier_before_exit", "init_trainer_kvstore"}
    assert set(compat.PATCHES) == expected
    for name, reason in compat.PATCHES.items():
        assert callable(getattr(compat, name)) and getattr(compat, name).__doc__
        assert ("MXNet 1.9.1" in reason or "GluonCV 0.10.5" in reason) and "\n" not in reason, name


def test_other_versions_raise_naming_versions_and_every_patch(monkeypatch):
    monkeypatch.delenv(compat.SKIP_VERSION_CHECK_ENV, raising=False)
    _fake_versions(monkeypatch, "2.0.0", "0.11.0")
    assert compat.version_mismatches() == {"mxnet": ("2.0.0", "1.9.1"), "gluoncv": ("0.11.0", "0.10.5.post0")}
    with pytest.raises(UserError) as caught:
        compat.check_versions()
    message = str(caught.value)
    assert "mxnet 2.0.0 (patched for 1.9.1)" in message and "gluoncv 0.11.0 (patched for 0.10.5.post0)" in message
    for name, reason in compat.PATCHES.items():
        assert f"compat.{name}: {reason}" in message
    assert f"{compat.SKIP_VERSION_CHECK_ENV}=1" in message


def test_only_the_mismatched_package_is_named(monkeypatch):
    monkeypatch.delenv(compat.SKIP_VERSION_CHECK_ENV, raising=False)
    _fake_versions(monkeypatch, "1.9.1", "0.10.4")  # a CUDA build (mxnet-cu112) also reports 1.9.1
    with pytest.raises(UserError, match=r"found gluoncv 0\.10\.4 \(patched for 0\.10\.5\.post0\)\.") as caught:
        compat.check_versions()
    assert "mxnet 1.9.1 (patched" not in str(caught.value)


def test_without_metadata_gluoncvs_own_version_string_is_compared(monkeypatch):
    import gluoncv

    def no_metadata(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", no_metadata)
    assert gluoncv.__version__ == compat.GLUONCV_MODULE_VERSION == "0.11.0"  # what 0.10.5.post0 calls itself
    assert compat.version_mismatches() == {}
    monkeypatch.setattr(gluoncv, "__version__", "0.12.0")
    assert compat.version_mismatches() == {"gluoncv": ("0.12.0", "0.10.5.post0")}


def test_skip_variable_turns_the_error_into_a_logged_warning(monkeypatch, caplog):
    _fake_versions(monkeypatch, "1.8.0", "0.10.5.post0")
    monkeypatch.setenv(compat.SKIP_VERSION_CHECK_ENV, "0")
    with pytest.raises(UserError):
        compat.check_versions()
    monkeypatch.setenv(compat.SKIP_VERSION_CHECK_ENV, "1")
    compat.log.addHandler(caplog.handler)  # a RunLogger may have stopped the package logger's propagation
    try:
        with caplog.at_level(logging.WARNING, logger=compat.log.name):
            compat.check_versions()
    finally:
        compat.log.removeHandler(caplog.handler)
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}  # a set: the handler
    assert len(warnings) == 1  # may see each record twice, directly and through propagation
    (warning,) = warnings
    assert "mxnet 1.8.0 (patched for 1.9.1)" in warning and "compat.set_rpn_budgets" in warning


_FAKE_MXNET_180 = ("import importlib.metadata as m; real = m.version; "
                   "m.version = lambda name: '1.8.0' if name == 'mxnet' else real(name); ")


def test_the_check_runs_on_package_import_as_one_line_and_the_import_stays_light():
    failed = _run_python(_FAKE_MXNET_180 + "import gluon_fashion", GLUON_FASHION_SKIP_VERSION_CHECK="")
    assert failed.returncode != 0 and failed.stderr.startswith("error: ") and "mxnet 1.8.0" in failed.stderr
    assert "Traceback" not in failed.stderr
    skipped = _run_python(_FAKE_MXNET_180 + "import gluon_fashion.models", GLUON_FASHION_SKIP_VERSION_CHECK="1")
    assert skipped.returncode == 0 and "running anyway" in skipped.stderr, skipped.stderr
    light = _run_python("import sys, gluon_fashion, numpy; "
                        "print('mxnet' in sys.modules, 'gluon_fashion.compat' in sys.modules, numpy.bool is bool)")
    assert light.stdout.split() == ["False", "True", "True"], light.stderr


def test_numpy_aliases_come_back_before_mxnet_needs_them(monkeypatch):
    monkeypatch.delattr(np, "bool", raising=False)
    monkeypatch.delattr(np, "object", raising=False)
    assert {"bool", "object"} <= set(compat.restore_numpy_aliases())
    assert np.bool is bool and np.object is object
    assert compat.restore_numpy_aliases() == []  # nothing left to restore


# ---------------------------------------------------------------------------------------------- Mask R-CNN
def test_rpn_budgets_round_trip_and_reach_the_graph():
    net = get_model("mask_rcnn_resnet18_v1b_coco", pretrained=False, pretrained_base=False)
    zoo = compat.rpn_budgets(net)
    assert (zoo.rpn_train_pre_nms, zoo.rpn_train_post_nms, zoo.rpn_test_pre_nms) == (12000, 2000, 6000)
    assert zoo.rcnn_max_pos == int(round(zoo.rcnn_num_sample * 0.25))  # GluonCV's pos_ratio
    small = compat.RpnBudgets(rpn_train_pre_nms=60, rpn_train_post_nms=30, rpn_test_pre_nms=50,
                              rpn_test_post_nms=20, rcnn_num_sample=16, rcnn_max_pos=4, max_num_gt=5,
                              rcnn_max_dets=7)
    compat.set_rpn_budgets(net, small)
    assert compat.rpn_budgets(net) == small
    assert net.rpn.get_test_post_nms() == 20  # GluonCV's one public getter agrees
    net.initialize()
    ids, scores, boxes, masks = net(mx.nd.zeros((1, 3, 128, 128)))
    assert ids.shape == (1, 7, 1) and masks.shape[:2] == (1, 7)  # rcnn_max_dets detections
    net.reset_class(["a", "b"])  # rebuilds GluonCV's target generators from the budgets set
    gt = mx.nd.array([[[10, 10, 60, 60]]])
    with autograd.train_mode():
        cls_pred, box_pred, mask_pred = net(mx.nd.zeros((1, 3, 128, 128)), gt, mx.nd.zeros((1, 1, 1)))[:3]
    assert cls_pred.shape == (1, 16, 3)  # rcnn_num_sample RoIs, 2 classes + background
    assert box_pred.shape[:2] == (1, 4) and mask_pred.shape[:2] == (1, 4)  # rcnn_max_pos positives


def test_feature_strides_of_c4_and_fpn_networks():
    assert compat.feature_strides(get_model("mask_rcnn_resnet18_v1b_coco", pretrained=False,
                                            pretrained_base=False)) == (16,)
    assert compat.feature_strides(get_model("mask_rcnn_fpn_resnet18_v1b_coco", pretrained=False,
                                            pretrained_base=False)) == (4, 8, 16, 32, 64)


def test_replaced_fpn_roi_pooling_gets_the_stages_and_pool_mode_stays_gluoncvs():
    net = get_model("mask_rcnn_fpn_resnet18_v1b_coco", pretrained=False, pretrained_base=False)
    net.initialize()
    feats = net.features(mx.nd.random.normal(shape=(1, 3, 64, 64)))
    rois = mx.nd.array([[0, 2, 2, 30, 30], [0, 0, 0, 60, 60]])
    strides = compat.feature_strides(net)
    gluoncv_pooled = net._pyramid_roi_feats(mx.nd, feats, rois, (7, 7), strides, roi_mode="pool").asnumpy()
    calls = []

    def roi_align(F, features, rpn_rois, roi_size, strides_, min_stage, max_stage, canonical_scale, ratio, eps):
        calls.append((min_stage, max_stage, roi_size, canonical_scale, ratio))
        return F.zeros((rpn_rois.shape[0], 3))

    compat.replace_fpn_roi_pooling(net, roi_align)
    assert net._pyramid_roi_feats(mx.nd, feats, rois, (7, 7), strides).shape == (2, 3)
    assert calls == [(2, 6, (7, 7), 224.0, 2)]  # P2..P6 as GluonCV builds FPN
    pooled = net._pyramid_roi_feats(mx.nd, feats, rois, (7, 7), strides, roi_mode="pool").asnumpy()
    np.testing.assert_array_equal(pooled, gluoncv_pooled)
    assert len(calls) == 1


# -------------------------------------------------------------------------------------------- segmentation
def test_make_shape_free_swaps_only_the_forward_of_gluoncvs_blocks():
    from gluoncv.model_zoo.deeplabv3 import _AsppPooling  # bakes its 5 x 5 output size

    def aspp_pooling(size: int):
        block = _AsppPooling(4, 2, norm_layer=nn.BatchNorm, norm_kwargs=None, height=size, width=size)
        block.initialize()
        return block

    x = mx.nd.random.uniform(shape=(1, 4, 7, 9))
    container = nn.HybridSequential()
    container.add(aspp_pooling(5))
    baked = container(x)
    assert baked.shape == (1, 2, 5, 5)
    params = dict(container.collect_params())
    compat.make_shape_free(container, SHAPE_FREE_FORWARDS)
    block = container[0]
    assert type(container) is nn.HybridSequential  # not one of GluonCV's size-baking blocks
    assert isinstance(block, _AsppPooling) and type(block) is not _AsppPooling
    assert dict(container.collect_params()) == params
    shape_free = container(x)
    assert shape_free.shape == (1, 2, 7, 9)
    # Global pooling broadcast back: the value at every pixel is GluonCV's (constant) upsampled map.
    np.testing.assert_allclose(shape_free.asnumpy()[:, :, :1, :1], baked.asnumpy()[:, :, :1, :1], rtol=1e-5)
    other = aspp_pooling(3)
    compat.make_shape_free(other, SHAPE_FREE_FORWARDS)
    assert type(other) is type(block)  # one subclass per GluonCV class and forward
    with pytest.raises(ValueError, match="aspp_pooling"):
        compat.make_shape_free(other, {"segmentation_net": SHAPE_FREE_FORWARDS["segmentation_net"]})


# ------------------------------------------------------------------------------------ parameters and layers
def test_resize_param_shape_changes_a_known_width_and_fixes_a_deferred_one():
    conv = nn.Conv2D(4, 3, in_channels=8)
    conv.initialize()
    with pytest.raises(AssertionError):
        conv.weight.shape = (4, 5, 3, 3)  # the public setter only fills unknown dimensions
    compat.resize_param_shape(conv.weight, (4, 5, 3, 3))
    conv.initialize(force_reinit=True)
    assert conv.weight.data().shape == (4, 5, 3, 3)
    assert conv(mx.nd.ones((1, 5, 6, 6))).shape == (1, 4, 4, 4)

    deferred = nn.Conv2D(4, 3)
    assert deferred.weight.shape == (4, 0, 3, 3)
    compat.resize_param_shape(deferred.weight, (4, 6, 3, 3))
    deferred.initialize()  # the shape is complete now: allocated at once, no forward needed
    assert deferred.weight.data().shape == (4, 6, 3, 3)


def test_batchnorm_global_stats_flag_decides_which_statistics_normalise():
    layer = nn.BatchNorm(in_channels=2, epsilon=1e-5)
    layer.initialize()
    layer.running_mean.set_data(mx.nd.array([2.0, -1.0]))
    layer.running_var.set_data(mx.nd.array([4.0, 9.0]))
    x = mx.nd.array(np.random.RandomState(0).normal(3.0, 2.0, size=(8, 2, 3, 3)).astype(np.float32))

    compat.set_batchnorm_global_stats(layer, True)
    with autograd.record():
        frozen = layer(x)
    frozen.backward()
    frozen = frozen.asnumpy()
    stored = (x.asnumpy() - np.array([2.0, -1.0])[None, :, None, None]) / np.sqrt(
        np.array([4.0, 9.0]) + 1e-5)[None, :, None, None]
    np.testing.assert_allclose(frozen, stored, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean.data().asnumpy(), [2.0, -1.0])  # not updated

    compat.set_batchnorm_global_stats(layer, False)
    with autograd.record():
        learning = layer(x)
    learning.backward()  # MXNet updates the running statistics in the backward pass
    np.testing.assert_allclose(learning.asnumpy().mean(axis=(0, 2, 3)), [0.0, 0.0], atol=1e-4)  # batch statistics
    assert not np.allclose(layer.running_mean.data().asnumpy(), [2.0, -1.0])  # running ones move


def test_syncbn_devices_reach_the_operator():
    layer = mx.gluon.contrib.nn.SyncBatchNorm(in_channels=2, num_devices=1)
    compat.set_syncbn_devices(layer, 3)
    graph = json.loads(layer(mx.sym.var("data")).tojson())
    (node,) = [n for n in graph["nodes"] if n["op"] == "_contrib_SyncBatchNorm"]
    assert node["attrs"]["ndev"] == "3"


def test_params_by_structural_name_are_the_names_save_parameters_writes(tmp_path):
    net = nn.HybridSequential()
    net.add(nn.Dense(3, in_units=2), nn.Dense(1, in_units=3))
    net.initialize()
    net.save_parameters(str(tmp_path / "w.params"))
    structural = compat.params_by_structural_name(net)
    assert set(structural) == set(mx.nd.load(str(tmp_path / "w.params"))) == {"0.weight", "0.bias", "1.weight",
                                                                               "1.bias"}
    assert structural["1.weight"] is net[1].weight


def test_load_param_data_initialises_a_deferred_parameter():
    dense = nn.Dense(3)  # input width unknown until data arrives
    assert dense.weight.shape == (3, 0)
    values = mx.nd.array(np.arange(12, dtype=np.float32).reshape(3, 4))
    compat.load_param_data(dense.weight, values, [mx.cpu()])
    np.testing.assert_array_equal(dense.weight.data().asnumpy(), values.asnumpy())
    compat.load_param_data(dense.weight, values * 2, [mx.cpu()])  # and replaces loaded data
    np.testing.assert_array_equal(dense.weight.data().asnumpy(), 2 * values.asnumpy())


def test_model_store_sha1_is_the_full_hash_behind_gluoncvs_short_one():
    sha1 = compat.model_store_sha1("resnet50_v1b")
    assert len(sha1) == 40 and sha1.startswith(model_store.short_hash("resnet50_v1b"))
    assert compat.model_store_sha1("no_such_weights") is None


# ---------------------------------------------------------------------------------------------- distributed
def test_init_trainer_kvstore_initialises_before_the_first_step():
    net = nn.Dense(2, in_units=3)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, kvstore="local")
    assert not trainer._kv_initialized
    compat.init_trainer_kvstore(trainer)
    assert trainer._kv_initialized and not trainer._params_to_init
    compat.init_trainer_kvstore(trainer)  # a second call changes nothing


_KVSTORE_JOB = textwrap.dedent("""
    import time
    import gluon_fashion  # before MXNet: restores the numpy aliases it needs (Python 3.12)
    import mxnet as mx  # next: as scheduler/server this import serves the job and exits
    from gluon_fashion import compat

    kv = mx.kv.create("dist_sync")
    if kv.rank == 1:
        time.sleep(3)
    start = time.monotonic()
    compat.kvstore_barrier(kv)
    print(f"rank {kv.rank} waited {time.monotonic() - start:.2f}", flush=True)
    if kv.rank == 1:
        compat.skip_kvstore_barrier_before_exit(kv)
        raise SystemExit(3)  # exits at once instead of waiting for rank 0 to exit too
    time.sleep(60)
""")


def test_kvstore_barrier_waits_for_every_worker_and_exit_can_skip_it():
    output = io.StringIO()
    start = time.monotonic()
    code = launch_local([sys.executable, "-c", _KVSTORE_JOB], num_workers=2, timeout=120, output=output,
                        env={"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"})
    elapsed = time.monotonic() - start
    text = output.getvalue()
    assert code == 3, text
    waits = {int(rank): float(seconds) for rank, seconds in re.findall(r"rank (\d) waited ([\d.]+)", text)}
    assert waits[0] >= 2.0, text  # rank 0 waited for rank 1's sleep at the barrier
    assert elapsed < 45, text  # rank 1 did not wait at exit for rank 0's minute of sleep


def test_fpn_backbone_batchnorm_learns_its_statistics_from_scratch():
    """GluonCV's FPN backbone is a SymbolBlock whose BatchNorm nodes use the stored statistics; from scratch
    they must normalise with (and update) batch statistics, or a random net diverges."""
    from gluon_fashion.models.batchnorm import batchnorm_layers, learn_batchnorm_statistics

    def running_means_after_a_training_step(net):
        net.initialize(force_reinit=True)
        x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 64, 64))
        with autograd.record(train_mode=True):
            outputs = net.features(x)
            loss = mx.nd.add_n(*[o.sum() for o in outputs])
        loss.backward()  # MXNet's BatchNorm updates its running statistics in the backward pass
        mx.nd.waitall()
        means = {name: p.data().asnumpy() for name, p in net.features.collect_params().items()
                 if name.endswith("running_mean")}
        return means, outputs

    fixed = get_model("mask_rcnn_fpn_resnet18_v1b_coco", pretrained=False, pretrained_base=False)
    means, _ = running_means_after_a_training_step(fixed)
    assert means and all(not m.any() for m in means.values())  # GluonCV's graph: stored statistics, untouched

    net = get_model("mask_rcnn_fpn_resnet18_v1b_coco", pretrained=False, pretrained_base=False)
    switched = learn_batchnorm_statistics(net)
    assert switched - len(batchnorm_layers(net)) == len(means)  # every graph node, besides the Gluon layers
    means, outputs = running_means_after_a_training_step(net)
    assert all(m.any() for m in means.values())  # batch statistics were taken and the running ones updated
    for name, p in net.features.collect_params().items():  # the parameters are the same objects, same names
        assert net.collect_params()[name] is p
    assert all(np.isfinite(o.asnumpy()).all() for o in outputs)
