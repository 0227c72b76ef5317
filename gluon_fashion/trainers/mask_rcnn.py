"""Fine-tune a COCO-pretrained GluonCV Mask R-CNN on iMaterialist (the recipe of GluonCV's
``scripts/instance/mask_rcnn/train_mask_rcnn.py``): the network, data, training step and validation; the loop
is ``engine.run.TrainingRun``'s. The files a run writes are listed in the README ("What a run writes").

Validation predicts each val image at the test scale, maps boxes and masks onto the 512x512 grid of
``resize_rle_instances_val.json`` and scores them with pycocotools (bbox and segm mAP); the best
checkpoint follows segm mAP.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data.instance import FashionInstance, split_files
from ..data.samplers import AspectRatioBatchSampler, EpochTaggedBatches
from ..engine import CheckpointManager, WarmupStepSchedule, progress, seed_everything, split_batch
from ..engine.distributed import make_trainer
from ..engine.flags import add_shared_flags, default_gpus
from ..engine.run import TrainingRun, Validation, run_training
from ..errors import UserError
from ..evaluation.coco import (coco_from_dict, evaluate_coco, format_per_class_table, load_coco_gt,
                               validation_ground_truth)
from ..data.coco_json import read_attribute_table, read_categories
from ..labels import class_table_for
from ..models.batchnorm import learn_batchnorm_statistics
from ..models.mask_rcnn import (DEFAULT_TEST_BUDGETS, LIMIT_KEYS, add_test_budget_flags, anchor_count,
                                attribute_targets, build_mask_rcnn, checkpoint_meta, class_table, decode_outputs,
                                net_attribute_ids, outputs_to_instances, read_network_input, run_network,
                                to_coco_results, trainable_params, zoo_name)
from ..transforms.instance import MaskRCNNTrainTransform, scaled_size

log = logging.getLogger("gluon_fashion.trainers.mask_rcnn")
LOSS_NAMES = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss", "mask_loss")
ATTRIBUTE_LOSS_NAME = "attr_loss"
VAL_SCORE_THRESHOLD = 0.01
VAL_MAX_DETECTIONS = 100


# ----------------------------------------------------------------------------------------------- flags
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``train_mask_rcnn.py`` (flag names as GluonCV's script; the shared ones from
    ``engine.flags``)."""
    p = argparse.ArgumentParser(description="Fine-tune a COCO-pretrained GluonCV Mask R-CNN on iMaterialist "
                                "(Fashion): several devices, validation, checkpoints and resume.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = add_shared_flags(p, spelling="detection", helps={
        "batch_size": "images per iteration over all devices (default: 1 per device); per worker in a "
                      "distributed run",
        "lr": "learning rate of the global batch, all workers (default: 0.00125 x global batch size)"})
    g = groups["model and data"]
    g.add_argument("--network", default="resnet50_v1b", help="backbone: resnet18_v1b, resnet50_v1b, resnet101_v1d")
    g.add_argument("--use-fpn", action="store_true", help="feature pyramid network variant")
    g.add_argument("--short", default="800",
                   help="image short side in training, or a range 'low,high' for multi-scale training "
                        "(validation uses the high end)")
    g.add_argument("--max-size", type=int, default=1333, help="image long side at most")
    g = p.add_argument_group("RoI budget (lower for small memory or CPU runs; training: GluonCV's values by default)")
    g.add_argument("--rpn-train-pre-nms", type=int, default=None, help="proposals kept before NMS in training")
    g.add_argument("--rpn-train-post-nms", type=int, default=None, help="proposals kept after NMS in training")
    g.add_argument("--rcnn-num-sample", type=int, default=None, help="RoIs sampled per image for the heads")
    g.add_argument("--rcnn-pos-ratio", type=float, default=None,
                   help="largest fraction of the sampled RoIs that are positives, the RoIs the box and mask heads "
                        "learn from (GluonCV: 0.25)")
    add_test_budget_flags(g, DEFAULT_TEST_BUDGETS)
    g.add_argument("--max-num-gt", type=int, default=None, help="upper bound of instances per image (300)")
    g = p.add_argument_group("attributes")
    g.add_argument("--attributes", action="store_true",
                   help="also predict each detection's attributes (multi-label, from the mask head's RoI features), "
                        "those the training annotations' attribute_ids use")
    g.add_argument("--attribute-loss-weight", type=float, default=1.0,
                   help="weight of the attribute loss (sigmoid cross-entropy summed over attributes, averaged over "
                        "the foreground RoIs) in the total loss")
    g = groups["optimisation"]
    g.add_argument("--lr-decay", type=float, default=0.1, help="factor at each decay epoch")
    g.add_argument("--lr-decay-epoch", default="17,23", help="epochs at which the rate decays, comma separated")
    g.add_argument("--lr-warmup", type=int, default=1000, help="warm-up iterations")
    g.add_argument("--lr-warmup-factor", type=float, default=1.0 / 3, help="rate multiplier at the warm-up start")
    g.add_argument("--clip-gradient", type=float, default=-1.0, help="clip gradients at this value (<= 0: off)")
    g = groups["devices"]
    g.add_argument("--executor-threads", type=int, default=4,
                   help="threads running the devices' forward/backward in parallel (0: one after another)")
    g.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU only)")
    g.add_argument("--static-alloc", action="store_true", help="hybridize with static memory allocation")
    g = groups["logging, validation and checkpoints"]
    g.add_argument("--save-prefix", default="train_logs/",
                   help="path prefix of every output; the model name is appended ('dir/' puts files in dir)")
    g.add_argument("--val-max-images", type=int, default=0, help="validate on the first N val images (0: all)")
    g.add_argument("--verbose", action="store_true", help="log the trainable parameters")
    p.set_defaults(num_workers=min(4, os.cpu_count() or 1), epochs=26, seed=233, log_interval=100,
                   gpus=default_gpus(all_gpus=False))
    return p


