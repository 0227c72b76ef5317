"""Semantic segmentation networks (FCN, PSPNet, DeepLabV3, DeepLabV3+) from GluonCV, for any class count and crop.

Building: the GluonCV network is created for the requested number of classes with ``pretrained_base=False``
(nothing is ever downloaded), initialised, and then filled from local model-store files:

* ``--model-zoo NAME`` (e.g. ``deeplab_resnet101_coco``): every tensor of the zoo checkpoint whose name and
  shape match is copied (``pretrained.load_state_matching``); the two final 1x1 classifier convolutions
  (head and auxiliary head) are always re-initialised, even when the class counts happen to agree.
* otherwise the ImageNet backbone weights (``resnet101_v1s``, ``xception``, ...) unless ``--no-pretrained``.

GluonCV multiplies the learning rate of both heads by 10 (``lr_mult``); that is kept.

ResNet-18/34 backbones (``resnet18_v1b``/``resnet34_v1b``, dilated like the others): GluonCV's heads are written
for ResNet-50's 1024/2048-channel features; the convolutions reading the features are resized to the basic-block
widths (256/512) before initialisation, everything else in the heads is unchanged. No zoo checkpoint exists
for them.

``deeplab_plus_xception_coco``: GluonCV 0.10 ships no COCO checkpoint for DeepLabV3+ (the name is not in its
model store or ``get_model`` table). The best available start is DeepLabV3+ with the ImageNet Xception-65
backbone (model-store file ``xception``) and freshly initialised ASPP/decoder heads; the build logs a WARNING.

Any crop size: GluonCV bakes ``crop_size`` into the graph (the ASPP image-pooling branch, PSP's pyramid and
DeepLabV3+'s decoder upsample to fixed ``crop_size // 8`` or ``// 4`` sizes; the outputs to ``crop_size``), so
other input sizes fail or need the crop to be a multiple of 8. Here those blocks resize "like" the tensor they
are joined with, and the outputs to the input's size (same parameters; identical results wherever GluonCV's
fixed sizes were right, i.e. inputs of exactly the crop size with the crop a multiple of 8), so training
crops of any size and whole-image or sliding-window inference at any size work.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from ..compat import make_shape_free, resize_param_shape, set_syncbn_devices
from ..engine.checkpoint import load_checkpoint_weights, read_checkpoint_meta
from ..errors import UserError
from ..labels import ClassSet
from ..transforms.segmentation import normalize_image, resize_image, scaled_size
from .initialization import initialize_params
from .pretrained import load_state_matching, require_pretrained, required_weights

log = logging.getLogger("gluon_fashion.models.segmentation")

TASK = "segmentation"
MODELS = ("fcn", "psp", "deeplabv3", "deeplabv3plus")
_MODEL_ALIASES = {"deeplab": "deeplabv3", "deeplabplus": "deeplabv3plus", "deeplabv3+": "deeplabv3plus",
                  "pspnet": "psp"}
_RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# Channels of the stage-3 and stage-4 features (c3, c4) GluonCV's heads are written for (ResNet-50 and deeper),
# and those of the basic-block ResNets, whose heads are resized to them (see _fit_heads_to_features).
_GLUONCV_FEATURE_CHANNELS = (1024, 2048)
_FEATURE_CHANNELS = {"resnet18": (256, 512), "resnet34": (256, 512)}
DEFAULT_BACKBONE = {"fcn": "resnet50", "psp": "resnet50", "deeplabv3": "resnet50", "deeplabv3plus": "xception"}
# GluonCV's family prefix in weight names, used to ask pretrained.required_weights for the ImageNet backbone.
_FAMILY = {"fcn": "fcn", "psp": "psp", "deeplabv3": "deeplab"}

XCEPTION_FALLBACK_NOTE = (
    "deeplab_plus_xception_coco: GluonCV has no COCO-pretrained DeepLabV3+ checkpoint (the name is not in its "
    "model store); building DeepLabV3+ with the ImageNet-pretrained Xception-65 backbone (model-store file "
    "'xception') and newly initialised ASPP/decoder heads instead")


@dataclass(frozen=True)
class ZooEntry:
    """A ``--model-zoo`` name: architecture, backbone, and the model-store weights it starts from."""

    model: str
    backbone: str
    weights: str
    whole_model: bool  # the weights hold the whole segmentation net (else only the ImageNet backbone)
    note: str = ""


ZOO: Dict[str, ZooEntry] = {
    name: ZooEntry(model, backbone, name, True)
    for name, model, backbone in [
        ("deeplab_resnet101_coco", "deeplabv3", "resnet101"), ("deeplab_resnet152_coco", "deeplabv3", "resnet152"),
        ("fcn_resnet101_coco", "fcn", "resnet101"), ("psp_resnet101_coco", "psp", "resnet101"),
        ("deeplab_resnet101_voc", "deeplabv3", "resnet101"), ("deeplab_resnet152_voc", "deeplabv3", "resnet152"),
        ("fcn_resnet101_voc", "fcn", "resnet101"), ("psp_resnet101_voc", "psp", "resnet101"),
        ("deeplab_resnet50_ade", "deeplabv3", "resnet50"), ("deeplab_resnet101_ade", "deeplabv3", "resnet101"),
        ("fcn_resnet50_ade", "fcn", "resnet50"), ("fcn_resnet101_ade", "fcn", "resnet101"),
        ("psp_resnet50_ade", "psp", "resnet50"), ("psp_resnet101_ade", "psp", "resnet101"),
    ]
}
ZOO["deeplab_plus_xception_coco"] = ZooEntry("deeplabv3plus", "xception", "xception", False,
                                             note=XCEPTION_FALLBACK_NOTE)


# ------------------------------------------------------------------------------ shape-free GluonCV blocks
def _resize_like(F, x, like):
    return F.contrib.BilinearResize2D(x, like, mode="like")


def _segbase_forward(self, F, x):
    c3, c4 = self.base_forward(x)
    outputs = [_resize_like(F, self.head(c4), x)]
    if self.aux:
        outputs.append(_resize_like(F, self.auxlayer(c3), x))
    return tuple(outputs)


def _deeplab_plus_forward(self, F, x):
    c1, c3, c4 = self.base_forward(x)
    outputs = [_resize_like(F, self.head(c4, c1), x)]
    if self.aux:
        outputs.append(_resize_like(F, self.auxlayer(c3), x))
    return tuple(outputs)


def _aspp_pooling_forward(self, F, x):
    # Bilinear upsampling of a 1x1 map is a broadcast; this needs no output size.
    return F.broadcast_like(self.gap(x), x, lhs_axes=(2, 3), rhs_axes=(2, 3))


def _deeplab_plus_head_forward(self, F, x, c1):
    c1 = self.c1_block(c1)
    x = _resize_like(F, self.aspp(x), c1)
    return self.block(F.concat(x, c1, dim=1))


def _pyramid_pooling_forward(self, F, x):
    feats = [x]
    for conv, size in ((self.conv1, 1), (self.conv2, 2), (self.conv3, 3), (self.conv4, 6)):
        feats.append(_resize_like(F, conv(F.contrib.AdaptiveAvgPooling2D(x, output_size=size)), x))
    return F.concat(*feats, dim=1)


#: The shape-free forwards by the GluonCV block role they replace (``compat.make_shape_free``).
SHAPE_FREE_FORWARDS = {
    "segmentation_net": _segbase_forward, "deeplabv3plus_net": _deeplab_plus_forward,
    "aspp_pooling": _aspp_pooling_forward, "deeplabv3plus_head": _deeplab_plus_head_forward,
    "pyramid_pooling": _pyramid_pooling_forward,
}


# ---------------------------------------------------------------------------------------- building
def canonical_model(name: str) -> str:
    """``--model`` value -> one of MODELS (GluonCV spellings 'deeplab', 'deeplabplus' accepted)."""
    key = name.lower()
    key = _MODEL_ALIASES.get(key, key)
    if key not in MODELS:
        raise UserError(f"--model {name!r}: unknown; use one of {', '.join(MODELS)}")
    return key


def resolve_backbone(model: str, backbone: Optional[str]) -> str:
    """The backbone to use (default per model), validated against what GluonCV's heads accept."""
    model = canonical_model(model)
    backbone = (backbone or DEFAULT_BACKBONE[model]).lower()
    allowed = ("xception",) if model == "deeplabv3plus" else _RESNET_BACKBONES
    if backbone not in allowed:
        raise UserError(f"--backbone {backbone!r} does not work with --model {model}; "
                        f"use one of {', '.join(allowed)}")
    return backbone


