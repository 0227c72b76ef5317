"""Every place gluon_fashion reaches into private GluonCV or MXNet code, and the versions it was checked against.

GluonCV 0.10.5.post0 and MXNet 1.9.1 leave some things this project needs without a public API (the proposal
and RoI counts of a built Mask R-CNN, a parameter-server barrier, loading one tensor into a deferred parameter)
and get others wrong (MXNet's CPU ``ROIAlign`` with skipped RoIs, GluonCV's segmentation heads that bake the
crop size into the graph). Each work-around here is a small named function whose docstring says what it
works around and why; the rest of the package calls these and touches no private attribute of a GluonCV or
MXNet object itself.

Importing this module also restores numpy's removed aliases MXNet needs (:func:`restore_numpy_aliases`);
``import gluon_fashion`` imports it first. Private code can change in any release without notice, so importing
this module runs :func:`check_versions`:
on any other MXNet or GluonCV version it raises a :class:`~gluon_fashion.errors.UserError` listing every
function below to re-check. ``GLUON_FASHION_SKIP_VERSION_CHECK=1`` turns that error into a logged warning,
for someone who re-checked them (or wants to try).
"""
from __future__ import annotations

import ctypes
import logging
import os
from importlib import metadata
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .errors import UserError

if TYPE_CHECKING:  # MXNet itself is imported by the functions that need it: importing compat stays cheap
    import mxnet as mx

log = logging.getLogger(__name__)

#: numpy aliases that numpy 1.24 removed and MXNet 1.9.1 / GluonCV 0.10.5 still use (``np.bool`` in MXNet's
#: ``numpy_dispatch_protocol`` at import, ``np.int``/``np.float``/``np.object`` in data and model code).
_REMOVED_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "complex": complex, "object": object,
                          "str": str, "long": int}


def restore_numpy_aliases() -> List[str]:
    """Give numpy back the builtin aliases MXNet 1.9.1 and GluonCV 0.10.5 use; returns the names restored.

    Needed from numpy 1.24 on (the only numpy with Python 3.12 wheels that MXNet 1.9.1 runs with is 1.26).
    Must run before MXNet or GluonCV is imported; the package's ``__init__`` imports this module first, so
    every entry point (trainers, tools, tests) gets it. Names numpy still has are left alone.
    """
    restored = [name for name in _REMOVED_NUMPY_ALIASES if name not in vars(np)]
    for name in restored:
        setattr(np, name, _REMOVED_NUMPY_ALIASES[name])
    return restored


restore_numpy_aliases()

#: The MXNet version the patches were written for. Every build of it (``mxnet``, ``mxnet-cu112``,
#: ``mxnet-cu117``, ...) reports this same ``mxnet.__version__``, so the build does not matter.
MXNET_VERSION = "1.9.1"
#: The GluonCV distribution the patches were written for (``pip show gluoncv``).
GLUONCV_VERSION = "0.10.5.post0"
#: What that GluonCV release says in ``gluoncv.__version__`` (not its distribution's version); compared
#: only when the distribution's metadata cannot be read.
GLUONCV_MODULE_VERSION = "0.11.0"
#: Set to 1 to run on other versions anyway, with a warning instead of the error.
SKIP_VERSION_CHECK_ENV = "GLUON_FASHION_SKIP_VERSION_CHECK"

#: Name -> one-line reason of every function here that touches GluonCV/MXNet internals (the re-check list).
PATCHES: Dict[str, str] = {}

PatchFunction = TypeVar("PatchFunction", bound=Callable)


def _patch(reason: str) -> Callable[[PatchFunction], PatchFunction]:
    """Record a function in :data:`PATCHES` (returned unchanged)."""

    def register(function: PatchFunction) -> PatchFunction:
        PATCHES[function.__name__] = reason
        return function

    return register


# ------------------------------------------------------------------------------------------------- Mask R-CNN
class RpnBudgets(NamedTuple):
    """How many proposals and RoIs a GluonCV (Mask/Faster) R-CNN keeps at each stage."""

    rpn_train_pre_nms: int  # proposals kept before NMS in training
    rpn_train_post_nms: int  # ... and after it, the pool the RoI sampler draws from
    rpn_test_pre_nms: int
    rpn_test_post_nms: int  # also the number of RoIs the heads see in inference
    rcnn_num_sample: int  # RoIs sampled per image in training
    rcnn_max_pos: int  # at most this many of them positives (the RoIs the mask head trains on)
    max_num_gt: int  # ground-truth boxes per image the sampler pads to
    rcnn_max_dets: int  # detections per image in inference


