"""The command-line flags both trainers share, defined once, with both of GluonCV's spellings.

GluonCV's detection and segmentation scripts spell several shared ideas differently (``--kv-store`` /
``--kvstore``, ``-j --num-workers`` / ``--workers``, ``--wd`` / ``--weight-decay``, ``--gpus 0,1`` /
``--ngpus 2``...). Here each idea has one destination and every spelling is an alias of it, in both
trainers; error messages name the spelling the user typed (:func:`flag_name`).
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, Mapping, Optional

import mxnet as mx

from ..errors import UserError
from .distributed import MASTER_WORK_TIMEOUT_FACTOR
from .stages import parse_stages

#: Attribute of the parsed namespace recording which spelling of an aliased flag was typed.
_SPELLING = "flag_spelling"

#: Lower bounds of the shared numeric flags (destination -> smallest valid value).
SHARED_BOUNDS: Dict[str, float] = {
    "epochs": 1, "num_workers": 0, "cpu_contexts": 1, "dist_timeout": 0, "save_interval": 1,
    "save_iter_interval": 0, "val_interval": 1, "log_interval": 1, "momentum": 0, "wd": 0,
}


class _Store(argparse.Action):
    """``store`` (or ``store_true`` with ``const``) that also records the spelling used."""

    def __init__(self, option_strings, dest, const=None, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs=0 if const is not None else nargs, const=const, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        _record(namespace, self.dest, option_string)


class _GpuCount(argparse.Action):
    """``--ngpus N``: the first N GPUs, stored as the ``--gpus`` list they mean."""

    def __call__(self, parser, namespace, values, option_string=None):
        # No type=int on the action: argparse would also convert the shared --gpus default string with it.
        if not values.strip().isdigit():
            parser.error(f"{option_string} expects a number of GPUs (0: CPU), got {values!r}")
        setattr(namespace, self.dest, ",".join(str(i) for i in range(int(values))))
        _record(namespace, self.dest, option_string)


def _record(namespace: argparse.Namespace, dest: str, option_string: Optional[str]) -> None:
    spelled = dict(getattr(namespace, _SPELLING, None) or {})
    spelled[dest] = option_string
    setattr(namespace, _SPELLING, spelled)


def flag_name(args: argparse.Namespace, dest: str) -> str:
    """The spelling of the flag behind ``dest`` that the user typed (else the script's own spelling)."""
    return (getattr(args, _SPELLING, None) or {}).get(dest) or "--" + dest.replace("_", "-")


def add_shared_flags(parser: argparse.ArgumentParser, spelling: str,
                     helps: Optional[Mapping[str, str]] = None) -> Dict[str, argparse._ArgumentGroup]:
    """Add the flags both trainers share to ``parser``; returns its groups by title, for the trainer's own flags.

    ``spelling``: "detection" or "segmentation", which of GluonCV's spellings the help shows first (all
    spellings work in both). ``helps``: help texts particular to the trainer, by destination. A trainer
    changes defaults with ``parser.set_defaults``.
    """
    helps = dict(helps or {})
    seg = spelling == "segmentation"

    def names(detection: tuple, segmentation: tuple) -> tuple:
        return segmentation + detection if seg else detection + segmentation

    groups = {title: parser.add_argument_group(title) for title in
              ("model and data", "optimisation", "devices", "logging, validation and checkpoints")}
    g = groups["model and data"]
    g.add_argument("--dataset-root", default="datasets/imaterialist",
                   help="converted dataset folder (annotations/, train/, val/)")
    g.add_argument("--classes", default="all",
                   help="categories to train: 'all' (46), 'main' (0-12) or ids/ranges such as '0-12,23'")
    g.add_argument("--no-pretrained", action="store_true",
                   help="random initialisation: no pretrained weights at all")
    g.add_argument("--pretrained-weights", default=None, metavar="PATH",
                   help="start from this .params instead of GluonCV's model store: COCO weights of the same "
                        "network, or a checkpoint of this project (class layers re-initialised)")
    g.add_argument(*names(("-j", "--num-workers"), ("--workers",)), dest="num_workers", type=int, default=4,
                   action=_Store, metavar="N", help="data-loader processes (0: load in the main process)")
    g = groups["optimisation"]
    g.add_argument("--epochs", type=int, default=26)
    g.add_argument("--batch-size", type=int, default=None, help=helps.get(
        "batch_size", "images per iteration over all devices of this machine; per worker in a distributed run"))
    g.add_argument("--lr", type=float, default=None,
                   help=helps.get("lr", "base learning rate, for the global batch of all workers"))
    g.add_argument("--start-epoch", type=int, default=None,
                   help="start at this epoch (with --resume: override the position stored in the checkpoint)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument(*names(("--wd",), ("--weight-decay",)), dest="wd", type=float, default=1e-4, action=_Store, metavar="WD",
                   help="weight decay")
    g.add_argument("--train-stages", default="", metavar="SPEC",
                   help="staged fine-tuning: comma-separated START_EPOCH:GROUP[:LR_FACTOR] entries, e.g. "
                        "'0:heads,2:stage3+:0.5,4:all:0.1' trains the new heads for epochs 0-1, stages 3 and up "
                        "at half the rate for 2-3, then everything at a tenth. GROUP: heads, stage1+..stage4+, "
                        "all (the trainer's default set). Empty: the default set throughout")
    g.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, initialisation)")
    g = groups["devices"]
    g.add_argument("--gpus", default="", action=_Store, metavar="IDS",
                   help="GPU ids, e.g. '0,1,2,3'; empty: CPU")
    g.add_argument("--ngpus", dest="gpus", action=_GpuCount, metavar="N", help="use the first N GPUs (0: CPU)")
    g.add_argument("--cpu-contexts", type=int, default=1,
                   help="on CPU: number of CPU contexts (exercises the multi-device path)")
    g.add_argument(*names(("--kv-store",), ("--kvstore",)), dest="kv_store", default="device", action=_Store, metavar="NAME",
                   help="device/local/nccl on one machine; dist_sync/dist_device_sync across machines (start "
                        "with tools/launch_local.py or MXNet's launcher; --batch-size is then per worker)")
    g.add_argument("--horovod", action="store_true", help="distributed training with Horovod (one process per GPU)")
    g.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="distributed run: stop a worker whose step (or joining the job) takes longer, e.g. when a "
                        f"peer died; waiting for worker 0's validation gets {MASTER_WORK_TIMEOUT_FACTOR}x this; "
                        "0 = wait forever")
    g.add_argument(*names(("--disable-hybridization",), ("--no-hybridize",)), dest="disable_hybridization",
                   const=True, default=False, action=_Store, help="run imperatively (debugging)")
    g = groups["logging, validation and checkpoints"]
    g.add_argument("--resume", default="",
                   help="continue a run: 'latest' (this run's _last checkpoint), a checkpoint .params, or a prefix "
                        "whose _last checkpoint to load")
    g.add_argument("--save-interval", type=int, default=1, help="keep an epoch checkpoint every N epochs")
    g.add_argument(*names(("--save-iter-interval",), ("--save-iters",)), dest="save_iter_interval", type=int,
                   default=0, action=_Store, metavar="N",
                   help="also update the resumable _last checkpoint every N iterations (global count) within "
                        "an epoch (0: only at epoch ends)")
    g.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (and after the last)")
    g.add_argument("--no-val", action="store_true", help="skip validation during training")
    g.add_argument("--log-interval", type=int, default=100,
                   help="every N iterations: one console line and one metrics record (losses averaged over the N)")
    return groups