def zoo_entry(name: str) -> ZooEntry:
    """The ZooEntry of a ``--model-zoo`` name (UserError listing the known names otherwise)."""
    try:
        return ZOO[name.lower()]
    except KeyError:
        raise UserError(f"--model-zoo {name!r}: unknown; supported: {', '.join(sorted(ZOO))}") from None


def pretrained_weights_for(model: str, backbone: str, model_zoo: Optional[str], pretrained: bool) -> List[str]:
    """Model-store names a build will read (for ``require_pretrained`` before any data is loaded).

    ``pretrained=False`` reads nothing, also with ``model_zoo`` (its architecture, randomly initialised).
    """
    if not pretrained:
        return []
    if model_zoo:
        return [zoo_entry(model_zoo).weights]
    if backbone == "xception":
        return ["xception"]
    return required_weights(f"{_FAMILY[canonical_model(model)]}_{backbone}_coco", pretrained=False,
                            pretrained_base=True)


def require_weights(names: Sequence[str], model_zoo: Optional[str] = None, root: Optional[str] = None,
                    verify: bool = True) -> list:
    """``pretrained.require_pretrained`` plus, for a substituted zoo name, why that file is needed."""
    if not names:
        return []
    try:
        return require_pretrained(list(names), root=root, verify=verify)
    except UserError as exc:
        note = zoo_entry(model_zoo).note if model_zoo else ""
        if note:
            raise UserError(f"{exc}\n(why this file: {note})") from None
        raise