@_patch("GluonCV 0.10.5 has no getter for a built R-CNN's proposal/RoI counts (private RPN/sampler attributes)")
def rpn_budgets(net: mx.gluon.HybridBlock) -> RpnBudgets:
    """The proposal and RoI counts of a GluonCV 0.10.5 R-CNN, read from where its graph reads them.

    GluonCV takes these as constructor arguments and keeps them only as private attributes of the network,
    its RPN and its RoI sampler; there is no public getter (``rpn.get_test_post_nms()`` covers one of eight).
    """
    rpn, sampler = net.rpn, net.sampler
    return RpnBudgets(
        rpn_train_pre_nms=rpn._train_pre_nms, rpn_train_post_nms=rpn._train_post_nms,
        rpn_test_pre_nms=rpn._test_pre_nms, rpn_test_post_nms=rpn._test_post_nms,
        rcnn_num_sample=net._num_sample, rcnn_max_pos=sampler._max_pos, max_num_gt=sampler._max_num_gt,
        rcnn_max_dets=net._rcnn_max_dets)


@_patch("GluonCV 0.10.5's zoo builders hard-code proposal/RoI counts; only private attributes change them")
def set_rpn_budgets(net: mx.gluon.HybridBlock, budgets: RpnBudgets) -> None:
    """Give a freshly built (not yet run) GluonCV 0.10.5 R-CNN other proposal and RoI counts.

    ``get_model`` of a zoo Mask R-CNN hard-codes them (12000/2000 proposals, 128-512 RoIs) and GluonCV has no
    setter. They are plain attributes read when the graph is first built, some kept twice (the training
    proposals also as the sampler's input size, the RoI count on the net and on the sampler, the inference
    proposals on the RPN and on the net), so every copy is written here. The caller keeps them consistent
    (post-NMS counts at most the pre-NMS ones, RoIs at most the training proposals). GluonCV's box and mask
    target generators keep the RoI and positive counts of the constructor until ``net.reset_class`` rebuilds
    them from the values set here: call it afterwards, before training (``build_mask_rcnn`` does).
    """
    rpn, sampler = net.rpn, net.sampler
    rpn._train_pre_nms = int(budgets.rpn_train_pre_nms)
    rpn._train_post_nms = sampler._num_proposal = int(budgets.rpn_train_post_nms)
    rpn._test_pre_nms = int(budgets.rpn_test_pre_nms)
    rpn._test_post_nms = net._rpn_test_post_nms = int(budgets.rpn_test_post_nms)
    net._num_sample = sampler._num_sample = int(budgets.rcnn_num_sample)
    sampler._max_pos = int(budgets.rcnn_max_pos)
    sampler._max_num_gt = int(budgets.max_num_gt)
    net._rcnn_max_dets = int(budgets.rcnn_max_dets)


@_patch("GluonCV 0.10.5 keeps an R-CNN's feature strides only in the private FasterRCNN._strides")
def feature_strides(net: mx.gluon.HybridBlock) -> Tuple[int, ...]:
    """Feature strides of a GluonCV 0.10.5 R-CNN: one for C4 networks, one per pyramid level for FPN ones.

    The anchor arithmetic needs them (how many anchors an input has); GluonCV stores them only privately.
    """
    strides = net._strides
    return tuple(strides) if isinstance(strides, (list, tuple)) else (strides,)


#: ``(F, features, rpn_rois, roi_size, strides, min_stage, max_stage, roi_canonical_scale, sampling_ratio,
#: eps) -> pooled`` RoIAlign over the pyramid; see :func:`replace_fpn_roi_pooling`.
FpnRoiAlign = Callable[..., object]