def check_bounds(args: argparse.Namespace, bounds: Mapping[str, float]) -> None:
    """UserError naming the typed flag when a numeric flag is below its bound (or not a finite number)."""
    for dest, low in bounds.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if not math.isfinite(value) or value < low:
            raise UserError(f"{flag_name(args, dest)} must be >= {low:g}, got {value}")


def check_shared_flags(args: argparse.Namespace) -> None:
    """The checks every trainer makes on the shared flags (before anything is built or written)."""
    check_bounds(args, SHARED_BOUNDS)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    if args.start_epoch is not None and not 0 <= args.start_epoch < args.epochs:
        raise UserError(f"--start-epoch {args.start_epoch} must be in [0, --epochs {args.epochs})")
    parse_stages(args.train_stages)
    if args.no_pretrained and args.pretrained_weights:
        raise UserError("--no-pretrained and --pretrained-weights contradict each other; give one")


def default_gpus(all_gpus: bool) -> str:
    """The ``--gpus`` default: every GPU MXNet sees (segmentation, as GluonCV's ``--ngpus``) or GPU 0
    (detection, as GluonCV's ``--gpus 0``); empty (CPU) without GPUs."""
    count = mx.context.num_gpus()
    return ",".join(str(i) for i in range(count if all_gpus else min(count, 1)))
