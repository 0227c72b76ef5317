"""Semantic segmentation (FCN/PSP/DeepLabV3/DeepLabV3+) on the main apparel classes: the network, data,
training step and mIoU validation; the loop is ``engine.run.TrainingRun``'s. Also ``--eval`` (validate a
checkpoint). The files a run writes are listed in the README ("What a run writes").
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict

import mxnet as mx
from gluoncv.utils.parallel import parallel_apply, parallel_backward
from mxnet import autograd, gluon

from ..data.samplers import EpochBatchSampler, EpochTaggedBatches
from ..data.segmentation import dataset_class_set, get_dataset
from ..engine import CheckpointManager, PolySchedule, parse_gpus, seed_everything, split_batch
from ..engine.distributed import make_trainer
from ..engine.flags import add_shared_flags, check_shared_flags, default_gpus, flag_name
from ..engine.run import TrainingRun, Validation, run_training
from ..errors import UserError
from ..evaluation.segmentation import evaluate_batches
from ..labels import ClassSet
from ..models.batchnorm import freeze_batchnorm
from ..models.segmentation import (build_segmentation_model, canonical_model, checkpoint_meta, image_scale,
                                   load_segmentation_model, pretrained_weights_for, require_weights, resolve_backbone,
                                   zoo_entry)
from ..transforms.segmentation import IGNORE_LABEL, BackgroundReplacer, EvalTransform, TrainTransform

log = logging.getLogger("gluon_fashion.trainers.segmentation")


TRAIN_USAGE = """Train FCN / PSPNet / DeepLabV3 / DeepLabV3+ on the main apparel classes.

    python train_segmentation.py --model deeplabv3 --dataset imaterialist --model-zoo deeplab_resnet101_coco \\
        --aux --checkname res101 --epochs 30 --lr 0.001 --ngpus 1 --workers 2 --batch-size 2 --test-batch-size 2

CPU check on the generated sample (random initialisation, small crop):

    python train_segmentation.py --model deeplabv3 --backbone resnet50 --no-pretrained \\
        --dataset-root datasets/sample --base-size 128 --crop-size 96 --ngpus 0 --batch-size 4 --epochs 2

Outputs go to train_logs/<dataset>/<model>/<checkname>/ (relative to the working directory).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``train_segmentation.py`` command line (flag names as GluonCV's scripts/segmentation/train.py; the
    shared ones from ``engine.flags``)."""
    p = argparse.ArgumentParser(description=TRAIN_USAGE, formatter_class=_HelpFormatter)
    groups = add_shared_flags(p, spelling="segmentation", helps={
        "batch_size": "training batch of this machine, all its devices; per worker in a distributed run, where "
                      "--lr is the rate of the global batch",
        "lr": "base learning rate, poly decay"})
    g = groups["model and data"]
    g.add_argument("--model", default="deeplabv3", help="fcn, psp, deeplabv3 or deeplabv3plus")
    g.add_argument("--backbone", default=None,
                   help="resnet18/34/50/101/152 (xception for deeplabv3plus); default resnet50 / xception. "
                        "resnet18/34: GluonCV's heads resized to their narrower features (fast CPU runs)")
    g.add_argument("--model-zoo", default=None,
                   help="start from GluonCV pretrained weights, e.g. deeplab_resnet101_coco (classifier re-initialised)")
    g.add_argument("--dataset", default="imaterialist",
                   help="registered dataset name: imaterialist (converted COCO JSON) or folder (images/, labels/, "
                        "classes.json; see the README)")
    g.add_argument("--train-split", default="train", help="split to train on")
    g.add_argument("--binary", action="store_true", help="garment vs background: every chosen class becomes 1")
    g.add_argument("--bg-replace", type=float, default=0.0, metavar="P",
                   help="probability of pasting the labelled pixels onto a new background")
    g.add_argument("--bg-dir", default=None, help="folder of background images for --bg-replace "
                   "(default: synthetic backdrops)")
    g.add_argument("--min-label-fraction", type=float, default=0.001,
                   help="drop training images with less of their area labelled")
    g.add_argument("--base-size", type=int, default=520, help="base image size")
    g.add_argument("--crop-size", type=int, default=480, help="training crop size")
    g = groups["optimisation"]
    g.add_argument("--aux", dest="aux", action="store_true", default=None,
                   help="auxiliary head and loss (default: on with --model-zoo, off otherwise)")
    g.add_argument("--no-aux", dest="aux", action="store_false", help="no auxiliary head")
    g.add_argument("--aux-weight", type=float, default=0.5, help="auxiliary loss weight")
    g.add_argument("--test-batch-size", type=int, default=16, help="validation batch")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear learning-rate warm-up")
    g.add_argument("--no-wd", action="store_true", help="no weight decay on biases and BatchNorm beta/gamma")
    g.add_argument("--syncbn", action="store_true", help="synchronised BatchNorm across devices")
    g.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics and scale/shift fixed")
    g = groups["devices"]
    g.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    g = groups["logging, validation and checkpoints"]
    g.add_argument("--checkname", default="default", help="run name: <logdir>/<dataset>/<model>/<checkname>/")
    g.add_argument("--logdir", default="train_logs", help="root folder of the run folders")
    g.add_argument("--eval", action="store_true",
                   help="only evaluate the --resume checkpoint ('latest': this run's) on the val split")
    p.set_defaults(classes="main", num_workers=4, epochs=50, batch_size=16, lr=1e-3, seed=0, log_interval=20,
                   gpus=default_gpus(all_gpus=True))
    return p


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The usage examples as written, and every flag's default."""


