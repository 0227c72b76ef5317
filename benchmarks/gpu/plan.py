#!/usr/bin/env python
"""Print the sequence of device commands that brings a wheel set (fetch_wheels.py) onto a rented GPU machine
with no package index and runs the GPU check there, and estimate whether it fits the lease.

    python benchmarks/gpu/plan.py                   # the cu112 set under .gpu_wheels/cu112
    python benchmarks/gpu/plan.py --variant cpu     # the set dry_run.sh uses
    python benchmarks/gpu/plan.py --per-call-s 15 --json plan.json

The machine's rules this plans for: each command carries the working tree (tracked files and untracked ones
git does not ignore) plus the ignored paths it names, ``--limit-mib`` (64 MiB) in all; files written on the
machine survive only while it stays warm, ``--warm-s`` (30 s) between the end of one command and the start of
the next; all commands together, the start, transfers and idle time included, get ``--lease-s`` (15 min).
So: one bundle per command (call 1 first asks the GPU whether it can run the build at all), the pieces moved
to /tmp/gf_parts as they arrive and checked against their sha256, then one command to join, verify and
``pip install --no-index --no-deps --target /tmp/gf_site``, and one for the check itself. Issue each command
as soon as the previous one returns; after a pause longer than the warm window the machine comes back bare
(``device_steps.py status`` says what is still there) and the bundles must be sent again.

The estimate is arithmetic on stated assumptions (time per command for transfer and turnaround, start-up,
install rate, the check's own budget), not a measurement on the device.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from wheelparts import MIB, load_manifest  # noqa: E402

DEVICE_PY = "python3"  # the rented machine's interpreter (Python 3.12 with PyTorch and numpy 2)


def working_tree_bytes() -> int:
    """Bytes of what every device command carries anyway: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=str(REPO),
                         capture_output=True, check=True).stdout
    total = 0
    for name in out.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def build_plan(manifest: Dict, rel_bundles: str, tree: int, summary_path: str) -> List[Dict]:
    """The device commands in order: ``{"n", "carry", "carry_bytes", "command", "timeout_s", "what"}``."""
    steps = []
    bundles = manifest["bundles"]
    for index, bundle in enumerate(bundles):
        path = f"{rel_bundles}/{bundle['name']}"
        command = f"{DEVICE_PY} benchmarks/gpu/device_steps.py receive {path}"
        what = f"bundle {bundle['name']}: {len(bundle['files'])} file(s), {bundle['size'] / MIB:.1f} MiB"
        if index == 0:
            command = (f"nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv; "
                       f"{DEVICE_PY} benchmarks/gpu/device_steps.py preflight {path} && {command}")
            what += "; first asks the GPU whether it can run this MXNet build (stop the plan if not)"
        steps.append({"carry": [path], "carry_bytes": tree + bundle["size"] + 64 * 1024, "command": command,
                      "timeout_s": 120, "what": what})
    steps.append({"carry": [], "carry_bytes": tree,
                  "command": f"{DEVICE_PY} benchmarks/gpu/device_steps.py install",
                  "timeout_s": 600, "what": "join the parts, verify every sha256, pip install --no-index --target"})
    steps.append({"carry": [], "carry_bytes": tree,
                  "command": (f"{DEVICE_PY} benchmarks/gpu/device_steps.py check -- --summary-json "
                              f"{summary_path}; cp benchmarks/_work/gpu_check/summary.txt $OUT/ 2>/dev/null"),
                  "timeout_s": 600, "what": "gpu_check.py with PYTHONPATH=/tmp/gf_site:<repo> (+ LD_LIBRARY_PATH)"})
    for n, step in enumerate(steps, 1):
        step["n"] = n
    return steps


def estimate(manifest: Dict, steps: List[Dict], per_call_s: float, start_s: float, install_mib_s: float,
             check_s: float) -> Dict[str, float]:
    """Seconds of lease for the plan under the stated assumptions (send calls at ``per_call_s`` each)."""
    total_mib = sum(w["size"] for w in manifest["wheels"]) / MIB
    sends = len(steps) - 2
    install_s = total_mib / install_mib_s + per_call_s
    return {"sends": sends, "send_s": sends * per_call_s, "start_s": start_s, "install_s": install_s,
            "check_s": check_s, "total_s": start_s + sends * per_call_s + install_s + check_s + per_call_s}


