"""Training engine shared by the Mask R-CNN and DeepLab trainers: devices, schedules, checkpoints, logs, plots."""
from .checkpoint import CheckpointManager, checkpoint_base, read_checkpoint_meta
from .context import epoch_seed, parse_gpus, seed_everything, split_batch
from .logger import RunLogger, jsonable
from .plots import plot_metrics
from .progress import NonFiniteLossError, Throughput, check_finite, progress
from .schedules import PolySchedule, WarmupStepSchedule

__all__ = [
    "CheckpointManager", "NonFiniteLossError", "PolySchedule", "RunLogger", "Throughput", "WarmupStepSchedule",
    "check_finite", "checkpoint_base", "epoch_seed", "jsonable", "parse_gpus", "plot_metrics", "progress",
    "read_checkpoint_meta", "seed_everything", "split_batch",
]
