#!/usr/bin/env python
"""Benchmark the iMaterialist -> COCO converter at real scale against pandas reading the same CSV.

    python benchmarks/bench_convert.py                 # full scale: 45,625 photos, 333,415 rows (1.3 GB CSV)
    python benchmarks/bench_convert.py --images 2000   # quick run
    python benchmarks/bench_convert.py --verify_images # the converter with --verify_images (a decode per photo)

The synthetic dataset (benchmarks/synth_train_csv.py) is cached under benchmarks/_work/ and reused. The page
cache is warmed by one plain read of the CSV, then, in fresh processes, pandas.read_csv of the whole file is
timed, then the converter CLI end to end (interpreter start-up included). Memory of the converter is the
peak over time of the summed RSS, and of the summed PSS (shared pages split fairly between the forked
workers), of the converter and all its worker processes, sampled every 0.1 s from /proc. CPU seconds of
both are printed too: the machine is shared, and wall-clock ratios move with what else is running.
Targets: converter time <= 3x pandas time, peak memory <= 3 GB.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth_train_csv  # noqa: E402

ROOT = HERE.parent
TOOL = ROOT / "tools" / "convert_imaterialist_to_coco.py"
TIME_TARGET = 3.0
MEMORY_TARGET_GB = 3.0


def descendants(pid: int) -> List[int]:
    """pid and every process below it, from the parent ids in /proc/*/stat."""
    parent_of: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent_of[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parent_of.items() if parent in frontier]
        found += frontier
    return found


def memory_kb(pid: int, field: str) -> int:
    """A field (Rss, Pss) of /proc/<pid>/smaps_rollup in kB; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process tree until stopped; keeps the peaks (bytes)."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = descendants(self.pid)
            self.peak_rss = max(self.peak_rss, 1024 * sum(memory_kb(p, "Rss") for p in pids))
            self.peak_pss = max(self.peak_pss, 1024 * sum(memory_kb(p, "Pss") for p in pids))
            self.done.wait(self.interval)


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes (and theirs, once reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_pandas(csv_path: Path) -> Dict:
    code = ("import sys, time, pandas as pd; t = time.perf_counter(); df = pd.read_csv(sys.argv[1]); "
            "print(time.perf_counter() - t, len(df))")
    cpu = children_cpu()
    out = subprocess.run([sys.executable, "-c", code, str(csv_path)], check=True, capture_output=True, text=True)
    seconds, _rows = out.stdout.split()
    return {"seconds": float(seconds), "cpu": children_cpu() - cpu}


def run_converter(data_root: Path, num_workers: int | None, verify_images: bool = False) -> Dict:
    for stale in (data_root / "annotations", data_root / "val"):
        shutil.rmtree(stale, ignore_errors=True)
    command = [sys.executable, str(TOOL), "--data_root", str(data_root)]
    if num_workers:
        command += ["--num_workers", str(num_workers)]
    if verify_images:
        command.append("--verify_images")
    cpu = children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen(command)
    sampler = TreeMemory(process.pid)
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if code:
        raise SystemExit(f"converter failed with exit code {code}")
    return {"seconds": seconds, "cpu": children_cpu() - cpu, "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss}


def machine() -> str:
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {total} RAM, {platform.platform()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=synth_train_csv.FULL_IMAGES)
    parser.add_argument("--rows", type=int, default=None, help="default: the real rows-per-image ratio")
    parser.add_argument("--num_workers", type=int, default=None, help="passed to the converter (default: CPUs)")
    parser.add_argument("--work_dir", type=Path, default=HERE / "_work")
    parser.add_argument("--verify_images", action="store_true",
                        help="pass --verify_images to the converter (decodes every photo; no target applies)")
    args = parser.parse_args(argv)
    rows = args.rows or round(args.images * synth_train_csv.FULL_ROWS / synth_train_csv.FULL_IMAGES)

    data_root = args.work_dir / f"imaterialist_{args.images}_{rows}"
    csv_path = data_root / "train.csv"
    if not csv_path.exists():
        shutil.rmtree(data_root, ignore_errors=True)  # a half-written earlier attempt
        print(f"synthesizing {rows} rows / {args.images} photos under {data_root} (once; cached)")
        partial = data_root.with_name(data_root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        synth_train_csv.synthesize(partial, args.images, rows)
        partial.rename(data_root)

    with open(csv_path, "rb") as handle:  # warm the page cache so neither contender pays for the disk
        while handle.read(64 << 20):
            pass
    loads = [os.getloadavg()[0]]
    pandas = time_pandas(csv_path)
    loads.append(os.getloadavg()[0])
    result = run_converter(data_root, args.num_workers, args.verify_images)
    loads.append(os.getloadavg()[0])
    ratio = result["seconds"] / pandas["seconds"]
    gb = 1e9
    print()
    print(f"machine            {machine()}")
    print(f"1-min load average {loads[0]:.2f} before pandas, {loads[1]:.2f} before the converter, {loads[2]:.2f} after "
          "(other work shares these CPUs)")
    print(f"dataset            {rows} rows, {args.images} photos, train.csv {csv_path.stat().st_size / gb:.2f} GB")
    print(f"pandas.read_csv    {pandas['seconds']:8.1f} s wall   {pandas['cpu']:7.1f} s CPU (interpreter included)")
    if args.verify_images:
        print("converter flags    --verify_images (every photo decoded at 1/8 scale)")
    print(f"converter (CLI)    {result['seconds']:8.1f} s wall   {result['cpu']:7.1f} s CPU (all processes)   "
          f"{rows / result['seconds']:,.0f} rows/s")
    print(f"ratio              {ratio:8.2f} x   (target <= {TIME_TARGET:.0f}x: {'met' if ratio <= TIME_TARGET else 'MISSED'})")
    print(f"peak memory        {result['peak_rss'] / gb:8.2f} GB summed RSS, {result['peak_pss'] / gb:.2f} GB summed PSS "
          f"(target <= {MEMORY_TARGET_GB:.0f} GB: {'met' if result['peak_rss'] <= MEMORY_TARGET_GB * gb else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
