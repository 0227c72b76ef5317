"""Offline pretrained weights: GluonCV's file names and folders, clear errors, partial loading."""
from __future__ import annotations

import hashlib
import os

import mxnet as mx
import numpy as np
import pytest
from gluoncv import model_zoo
from gluoncv.model_zoo import model_store
from mxnet.gluon import nn

from gluon_fashion.errors import UserError
from gluon_fashion.models.pretrained import (load_state_matching, pretrained_file, pretrained_root, require_pretrained,
                                             required_files, required_weights)


def _tiny(out_units: int = 5, in_units: int = 3) -> nn.HybridSequential:
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=in_units, activation="relu"), nn.Dense(out_units, in_units=4))
    return net


def _saved_tiny(path, seed: int = 0, out_units: int = 5) -> nn.HybridSequential:
    mx.random.seed(seed)
    net = _tiny(out_units)
    net.initialize(mx.init.Uniform(1.0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    net.save_parameters(str(path))
    return net


def _sha1(path) -> str:
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


@pytest.fixture
def tiny_store_entry(tmp_path, monkeypatch):
    """A weights file registered in GluonCV's model-store table under a made-up name, hash matching."""
    source = tmp_path / "source.params"
    net = _saved_tiny(source)
    sha1 = _sha1(source)
    monkeypatch.setitem(model_store._model_sha1, "gf_tiny_net", sha1)
    return net, source, sha1


def _no_download(*args, **kwargs):
    raise AssertionError("GluonCV tried to download")


def test_pretrained_file_is_where_gluoncv_reads(tmp_path, monkeypatch, tiny_store_entry):
    _, source, sha1 = tiny_store_entry
    monkeypatch.setattr(model_store, "download", _no_download)
    monkeypatch.delenv("MXNET_HOME", raising=False)
    root = tmp_path / "weights"
    expected = root / f"gf_tiny_net-{sha1[:8]}.params"
    assert pretrained_file("gf_tiny_net", str(root)) == expected
    os.makedirs(root)
    os.link(source, expected)
    # GluonCV returns the file without downloading only when name, folder and hash are all right.
    assert model_store.get_model_file("gf_tiny_net", root=str(root)) == str(expected)

    home = tmp_path / "mxnet_home"
    monkeypatch.setenv("MXNET_HOME", str(home))
    in_home = pretrained_file("gf_tiny_net", str(root))  # MXNET_HOME wins over root, as in GluonCV
    assert in_home == home / "models" / expected.name and pretrained_root("/elsewhere") == home / "models"
    os.makedirs(in_home.parent)
    os.link(source, in_home)
    assert model_store.get_model_file("gf_tiny_net", root=str(root)) == str(in_home)


def test_default_root_is_home_mxnet_models(monkeypatch):
    monkeypatch.delenv("MXNET_HOME", raising=False)
    assert pretrained_root() == pretrained_root(None) == \
        __import__("pathlib").Path(os.path.expanduser("~/.mxnet/models"))
    assert pretrained_file("resnet50_v1b").name == "resnet50_v1b-" + model_store._model_sha1["resnet50_v1b"][:8] \
        + ".params"


def test_require_pretrained_passes_when_present(tmp_path, monkeypatch, tiny_store_entry):
    _, source, _ = tiny_store_entry
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    target = pretrained_file("gf_tiny_net")
    os.makedirs(target.parent)
    os.link(source, target)
    assert require_pretrained(["gf_tiny_net"]) == [target]


def test_require_pretrained_names_missing_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "models"
    with pytest.raises(UserError) as info:
        require_pretrained(["resnet50_v1b", "mask_rcnn_resnet50_v1b_coco"])
    message = str(info.value)
    for name in ("resnet50_v1b", "mask_rcnn_resnet50_v1b_coco"):
        assert f"{name}-{model_store._model_sha1[name][:8]}.params" in message
        assert f"get_model('{name}', pretrained=True)" in message
    assert str(folder) in message and "cannot download" in message
    assert "\n" not in message  # printed as one line by the CLI edge
    with pytest.raises(UserError, match="no pretrained weights named 'not_a_model'"):
        require_pretrained(["not_a_model"])


def test_require_pretrained_rejects_wrong_content(tmp_path, monkeypatch):
    # A file under the right name but with other bytes would make GluonCV try to re-download.
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "home"))
    target = pretrained_file("resnet18_v1b")
    _saved_tiny(target)
    with pytest.raises(UserError, match=r"resnet18_v1b-2d9d980c\.params \(corrupt"):
        require_pretrained(["resnet18_v1b"])
    assert require_pretrained(["resnet18_v1b"], verify=False) == [target]


