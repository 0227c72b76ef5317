"""Offline pretrained weights: where GluonCV looks for them, a clear error when absent, partial loading.

GluonCV's model store (``gluoncv.model_zoo.model_store.get_model_file``) reads
``<root>/<name>-<first 8 hex of sha1>.params``. ``root`` is ``$MXNET_HOME/models`` when MXNET_HOME is set
(this wins over any ``root=`` argument), else the ``root`` passed to ``get_model`` (default
``~/.mxnet/models``). A missing file, or one whose sha1 differs from the store's, makes GluonCV try to
download, which fails on an offline machine with an unhelpful network trace; hence the checks here.

Mask R-CNN builders never pass ``root`` to their backbone, so backbone weights are always looked up in the
default root (or MXNET_HOME). Prefer setting MXNET_HOME over passing ``root``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import mxnet as mx

from ..compat import load_param_data, model_store_sha1, params_by_structural_name
from ..engine.checkpoint import checkpoint_base, mxnet_error_reason, verify_checkpoint
from ..errors import UserError

DEFAULT_ROOT = os.path.join("~", ".mxnet", "models")

# Backbone that each detector/segmenter family loads when built with pretrained_base=True
# (read from gluoncv/model_zoo/rcnn/mask_rcnn/predefined_models.py and segbase.get_backbone).
_MASK_RCNN = re.compile(r"^mask_rcnn_(?:fpn_)?(resnet\d+_v1[bd])_coco$")
_SEGMENTATION = re.compile(r"^(?:deeplab|fcn|psp|deeplabplus)_(resnet\d+|resnest\d+)_[a-z]+$")
_SEGMENTATION_BACKBONES = {"resnet18": "resnet18_v1b", "resnet34": "resnet34_v1b", "resnet50": "resnet50_v1s",
                           "resnet101": "resnet101_v1s", "resnet152": "resnet152_v1s"}


def _store():
    from gluoncv.model_zoo import model_store
    return model_store


def pretrained_root(root: Optional[str] = None) -> Path:
    """The folder GluonCV reads weights from: ``$MXNET_HOME/models``, else ``root``, else ``~/.mxnet/models``."""
    if "MXNET_HOME" in os.environ:
        return Path(os.path.expanduser(os.path.join(os.environ["MXNET_HOME"], "models")))
    return Path(os.path.expanduser(root or DEFAULT_ROOT))


def pretrained_file(name: str, root: Optional[str] = None) -> Path:
    """The exact path GluonCV uses for model-store weights ``name`` (e.g. "resnet50_v1b")."""
    store = _store()
    try:
        short = store.short_hash(name)
    except ValueError:
        raise UserError(f"GluonCV has no pretrained weights named {name!r} (see "
                        "gluoncv.model_zoo.pretrained_model_list())") from None
    return pretrained_root(root) / f"{name}-{short}.params"


def required_weights(model_name: str, pretrained: bool = True, pretrained_base: bool = True) -> list[str]:
    """Model-store names ``get_model(model_name, pretrained=..., pretrained_base=...)`` will read.

    ``pretrained=True`` loads the whole model and GluonCV then skips the backbone (it forces
    ``pretrained_base=False``); otherwise ``pretrained_base=True`` loads only the ImageNet backbone.
    """
    name = model_name.lower()
    if pretrained:
        return [name]
    if not pretrained_base:
        return []
    match = _MASK_RCNN.match(name)
    if match:
        return [match.group(1)]
    match = _SEGMENTATION.match(name)
    if match:
        backbone = match.group(1)
        return [_SEGMENTATION_BACKBONES.get(backbone, backbone)]
    if model_store_sha1(name) is not None:  # a classification network is its own "backbone"
        return [name]
    raise UserError(f"do not know which ImageNet backbone {model_name!r} loads with pretrained_base=True; "
                    "build it with pretrained_base=False or add it to gluon_fashion.models.pretrained")


def required_files(model_name: str, pretrained: bool = True, pretrained_base: bool = True,
                   root: Optional[str] = None) -> list[str]:
    """File names (``name-hash.params``) that building ``model_name`` this way needs in the weights folder."""
    return [pretrained_file(name, root).name for name in required_weights(model_name, pretrained, pretrained_base)]


def require_pretrained(names: Sequence[str], root: Optional[str] = None, verify: bool = True) -> list[Path]:
    """Check every model-store file is present (and, with ``verify``, intact) before any data is loaded.

    Raises UserError naming each missing/corrupt file, the folder it belongs in, and how to fetch it on a
    machine with internet access. Returns the paths.
    """
    paths = [pretrained_file(name, root) for name in names]
    problems = []
    for name, path in zip(names, paths):
        if not path.is_file():
            problems.append((name, path, "missing"))
        elif verify and not _sha1_matches(path, model_store_sha1(name)):
            problems.append((name, path, "corrupt or a different version (sha1 differs from GluonCV's)"))
    if problems:
        folder = paths[0].parent
        listed = ", ".join(f"{path.name} ({why})" for _, path, why in problems)
        fetch = "; ".join(f"gluoncv.model_zoo.get_model('{name}', pretrained=True)" for name, _, _ in problems)
        copied = " ".join(path.name for _, path, _ in problems)
        message = (f"pretrained weights not usable in {folder}: {listed}; this machine cannot download them. "
                   f"On a machine with internet access run: python -c \"import gluoncv; {fetch}\" and copy "
                   f"{copied} from its ~/.mxnet/models/ into {folder}/ (or set MXNET_HOME to a folder whose "
                   "models/ subfolder holds them)")
        raise UserError(message)
    return paths


def _sha1_matches(path: Path, sha1: str) -> bool:
    from gluoncv.utils import check_sha1
    return bool(check_sha1(str(path), sha1))


def _strip_prefix(name: str) -> str:
    # Module-era checkpoints prefix names with "arg:" / "aux:".
    return name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name


def load_state_matching(net, params_file: str, ctx, log: Optional[Callable[[str], None]] = None
                        ) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``params_file`` whose name and shape match a parameter of ``net``.

    The rest of ``net`` keeps its initialisation (new heads after a class change, COCO -> fashion).
    Names may be structural (``save_parameters``) or prefixed (``collect_params``). Returns
    ``(copied, skipped)`` parameter names of ``net``.
    """
    if not os.path.isfile(params_file):
        raise UserError(f"weights file {params_file} does not exist")
    if os.path.isfile(checkpoint_base(params_file) + ".json"):
        verify_checkpoint(params_file)  # a checkpoint of this project: refuse a cut-off copy as every loader does
    try:
        loaded = {_strip_prefix(k): v for k, v in mx.nd.load(str(params_file)).items()}
    except (mx.base.MXNetError, AttributeError) as exc:
        raise UserError(f"{params_file} is not an MXNet .params file: {mxnet_error_reason(exc)}") from None
    structural = params_by_structural_name(net)
    prefixed = {param.name: param for param in net.collect_params().values()}
    params = structural if sum(k in loaded for k in structural) >= sum(k in loaded for k in prefixed) else prefixed
    contexts = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    copied, skipped, mismatched = [], [], []
    for name, param in params.items():
        array = loaded.get(name)
        if array is None:
            skipped.append(name)
            continue
        if not _shapes_compatible(param.shape, array.shape):
            skipped.append(name)
            mismatched.append(f"{name} {tuple(array.shape)}->{tuple(param.shape)}")
            continue
        load_param_data(param, array.astype(param.dtype), contexts)
        copied.append(name)
    unused = len(loaded) - len(copied)
    message = (f"{params_file}: copied {len(copied)} of {len(params)} parameters; {len(skipped)} keep their "
               f"initialisation ({len(mismatched)} shape mismatches{': ' + ', '.join(mismatched[:5]) if mismatched else ''}"
               f"{', ...' if len(mismatched) > 5 else ''}); {unused} tensors in the file unused")
    (log or logging.getLogger(__name__).info)(message)
    return copied, skipped


def _shapes_compatible(wanted: tuple, given: tuple) -> bool:
    # 0 marks a dimension still unknown under deferred initialisation.
    return len(wanted) == len(given) and all(w in (0, g) for w, g in zip(wanted, given))