@_patch("MXNet 1.9.1's CPU ROIAlign garbles RoIs GluonCV 0.10.5 skips; replaces private _pyramid_roi_feats")
def replace_fpn_roi_pooling(net: mx.gluon.HybridBlock, roi_align: FpnRoiAlign) -> None:
    """Make a GluonCV 0.10.5 FPN R-CNN pool its RoIs with ``roi_align`` in RoIAlign mode.

    GluonCV's ``FasterRCNN._pyramid_roi_feats`` gives the RoIs of other levels batch index -1 so that
    ``ROIAlign`` skips them, but MXNet 1.9.1's CPU ``ROIAlign`` leaves their outputs uninitialised and writes
    stray zeros into the first RoI's features. The method is private, so the replacement is installed on this
    one network (GluonCV calls it as ``self._pyramid_roi_feats``). ``roi_align`` gets GluonCV's arguments
    plus the network's lowest and highest pyramid stage (``FasterRCNN``'s private ``_min_stage``/``_max_stage``;
    the highest may be P6, which GluonCV uses for the RPN only). RoIPooling mode keeps GluonCV's own method.
    """
    gluoncv_pooling = type(net)._pyramid_roi_feats
    min_stage, max_stage = net._min_stage, net._max_stage

    def pyramid_roi_feats(F, features, rpn_rois, roi_size, strides, roi_mode="align", roi_canonical_scale=224.0,
                          sampling_ratio=2, eps=1e-6):
        if roi_mode != "align":
            return gluoncv_pooling(net, F, features, rpn_rois, roi_size, strides, roi_mode, roi_canonical_scale,
                                   sampling_ratio, eps)
        return roi_align(F, features, rpn_rois, roi_size, strides, min_stage, max_stage, roi_canonical_scale,
                         sampling_ratio, eps)

    net._pyramid_roi_feats = pyramid_roi_feats


_ATTRIBUTE_SUBCLASSES: Dict[type, type] = {}


@_patch("GluonCV 0.10.5's MaskRCNN.hybrid_forward keeps its RoI features to itself; swaps __class__ for attributes")
def add_attribute_output(net: mx.gluon.HybridBlock, make_head: Callable[[], mx.gluon.HybridBlock]) -> None:
    """Give a built GluonCV 0.10.5 Mask R-CNN an attribute output computed from the mask head's input features.

    ``make_head()`` builds the head (RoI features ``(R, C, h, w)`` -> attribute logits ``(R, A)``); it is made
    inside the network's name scope and becomes its child ``attribute``. GluonCV's ``MaskRCNN.hybrid_forward``
    pools the positive sampled RoIs (training) or the top ``rcnn_max_dets`` detections (inference) and feeds
    them to the mask head without returning them, so the network's ``__class__`` becomes a subclass whose
    forward (:func:`_attribute_forward`) does the same and also runs the head on those features, in the same
    pass. Outputs: training, GluonCV's 13 followed by attribute logits ``(B, P, A)`` of the RoIs the mask head
    sees; inference, ``ids, scores, boxes, masks`` followed by attribute probabilities ``(1, N, A)``. It reads
    the private ``_batch_size``, ``_rcnn_max_dets``, ``_roi_size``, ``_strides``, ``_roi_mode`` and
    ``_pyramid_roi_feats`` of ``FasterRCNN``/``MaskRCNN``.
    """
    with net.name_scope():
        net.attribute = make_head()
    cls = type(net)
    if cls not in _ATTRIBUTE_SUBCLASSES:
        _ATTRIBUTE_SUBCLASSES[cls] = type(cls.__name__, (cls,), {"hybrid_forward": _attribute_forward,
                                                                 "__module__": __name__})
    net._clear_cached_op()
    net.__class__ = _ATTRIBUTE_SUBCLASSES[cls]


