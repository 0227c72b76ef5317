"""Semantic segmentation: training (FCN/PSP/DeepLabV3/DeepLabV3+), validation, full-resolution evaluation with
test-time augmentation, and colour-coded predictions for a folder of photos.

Run folder: ``train_logs/<dataset>/<model>/<checkname>/`` (relative to the working directory) holding
``<model>_<backbone>_*``: configuration, log, metrics JSONL, TensorBoard events, PNG plots, checkpoints
(``_NNNN``, ``_last``, ``_best`` on validation mIoU) and ``_val.json`` (the latest per-class IoU).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np
from gluoncv.utils.parallel import parallel_apply, parallel_backward
from mxnet import autograd, gluon

from ..data.semantic import ClassSet, get_dataset, parse_class_set
from ..engine import (CheckpointManager, EpochBatchSampler, EpochTaggedBatches, PolySchedule, Throughput, check_finite,
                      parse_gpus, progress, seed_everything, split_batch)
from ..engine.distributed import (MASTER_WORK_TIMEOUT_FACTOR, barrier, dump_final_parameters, finish_epoch,
                                  horovod_context, init_distributed, make_trainer, sync_parameters)
from ..engine.run import TrainingRun, run_training
from ..errors import UserError
from ..evaluation.segmentation import ConfusionMatrix
from ..fileio import atomic_write_json
from ..models.batchnorm import freeze_batchnorm
from ..models.segmentation import (build_segmentation_model, canonical_model, checkpoint_meta, forward_logits,
                                   image_scale, load_segmentation_model, predict_label_map,
                                   pretrained_weights_for, require_weights, resolve_backbone, zoo_entry)
from ..transforms.semantic import IGNORE_LABEL, BackgroundReplacer, EvalTransform, TrainTransform

log = logging.getLogger("gluon_fashion.trainers.segmentation")


@dataclass
class SegmentationConfig:
    """Every setting of a training run; field names are the ``train_segmentation.py`` flags (dashes -> _)."""

    model: str = "deeplabv3"
    backbone: Optional[str] = None
    model_zoo: Optional[str] = None
    no_pretrained: bool = False
    dataset: str = "imaterialist"
    dataset_root: str = "datasets/imaterialist"
    train_split: str = "train"
    classes: str = "main"
    binary: bool = False
    bg_replace: float = 0.0
    bg_dir: Optional[str] = None
    min_label_fraction: float = 0.001
    workers: int = 4
    base_size: int = 520
    crop_size: int = 480
    aux: Optional[bool] = None
    aux_weight: float = 0.5
    epochs: int = 50
    batch_size: int = 16
    test_batch_size: int = 16
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    no_wd: bool = False
    warmup_epochs: float = 0.0
    ngpus: int = 0
    cpu_contexts: int = 1
    kvstore: str = "device"
    horovod: bool = False
    dist_timeout: float = 600.0
    dtype: str = "float32"
    syncbn: bool = False
    freeze_bn: bool = False
    resume: Optional[str] = None
    checkname: str = "default"
    eval: bool = False
    no_val: bool = False
    val_interval: int = 1
    save_interval: int = 1
    save_iters: int = 0
    log_interval: int = 20
    seed: int = 0
    no_hybridize: bool = False
    logdir: str = "train_logs"
    verify_weights: bool = field(default=True, repr=False)

    @classmethod
    def from_namespace(cls, args) -> "SegmentationConfig":
        """Config from an argparse namespace (unknown attributes ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})