def _norm_kwargs(norm_layer, norm_kwargs: Optional[dict]) -> dict:
    kwargs = {}
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    if norm_kwargs:
        kwargs["norm_kwargs"] = dict(norm_kwargs)
    return kwargs


def _construct(model: str, backbone: str, num_classes: int, aux: bool, base_size: int, crop_size: int,
               norm_layer=None, norm_kwargs: Optional[dict] = None) -> nn.HybridBlock:
    from gluoncv.model_zoo.deeplabv3 import DeepLabV3
    from gluoncv.model_zoo.deeplabv3_plus import DeepLabV3Plus
    from gluoncv.model_zoo.fcn import FCN
    from gluoncv.model_zoo.pspnet import PSPNet

    cls = {"fcn": FCN, "psp": PSPNet, "deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus}[model]
    kwargs = dict(backbone=backbone, aux=aux, pretrained_base=False, base_size=base_size,
                  crop_size=crop_size, **_norm_kwargs(norm_layer, norm_kwargs))
    # PSPNet prints its crop size; keep stdout clean. GluonCV initialises the heads itself: all params are
    # re-initialised below anyway, so its "already initialized" warnings are noise.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = cls(num_classes, **kwargs)
    make_shape_free(net, SHAPE_FREE_FORWARDS)
    if backbone in _FEATURE_CHANNELS:
        _fit_heads_to_features(net, *_FEATURE_CHANNELS[backbone])
    if norm_kwargs and "num_devices" in norm_kwargs:
        _set_sync_devices(net, int(norm_kwargs["num_devices"]))
    return net


def _fit_heads_to_features(net: nn.Block, c3_channels: int, c4_channels: int) -> None:
    """Give the convolutions that read the backbone's features the input width of a ResNet-18/34 backbone.

    GluonCV writes its heads for ResNet-50 features (c3 1024, c4 2048 channels: ASPP's five input branches,
    the FCN head, the auxiliary head, PSP's pyramid convolutions) and PSP's fusion conv for c4 concatenated
    with four c4/4-wide pyramid maps (4096). Only those weights' input dimension changes; widths inside the
    heads stay GluonCV's.
    """
    c3_gluon, c4_gluon = _GLUONCV_FEATURE_CHANNELS
    new_width = {c3_gluon: c3_channels, c4_gluon: c4_channels, 2 * c4_gluon: c4_channels + c4_gluon}
    heads = [net.head] + ([net.auxlayer] if getattr(net, "aux", False) else [])
    for head in heads:
        for param in head.collect_params(".*weight").values():
            if len(param.shape) == 4 and param.shape[1] in new_width:
                # GluonCV already allocated these at the old width: callers re-initialise every parameter
                # (force_reinit) before use, which allocates the new shape.
                resize_param_shape(param, (param.shape[0], new_width[param.shape[1]]) + tuple(param.shape[2:]))


def _set_sync_devices(block: nn.Block, num_devices: int) -> None:
    # GluonCV's Xception65 builds its second BatchNorm without norm_kwargs, so under --syncbn it would
    # synchronise over 1 device instead of all of them.
    def synchronise(child: nn.Block) -> None:
        if isinstance(child, mx.gluon.contrib.nn.SyncBatchNorm):
            set_syncbn_devices(child, num_devices)

    block.apply(synchronise)


def classifier_convs(net: nn.Block) -> List[nn.Conv2D]:
    """The final 1x1 classifier convolutions: the head's and, with aux, the auxiliary head's."""
    convs = [net.head.block[len(net.head.block) - 1]]
    if getattr(net, "aux", False):
        convs.append(net.auxlayer.block[len(net.auxlayer.block) - 1])
    for conv in convs:
        if not isinstance(conv, nn.Conv2D) or tuple(conv.weight.shape[2:]) != (1, 1):
            raise RuntimeError(f"expected a 1x1 Conv2D classifier, found {conv}")
    return convs


def build_segmentation_model(model: str, num_classes: int, ctx: Sequence[mx.Context], backbone: Optional[str] = None,
                             aux: bool = True, base_size: int = 520, crop_size: int = 480,
                             model_zoo: Optional[str] = None, pretrained: bool = True,
                             norm_layer=None, norm_kwargs: Optional[dict] = None, root: Optional[str] = None,
                             verify_weights: bool = True,
                             pretrained_weights: Optional[str] = None) -> Tuple[nn.HybridBlock, Dict]:
    """Build a network for ``num_classes`` on ``ctx``, filled from local pretrained weights; returns (net, build_kwargs).

    ``model_zoo`` wins over ``model``/``backbone``; ``pretrained=False`` skips every weights file;
    ``pretrained_weights``: a ``.params`` file to start from instead (COCO weights of the same network or a
    checkpoint of this project), matched by name and shape, classifier convolutions re-initialised. Raises UserError (naming files and folder) when the needed
    weights are not on disk. ``build_kwargs`` rebuilds the same architecture (checkpoint metadata).
    """
    if num_classes < 2:
        raise UserError(f"a segmentation model needs at least 2 classes, got {num_classes}")
    entry = zoo_entry(model_zoo) if model_zoo else None
    if entry is not None:
        if canonical_model(model) != entry.model:
            log.info("--model-zoo %s is a %s network; --model %s ignored", model_zoo, entry.model, model)
        model, backbone = entry.model, entry.backbone
    model = canonical_model(model)
    backbone = resolve_backbone(model, backbone)
    names = pretrained_weights_for(model, backbone, model_zoo, pretrained)
    files = require_weights(names, model_zoo, root=root, verify=verify_weights)
    if pretrained_weights:
        files = [Path(pretrained_weights)]
        if not files[0].is_file():
            raise UserError(f"--pretrained-weights {pretrained_weights}: no such file")
    net = _construct(model, backbone, num_classes, aux, base_size, crop_size, norm_layer, norm_kwargs)
    initialize_params(net.collect_params(), ctx)
    if entry is not None and entry.note and files:
        log.warning("%s", entry.note)
    for path in files:
        copied, _ = load_state_matching(net, str(path), list(ctx), log=log.info)
        if not copied:
            raise UserError(f"{path}: no tensor matches {model}/{backbone}; is it the right weights file?")
    if files and (pretrained_weights or (entry is not None and entry.whole_model)):
        for conv in classifier_convs(net):
            initialize_params(conv.collect_params(), ctx)
        log.info("%s: classifier convolutions re-initialised for %d classes (head%s)",
                 pretrained_weights or model_zoo, num_classes,
                 " and auxiliary head" if aux else "")
    if not files:
        log.warning("%s/%s: no pretrained weights, all layers initialised at random", model, backbone)
    # Some backbone layers infer their input channels; one small inference pass (no BatchNorm
    # synchronisation happens outside training) sizes them now, not in parallel device threads later.
    net(mx.nd.zeros((1, 3, 32, 32), ctx=list(ctx)[0]))
    build_kwargs = {"model": model, "backbone": backbone, "num_classes": int(num_classes), "aux": bool(aux),
                    "base_size": int(base_size), "crop_size": int(crop_size)}
    return net, build_kwargs


def checkpoint_meta(build_kwargs: Dict, class_set: ClassSet, **extra) -> Dict:
    """The description stored beside every checkpoint, from which :func:`load_segmentation_model` rebuilds
    the net: ``build_kwargs`` as :func:`build_segmentation_model` returns them, the labels, and the test-time
    scale (``image_scale``: the training base and crop sizes); ``extra`` keys are added as they are."""
    meta = {"task": TASK, "model": build_kwargs["model"], "classes": class_set.to_dict(),
            "build_kwargs": dict(build_kwargs),
            "image_scale": {"base_size": int(build_kwargs["base_size"]), "crop_size": int(build_kwargs["crop_size"])}}
    meta.update(extra)
    return meta


def image_scale(meta: Dict) -> Tuple[int, int]:
    """(base_size, crop_size) a checkpoint predicts at: its ``image_scale``, else its build sizes."""
    recorded, build = meta.get("image_scale") or {}, meta.get("build_kwargs") or {}
    return (int(recorded.get("base_size") or build["base_size"]),
            int(recorded.get("crop_size") or build["crop_size"]))


def load_segmentation_model(params_path: str, ctx) -> Tuple[nn.HybridBlock, Dict]:
    """Rebuild a trained network from its checkpoint alone (``.params`` + the ``.json`` beside it).

    Returns ``(net, meta)``; the net is built without the auxiliary head (inference only) and hybridised.
    ``meta["build_kwargs"]`` and ``meta["classes"]`` describe architecture and labels.
    """
    meta = read_checkpoint_meta(params_path)
    if meta.get("task") != TASK:
        raise UserError(f"{params_path}: a {meta.get('task')!r} checkpoint, not a segmentation one")
    kwargs = dict(meta["build_kwargs"])
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]
    net = _construct(kwargs["model"], kwargs["backbone"], kwargs["num_classes"], False, kwargs["base_size"],
                     kwargs["crop_size"])
    # GluonCV initialised its heads on the CPU, at ResNet-50 widths for the basic-block backbones: allocate
    # every tensor anew on the requested devices and at the built shapes, so that loading only copies.
    initialize_params(net.collect_params(), contexts)
    load_checkpoint_weights(net, params_path, ctx=contexts, meta=meta, ignore_extra=True)
    net.hybridize()
    return net, meta