def _attribute_forward(self, F, x, gt_box=None, gt_label=None):
    """``MaskRCNN.hybrid_forward`` with the attribute head beside the mask head (see :func:`add_attribute_output`)."""
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    from mxnet import autograd

    if autograd.is_training():
        (cls_pred, box_pred, rpn_box, samples, matches, raw_rpn_score, raw_rpn_box, anchors, cls_targets,
         box_targets, box_masks, top_feat, indices) = FasterRCNN.hybrid_forward(self, F, x, gt_box, gt_label)
        # (B * N, C, h, w) -> (B, N, C, h, w); then the RoIs at ``indices`` (the positives first) of each image
        per_image = F.reshape(top_feat.expand_dims(0), (self._batch_size, -1, 0, 0, 0))
        chosen = F.concat(*[F.take(F.slice_axis(per_image, axis=0, begin=i, end=i + 1).squeeze(axis=0),
                                   F.slice_axis(indices, axis=0, begin=i, end=i + 1).squeeze(axis=0))
                            for i in range(self._batch_size)], dim=0)
        mask_pred = self.mask(chosen)
        attribute_pred = F.reshape(self.attribute(chosen), (-4, self._batch_size, -1, 0))
        return (cls_pred, box_pred, mask_pred, rpn_box, samples, matches, raw_rpn_score, raw_rpn_box, anchors,
                cls_targets, box_targets, box_masks, indices, attribute_pred)

    ids, scores, boxes, feat = FasterRCNN.hybrid_forward(self, F, x)
    count = self._rcnn_max_dets  # inference runs one image at a time, as GluonCV's
    best = F.slice_axis(F.argsort(scores.squeeze(axis=-1), axis=1, is_ascend=False), axis=1, begin=0, end=count)
    best = best.reshape((-1,))
    image = F.zeros_like(best)
    where = F.stack(image, best, axis=0)
    ids = F.gather_nd(ids, where).reshape((1, count, 1))
    scores = F.gather_nd(scores, where).reshape((1, count, 1))
    boxes = F.gather_nd(boxes, where).reshape((1, count, 4))
    rois = F.stop_gradient(F.concat(image.reshape((-1, 1)), boxes.reshape((-1, 4)), dim=-1))
    if self.num_stages > 1:
        pooled = self._pyramid_roi_feats(F, feat, rois, self._roi_size, self._strides, roi_mode=self._roi_mode)
    elif self._roi_mode == "pool":
        pooled = F.ROIPooling(feat[0], rois, self._roi_size, 1.0 / self._strides)
    else:
        pooled = F.contrib.ROIAlign(feat[0], rois, self._roi_size, 1.0 / self._strides, sample_ratio=2)
    top_feat = self.top_features(pooled) if self.top_features is not None else pooled
    mask_logits = self.mask(top_feat)  # (1, count, classes, M, M): keep each detection's own class
    pick = F.stack(image, F.arange(0, count), F.clip(ids.reshape((-1,)), 0, self.num_class - 1), axis=0)
    masks = F.sigmoid(F.gather_nd(mask_logits, pick)).reshape((-4, 1, count, 0, 0))
    attributes = F.sigmoid(self.attribute(top_feat)).reshape((-4, 1, count, 0))
    return ids, scores, boxes, masks, attributes


# --------------------------------------------------------------------------------------------- segmentation
#: What a replacement ``hybrid_forward`` for :func:`make_shape_free` replaces, by role:
#: ``segmentation_net`` (FCN, PSPNet, DeepLabV3), ``deeplabv3plus_net`` (DeepLabV3Plus), ``aspp_pooling`` (the
#: ASPP image-pooling branch of DeepLabV3 and V3+), ``deeplabv3plus_head`` (V3+'s decoder head) and
#: ``pyramid_pooling`` (PSP's pyramid).
SHAPE_FREE_ROLES = ("segmentation_net", "deeplabv3plus_net", "aspp_pooling", "deeplabv3plus_head",
                    "pyramid_pooling")
HybridForward = Callable[..., object]
_SHAPE_FREE_SUBCLASSES: Dict[Tuple[type, HybridForward], type] = {}


def _shape_baking_classes() -> Dict[str, Tuple[type, ...]]:
    from gluoncv.model_zoo import deeplabv3, deeplabv3_plus, fcn, pspnet

    return {"segmentation_net": (fcn.FCN, pspnet.PSPNet, deeplabv3.DeepLabV3),
            "deeplabv3plus_net": (deeplabv3_plus.DeepLabV3Plus,),
            "aspp_pooling": (deeplabv3._AsppPooling, deeplabv3_plus._AsppPooling),
            "deeplabv3plus_head": (deeplabv3_plus._DeepLabHead,),
            "pyramid_pooling": (pspnet._PyramidPooling,)}


