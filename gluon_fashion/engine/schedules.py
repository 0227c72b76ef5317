"""Learning-rate schedules as pure functions of the global iteration, so resuming needs only the iteration.

Trainers call ``trainer.set_learning_rate(schedule(iteration))`` before each update.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import UserError

_WARMUP_MODES = ("linear", "constant")


def _warmup_multiplier(iteration: int, warmup_iters: int, warmup_factor: float, mode: str) -> float:
    if mode == "constant":
        return warmup_factor
    progress = iteration / warmup_iters
    return warmup_factor * (1.0 - progress) + progress


def _check_warmup(warmup_iters: int, warmup_factor: float, warmup_mode: str) -> None:
    if warmup_iters < 0:
        raise UserError(f"learning-rate warm-up: the number of warm-up iterations must be >= 0, got {warmup_iters}")
    if not 0.0 < warmup_factor <= 1.0:
        raise UserError(f"learning-rate warm-up: the warm-up factor must be in (0, 1], got {warmup_factor}")
    if warmup_mode not in _WARMUP_MODES:
        raise UserError(f"learning-rate warm-up: mode must be one of {_WARMUP_MODES}, got {warmup_mode!r}")


class WarmupStepSchedule:
    """Mask R-CNN recipe: warm up from ``base_lr * warmup_factor``, then multiply by ``factor`` at each decay epoch.

    Decay epoch ``e`` takes effect from iteration ``e * iters_per_epoch`` (the first iteration of epoch ``e``,
    epochs counted from 0). During warm-up the multiplier ramps linearly from ``warmup_factor`` to 1 at
    ``warmup_iters`` ("linear"), or stays at ``warmup_factor`` ("constant").
    """

    def __init__(self, base_lr: float, iters_per_epoch: int, decay_epochs: Sequence[int], factor: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 1.0 / 3, warmup_mode: str = "linear"):
        if base_lr <= 0:
            raise UserError(f"learning rate must be positive, got {base_lr}")
        if iters_per_epoch < 1:
            raise UserError(f"an epoch needs at least one iteration, got {iters_per_epoch} (dataset smaller "
                            "than one batch?)")
        decay_epochs = [int(e) for e in decay_epochs]
        if any(e < 0 for e in decay_epochs) or decay_epochs != sorted(decay_epochs):
            raise UserError(f"learning-rate decay epochs must be non-negative and increasing, got {decay_epochs}")
        if not 0.0 < factor <= 1.0:
            raise UserError(f"learning-rate decay factor must be in (0, 1], got {factor}")
        _check_warmup(warmup_iters, warmup_factor, warmup_mode)
        self.base_lr = float(base_lr)
        self.iters_per_epoch = int(iters_per_epoch)
        self.decay_epochs = decay_epochs
        self.factor = float(factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_mode = warmup_mode

    def __call__(self, iteration: int) -> float:
        """Learning rate for global iteration ``iteration`` (0-based)."""
        decays = sum(1 for epoch in self.decay_epochs if iteration >= epoch * self.iters_per_epoch)
        lr = self.base_lr * self.factor ** decays
        if iteration < self.warmup_iters:
            lr *= _warmup_multiplier(iteration, self.warmup_iters, self.warmup_factor, self.warmup_mode)
        return lr

    def __repr__(self) -> str:
        return (f"WarmupStepSchedule(base_lr={self.base_lr}, iters_per_epoch={self.iters_per_epoch}, "
                f"decay_epochs={self.decay_epochs}, factor={self.factor}, warmup_iters={self.warmup_iters}, "
                f"warmup_factor={self.warmup_factor:.4g}, warmup_mode={self.warmup_mode!r})")


class PolySchedule:
    """DeepLab recipe: ``lr = final_lr + (base_lr - final_lr) * (1 - t)^power``, reaching ``final_lr`` at the end.

    ``t`` runs from 0 at the end of warm-up to 1 at ``total_iters``; during warm-up the rate ramps linearly
    from ``base_lr * warmup_factor`` to ``base_lr``. Iterations past ``total_iters`` get ``final_lr``.
    """

    def __init__(self, base_lr: float, total_iters: int, power: float = 0.9, warmup_iters: int = 0,
                 warmup_factor: float = 1.0 / 3, final_lr: float = 0.0):
        if base_lr <= 0:
            raise UserError(f"learning rate must be positive, got {base_lr}")
        if total_iters < 1:
            raise UserError(f"poly schedule: total iterations must be >= 1, got {total_iters}")
        if power <= 0:
            raise UserError(f"poly schedule: power must be positive, got {power}")
        if not 0.0 <= final_lr < base_lr:
            raise UserError(f"poly schedule: final learning rate must be in [0, {base_lr}), got {final_lr}")
        _check_warmup(warmup_iters, warmup_factor, "linear")
        if warmup_iters >= total_iters:
            raise UserError(f"poly schedule: {warmup_iters} warm-up iterations leave nothing of the "
                            f"{total_iters} training iterations")
        self.base_lr = float(base_lr)
        self.total_iters = int(total_iters)
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.final_lr = float(final_lr)

    def __call__(self, iteration: int) -> float:
        """Learning rate for global iteration ``iteration`` (0-based)."""
        if iteration < self.warmup_iters:
            return self.base_lr * _warmup_multiplier(iteration, self.warmup_iters, self.warmup_factor, "linear")
        if iteration >= self.total_iters:
            return self.final_lr
        progress = (iteration - self.warmup_iters) / (self.total_iters - self.warmup_iters)
        return self.final_lr + (self.base_lr - self.final_lr) * (1.0 - progress) ** self.power

    def __repr__(self) -> str:
        return (f"PolySchedule(base_lr={self.base_lr}, total_iters={self.total_iters}, power={self.power}, "
                f"warmup_iters={self.warmup_iters}, warmup_factor={self.warmup_factor:.4g}, "
                f"final_lr={self.final_lr})")
