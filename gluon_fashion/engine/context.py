"""Devices, per-device batch sizes and seeding, with errors that name the flag the user got wrong."""
from __future__ import annotations

import random
from typing import Optional, Sequence

import mxnet as mx
import numpy as np

from ..errors import UserError


def parse_gpus(gpus: Optional[str], num_cpu_contexts: int = 1, flag: str = "--gpus") -> list:
    """Turn a ``--gpus`` value ("0,1,2"; empty or None = CPU) into a list of MXNet contexts.

    ``flag``: the spelling the user typed; "--ngpus" (a GPU count, stored as the ids it means) gets its
    errors phrased as counts.
    """
    if num_cpu_contexts < 1:
        raise UserError(f"--cpu-contexts must be at least 1, got {num_cpu_contexts}")
    text = "" if gpus is None else str(gpus).strip()
    if not text:
        return [mx.cpu(i) for i in range(num_cpu_contexts)]
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise UserError(
                f"{flag} {text!r}: expected comma-separated GPU ids such as '0' or '0,1,2' "
                f"(leave it empty to run on CPU); {part!r} is not a GPU id")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise UserError(f"{flag} {text!r}: a GPU id is listed twice")
    available = mx.context.num_gpus()
    if max(ids) >= available:
        no_gpu = "this MXNet build or machine has no usable GPU"
        if flag == "--ngpus":
            hint = f"{no_gpu}; use --ngpus 0 to run on CPU" if available == 0 else f"use at most --ngpus {available}"
            raise UserError(f"--ngpus {len(ids)} asks for {len(ids)} GPU(s) but MXNet found {available}: {hint}")
        hint = f"{no_gpu}; leave {flag} empty to run on CPU" if available == 0 else f"valid ids are 0..{available - 1}"
        raise UserError(f"{flag} {text!r} asks for GPU {max(ids)} but MXNet found {available} GPU(s): {hint}")
    return [mx.gpu(i) for i in ids]


def split_batch(batch_size: int, contexts: Sequence) -> int:
    """Per-context batch size for a global ``--batch-size`` split evenly across ``contexts``."""
    count = len(contexts)
    if count == 0:
        raise UserError("no device to train on: the list of contexts is empty (check --gpus)")
    names = ", ".join(str(ctx) for ctx in contexts)
    if batch_size < count or batch_size % count:
        raise UserError(
            f"--batch-size {batch_size} cannot be split evenly across the {count} device(s) "
            f"[{names}]: use a multiple of {count} (each device gets batch-size / {count} images)")
    return batch_size // count


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and MXNet (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed % 2**31)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch, derived from the run seed, so a resumed epoch replays the same order."""
    # SeedSequence mixes (seed, epoch) into well-separated streams; seed+epoch would make
    # run seed 1 epoch 0 identical to run seed 0 epoch 1.
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])