TRAIN_USAGE = """Train FCN / PSPNet / DeepLabV3 / DeepLabV3+ on the main apparel classes.

    python train_segmentation.py --model deeplabv3 --dataset imaterialist --model-zoo deeplab_resnet101_coco \\
        --aux --checkname res101 --epochs 30 --lr 0.001 --ngpus 1 --workers 2 --batch-size 2 --test-batch-size 2

CPU check on the generated sample (random initialisation, small crop):

    python train_segmentation.py --model deeplabv3 --backbone resnet50 --no-pretrained \\
        --dataset-root datasets/sample --base-size 128 --crop-size 96 --ngpus 0 --batch-size 4 --epochs 2

Outputs go to train_logs/<dataset>/<model>/<checkname>/ (relative to the working directory).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``train_segmentation.py`` command line (flag names as GluonCV's scripts/segmentation/train.py)."""
    d = SegmentationConfig()
    p = argparse.ArgumentParser(description=TRAIN_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=d.model, help="fcn, psp, deeplabv3 or deeplabv3plus (default: %(default)s)")
    g.add_argument("--backbone", default=None,
                   help="resnet18/34/50/101/152 (xception for deeplabv3plus); default resnet50 / xception. "
                        "resnet18/34: GluonCV's heads resized to their narrower features (fast CPU runs)")
    g.add_argument("--model-zoo", default=None,
                   help="start from GluonCV pretrained weights, e.g. deeplab_resnet101_coco (classifier re-initialised)")
    g.add_argument("--no-pretrained", action="store_true",
                   help="no pretrained weights at all: every layer initialised at random")
    g.add_argument("--dataset", default=d.dataset, help="registered dataset name (default: %(default)s)")
    g.add_argument("--dataset-root", default=d.dataset_root, help="dataset folder (default: %(default)s)")
    g.add_argument("--train-split", default=d.train_split, help="split to train on (default: %(default)s)")
    g.add_argument("--classes", default=d.classes,
                   help="'main' (categories 0-12), 'all' or ids/ranges such as '0,1,6-8' (default: %(default)s)")
    g.add_argument("--binary", action="store_true", help="garment vs background: every chosen class becomes 1")
    g.add_argument("--bg-replace", type=float, default=d.bg_replace, metavar="P",
                   help="probability of pasting the labelled pixels onto a new background (default: %(default)s)")
    g.add_argument("--bg-dir", default=None, help="folder of background images for --bg-replace "
                   "(default: synthetic backdrops)")
    g.add_argument("--min-label-fraction", type=float, default=d.min_label_fraction,
                   help="drop training images with less of their area labelled (default: %(default)s)")
    g.add_argument("--workers", "-j", type=int, default=d.workers, help="data-loader processes (default: %(default)s)")
    g.add_argument("--base-size", type=int, default=d.base_size, help="base image size (default: %(default)s)")
    g.add_argument("--crop-size", type=int, default=d.crop_size, help="training crop size (default: %(default)s)")
    g = p.add_argument_group("training")
    g.add_argument("--aux", dest="aux", action="store_true", default=None,
                   help="auxiliary head and loss (default: on with --model-zoo, off otherwise)")
    g.add_argument("--no-aux", dest="aux", action="store_false", help="no auxiliary head")
    g.add_argument("--aux-weight", type=float, default=d.aux_weight, help="auxiliary loss weight (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=d.epochs, help="epochs (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="training batch of this machine, all its devices; per worker in a distributed run, where "
                        "--lr is the rate of the global batch (default: %(default)s)")
    g.add_argument("--test-batch-size", type=int, default=d.test_batch_size,
                   help="validation batch (default: %(default)s)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="base learning rate, poly decay (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear learning-rate warm-up (default: %(default)s)")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    g.add_argument("--no-wd", action="store_true", help="no weight decay on biases and BatchNorm beta/gamma")
    g.add_argument("--syncbn", action="store_true", help="synchronised BatchNorm across devices")
    g.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics and scale/shift fixed")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    g = p.add_argument_group("devices")
    g.add_argument("--ngpus", type=int, default=mx.context.num_gpus(),
                   help="GPUs to use, 0 = CPU (default: all, here %(default)s)")
    g.add_argument("--cpu-contexts", type=int, default=d.cpu_contexts,
                   help="with --ngpus 0: number of CPU contexts (testing multi-device code) (default: %(default)s)")
    g.add_argument("--kvstore", default=d.kvstore,
                   help="device/local/nccl on one machine; dist_sync/dist_device_sync across machines (start with "
                        "tools/launch_local.py or MXNet's launcher) (default: %(default)s)")
    g.add_argument("--horovod", action="store_true", help="distributed training with Horovod (one process per GPU)")
    g.add_argument("--dist-timeout", type=float, default=d.dist_timeout, metavar="SECONDS",
                   help="distributed run: stop a worker whose step (or joining the job) takes longer, e.g. when "
                        f"a peer died; waiting for worker 0's validation gets {MASTER_WORK_TIMEOUT_FACTOR}x this; "
                        "0 = wait forever (default: %(default)s)")
    g.add_argument("--dtype", choices=("float32", "float16"), default=d.dtype, help="(default: %(default)s)")
    g.add_argument("--no-hybridize", action="store_true", help="run imperatively (debugging)")
    g = p.add_argument_group("checkpoints and evaluation")
    g.add_argument("--checkname", default=d.checkname, help="run name: train_logs/<dataset>/<model>/<checkname>/")
    g.add_argument("--resume", default=None,
                   help="continue a run: 'latest' or a checkpoint .params (with --eval: the weights to evaluate)")
    g.add_argument("--eval", action="store_true", help="only evaluate the --resume checkpoint on the val split")
    g.add_argument("--no-val", action="store_true", help="skip validation during training")
    g.add_argument("--val-interval", type=int, default=d.val_interval, help="validate every N epochs")
    g.add_argument("--save-interval", type=int, default=d.save_interval, help="keep a checkpoint every N epochs")
    g.add_argument("--save-iters", type=int, default=0,
                   help="also save a resumable checkpoint every N iterations within an epoch (default: off)")
    g.add_argument("--log-interval", type=int, default=d.log_interval, help="log metrics every N iterations")
    return p


# --------------------------------------------------------------------------------------------- helpers
def _contexts(cfg: SegmentationConfig) -> List[mx.Context]:
    if cfg.ngpus < 0:
        raise UserError(f"--ngpus must be >= 0, got {cfg.ngpus}")
    gpus = ",".join(str(i) for i in range(cfg.ngpus))
    return parse_gpus(gpus, num_cpu_contexts=cfg.cpu_contexts)


def _check_config(cfg: SegmentationConfig) -> None:
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.lr <= 0:
        raise UserError(f"--lr must be positive, got {cfg.lr}")
    if cfg.optimizer not in ("sgd", "adam"):
        raise UserError(f"--optimizer {cfg.optimizer!r}: use sgd or adam")
    if cfg.dtype not in ("float32", "float16"):
        raise UserError(f"--dtype {cfg.dtype!r}: use float32 or float16")
    if cfg.crop_size < 8 or cfg.base_size < 8:
        raise UserError(f"--crop-size and --base-size must be at least 8 pixels, got {cfg.crop_size} and "
                        f"{cfg.base_size}")
    if cfg.test_batch_size < 1:
        raise UserError(f"--test-batch-size must be >= 1, got {cfg.test_batch_size}")
    if cfg.workers < 0:
        raise UserError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.val_interval < 1 or cfg.log_interval < 1:
        raise UserError("--val-interval and --log-interval must be >= 1")
    if cfg.save_iters < 0:
        raise UserError(f"--save-iters must be >= 0 (0 = only at epoch ends), got {cfg.save_iters}")
    if not cfg.dist_timeout >= 0:
        raise UserError(f"--dist-timeout must be >= 0 seconds (0 = no limit), got {cfg.dist_timeout}")


def run_dir(cfg: SegmentationConfig, model: str) -> Path:
    """``<logdir>/<dataset>/<model>/<checkname>``."""
    return Path(cfg.logdir) / cfg.dataset.lower() / model / cfg.checkname


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


def evaluate_batches(net, loader, contexts: Sequence[mx.Context], num_classes: int,
                     desc: str = "validation") -> ConfusionMatrix:
    """Confusion matrix of ``net`` over a loader of (normalised images, labels) batches."""
    conf = ConfusionMatrix(num_classes, ignore_index=IGNORE_LABEL)
    for data, label in progress(loader, total=len(loader), desc=desc):
        used = list(contexts)[:data.shape[0]]
        datas = gluon.utils.split_and_load(data, used, even_split=False)
        labels = gluon.utils.split_and_load(label, used, even_split=False)
        for x, y in zip(datas, labels):
            pred = forward_logits(net, x).argmax(axis=1)
            conf.update(pred.asnumpy().astype(np.int32), y.asnumpy().astype(np.int32))
    return conf


# ------------------------------------------------------------------------------------------ training
class SegmentationTrainer(TrainingRun):
    """One run: data, network, optimizer, checkpoints and logs, built from a SegmentationConfig."""

    def __init__(self, cfg: SegmentationConfig):
        _check_config(cfg)
        self.cfg = cfg
        self.dist = init_distributed(cfg.kvstore, cfg.horovod, connect_timeout_s=cfg.dist_timeout, flag="--kvstore")
        # Horovod runs one process per GPU.
        self.contexts = [horovod_context(cfg.ngpus > 0)] if self.dist.horovod else _contexts(cfg)
        self.per_device = split_batch(cfg.batch_size, self.contexts)
        self.zoo = zoo_entry(cfg.model_zoo) if cfg.model_zoo else None
        self.model = self.zoo.model if self.zoo else canonical_model(cfg.model)
        self.backbone = self.zoo.backbone if self.zoo else resolve_backbone(self.model, cfg.backbone)
        self.aux = cfg.aux if cfg.aux is not None else self.zoo is not None
        self.class_set: ClassSet = parse_class_set(cfg.classes, cfg.binary)
        self.dir = run_dir(cfg, self.model)
        self.prefix = str(self.dir / f"{self.model}_{self.backbone}")
        self.build_kwargs = {"model": self.model, "backbone": self.backbone,
                             "num_classes": self.class_set.num_classes, "aux": bool(self.aux),
                             "base_size": cfg.base_size, "crop_size": cfg.crop_size}
        self.meta = checkpoint_meta(self.build_kwargs, self.class_set, dataset=cfg.dataset, model_zoo=cfg.model_zoo,
                                    pretrained=not cfg.no_pretrained)
        # Missing weights are reported (file + folder) before anything is written or any data is read.
        self.weight_names = pretrained_weights_for(self.model, self.backbone, cfg.model_zoo, not cfg.no_pretrained)
        require_weights(self.weight_names, cfg.model_zoo, verify=cfg.verify_weights)
        self.checkpoints = CheckpointManager(self.prefix, self.meta, save_interval=cfg.save_interval,
                                             metric_name="mIoU")
        self.resume_path = self.checkpoints.resolve_resume(cfg.resume)
        if cfg.resume and self.resume_path is None:
            raise UserError(f"--resume {cfg.resume}: no checkpoint of this run in {self.dir} yet")
        if self.resume_path and not os.path.exists(self.resume_path):
            raise UserError(f"--resume {cfg.resume}: file not found")
        if not self.resume_path:
            self.checkpoints.ensure_new_run(flag="--checkname")
        self.open_run(self.prefix, asdict(cfg), cfg.dist_timeout)

    # ---------------------------------------------------------------- construction
    def build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        norm_layer, norm_kwargs = None, None
        if cfg.syncbn:
            norm_layer = mx.gluon.contrib.nn.SyncBatchNorm
            norm_kwargs = {"num_devices": len(self.contexts)}
        self.net, build_kwargs = build_segmentation_model(
            self.model, self.class_set.num_classes, self.contexts, backbone=self.backbone, aux=self.aux,
            base_size=cfg.base_size, crop_size=cfg.crop_size, model_zoo=cfg.model_zoo,
            pretrained=not cfg.no_pretrained, norm_layer=norm_layer, norm_kwargs=norm_kwargs,
            verify_weights=False)  # verified in __init__
        assert build_kwargs == self.build_kwargs, (build_kwargs, self.build_kwargs)
        if cfg.freeze_bn:
            log.info("--freeze-bn: %d BatchNorm layers use their running statistics and are not trained",
                     freeze_batchnorm(self.net))
        if cfg.dtype == "float16":
            self.net.cast("float16")
        # Synchronised BatchNorm runs each device in its own thread (a device waits for the others inside
        # the layer); GluonCV does not hybridise in that mode either.
        self.parallel = cfg.syncbn and len(self.contexts) > 1
        if self.parallel:
            log.info("--syncbn on %d devices: one thread per device, network not hybridised", len(self.contexts))
        elif not cfg.no_hybridize:
            self.net.hybridize()
        dataset_kwargs = dict(root=cfg.dataset_root, class_set=self.class_set, seed=cfg.seed)
        self.valset = get_dataset(cfg.dataset, split="val", transform=EvalTransform(cfg.base_size),
                                  **dataset_kwargs)
        self.val_loader = gluon.data.DataLoader(self.valset, batch_size=cfg.test_batch_size, shuffle=False,
                                                last_batch="keep", num_workers=cfg.workers)
        background = BackgroundReplacer(cfg.bg_replace, cfg.bg_dir) if cfg.bg_replace > 0 else None
        self.trainset = get_dataset(cfg.dataset, split=cfg.train_split, min_label_fraction=cfg.min_label_fraction,
                                    transform=TrainTransform(cfg.base_size, cfg.crop_size, background=background),
                                    **dataset_kwargs)
        # Distributed: each worker reads its own, equally long share of the epoch's order (same step count).
        self.sampler = EpochTaggedBatches(EpochBatchSampler(len(self.trainset), cfg.batch_size, shuffle=True,
                                                            seed=cfg.seed, last_batch="discard",
                                                            num_parts=self.dist.num_workers,
                                                            part_index=self.dist.rank),
                                          len(self.trainset))
        self.train_loader = gluon.data.DataLoader(self.trainset, batch_sampler=self.sampler,
                                                  num_workers=cfg.workers)
        self.iters_per_epoch = len(self.sampler)
        self.schedule = PolySchedule(cfg.lr, cfg.epochs * self.iters_per_epoch, power=0.9,
                                     warmup_iters=int(round(cfg.warmup_epochs * self.iters_per_epoch)))
        params = self.net.collect_params()
        if cfg.no_wd:
            for param in self.net.collect_params(".*beta|.*gamma|.*bias").values():
                param.wd_mult = 0.0
        opt_params = {"learning_rate": cfg.lr, "wd": cfg.weight_decay}
        if cfg.optimizer == "sgd":
            opt_params["momentum"] = cfg.momentum
        if cfg.dtype == "float16":
            opt_params["multi_precision"] = True
        # make_trainer: gradients averaged over the global batch on every kvstore (Gluon alone sums them across
        # dist workers) and the update done on the workers, so the poly schedule and save_states work.
        self.trainer = make_trainer(params, cfg.optimizer, opt_params, self.dist)

    # ---------------------------------------------------------------- loops
    def validate(self, epoch: int, iteration: int) -> Dict:
        """Validation pixAcc/mIoU (logged with the per-class table); returns ConfusionMatrix.as_dict."""
        conf = evaluate_batches(self.net, self.val_loader, self.contexts, self.class_set.num_classes,
                                desc=f"val epoch {epoch}")
        result = conf.as_dict(self.class_set.class_names)
        log.info("validation after epoch %d (%d images, long side %d):\n%s", epoch, len(self.valset),
                 self.cfg.base_size, conf.table(self.class_set.class_names))
        self.logger.log_metrics(iteration, "val", epoch=epoch, pixAcc=result["pixAcc"], mIoU=result["mIoU"])
        atomic_write_json(self.prefix + "_val.json", dict(result, epoch=epoch, iteration=iteration), indent=2)
        return result

    def train_step(self, data, label, iteration: int) -> Dict[str, float]:
        """One optimizer update on a batch (split across the devices); returns the batch losses."""
        datas = gluon.utils.split_and_load(data, self.contexts, even_split=True)
        labels = gluon.utils.split_and_load(label, self.contexts, even_split=True)
        dtype = self.cfg.dtype

        def device_losses(x, y):
            outputs = self.net(x.astype(dtype, copy=False))
            main = pixel_cross_entropy(outputs[0], y)
            if not self.aux:
                return main, main
            aux = pixel_cross_entropy(outputs[1], y)
            return main + self.cfg.aux_weight * aux, main, aux

        with autograd.record():
            results = parallel_apply(device_losses, list(zip(datas, labels)), sync=self.parallel)
        totals = [r[0] for r in results]
        mains = [r[1] for r in results]
        auxes = [r[2] for r in results] if self.aux else []
        if self.parallel:
            parallel_backward(totals, sync=True)
        else:
            autograd.backward(totals)
        values = {"loss": sum(float(t.sum().asscalar()) for t in totals) / self.cfg.batch_size,
                  "loss_main": sum(float(m.sum().asscalar()) for m in mains) / self.cfg.batch_size}
        if auxes:
            values["loss_aux"] = sum(float(a.sum().asscalar()) for a in auxes) / self.cfg.batch_size
        # Before the update: a NaN must not reach the weights (the last checkpoint stays usable).
        check_finite(values, iteration)
        self.trainer.set_learning_rate(self.schedule(iteration))
        self.trainer.step(self.cfg.batch_size)
        return values

    def fit(self) -> Dict:
        """Train (resuming if asked); returns {"best_mIoU", "best_epoch", "last": last validation or None}."""
        cfg = self.cfg
        start_epoch, iteration, skip = 0, 0, 0
        if self.resume_path:
            state = self.checkpoints.restore(self.resume_path, self.net, self.trainer, ctx=self.contexts)
            start_epoch, iteration, skip = state["epoch"], state["iteration"], state["batch_in_epoch"]
        # Every worker starts from rank 0's weights (build_segmentation_model already sized every layer).
        sync_parameters(self.net.collect_params(), self.trainer, self.dist)
        if self.dist.is_dist:
            log.info("%s: global batch %d (%d per worker), learning rate %g for the global batch",
                     self.dist.describe(), self.dist.global_batch_size(cfg.batch_size), cfg.batch_size, cfg.lr)
        log.info("training %s/%s for %d classes on %s: %d training / %d validation images, %d iterations per "
                 "epoch, batch %d (%d per device), crop %d, base %d, %s", self.model, self.backbone,
                 self.class_set.num_classes, ", ".join(map(str, self.contexts)), len(self.trainset),
                 len(self.valset), self.iters_per_epoch, cfg.batch_size, self.per_device, cfg.crop_size,
                 cfg.base_size, self.schedule)
        last = None
        speed = Throughput()
        for epoch in range(start_epoch, cfg.epochs):
            self.sampler.set_epoch(epoch, skip)
            sums: Dict[str, float] = {}
            count = 0
            bar = progress(self.train_loader, total=self.iters_per_epoch - skip, desc=f"epoch {epoch}")
            speed.reset()
            for data, label in bar:
                with self.watchdog.guard(f"step {iteration}"):
                    values = self.train_step(data, label, iteration)
                iteration += 1
                count += 1
                speed.update(data.shape[0])
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix(loss=f"{sums['loss'] / count:.3f}", lr=f"{self.trainer.learning_rate:.2e}")
                if iteration % cfg.log_interval == 0:
                    self.logger.log_metrics(iteration, "train_iter", epoch=epoch, lr=self.trainer.learning_rate,
                                            samples_s=speed.rate, **values)
                done = skip + count
                if (cfg.save_iters and iteration % cfg.save_iters == 0 and done < self.iters_per_epoch
                        and self.dist.is_master):
                    self.checkpoints.save(self.net, self.trainer, epoch, iteration, batch_in_epoch=done)
            bar.close()
            skip = 0
            means = {name: total / max(count, 1) for name, total in sums.items()}
            self.logger.log_metrics(iteration, "train_epoch", epoch=epoch, samples_s=speed.overall, **means)
            log.info("epoch %d: %s, %.1f samples/s", epoch,
                     ", ".join(f"{k} {v:.4f}" for k, v in means.items()), speed.overall)

            def validate_epoch(epoch: int = epoch, iteration: int = iteration) -> Optional[float]:
                nonlocal last
                if cfg.no_val or ((epoch + 1) % cfg.val_interval and epoch + 1 != cfg.epochs):
                    return None
                last = self.validate(epoch, iteration)
                return last["mIoU"]

            finish_epoch(self.dist, self.watchdog, cfg.dist_timeout, epoch, iteration, self.checkpoints, self.net,
                         self.trainer, validate_epoch, self.plot)
        if start_epoch >= cfg.epochs:
            log.info("nothing to train: the checkpoint already finished epoch %d of %d", start_epoch - 1, cfg.epochs)
        barrier(self.dist, self.watchdog, "end of training")
        dump_final_parameters(self.net, self.dist)
        return {"best_mIoU": self.checkpoints.best_metric, "best_epoch": self.checkpoints.best_epoch,
                "last": last, "iteration": iteration}


def train(cfg: SegmentationConfig) -> Dict:
    """Entry point of ``train_segmentation.py``: train (or, with ``eval``, only validate) as configured."""
    if cfg.eval:
        return evaluate_only(cfg)
    return run_training(SegmentationTrainer(cfg))


def evaluate_only(cfg: SegmentationConfig) -> Dict:
    """``--eval``: validate the checkpoint given with ``--resume`` (its own architecture and classes)."""
    if not cfg.resume:
        raise UserError("--eval needs --resume CHECKPOINT.params (the weights to evaluate)")
    contexts = _contexts(cfg)
    net, meta = load_segmentation_model(cfg.resume, contexts)
    class_set = ClassSet.from_dict(meta["classes"])
    base_size, _ = image_scale(meta)
    valset = get_dataset(meta.get("dataset") or cfg.dataset, root=cfg.dataset_root, split="val",
                         class_set=class_set, transform=EvalTransform(base_size))
    loader = gluon.data.DataLoader(valset, batch_size=cfg.test_batch_size, shuffle=False, last_batch="keep",
                                   num_workers=cfg.workers)
    conf = evaluate_batches(net, loader, contexts, class_set.num_classes)
    print(conf.table(class_set.class_names))
    return conf.as_dict(class_set.class_names)


# ------------------------------------------------------------------- full-resolution evaluation (tool)
def parse_scales(text: str) -> List[float]:
    """'0.75,1.0,1.25' -> [0.75, 1.0, 1.25] (UserError naming --scales otherwise)."""
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--scales {text!r}: expected comma-separated numbers such as 0.75,1.0,1.25") from None
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise UserError(f"--scales {text!r}: expected positive numbers such as 0.75,1.0,1.25")
    return scales


def evaluate_checkpoint(weights: str, dataset_root: str, split: str = "val", scales: Sequence[float] = (1.0,),
                        flip: bool = False, ctx=None, base_size: Optional[int] = None,
                        crop_size: Optional[int] = None, max_images: Optional[int] = None,
                        output: Optional[str] = None) -> Dict:
    """pixAcc/mIoU of a checkpoint on a split, every image predicted and scored at its own resolution.

    Prints the per-class table; with ``output`` also writes ``<output>/metrics_<split>.json``. The network
    and its test scale (``base_size``/``crop_size`` override the checkpoint's) come from ``predict.load_model``.
    """
    from ..predict import load_model

    ctx = ctx or mx.cpu()
    model = load_model(weights, [ctx], base_size=base_size, crop_size=crop_size)
    if model.task != "segmentation":
        raise UserError(f"--weights {weights}: a {model.task!r} checkpoint, not a segmentation one")
    net, meta = model.net, model.meta
    class_set = ClassSet.from_dict(meta["classes"])
    base, crop = model.scale["base_size"], model.scale["crop_size"]
    dataset = get_dataset(meta.get("dataset") or "imaterialist", root=dataset_root, split=split,
                          class_set=class_set)
    count = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    conf = ConfusionMatrix(class_set.num_classes, ignore_index=IGNORE_LABEL)
    started = time.perf_counter()
    for index in progress(range(count), total=count, desc=f"evaluating {split}", unit="img"):
        image, label = dataset[index]
        pred = predict_label_map(net, image, ctx, scales=scales, flip=flip, base_size=base, crop_size=crop)
        conf.update(pred, label)
    result = conf.as_dict(class_set.class_names)
    result.update({"weights": str(weights), "split": split, "images": count, "pixels": int(conf.matrix.sum()), "scales": list(scales), "flip": flip,
                   "base_size": base, "crop_size": crop, "seconds": round(time.perf_counter() - started, 2)})
    print(conf.table(class_set.class_names))
    if output:
        path = Path(output) / f"metrics_{split}.json"
        atomic_write_json(path, result, indent=2)
        print(f"metrics written to {path}")
    return result


__all__ = ["SegmentationConfig", "SegmentationTrainer", "build_parser", "evaluate_batches", "evaluate_checkpoint", "evaluate_only",
           "parse_scales", "pixel_cross_entropy", "run_dir", "train"]
