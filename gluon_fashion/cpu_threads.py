"""How many OpenMP threads MXNet's CPU operators use, decided before MXNet is imported.

Without ``OMP_NUM_THREADS`` MXNet 1.9 gives its CPU operators half of the logical CPUs, assuming two
hyper-threads per core. On machines with one thread per core (most cloud VMs, this project's 2-core CI
machine) that leaves half the cores idle: CPU Mask R-CNN training ran at 0.85 samples/s with MXNet's
choice and 1.05 with both cores (BENCHMARKS.md). Here the default becomes the number of physical cores the
process may use, which is MXNet's own intent; an ``OMP_NUM_THREADS`` the user set always wins. OpenMP reads the
variable once, when MXNet's library loads, so this must run before the first ``import mxnet``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Set, Tuple

ENV = "OMP_NUM_THREADS"
#: Whether the user gave OMP_NUM_THREADS (read once, before :func:`set_default_omp_threads` may set it).
USER_SET = bool(os.environ.get(ENV))


def physical_cores(cpuinfo: str = "/proc/cpuinfo") -> Optional[int]:
    """Physical cores among the CPUs this process may run on (Linux ``/proc/cpuinfo``), None if unknown."""
    try:
        allowed = os.sched_getaffinity(0)
        with open(cpuinfo, encoding="utf-8") as handle:
            text = handle.read()
    except (AttributeError, OSError):
        return None
    cores: Set[Tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields: Dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields or not fields["processor"].isdigit():
            continue
        if int(fields["processor"]) not in allowed:
            continue
        # VMs often omit the topology fields: then every logical CPU counts as a core.
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return len(cores) or None


def set_default_omp_threads() -> Optional[int]:
    """Set ``OMP_NUM_THREADS`` to the physical core count unless already set; returns the value set, if any."""
    if os.environ.get(ENV):
        return None
    cores = physical_cores()
    if cores is None:
        return None
    os.environ[ENV] = str(cores)
    return cores


def threads_per_process(num_processes: int) -> Dict[str, str]:
    """Environment for each of ``num_processes`` compute processes sharing this machine (a local
    distributed job): the physical cores split between them, at least one each. Empty when the user set
    ``OMP_NUM_THREADS``: theirs passes through unchanged."""
    if USER_SET:
        return {}
    return {ENV: str(max(1, (physical_cores() or 1) // max(1, num_processes)))}