# ---------------------------------------------------------------------------------------- inference
def net_dtype(net: nn.Block) -> str:
    """Parameter dtype of the network's first layer (float16 after ``--dtype float16``)."""
    return str(np.dtype(next(iter(net.collect_params().values())).dtype))


def forward_logits(net: nn.Block, batch: mx.nd.NDArray) -> mx.nd.NDArray:
    """Main-head logits (N x C x H x W, float32) for a normalised batch, whatever the aux setting and dtype."""
    out = net(batch.astype(net_dtype(net), copy=False))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out.astype("float32", copy=False)


def _window_starts(size: int, window: int, stride: int) -> List[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


def _window_probs(net, image: np.ndarray, ctx: mx.Context, crop_size: int, flip: bool,
                  max_batch: int) -> np.ndarray:
    """Softmax probabilities (C x H x W) of a normalised image, from crop-size windows overlapping by 1/3."""
    _, height, width = image.shape
    win_h, win_w = min(crop_size, height), min(crop_size, width)
    stride = max(1, int(crop_size * 2 / 3))
    boxes = [(y, x) for y in _window_starts(height, win_h, stride) for x in _window_starts(width, win_w, stride)]
    probs = None
    counts = np.zeros((height, width), dtype=np.float32)
    for first in range(0, len(boxes), max_batch):
        chunk = boxes[first:first + max_batch]
        batch = mx.nd.array(np.stack([image[:, y:y + win_h, x:x + win_w] for y, x in chunk]), ctx=ctx)
        out = mx.nd.softmax(forward_logits(net, batch), axis=1)
        if flip:
            out = out + mx.nd.softmax(forward_logits(net, batch.flip(axis=3)), axis=1).flip(axis=3)
            out = out / 2
        out = out.asnumpy()
        if probs is None:
            probs = np.zeros((out.shape[1], height, width), dtype=np.float32)
        for (y, x), window in zip(chunk, out):
            probs[:, y:y + win_h, x:x + win_w] += window
            counts[y:y + win_h, x:x + win_w] += 1
    return probs / counts[None]


def _resize_probs(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    if probs.shape[1:] == (height, width):
        return probs
    channels_last = cv2_resize_multichannel(probs.transpose(1, 2, 0), height, width)
    return channels_last.transpose(2, 0, 1)


def cv2_resize_multichannel(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an H x W x C float array for any C (OpenCV handles at most 512 channels at once)."""
    import cv2

    parts = [cv2.resize(image[:, :, i:i + 512], (width, height), interpolation=cv2.INTER_LINEAR)
             for i in range(0, image.shape[2], 512)]
    parts = [p[:, :, None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=2)


def _bilinear_axis(out_size: int, in_size: int):
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0, in_size - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def upsample_argmax(scores: np.ndarray, height: int, width: int, max_elements: int = 1 << 24) -> np.ndarray:
    """argmax over classes of ``scores`` (C x h x w) bilinearly resized to ``height x width``, in row strips.

    Memory stays O(C * strip * width): a 24-megapixel photo never gets a full C x H x W score array.
    """
    channels, in_h, in_w = scores.shape
    if (in_h, in_w) == (height, width):
        return scores.argmax(axis=0).astype(np.int32)
    y_low, y_high, y_frac = _bilinear_axis(height, in_h)
    x_low, x_high, x_frac = _bilinear_axis(width, in_w)
    rows_per_strip = max(1, max_elements // max(1, channels * max(width, in_w)))
    labels = np.empty((height, width), dtype=np.int32)
    for top in range(0, height, rows_per_strip):
        rows = slice(top, min(height, top + rows_per_strip))
        fy = y_frac[rows][None, :, None]
        strip = scores[:, y_low[rows], :] * (1 - fy) + scores[:, y_high[rows], :] * fy
        strip = strip[:, :, x_low] * (1 - x_frac) + strip[:, :, x_high] * x_frac
        labels[rows] = strip.argmax(axis=0)
    return labels


def check_scales(scales: Sequence[float]) -> None:
    """UserError (naming ``--scales``) unless ``scales`` are test scales: at least one, all positive."""
    if not scales:
        raise UserError("no test scale given (e.g. --scales 1.0 or 0.75,1.0,1.25)")
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        raise UserError(f"--scales must be positive, got {list(scales)}")


def label_scores(net: nn.Block, image_rgb: np.ndarray, ctx: mx.Context, scales: Sequence[float] = (1.0,),
                 flip: bool = False, base_size: int = 520, crop_size: int = 480, max_batch: int = 4) -> np.ndarray:
    """C x h x w class scores of an RGB photo at its scale-1 size (long side ``base_size``), test-time
    augmentation included; :func:`upsample_argmax` turns them into labels on any grid.

    For each scale the photo is resized so its long side is ``ceil(base_size * scale)`` and covered with
    ``crop_size`` windows overlapping by a third (one window when it fits); the softmax probabilities of the
    windows (and, with ``flip``, of their mirror images) are averaged, brought to the scale-1 size, and
    added up over the scales.
    """
    check_scales(scales)
    ctx = ctx[0] if isinstance(ctx, (list, tuple)) else ctx
    height, width = image_rgb.shape[:2]
    ref_h, ref_w = scaled_size(height, width, base_size)
    total = None
    for scale in scales:
        h, w = scaled_size(height, width, int(math.ceil(base_size * scale)))
        image = normalize_image(resize_image(image_rgb, h, w))
        probs = _resize_probs(_window_probs(net, image, ctx, crop_size, flip, max_batch), ref_h, ref_w)
        total = probs if total is None else total + probs
    return total


def predict_label_map(net: nn.Block, image_rgb: np.ndarray, ctx: mx.Context, scales: Sequence[float] = (1.0,),
                      flip: bool = False, base_size: int = 520, crop_size: int = 480, max_batch: int = 4,
                      out_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """int32 label map of an RGB photo, on its own grid or on ``out_size`` (h, w) (test-time augmentation
    optional): the :func:`label_scores` bilinearly upsampled straight onto that grid, strip by strip, and
    turned into labels."""
    scores = label_scores(net, image_rgb, ctx, scales, flip, base_size, crop_size, max_batch)
    return upsample_argmax(scores, *(out_size or image_rgb.shape[:2]))


__all__ = ["MODELS", "TASK", "ZOO", "XCEPTION_FALLBACK_NOTE", "ZooEntry", "build_segmentation_model",
           "canonical_model", "check_scales", "checkpoint_meta", "classifier_convs", "forward_logits",
           "image_scale", "label_scores", "load_segmentation_model", "net_dtype",
           "predict_label_map", "pretrained_weights_for", "require_weights", "resolve_backbone", "upsample_argmax",
           "zoo_entry"]