@_patch("GluonCV 0.10.5's segmentation blocks bake crop_size into hybrid_forward; swaps __class__ of 8 classes")
def make_shape_free(block: mx.gluon.Block, forwards: Mapping[str, HybridForward]) -> None:
    """Give every GluonCV 0.10.5 block inside ``block`` that bakes the crop size into its graph the
    ``hybrid_forward`` of its role in ``forwards`` (keys: :data:`SHAPE_FREE_ROLES`).

    GluonCV's FCN/PSPNet/DeepLabV3(+) and their ASPP pooling, DeepLabV3+ head and PSP pyramid upsample to
    sizes fixed at construction (``crop_size // 8``...), and four of those classes are private. Each matching
    block's ``__class__`` becomes a subclass that differs only in ``hybrid_forward`` (same parameters and
    children, so the weights and their names stay GluonCV's); one subclass per class and forward is made.
    """
    if set(forwards) != set(SHAPE_FREE_ROLES):
        raise ValueError(f"make_shape_free needs a forward for each of {SHAPE_FREE_ROLES}, got {sorted(forwards)}")
    replaced: Dict[type, HybridForward] = {cls: forwards[role]
                                           for role, classes in _shape_baking_classes().items() for cls in classes}

    def swap(child: mx.gluon.Block) -> None:
        forward = replaced.get(type(child))
        if forward is None:
            return
        key = (type(child), forward)
        if key not in _SHAPE_FREE_SUBCLASSES:
            _SHAPE_FREE_SUBCLASSES[key] = type(key[0].__name__, (key[0],),
                                               {"hybrid_forward": forward, "__module__": forward.__module__})
        child.__class__ = _SHAPE_FREE_SUBCLASSES[key]

    block.apply(swap)


# ------------------------------------------------------------------------------------ parameters and layers
@_patch("MXNet 1.9.1's Parameter.shape setter only fills unknown dims; writes the private Parameter._shape")
def resize_param_shape(param: mx.gluon.Parameter, shape: Sequence[int]) -> None:
    """Give ``param`` a new ``shape``, known dimensions included, for its next (re-)initialisation.

    MXNet 1.9.1's ``Parameter.shape`` setter only fills dimensions still unknown (0) and asserts the others are
    unchanged, and a block's parameters are created in its constructor, so a GluonCV head built for other
    input widths cannot otherwise be resized. Arrays already allocated keep their old shape: initialise the
    parameter (``force_reinit=True`` if it already was) before using it.
    """
    param._shape = tuple(int(d) for d in shape)


@_patch("MXNet 1.9.1's BatchNorm takes use_global_stats only at construction (private BatchNorm._kwargs)")
def set_batchnorm_global_stats(layer: mx.gluon.nn.BatchNorm, use_global_stats: bool) -> None:
    """Make a BatchNorm (or SyncBatchNorm) layer normalise with its running statistics (True) or with batch
    statistics in training (False).

    MXNet 1.9.1's ``BatchNorm`` has the flag only as a constructor argument, kept in the private operator
    keyword dict each forward passes on; GluonCV builds its layers itself. Set it before hybridising: a
    hybridised graph keeps the value it was built with.
    """
    layer._kwargs["use_global_stats"] = bool(use_global_stats)


@_patch("GluonCV 0.10.5 bakes use_global_stats=True into FPN backbones' graphs (private SymbolBlock._cached_graph)")
def set_symbol_batchnorm_global_stats(block: mx.gluon.SymbolBlock, use_global_stats: bool) -> int:
    """Set ``use_global_stats`` of every BatchNorm node in a SymbolBlock's graph; returns how many there are.

    GluonCV 0.10.5 builds its FPN backbones (``FPNFeatureExpander``) as a SymbolBlock from a ResNet symbol made
    with ``use_global_stats=True``, so their BatchNorm layers are graph nodes, not ``nn.BatchNorm`` blocks, and
    always normalise with the stored statistics: a fixed identity in a randomly initialised net, which made
    ``--use-fpn --no-pretrained`` diverge. MXNet 1.9.1's SymbolBlock keeps its graph only in the private
    ``_cached_graph`` and compiles it lazily into ``_cached_op``; the graph is rebuilt from its JSON with the
    flag changed (parameters, names and inputs unchanged) and the compiled op dropped. Set it before hybridising.
    """
    import json

    import mxnet as mx

    inputs, outputs = block._cached_graph
    graph = json.loads(outputs.tojson())
    nodes = [node for node in graph["nodes"] if node["op"] in ("BatchNorm", "SyncBatchNorm")]
    for node in nodes:
        node.setdefault("attrs", {})["use_global_stats"] = str(bool(use_global_stats))
    if nodes:
        block._cached_graph = (inputs, mx.sym.load_json(json.dumps(graph)))
        block._cached_op = None
    return len(nodes)


