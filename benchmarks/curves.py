"""Validation curves of training runs, read from their metrics JSONL, for the convergence benchmarks."""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

Curve = List[Tuple[int, float, Dict[str, float]]]


def validation_curve(metrics_path: str, started_wall: float) -> Curve:
    """``(epoch, minute, values)`` of every validation of a run, the minute counted from ``started_wall``."""
    with open(metrics_path, encoding="utf-8") as handle:
        return [(record["epoch"], (record["time"] - started_wall) / 60, record["values"])
                for record in map(json.loads, handle) if record["split"] == "val"]


def first_minute_reaching(curve: Curve, metric: str, target: float) -> Optional[float]:
    """The minute of the first validation whose ``metric`` is at least ``target`` (None if none is)."""
    return next((minute for _, minute, values in curve if values[metric] >= target), None)