# ------------------------------------------------------------------------------------------- helpers
def parse_short(text: str) -> Tuple[int, int]:
    """``--short`` "800" -> (800, 800); "640,800" -> (640, 800)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--short {text!r}: expected a positive size such as 800 or a range such as 640,800")
    low, high = int(parts[0]), int(parts[-1])
    if low > high:
        raise UserError(f"--short {text!r}: range runs backwards")
    return low, high


def parse_epochs(text: str, flag: str = "--lr-decay-epoch") -> List[int]:
    """Comma-separated epoch list ('' for none)."""
    try:
        return [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated epoch numbers such as 17,23") from None


def run_prefix(save_prefix: str, run_name: str) -> str:
    """GluonCV's ``--save-prefix``: a path prefix to which the run name is appended."""
    return os.path.join(save_prefix, run_name) if save_prefix.endswith(("/", os.sep)) else save_prefix + run_name


def split_and_load(batch: Sequence, contexts: Sequence[mx.Context]) -> List[List[mx.nd.NDArray]]:
    """MaskRCNNTrainBatchify output -> per element, its shards on their devices (masks cast to float32)."""
    loaded = []
    for index, element in enumerate(batch):
        shards = element if isinstance(element, (list, tuple)) else [element]
        on_device = [shard.as_in_context(ctx) for shard, ctx in zip(shards, contexts)]
        if index == 2:  # gt masks travel as uint8; the mask target op needs float32
            on_device = [m.astype("float32") for m in on_device]
        loaded.append(on_device)
    return loaded