@_patch("MXNet 1.9.1's SyncBatchNorm takes num_devices only at construction (private SyncBatchNorm._kwargs)")
def set_syncbn_devices(layer: mx.gluon.contrib.nn.SyncBatchNorm, num_devices: int) -> None:
    """Make a SyncBatchNorm layer synchronise its statistics over ``num_devices`` devices.

    GluonCV 0.10.5's Xception65 builds one of its BatchNorm layers without the ``norm_kwargs`` that carry
    ``num_devices``, so under SyncBatchNorm it would wait for 1 device; MXNet 1.9.1 keeps the count only in the
    layer's private operator keyword dict. Set it before the first forward.
    """
    layer._kwargs["ndev"] = int(num_devices)


@_patch("MXNet 1.9.1 has no public map of save_parameters names to parameters (Block._collect_params_with_prefix)")
def params_by_structural_name(block: mx.gluon.Block) -> Dict[str, mx.gluon.Parameter]:
    """``{name: parameter}`` under the structural names ``save_parameters`` writes (e.g. ``layer4.2.conv2.weight``).

    Gluon 1.x (MXNet 1.9.1) exposes only the prefixed names of ``collect_params``; matching a ``.params`` file
    written by ``save_parameters`` needs the private method ``load_parameters`` itself uses.
    """
    return block._collect_params_with_prefix()


@_patch("MXNet 1.9.1 cannot set a deferred parameter's data publicly; uses the private Parameter._load_init")
def load_param_data(param: mx.gluon.Parameter, data: mx.nd.NDArray, contexts: Sequence[mx.Context]) -> None:
    """(Re-)initialise ``param`` on ``contexts`` with ``data``, also when its shape is still deferred.

    ``Parameter.set_data`` in MXNet 1.9.1 needs an initialised parameter of known shape; loading a few tensors of
    a file into a partly matching network (new heads) goes through the private method ``load_parameters`` uses.
    ``data`` must have ``param``'s dtype and a shape compatible with it (0 = still unknown).
    """
    param._load_init(data, list(contexts))


@_patch("GluonCV 0.10.5 exposes only 8-character sha1 prefixes of its model store (private _model_sha1)")
def model_store_sha1(name: str) -> Optional[str]:
    """The full sha1 GluonCV 0.10.5's model store records for weights ``name``, None if it has none.

    ``model_store.short_hash`` gives only the first 8 characters, and ``get_model_file``, which checks the
    full one, downloads on a mismatch; checking a file offline needs the private table.
    """
    from gluoncv.model_zoo import model_store
    return model_store._model_sha1.get(name)


# ---------------------------------------------------------------------------------------------- distributed
@_patch("MXNet 1.9.1's KVStore has no public barrier (private KVStore._barrier)")
def kvstore_barrier(kvstore: mx.kv.KVStore) -> None:
    """Wait until every worker of a parameter-server job reached this call.

    MXNet 1.9.1's ``KVStore`` offers the barrier only as the private ``_barrier``, which is what MXNet's own
    distributed examples call.
    """
    kvstore._barrier()


@_patch("MXNet 1.9.1 wraps no C API to skip the barrier at exit (private _LIB.MXKVStoreSetBarrierBeforeExit)")
def skip_kvstore_barrier_before_exit(kvstore: mx.kv.KVStore) -> None:
    """Let this worker's process exit without waiting for the other workers of its parameter-server job.

    At exit an MXNet 1.9.1 worker waits until every other worker exits too; after an error on this one the
    others never get there, so it would hang instead of exiting with its error. The C API can turn that off,
    but MXNet's Python ``KVStore`` has no method for it, so the private library handle is called directly.
    """
    from mxnet.base import _LIB, check_call

    check_call(_LIB.MXKVStoreSetBarrierBeforeExit(kvstore.handle, ctypes.c_int(0)))