# --------------------------------------------------------------------------------------------- helpers
def run_dir(args: argparse.Namespace, model: str) -> Path:
    """``<logdir>/<dataset>/<model>/<checkname>``."""
    return Path(args.logdir) / args.dataset.lower() / model / args.checkname


def _check_flags(args: argparse.Namespace) -> None:
    if args.crop_size < 8 or args.base_size < 8:
        raise UserError(f"--crop-size and --base-size must be at least 8 pixels, got {args.crop_size} and "
                        f"{args.base_size}")


def pixel_cross_entropy(logits: mx.nd.NDArray, label: mx.nd.NDArray,
                        ignore_label: int = IGNORE_LABEL) -> mx.nd.NDArray:
    """Per-image mean cross-entropy over its non-ignored pixels (0 for an image with none); shape (N,).

    log_softmax + pick keeps it finite where GluonCV's log(SoftmaxOutput) turns a confident mistake into NaN.
    """
    label = label.astype("float32")
    valid = label != ignore_label
    logp = mx.nd.log_softmax(logits.astype("float32"), axis=1)
    nll = -mx.nd.pick(logp, mx.nd.maximum(label, 0), axis=1)
    return (nll * valid).sum(axis=(1, 2)) / mx.nd.maximum(valid.sum(axis=(1, 2)), 1)