# ------------------------------------------------------------------------------------- training step
class AttributeForwardBackward:
    """Forward and backward of one device's shard for a Mask R-CNN with attributes (``--attributes``).

    GluonCV's ``ForwardBackwardTask`` unpacks exactly the 13 training outputs of its MaskRCNN; the attribute
    net (``compat.add_attribute_output``) has a 14th. The five losses are GluonCV's, each normalised as its
    task does (RPN by its positive anchors, R-CNN by its foreground RoIs, the mask by its weighted pixels);
    the attribute loss is sigmoid cross-entropy summed over the attributes and averaged over the foreground
    RoIs the mask head sees (``models.mask_rcnn.attribute_targets``), times ``attribute_weight``. Returns the
    six losses as scalars, in ``LOSS_NAMES`` order and then ``attr_loss``. Usable with GluonCV's ``Parallel``.
    """

    def __init__(self, net, trainer, rpn_cls_loss, rpn_box_loss, rcnn_cls_loss, rcnn_box_loss, mask_loss,
                 amp_enabled: bool = False, attribute_weight: float = 1.0):
        self.net, self.trainer, self.amp_enabled = net, trainer, amp_enabled
        self.rpn_cls_loss, self.rpn_box_loss = rpn_cls_loss, rpn_box_loss
        self.rcnn_cls_loss, self.rcnn_box_loss, self.mask_loss = rcnn_cls_loss, rcnn_box_loss, mask_loss
        self.attribute_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self.attribute_weight = float(attribute_weight)

    def forward_backward(self, shard):
        data, label, gt_mask, rpn_cls_targets, rpn_box_targets, rpn_box_masks = shard
        with mx.autograd.record():
            (cls_pred, box_pred, mask_pred, rois, _, matches, rpn_score, rpn_box, _, cls_targets, box_targets,
             box_masks, indices, attribute_pred) = self.net(data, label[:, :, :4], label[:, :, 4:5])
            rpn_score = rpn_score.squeeze(axis=-1)
            rpn_pos = (rpn_cls_targets >= 0).sum()
            rpn_cls = (self.rpn_cls_loss(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0)
                       * rpn_cls_targets.size / rpn_pos)
            rpn_reg = self.rpn_box_loss(rpn_box, rpn_box_targets, rpn_box_masks) * rpn_box.size / rpn_pos
            rcnn_pos = (cls_targets >= 0).sum()
            rcnn_cls = (self.rcnn_cls_loss(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0)
                        * cls_targets.size / rcnn_pos)
            rcnn_reg = self.rcnn_box_loss(box_pred, box_targets, box_masks) * box_pred.size / rcnn_pos

            def chosen(x):  # the sampled RoIs' entries at ``indices``: those the mask and attribute heads see
                return mx.nd.stack(*[mx.nd.take(x[i], indices[i]) for i in range(indices.shape[0])])

            mask_targets, mask_weights = self.net.mask_target(chosen(rois), gt_mask, chosen(matches),
                                                              chosen(cls_targets))
            mask = self.mask_loss(mask_pred, mask_targets, mask_weights) * mask_targets.size / mask_weights.sum()
            targets, weights = attribute_targets(label[:, :, 5:], matches, cls_targets, indices)
            per_roi = self.attribute_loss(attribute_pred, targets, weights) * targets.shape[-1]  # sum, not mean
            attribute = self.attribute_weight * per_roi.sum() / mx.nd.maximum(weights.sum(), 1)
            total = rpn_cls.sum() + rpn_reg.sum() + rcnn_cls.sum() + rcnn_reg.sum() + mask.sum() + attribute
            if self.amp_enabled:
                from mxnet.contrib import amp
                with amp.scale_loss(total, self.trainer) as scaled:
                    mx.autograd.backward(scaled)
            else:
                total.backward()
        return rpn_cls.mean(), rpn_reg.mean(), rcnn_cls.sum(), rcnn_reg.sum(), mask.sum(), attribute