@_patch("MXNet 1.9.1's Trainer initialises its kvstore only lazily in step() (private Trainer._init_kvstore)")
def init_trainer_kvstore(trainer: mx.gluon.Trainer) -> None:
    """Create ``trainer``'s kvstore and push/pull its parameters now instead of in the first ``step``.

    MXNet 1.9.1's ``gluon.Trainer`` does this lazily, inside the first ``step``/``allreduce_grads`` (after the
    first gradients were computed), and has no public method for it; a distributed job needs rank 0's weights
    on every worker before the first forward pass.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()


# --------------------------------------------------------------------------------------------- version check
def _gluoncv_version() -> Tuple[Optional[str], bool]:
    """(installed GluonCV version or None, whether it came from the distribution's metadata)."""
    try:
        return metadata.version("gluoncv"), True
    except metadata.PackageNotFoundError:
        pass
    try:
        import gluoncv
    except ImportError:
        return None, False
    return str(getattr(gluoncv, "__version__", "unknown")), False


def _mxnet_version() -> Optional[str]:
    """The installed MXNet's version, from its distribution's metadata (any build: ``mxnet``, ``mxnet-cu112``,
    ...), without importing it; None when none is installed."""
    try:
        return metadata.version("mxnet")
    except metadata.PackageNotFoundError:
        pass
    for dist in metadata.distributions():
        if str(dist.metadata["Name"] or "").lower().startswith("mxnet"):
            return dist.version
    return None


def installed_versions() -> Dict[str, Optional[str]]:
    """``{"mxnet": ..., "gluoncv": ...}`` as installed (None: not installed): the MXNet distribution's version
    and the GluonCV distribution's, or ``gluoncv.__version__`` where the distribution has no metadata."""
    return {"mxnet": _mxnet_version(), "gluoncv": _gluoncv_version()[0]}


def version_mismatches() -> Dict[str, Tuple[Optional[str], str]]:
    """``{package: (installed, expected)}`` for each of MXNet/GluonCV that is not the version patched for."""
    mismatches: Dict[str, Tuple[Optional[str], str]] = {}
    mxnet_version = _mxnet_version()
    if mxnet_version != MXNET_VERSION:
        mismatches["mxnet"] = (mxnet_version, MXNET_VERSION)
    gluoncv_version, from_metadata = _gluoncv_version()
    # GluonCV 0.10.5.post0 calls itself 0.11.0 in gluoncv.__version__, which is all there is without metadata.
    if gluoncv_version != (GLUONCV_VERSION if from_metadata else GLUONCV_MODULE_VERSION):
        mismatches["gluoncv"] = (gluoncv_version, GLUONCV_VERSION)
    return mismatches


def check_versions() -> None:
    """UserError unless MXNet and GluonCV are the versions the patches here were written for, naming every
    patch to re-check; only a logged warning when ``GLUON_FASHION_SKIP_VERSION_CHECK=1``."""
    mismatches = version_mismatches()
    if not mismatches:
        return
    found = ", ".join(f"{name} {installed or 'not installed'} (patched for {wanted})"
                      for name, (installed, wanted) in mismatches.items())
    patches = "\n".join(f"  - compat.{name}: {reason}" for name, reason in PATCHES.items())
    message = (f"gluon_fashion reaches into private MXNet/GluonCV code written for mxnet {MXNET_VERSION} (any "
               f"build: mxnet, mxnet-cu112, mxnet-cu117, ...) and gluoncv {GLUONCV_VERSION}, but found {found}. "
               f"Private code may change or vanish between versions; re-check each of these in "
               f"gluon_fashion/compat.py:\n{patches}\n"
               f"Install the pinned versions (requirements.txt, the Makefile's MXNET), or, once the list is "
               f"re-checked, set {SKIP_VERSION_CHECK_ENV}=1 to run with a warning instead of this error.")
    if os.environ.get(SKIP_VERSION_CHECK_ENV, "").strip().lower() in ("1", "true", "yes"):
        log.warning("%s is set, running anyway: %s", SKIP_VERSION_CHECK_ENV, message)
        return
    raise UserError(message)


# The package's __init__ imports this module, so the check runs before any patch (and before MXNet is imported).
check_versions()