def main(argv: Optional[List[str]] = None) -> int:
    """Print the plan and the estimate; exit 1 when a command would carry more than the limit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="cu112", help="wheel set under --wheels (default: %(default)s)")
    parser.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="carried per command (default: %(default)s)")
    parser.add_argument("--warm-s", type=float, default=30.0, help="warm window (default: %(default)s)")
    parser.add_argument("--lease-s", type=float, default=900.0, help="device time in all (default: %(default)s)")
    parser.add_argument("--start-s", type=float, default=90.0,
                        help="assumed machine start, paid once (\"a minute or more\") (default: %(default)s)")
    parser.add_argument("--per-call-s", type=float, default=20.0,
                        help="assumed seconds per command: transfer, run, reply and the next call's issue "
                             "(default: %(default)s)")
    parser.add_argument("--install-mib-s", type=float, default=None,
                        help="join + verify + pip install rate, MiB/s (default: the dry run's measurement in "
                             ".gpu_wheels/cpu/dry_run_timing.json, else 25)")
    parser.add_argument("--check-s", type=float, default=480.0, help="gpu_check.py's budget (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON here")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.wheels / args.variant)
    rel = args.wheels.resolve() / args.variant / "bundles"
    try:
        rel_bundles = str(rel.relative_to(REPO))
    except ValueError:
        raise SystemExit(f"error: {args.wheels} is outside the repository; carried paths must be inside it")
    tree = working_tree_bytes()
    steps = build_plan(manifest, rel_bundles, tree, "$OUT/gpu_check_summary.json")
    timing_file = args.wheels / "cpu" / "dry_run_timing.json"
    rate, rate_note = args.install_mib_s, "given"
    if rate is None and timing_file.is_file():
        timing = json.loads(timing_file.read_text())
        rate = timing["wheels_mib"] / max(timing["install_s"], 1e-3)
        rate_note = f"measured by dry_run.sh here: {timing['wheels_mib']:.0f} MiB in {timing['install_s']:.1f} s"
    if rate is None:
        rate, rate_note = 25.0, "assumed"
    total_mib = sum(w["size"] for w in manifest["wheels"]) / MIB
    build = manifest.get("mxnet_build")
    print(f"wheel set {manifest['variant']} ({manifest['created']}): {len(manifest['wheels'])} wheels, "
          f"{total_mib:.0f} MiB, {len(manifest['bundles'])} bundles; working tree {tree / MIB:.1f} MiB travels "
          f"with every command")
    if build:
        print(f"MXNet build {build['wheel']}: SASS {', '.join(f'sm_{s}' for s in build['sass'])}; "
              f"PTX {', '.join(f'sm_{s}' for s in build['ptx']) or 'none'}")
    over = [s for s in steps if s["carry_bytes"] > args.limit_mib * MIB]
    print()
    for step in steps:
        flag = "  OVER THE LIMIT" if step in over else ""
        print(f"call {step['n']:2d}  carry {step['carry'] or '[]'} ({step['carry_bytes'] / MIB:.1f} MiB{flag}), "
              f"timeout_s {step['timeout_s']}: {step['what']}")
        print(f"         {step['command']}")
    est = estimate(manifest, steps, args.per_call_s, args.start_s, rate, args.check_s)
    print(f"\nestimate ({args.per_call_s:.0f} s per send call assumed; start {args.start_s:.0f} s; install at "
          f"{rate:.0f} MiB/s, {rate_note}; check {args.check_s:.0f} s):")
    print(f"  {est['sends']} send calls {est['send_s']:.0f} s + start {est['start_s']:.0f} s + install "
          f"{est['install_s']:.0f} s + check {est['check_s']:.0f} s = {est['total_s']:.0f} s of {args.lease_s:.0f} s")
    for per_call in (10.0, 20.0, 30.0):
        alt = estimate(manifest, steps, per_call, args.start_s, rate, args.check_s)
        rerun = alt["total_s"] + args.check_s
        print(f"  at {per_call:.0f} s per call: {alt['total_s']:.0f} s; with one rerun of the check {rerun:.0f} s "
              f"-> {'fits' if rerun <= args.lease_s else 'does NOT fit'} in {args.lease_s:.0f} s")
    print(f"  every call must be issued within {args.warm_s:.0f} s of the previous one's end: {est['sends'] + 2} "
          f"calls in a row, no pause")
    if build and not any(runs_on_hopper(build)):
        print("  NOTE: this build has no SASS for sm_90 and no PTX: on an H100/H200 (sm_90) its kernels cannot run "
              "at all; call 1's preflight stops there (see benchmarks/gpu/README.md)")
    if args.json:
        args.json.write_text(json.dumps({"variant": manifest["variant"], "steps": steps, "estimate": est}, indent=1))
    if over:
        print(f"error: {len(over)} command(s) would carry more than {args.limit_mib:.0f} MiB: lower --part-mib in "
              f"fetch_wheels.py or shrink the working tree", file=sys.stderr)
        return 1
    return 0


def runs_on_hopper(build: Dict) -> List[bool]:
    """Whether the build's SASS/PTX can run on compute capability 9.0 (one flag, as a list for any())."""
    from inspect_wheel import runs_on

    return [runs_on(90, build["sass"], build["ptx"])[0]]


if __name__ == "__main__":
    sys.exit(main())