# ---------------------------------------------------------------------------------------- validation
class _ValImages(gluon.data.Dataset):
    """Val images as network inputs at the test scale, with their dataset index: ``(float32 3 x h x w, index)``
    (plain numpy), read by ``models.mask_rcnn.read_network_input`` as tools/predict.py reads them."""

    def __init__(self, dataset: FashionInstance, indices: Sequence[int], short: int, max_size: int):
        self._dataset, self._indices, self._short, self._max_size = dataset, list(indices), short, max_size

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, position: int):
        index = self._indices[position]
        data = read_network_input(self._dataset.image_path(index), self._short, self._max_size,
                                  self._dataset.image_size(index), source=str(self._dataset.annotation_file))
        return data, index


def _as_list(samples):
    return samples


def predict_dataset(net, val_set: FashionInstance, contexts: Sequence[mx.Context], short: int, max_size: int,
                    indices: Optional[Sequence[int]] = None, num_workers: int = 0, desc: str = "val") -> List[Dict]:
    """COCO results of ``net`` on the images of ``val_set`` (all, or ``indices``), each made straight on its
    annotation grid by ``models.mask_rcnn.instances_from_outputs`` (the rule tools/predict.py follows)."""
    indices = range(len(val_set)) if indices is None else indices
    loader = gluon.data.DataLoader(_ValImages(val_set, indices, short, max_size),
                                   batch_size=len(contexts), shuffle=False, last_batch="keep",
                                   batchify_fn=_as_list, num_workers=num_workers)
    category_ids = net.category_ids
    results: List[Dict] = []
    for samples in progress(loader, total=len(loader), desc=desc, unit="batch"):
        # Launch every device first (asynchronous), then read back.
        outputs = [run_network(net, mx.nd.array(data[None], ctx=ctx)) for (data, _), ctx in zip(samples, contexts)]
        for (data, index), output in zip(samples, outputs):
            record = val_set.image_records[index]
            instances = outputs_to_instances(net, decode_outputs(output), data.shape[1:],
                                             (record["height"], record["width"]), category_ids,
                                             score_threshold=VAL_SCORE_THRESHOLD, max_detections=VAL_MAX_DETECTIONS)
            results += to_coco_results(record["id"], instances)
    return results