@pytest.mark.parametrize("model_name", ["mask_rcnn_resnet50_v1b_coco", "mask_rcnn_fpn_resnet101_v1d_coco",
                                        "deeplab_resnet50_ade", "deeplab_resnet101_coco", "fcn_resnet101_voc"])
def test_required_weights_match_what_gluoncv_loads(model_name, monkeypatch):
    """Build each model with GluonCV and record which store files it asks for (stopped at the first)."""
    asked = []

    class Stop(Exception):
        pass

    def record(name, tag=None, root=None):
        asked.append(name)
        raise Stop

    monkeypatch.setattr(model_store, "get_model_file", record)
    with pytest.raises(Stop):
        model_zoo.get_model(model_name, pretrained=False, pretrained_base=True)
    assert required_weights(model_name, pretrained=False, pretrained_base=True) == asked
    assert required_weights(model_name, pretrained=False, pretrained_base=False) == []
    assert required_files(model_name) == [f"{model_name}-{model_store._model_sha1[model_name][:8]}.params"]


@pytest.mark.parametrize("model_name", ["mask_rcnn_resnet18_v1b_coco", "deeplab_resnet50_ade"])
def test_whole_model_weights_skip_the_backbone_file(model_name, monkeypatch):
    """With pretrained=True GluonCV reads only the whole-model file (it turns pretrained_base off)."""
    asked = []

    def record(name, tag=None, root=None):
        asked.append(name)
        raise FileNotFoundError(name)

    monkeypatch.setattr(model_store, "get_model_file", record)
    with pytest.raises(FileNotFoundError):
        model_zoo.get_model(model_name, pretrained=True)
    assert required_weights(model_name, pretrained=True) == asked == [model_name]


def test_load_state_matching_copies_matching_and_skips_mismatched(tmp_path):
    source = _saved_tiny(tmp_path / "coco.params", seed=1, out_units=5)
    mx.random.seed(2)
    target = _tiny(out_units=7)  # new head: a different class count
    target.initialize(mx.init.Constant(0.25))
    copied, skipped = load_state_matching(target, str(tmp_path / "coco.params"), mx.cpu())
    assert sorted(copied) == ["0.bias", "0.weight"]
    assert sorted(skipped) == ["1.bias", "1.weight"]
    np.testing.assert_array_equal(target[0].weight.data().asnumpy(), source[0].weight.data().asnumpy())
    np.testing.assert_array_equal(target[0].bias.data().asnumpy(), source[0].bias.data().asnumpy())
    assert np.all(target[1].weight.data().asnumpy() == 0.25)


def test_load_state_matching_deferred_init_and_prefixed_names(tmp_path):
    source = _saved_tiny(tmp_path / "a.params", seed=3)
    # Old-style files key tensors by the full parameter name (mx.nd.save of collect_params()).
    prefixed = {p.name: p.data() for p in source.collect_params().values()}
    mx.nd.save(str(tmp_path / "prefixed.params"), prefixed)
    target = _tiny()  # new Blocks get new prefixed names; the structural names still match
    target.initialize()
    copied, _ = load_state_matching(target, str(tmp_path / "a.params"), [mx.cpu()])
    assert len(copied) == 4

    lazy = nn.HybridSequential()
    lazy.add(nn.Dense(4, activation="relu"), nn.Dense(5))  # in_units unknown until first forward
    lazy.initialize()
    messages = []
    copied, skipped = load_state_matching(lazy, str(tmp_path / "a.params"), mx.cpu(), log=messages.append)
    assert len(copied) == 4 and not skipped and "copied 4 of 4" in messages[0]
    out = lazy(mx.nd.ones((1, 3)))
    np.testing.assert_allclose(out.asnumpy(), source(mx.nd.ones((1, 3))).asnumpy(), rtol=1e-6)

    renamed = _tiny()
    renamed_prefixed = {p.name: v for p, v in zip(renamed.collect_params().values(), prefixed.values())}
    mx.nd.save(str(tmp_path / "renamed.params"), renamed_prefixed)
    renamed.initialize()
    copied, _ = load_state_matching(renamed, str(tmp_path / "renamed.params"), mx.cpu())
    assert len(copied) == 4
    np.testing.assert_array_equal(renamed[1].weight.data().asnumpy(), source[1].weight.data().asnumpy())


def test_load_state_matching_bad_files(tmp_path):
    net = _tiny()
    net.initialize()
    with pytest.raises(UserError, match="does not exist"):
        load_state_matching(net, str(tmp_path / "absent.params"), mx.cpu())
    (tmp_path / "junk.params").write_bytes(b"not a params file")
    with pytest.raises(UserError, match=r"junk\.params is not an MXNet \.params file"):
        load_state_matching(net, str(tmp_path / "junk.params"), mx.cpu())