# ------------------------------------------------------------------------------------------ training
class SegmentationTrainer(TrainingRun):
    """Semantic segmentation's part of a training run: its network, data, training step and mIoU validation."""

    flag_bounds = {"test_batch_size": 1, "aux_weight": 0, "bg_replace": 0, "min_label_fraction": 0,
                   "warmup_epochs": 0}
    resume_settings = {"build_kwargs.model": ("--model / --model-zoo", True),
                       "build_kwargs.backbone": ("--backbone / --model-zoo", True),
                       "build_kwargs.aux": ("--aux / --no-aux", True), "classes": ("--classes / --binary", True),
                       "image_scale": ("--base-size / --crop-size", False)}

    def __init__(self, args: argparse.Namespace):
        super().__init__(args)
        _check_flags(args)
        self.batch_size, self.lr = args.batch_size, args.lr
        self.per_device = split_batch(args.batch_size, self.contexts)
        self.zoo = zoo_entry(args.model_zoo) if args.model_zoo else None
        self.model = self.zoo.model if self.zoo else canonical_model(args.model)
        self.backbone = self.zoo.backbone if self.zoo else resolve_backbone(self.model, args.backbone)
        self.aux = args.aux if args.aux is not None else self.zoo is not None
        self.class_set: ClassSet = dataset_class_set(args.dataset, args.dataset_root, args.classes, args.binary)
        self.prefix = run_prefix(args, self.model, self.backbone)
        self.build_kwargs = {"model": self.model, "backbone": self.backbone,
                             "num_classes": self.class_set.num_classes, "aux": bool(self.aux),
                             "base_size": args.base_size, "crop_size": args.crop_size}
        meta = checkpoint_meta(self.build_kwargs, self.class_set, dataset=args.dataset, model_zoo=args.model_zoo,
                               pretrained=("none" if args.no_pretrained else
                                           args.pretrained_weights or args.model_zoo or "imagenet"))
        self.checkpoints = CheckpointManager(self.prefix, meta, save_interval=args.save_interval, metric_name="mIoU")
        self.resume_path = self.checkpoints.resolve_resume(args.resume)
        self.pretrained = not (args.no_pretrained or self.resume_path or args.pretrained_weights)
        # Missing weights are reported (file + folder) before anything is written or any data is read.
        require_weights(pretrained_weights_for(self.model, self.backbone, args.model_zoo, self.pretrained),
                        args.model_zoo)
        if not self.resume_path:
            self.checkpoints.ensure_new_run(flag="--checkname")
        self.open_run(dict(vars(args), prefix=self.prefix, contexts=[str(c) for c in self.contexts],
                           per_device_batch_size=self.per_device, resume_path=self.resume_path))

    def describe(self) -> str:
        return (f"training {self.model}/{self.backbone} for {self.class_set.num_classes} classes on "
                f"{', '.join(map(str, self.contexts))}: {len(self.trainset)} training / {len(self.valset)} "
                f"validation images, batch {self.batch_size} ({self.per_device} per device), "
                f"crop {self.args.crop_size}, base {self.args.base_size}")

    # ---------------------------------------------------------------- construction
    def build(self) -> None:
        args = self.args
        seed_everything(args.seed)
        norm_layer, norm_kwargs = None, None
        if args.syncbn:
            norm_layer = mx.gluon.contrib.nn.SyncBatchNorm
            norm_kwargs = {"num_devices": len(self.contexts)}
        self.net, build_kwargs = build_segmentation_model(
            self.model, self.class_set.num_classes, self.contexts, backbone=self.backbone, aux=self.aux,
            base_size=args.base_size, crop_size=args.crop_size, model_zoo=args.model_zoo, pretrained=self.pretrained,
            pretrained_weights=None if self.resume_path else args.pretrained_weights, norm_layer=norm_layer,
            norm_kwargs=norm_kwargs, verify_weights=False)  # verified in __init__
        assert build_kwargs == self.build_kwargs, (build_kwargs, self.build_kwargs)
        if args.freeze_bn:
            log.info("--freeze-bn: %d BatchNorm layers use their running statistics and are not trained",
                     freeze_batchnorm(self.net))
        if args.dtype == "float16":
            self.net.cast("float16")
        # Synchronised BatchNorm runs each device in its own thread (a device waits for the others inside
        # the layer); GluonCV does not hybridise in that mode either.
        self.parallel = args.syncbn and len(self.contexts) > 1
        if self.parallel:
            log.info("--syncbn on %d devices: one thread per device, network not hybridised", len(self.contexts))
        dataset_kwargs = dict(root=args.dataset_root, class_set=self.class_set, seed=args.seed)
        self.valset = get_dataset(args.dataset, split="val", transform=EvalTransform(args.base_size),
                                  **dataset_kwargs)
        self.val_loader = gluon.data.DataLoader(self.valset, batch_size=args.test_batch_size, shuffle=False,
                                                last_batch="keep", num_workers=args.num_workers)
        background = BackgroundReplacer(args.bg_replace, args.bg_dir) if args.bg_replace > 0 else None
        self.trainset = get_dataset(args.dataset, split=args.train_split, min_label_fraction=args.min_label_fraction,
                                    transform=TrainTransform(args.base_size, args.crop_size, background=background),
                                    **dataset_kwargs)
        # Distributed: each worker reads its own, equally long share of the epoch's order (same step count).
        sampler = EpochBatchSampler(len(self.trainset), args.batch_size, shuffle=True, seed=args.seed,
                                    last_batch="discard", num_parts=self.dist.num_workers, part_index=self.dist.rank)
        self.batches = EpochTaggedBatches(sampler, len(self.trainset))
        self.train_loader = gluon.data.DataLoader(self.trainset, batch_sampler=self.batches,
                                                  num_workers=args.num_workers)
        self.iters_per_epoch = len(sampler)
        self.schedule = PolySchedule(args.lr, args.epochs * self.iters_per_epoch, power=0.9,
                                     warmup_iters=int(round(args.warmup_epochs * self.iters_per_epoch)))
        params = self.net.collect_params()
        self.trained_params = {name for name, param in params.items() if param.grad_req != "null"}
        if args.no_wd:
            for param in self.net.collect_params(".*beta|.*gamma|.*bias").values():
                param.wd_mult = 0.0
        opt_params = {"learning_rate": args.lr, "wd": args.wd}
        if args.optimizer == "sgd":
            opt_params["momentum"] = args.momentum
        if args.dtype == "float16":
            opt_params["multi_precision"] = True
        # make_trainer: gradients averaged over the global batch on every kvstore (Gluon alone sums them across
        # dist workers) and the update done on the workers, so the poly schedule and save_states work.
        self.trainer = make_trainer(params, args.optimizer, opt_params, self.dist)

    # ---------------------------------------------------------------- the trainer's own steps
    def hybridize(self) -> None:
        if not (self.parallel or self.args.disable_hybridization):
            self.net.hybridize()

    def train_step(self, batch) -> Dict[str, float]:
        data, label = batch
        datas = gluon.utils.split_and_load(data, self.contexts, even_split=True)
        labels = gluon.utils.split_and_load(label, self.contexts, even_split=True)
        dtype, aux_weight = self.args.dtype, self.args.aux_weight

        def device_losses(x, y):
            outputs = self.net(x.astype(dtype, copy=False))
            main = pixel_cross_entropy(outputs[0], y)
            if not self.aux:
                return main, main
            aux = pixel_cross_entropy(outputs[1], y)
            return main + aux_weight * aux, main, aux

        with autograd.record():
            results = parallel_apply(device_losses, list(zip(datas, labels)), sync=self.parallel)
        totals = [r[0] for r in results]
        if self.parallel:
            parallel_backward(totals, sync=True)
        else:
            autograd.backward(totals)
        values = {"loss": totals, "loss_main": [r[1] for r in results]}
        if self.aux:
            values["loss_aux"] = [r[2] for r in results]
        return {name: sum(float(t.sum().asscalar()) for t in parts) / self.batch_size
                for name, parts in values.items()}

    def validate(self, epoch: int, iteration: int) -> Validation:
        """Validation pixAcc/mIoU, logged with the per-class table."""
        conf = evaluate_batches(self.net, self.val_loader, self.contexts, self.class_set.num_classes,
                                desc=f"val epoch {epoch}")
        result = conf.as_dict(self.class_set.class_names)
        log.info("validation after epoch %d (%d images, long side %d):\n%s", epoch, len(self.valset),
                 self.args.base_size, conf.table(self.class_set.class_names))
        from ..engine.samples import SAMPLE_IMAGES, log_samples, semantic_samples
        from ..models.segmentation import predict_label_map

        # A few fixed val images, ground truth beside prediction, as TensorBoard images (engine/samples.py).
        log_samples(getattr(self, "logger", None), lambda: semantic_samples(
            [(Path(self.valset.records[i].path).name, self.valset.read_image(i), self.valset.decode_label(i))
             for i in range(min(SAMPLE_IMAGES, len(self.valset)))],
            lambda image: predict_label_map(self.net, image, self.contexts[0], base_size=self.args.base_size,
                                            crop_size=self.args.crop_size),
            self.class_set.num_classes), iteration)
        return Validation(metric=result["mIoU"], scalars={"pixAcc": result["pixAcc"], "mIoU": result["mIoU"]},
                          details=result)