# ------------------------------------------------------------------------------------------- trainer
class MaskRCNNTrainer(TrainingRun):
    """Mask R-CNN's part of a training run: its network, data, training step and COCO validation."""

    flag_bounds = {"max_size": 32, "executor_threads": 0, "val_max_images": 0, "attribute_loss_weight": 0}
    resume_settings = {"model": ("--network / --use-fpn", True), "classes": ("--classes", True),
                       "attributes": ("--attributes", True),
                       "image_scale": ("--short / --max-size", False)}

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        if args.amp and any(ctx.device_type != "gpu" for ctx in self.contexts):
            raise UserError("--amp needs GPUs (--gpus); mixed precision is not supported on CPU")
        self.batch_size = args.batch_size or len(self.contexts)
        self.per_device = split_batch(self.batch_size, self.contexts)
        self.short_range = parse_short(args.short)
        self.test_short = self.short_range[1]
        self.decay_epochs = parse_epochs(args.lr_decay_epoch)
        self.lr = args.lr if args.lr is not None else 0.00125 * self.dist.global_batch_size(self.batch_size)
        self.model_name = zoo_name(args.network, args.use_fpn)
        self.run_name = self.model_name[: -len("_coco")] + "_imaterialist"
        self.prefix = run_prefix(args.save_prefix, self.run_name)
        self.limits = {k: getattr(args, k) for k in LIMIT_KEYS}
        # Fail before anything is written: missing data files, missing weights, a run already there.
        self.train_files = split_files(args.dataset_root, "train")
        self.val_files = split_files(args.dataset_root, "val_resized")
        for path in (self.train_files[0], self.val_files[0]):
            if not path.is_file():
                raise UserError(f"{path} not found: convert the dataset first with python "
                                f"tools/convert_imaterialist_to_coco.py --data_root {args.dataset_root}")
        # The classes come from the data (issue 16): iMaterialist's keep --classes' meaning, others their own.
        self.classes = class_table_for(read_categories(self.train_files[0]), args.classes)
        self.category_ids = tuple(c["id"] for c in self.classes)
        # The attributes, like the classes, come from the data: those the trained classes' annotations use.
        self.attributes = (read_attribute_table(self.train_files[0], self.category_ids) if args.attributes
                           else None)
        placeholder = checkpoint_meta(self.model_name, self.category_ids, self.test_short, args.max_size, {})
        self.checkpoints = CheckpointManager(self.prefix, placeholder, save_interval=args.save_interval,
                                             metric_name="segm_mAP")
        self.resume_path = self.checkpoints.resolve_resume(args.resume)
        if self.resume_path is None:  # on every worker: an error here must stop them all, not rank 0 alone
            self.checkpoints.ensure_new_run()
        if args.amp:
            from mxnet.contrib import amp
            amp.init()
        seed_everything(args.seed)
        # The COCO weights are looked up (and a missing file reported) here, before any data is read.
        self.net = build_mask_rcnn(self.model_name, self.category_ids,
                                   pretrained=not (args.no_pretrained or self.resume_path),
                                   pretrained_weights=None if self.resume_path else args.pretrained_weights,
                                   ctx=self.contexts, per_device_batch_size=self.per_device,
                                   attributes=self.attributes, **self.limits)
        meta = checkpoint_meta(self.model_name, class_table(self.classes), self.test_short, args.max_size,
                               self.net.limits, network=args.network, use_fpn=bool(args.use_fpn),
                               run_name=self.run_name, train_short=list(self.short_range),
                               pretrained=("none" if args.no_pretrained else
                                           args.pretrained_weights or "gluoncv-model-store"),
                               **({"attributes": self.attributes} if self.attributes else {}))
        self.checkpoints = CheckpointManager(self.prefix, meta, save_interval=args.save_interval,
                                             metric_name="segm_mAP")
        config = dict(vars(args), model=self.model_name, prefix=self.prefix, contexts=[str(c) for c in self.contexts],
                      batch_size=self.batch_size, per_device_batch_size=self.per_device, lr=self.lr,
                      category_ids=list(self.category_ids), limits=self.net.limits, resume_path=self.resume_path)
        self.open_run(config)

    def describe(self) -> str:
        return (f"training {self.model_name} for {len(self.category_ids)} classes on "
                f"{', '.join(map(str, self.contexts))}: {len(self.trainset)} training / {len(self.val_indices)} "
                f"validation images, batch {self.batch_size} ({self.per_device} per device), short {self.args.short}, "
                f"max size {self.args.max_size}")

    # ---------------------------------------------------------------- construction
    def build(self) -> None:
        args, net = self.args, self.net
        if args.no_pretrained:  # from scratch, fixed identity statistics would leave the net unnormalised
            log.info("random initialisation: every layer is trained and the %d BatchNorm layers learn their "
                     "statistics", learn_batchnorm_statistics(net))
        train_params = trainable_params(net, pretrained=not args.no_pretrained)
        self.trained_params = set(train_params.keys())
        for name, param in net.collect_params().items():
            if not isinstance(param, gluon.Constant):
                param.grad_req = "write" if name in self.trained_params else "null"
        if args.verbose:
            log.info("trainable parameters (%d): %s", len(self.trained_params), ", ".join(sorted(self.trained_params)))
        transform = MaskRCNNTrainTransform(self.short_range, args.max_size, net)
        self.trainset = FashionInstance(*self.train_files, category_ids=self.category_ids, transform=transform,
                                        seed=args.seed, attribute_ids=net_attribute_ids(net))
        self._check_proposals_fit(net)
        self.valset = FashionInstance(*self.val_files, category_ids=self.category_ids, skip_empty=False)
        self.val_indices = list(range(len(self.valset)))
        if args.val_max_images:
            self.val_indices = self.val_indices[: args.val_max_images]
        val_image_ids = [self.valset.image_records[i]["id"] for i in self.val_indices]
        self.val_gt = validation_ground_truth(self.val_files[0], self.category_ids, val_image_ids)
        sampler = AspectRatioBatchSampler(self.trainset.get_im_aspect_ratio(), self.batch_size, shuffle=True,
                                          seed=args.seed, num_parts=self.dist.num_workers, part_index=self.dist.rank)
        self.batches = EpochTaggedBatches(sampler, len(self.trainset))
        from gluoncv.data.batchify import MaskRCNNTrainBatchify
        self.train_loader = gluon.data.DataLoader(
            self.trainset, batch_sampler=self.batches, batchify_fn=MaskRCNNTrainBatchify(net, len(self.contexts)),
            num_workers=args.num_workers)
        self.iters_per_epoch = len(sampler)
        self.schedule = WarmupStepSchedule(self.lr, self.iters_per_epoch, self.decay_epochs, factor=args.lr_decay,
                                           warmup_iters=args.lr_warmup, warmup_factor=args.lr_warmup_factor)
        optimizer_params = {"learning_rate": self.lr, "wd": args.wd, "momentum": args.momentum}
        if args.clip_gradient > 0:
            optimizer_params["clip_gradient"] = args.clip_gradient
        if args.amp and not self.dist.is_dist:  # AMP's loss scaling needs the update on the workers
            self.trainer = gluon.Trainer(train_params, "sgd", optimizer_params, kvstore=args.kv_store,
                                         update_on_kvstore=False)
        else:
            self.trainer = make_trainer(train_params, "sgd", optimizer_params, self.dist)
        if args.amp:
            from mxnet.contrib import amp
            amp.init_trainer(self.trainer)
        if self.dist.is_dist:  # deferred shapes must be known before rank 0's weights can be sent
            with mx.autograd.pause():
                for ctx in self.contexts:
                    net(mx.nd.zeros((1, 3, self.test_short, self.test_short), ctx=ctx))
        from gluoncv.model_zoo.rcnn.mask_rcnn import ForwardBackwardTask
        from gluoncv.utils.parallel import Parallel
        losses = (gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False),  # RPN objectness
                  gluon.loss.HuberLoss(rho=1 / 9.0),  # RPN box (smooth L1)
                  gluon.loss.SoftmaxCrossEntropyLoss(),  # RCNN class
                  gluon.loss.HuberLoss(),  # RCNN box
                  gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False))  # mask
        if self.attributes:
            self.task = AttributeForwardBackward(net, self.trainer, *losses, amp_enabled=args.amp,
                                                 attribute_weight=args.attribute_loss_weight)
        else:
            self.task = ForwardBackwardTask(net, self.trainer, *losses, amp_enabled=args.amp)
        self.loss_names = LOSS_NAMES + ((ATTRIBUTE_LOSS_NAME,) if self.attributes else ())
        self.executor = (Parallel(args.executor_threads, self.task)
                         if args.executor_threads > 0 and len(self.contexts) > 1 else None)

    def _check_proposals_fit(self, net) -> None:
        # GluonCV's RPN fails mid-training on an image with fewer anchors than the proposals it keeps.
        # (Inference pads such inputs instead: models.mask_rcnn.run_network.)
        low, max_size = self.short_range[0], self.args.max_size
        sizes = {(r["height"], r["width"]) for r in self.trainset.image_records}
        if not sizes:
            return
        inputs = {size: scaled_size(*size, low, max_size) for size in sizes}
        counts = {size: anchor_count(net, *inputs[size]) for size in sizes}
        size = min(counts, key=counts.get)
        wanted = self.net.limits["rpn_train_post_nms"]
        if counts[size] < wanted:
            in_h, in_w = inputs[size]
            raise UserError(f"--rpn-train-post-nms {wanted}: a {size[0]}x{size[1]} training photo becomes a "
                            f"{in_h}x{in_w} input at --short {low} --max-size {max_size}, which has only "
                            f"{counts[size]} RPN anchors; lower --rpn-train-post-nms to at most {counts[size]} "
                            "or raise --short")

    # ---------------------------------------------------------------- the trainer's own steps
    def hybridize(self) -> None:
        if not self.args.disable_hybridization:
            self.net.hybridize(static_alloc=self.args.static_alloc)

    def train_step(self, batch) -> Dict[str, float]:
        per_device = list(zip(*split_and_load(batch, self.contexts)))
        if self.executor is not None:
            for data in per_device:
                self.executor.put(data)
            outputs = [self.executor.get() for _ in per_device]
        else:
            outputs = [self.task.forward_backward(data) for data in per_device]
        values = {name: float(np.mean([out[k].asscalar() for out in outputs]))
                  for k, name in enumerate(self.loss_names)}
        values["loss"] = sum(values[name] for name in self.loss_names)
        return values

    def validate(self, epoch: int, iteration: int) -> Validation:
        """COCO bbox/segm mAP on the 512x512 val annotations; logs the per-class table."""
        # GluonCV's Mask R-CNN builds different graphs for training and inference: compile each afresh.
        self.hybridize()
        started = time.perf_counter()
        try:
            results = predict_dataset(self.net, self.valset, self.contexts, self.test_short, self.args.max_size,
                                      indices=self.val_indices, num_workers=min(self.args.num_workers, 2),
                                      desc=f"val epoch {epoch}")
        finally:
            self.hybridize()
        metrics = evaluate_coco(self.val_gt, results, log=log.debug)
        log.info("validation after epoch %d (%d images, %d detections, %.1f s):\n%s", epoch, len(self.val_indices),
                 len(results), time.perf_counter() - started, format_per_class_table(metrics))
        scalars = {name: (0.0 if math.isnan(getattr(metrics, name)) else getattr(metrics, name))
                   for name in ("bbox_mAP", "segm_mAP", "bbox_AP50", "segm_AP50", "bbox_AP75", "segm_AP75")}
        # No ground truth at all (a tiny val subset) scores 0, not NaN, so "best" still works.
        segm = 0.0 if math.isnan(metrics.segm_mAP) and not self.val_gt.getAnnIds() else metrics.segm_mAP
        details = metrics.as_dict()
        if self.attributes:
            from ..evaluation.attributes import evaluate_attributes, format_attribute_table

            attribute_metrics = evaluate_attributes(self.val_gt, results)
            log.info("attributes after epoch %d:\n%s", epoch, format_attribute_table(attribute_metrics))
            for name, value in (("attribute_mAP", attribute_metrics.mean_attribute_ap),
                                ("fashionpedia_AP", attribute_metrics.fashionpedia_ap),
                                ("fashionpedia_AP_iou50_f150", attribute_metrics.fashionpedia_ap_iou50_f150)):
                scalars[name] = 0.0 if math.isnan(value) else value
            details["attributes"] = attribute_metrics.as_dict()
        from ..engine.samples import SAMPLE_IMAGES, instance_samples, log_samples
        from ..report import category_names

        # A few fixed val images, ground truth beside prediction, as TensorBoard images (engine/samples.py).
        log_samples(getattr(self, "logger", None), lambda: instance_samples(
            self.val_gt, results, [(self.valset.image_records[i]["id"], self.valset.image_path(i))
                                   for i in self.val_indices[:SAMPLE_IMAGES]],
            category_names(self.val_gt.dataset.get("categories", []))), iteration)
        return Validation(metric=segm, scalars=scalars, details=details)

    def close(self) -> None:
        self.executor = None  # its worker threads end with it
        super().close()


def train(args: argparse.Namespace) -> Dict:
    """Entry point of ``train_mask_rcnn.py``: build the run from the flags and train it."""
    return run_training(MaskRCNNTrainer(args))
