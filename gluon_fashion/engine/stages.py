"""Staged fine-tuning: per epoch range, which layer groups train and at what fraction of the learning rate.

The recipe of the Matterport-based fashion projects: train the new heads first, then more of the backbone
at a lower rate, then everything. ``--train-stages '0:heads,2:stage3+:0.5,4:all:0.1'`` reads "from epoch 0
the heads, from epoch 2 the heads and backbone stages 3 and up at half the rate, from epoch 4 all of the
default set at a tenth". Groups are taken from GluonCV's parameter names, the same for both trainers:

* backbone: the ResNet (``resnetv1b_``, ``resnetv1d_``, ...) or Xception parameters; stage ``k`` is
  ``layers<k>`` with its downsampling branch ``down<k>`` (stem parameters count as stage 0);
* heads: every other parameter (RPN, box and mask heads, FPN, segmentation heads);
* ``all``: the trainer's default trained set (GluonCV's recipe), which every group is taken from: what the
  default recipe freezes stays frozen.

The stage is a function of the epoch alone, so a run resumed anywhere trains exactly that epoch's set.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Collection, List, Optional, Sequence, Set

from ..errors import UserError

log = logging.getLogger(__name__)

_BACKBONE = re.compile(r"(^|_)(resnetv1[a-z]?|xception\d*)_")
_STAGE = re.compile(r"_(?:layers|down)(\d+)_")
_GROUP = re.compile(r"^(heads|all|stage([1-9])\+)$")


@dataclass(frozen=True)
class Stage:
    """From ``start_epoch`` on (until the next stage), train ``group`` at ``lr_factor`` x the schedule's rate."""

    start_epoch: int
    group: str
    lr_factor: float = 1.0

    def __str__(self) -> str:
        return f"{self.start_epoch}:{self.group}" + ("" if self.lr_factor == 1.0 else f":{self.lr_factor:g}")


def backbone_stage(name: str) -> Optional[int]:
    """The backbone stage of a parameter name (0 for the stem), None for a head parameter."""
    if not _BACKBONE.search(name):
        return None
    match = _STAGE.search(name)
    return int(match.group(1)) if match else 0


def parse_stages(text: str, flag: str = "--train-stages") -> List[Stage]:
    """``'0:heads,2:stage3+:0.5'`` -> stages (UserError naming the entry otherwise); '' -> []."""
    stages: List[Stage] = []
    for entry in (part.strip() for part in str(text or "").split(",")):
        if not entry:
            continue
        fields = entry.split(":")
        problem = None
        if len(fields) not in (2, 3) or not fields[0].strip().isdigit():
            problem = "expected START_EPOCH:GROUP[:LR_FACTOR]"
        elif not _GROUP.match(fields[1].strip()):
            problem = f"unknown group {fields[1].strip()!r} (heads, stage1+ ... stage4+, all)"
        if problem is None:
            try:
                factor = float(fields[2]) if len(fields) == 3 else 1.0
            except ValueError:
                factor = float("nan")
            if not factor > 0:
                problem = f"learning-rate factor {fields[2]!r} is not a positive number"
        if problem:
            raise UserError(f"{flag} {text!r}: entry {entry!r}: {problem}")
        stages.append(Stage(int(fields[0]), fields[1].strip(), factor))
    if not stages:
        return stages
    starts = [stage.start_epoch for stage in stages]
    if starts[0] != 0:
        raise UserError(f"{flag} {text!r}: the first stage must start at epoch 0, not {starts[0]}")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise UserError(f"{flag} {text!r}: start epochs must increase")
    return stages


class StagePlan:
    """The stages of a run over its default trained parameters; empty means "the default set throughout"."""

    def __init__(self, stages: Sequence[Stage], trained_params: Collection[str]):
        self.stages = list(stages)
        self.trained = set(trained_params)
        self._current: Optional[Set[str]] = None
        for stage in self.stages:
            if not self.params_for(stage.group):
                raise UserError(f"--train-stages: group {stage.group!r} selects no trained parameter of this "
                                "network")

    @classmethod
    def from_flag(cls, text: str, epochs: int, trained_params: Collection[str],
                  recorded: Optional[str] = None) -> "StagePlan":
        """The plan of ``--train-stages``; when resuming without the flag, the one the checkpoint recorded."""
        if not text and recorded:
            log.info("--train-stages %s, as recorded in the checkpoint", recorded)
            text = recorded
        elif recorded is not None and text != recorded:
            log.warning("--train-stages %r differs from the checkpoint's %r; using the flag", text, recorded)
        stages = parse_stages(text)
        late = [str(stage) for stage in stages if stage.start_epoch >= epochs]
        if late:  # allowed: a later --resume with more --epochs reaches them
            log.warning("--train-stages: %s start(s) after the last epoch of this run (%d)", ", ".join(late),
                        epochs - 1)
        return cls(stages, trained_params)

    def __bool__(self) -> bool:
        return bool(self.stages)

    @property
    def spec(self) -> str:
        """The plan as ``--train-stages`` text (recorded in checkpoints)."""
        return ",".join(map(str, self.stages))

    def stage_at(self, epoch: int) -> Optional[Stage]:
        """The stage in force at ``epoch`` (None without stages)."""
        current = None
        for stage in self.stages:
            if stage.start_epoch <= epoch:
                current = stage
        return current

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the schedule's learning rate at ``epoch``."""
        stage = self.stage_at(epoch)
        return 1.0 if stage is None else stage.lr_factor

    def params_for(self, group: str) -> Set[str]:
        """Names of the default trained parameters that ``group`` trains."""
        if group == "all":
            return set(self.trained)
        lowest = None if group == "heads" else int(_GROUP.match(group).group(2))
        chosen = set()
        for name in self.trained:
            stage = backbone_stage(name)
            if stage is None or (lowest is not None and stage >= lowest):
                chosen.add(name)
        return chosen

    def apply(self, params, epoch: int) -> bool:
        """Set ``grad_req`` of the default trained parameters for ``epoch``'s stage; True when the trained set
        changed. Frozen parameters get no gradient, so the optimizer leaves them (and their weight decay) alone."""
        stage = self.stage_at(epoch)
        if stage is None:
            return False
        wanted = self.params_for(stage.group)
        if wanted == self._current:
            return False
        for name, param in params.items():
            if name in self.trained:
                param.grad_req = "write" if name in wanted else "null"
        self._current = wanted
        log.info("epoch %d: stage %s trains %d of %d parameters at %g x the learning rate", epoch, stage,
                 len(wanted), len(self.trained), stage.lr_factor)
        return True

    def describe(self) -> str:
        """One line for the log."""
        return f"train stages {self.spec}"