def run_prefix(args: argparse.Namespace, model: str, backbone: str) -> str:
    """Path prefix of a run's files: ``<logdir>/<dataset>/<model>/<checkname>/<model>_<backbone>``."""
    return str(run_dir(args, model) / f"{model}_{backbone}")


def train(args: argparse.Namespace) -> Dict:
    """Entry point of ``train_segmentation.py``: train (or, with ``--eval``, only validate) as the flags say."""
    if args.eval:
        return evaluate_only(args)
    return run_training(SegmentationTrainer(args))


def evaluate_only(args: argparse.Namespace) -> Dict:
    """``--eval``: validate the ``--resume`` checkpoint (its own architecture and classes); 'latest' is the
    ``_last`` checkpoint of the run these flags name."""
    if not args.resume:
        raise UserError("--eval needs --resume: 'latest' or a checkpoint .params (the weights to evaluate)")
    check_shared_flags(args)
    contexts = parse_gpus(args.gpus, args.cpu_contexts, flag=flag_name(args, "gpus"))
    model = zoo_entry(args.model_zoo).model if args.model_zoo else canonical_model(args.model)
    backbone = zoo_entry(args.model_zoo).backbone if args.model_zoo else resolve_backbone(model, args.backbone)
    placeholder = {"task": "segmentation", "model": model, "classes": None}
    weights = CheckpointManager(run_prefix(args, model, backbone), placeholder).resolve_resume(args.resume)
    net, meta = load_segmentation_model(weights, contexts)
    class_set = ClassSet.from_dict(meta["classes"])
    base_size, _ = image_scale(meta)
    valset = get_dataset(meta.get("dataset") or args.dataset, root=args.dataset_root, split="val",
                         class_set=class_set, transform=EvalTransform(base_size))
    loader = gluon.data.DataLoader(valset, batch_size=args.test_batch_size, shuffle=False, last_batch="keep",
                                   num_workers=args.num_workers)
    conf = evaluate_batches(net, loader, contexts, class_set.num_classes)
    print(f"{weights}:\n{conf.table(class_set.class_names)}")
    return conf.as_dict(class_set.class_names)


__all__ = ["SegmentationTrainer", "build_parser", "evaluate_only", "pixel_cross_entropy", "run_dir", "run_prefix",
           "train"]
