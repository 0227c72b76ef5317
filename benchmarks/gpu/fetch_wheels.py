#!/usr/bin/env python
"""Download, here, every wheel the GPU check needs on a Python 3.12 Linux machine without a package index,
and cut them into bundles small enough for one device command each.

    python benchmarks/gpu/fetch_wheels.py                   # mxnet-cu112 + CUDA 11 runtime libraries
    python benchmarks/gpu/fetch_wheels.py --variant cu117   # mxnet-cu117 instead (also needs cuSPARSE)
    python benchmarks/gpu/fetch_wheels.py --variant cpu     # the CPU mxnet wheel (dry_run.sh uses this)

What is fetched: requirements.txt and requirements-dev.txt as they read for Python 3.12 (numpy 1.26.4,
pandas 2.2.3, setuptools...), with opencv-python swapped for opencv-python-headless of the same version (the
rented machine has no display libraries), plus the chosen MXNet build and every dependency pip resolves for
cp312 / manylinux x86_64 (``pip download --only-binary=:all: --python-version 3.12 --platform ...``).
The CUDA builds of MXNet 1.9.1 do not carry the CUDA libraries they link against (libcudart.so.11.0,
libcublas.so.11, libcudnn.so.8, libnccl.so.2...; see ``inspect_wheel.py``), so the cu1xx variants add
NVIDIA's CUDA 11 runtime wheels (``nvidia-*-cu11``): the rented machine's PyTorch brings CUDA 13 libraries,
whose sonames differ.

Output, under ``--out`` (default .gpu_wheels/, git-ignored) / VARIANT: ``wheels/`` (whole wheels),
``bundles/bNN/`` (what one device command carries: small wheels, or one numbered part of a wheel over
``--part-mib``), ``manifest.json`` and ``SHA256SUMS`` (see wheelparts.py). Running it again reuses the
downloads (pip skips files already there) and removes wheels that are no longer part of the set.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from wheelparts import MANIFEST, MIB, pack_bundles, sha256_file, split_file  # noqa: E402

#: NVIDIA's CUDA 11 runtime wheels providing the sonames libmxnet.so of mxnet-cu112/cu117 1.9.1 needs
#: (libcudart.so.11.0, libcublas.so.11 + libcublasLt.so.11, libcufft.so.10, libcurand.so.10, libcusolver.so.11,
#: libnvrtc.so.11.2, libnvToolsExt.so.1, libnccl.so.2, libcudnn.so.8). libcuda.so.1 is the driver's.
CUDA11_LIBS = ["nvidia-cuda-runtime-cu11==11.8.89", "nvidia-cublas-cu11==11.11.3.6", "nvidia-cufft-cu11==10.9.0.58",
               "nvidia-curand-cu11==10.3.0.86", "nvidia-cusolver-cu11==11.4.1.48",
               "nvidia-cuda-nvrtc-cu11==11.8.89", "nvidia-nvtx-cu11==11.8.86", "nvidia-nccl-cu11==2.21.5",
               "nvidia-cudnn-cu11==8.9.6.50"]
VARIANTS: Dict[str, List[str]] = {
    "cpu": ["mxnet==1.9.1"],
    "cu112": ["mxnet-cu112==1.9.1"] + CUDA11_LIBS,
    "cu117": ["mxnet-cu117==1.9.1", "nvidia-cusparse-cu11==11.7.5.86"] + CUDA11_LIBS,
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
#: (project as in the wheel file name, replacement pin): wheels pip resolves that we do not carry
EXCLUDED = {"opencv_python": "opencv-python-headless (no libGL on a headless machine)"}


def _marker_class():
    try:
        from packaging.markers import Marker
    except ImportError:  # a bare interpreter: pip's vendored copy
        from pip._vendor.packaging.markers import Marker
    return Marker


def requirement_pins(files: List[Path], python_version: str) -> List[str]:
    """The pins of requirements files whose environment markers hold on Linux x86_64 CPython
    ``python_version`` (evaluated here, not by pip, which would use the running interpreter's version)."""
    marker_class = _marker_class()
    env = {"python_version": python_version, "python_full_version": python_version + ".0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    pins = []
    for path in files:
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            requirement, _, marker = line.partition(";")
            if marker.strip() and not marker_class(marker.strip()).evaluate(env):
                continue
            requirement = requirement.strip()
            if re.match(r"opencv-python\s*==", requirement):
                requirement = requirement.replace("opencv-python", "opencv-python-headless", 1)
            pins.append(requirement)
    return pins


def project_of(wheel: str) -> str:
    """Normalised project name of a wheel file (``opencv_python_headless-4.8...`` -> ``opencv_python_headless``)."""
    return re.sub(r"[-_.]+", "_", wheel.split("-", 1)[0]).lower()


def pip_download(pins: List[str], dest: Path, python_version: str) -> List[str]:
    """Run pip download for ``pins`` and their dependencies into ``dest``; returns the wheel files of the set."""
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp", "--abi", "cp" + python_version.replace(".", ""), "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += pins
    print("$ " + " ".join(cmd[:12]) + " ... " + " ".join(pins), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    files, lines = set(), []
    for line in proc.stdout:
        lines.append(line.rstrip())
        match = re.search(r"(?:Saved|File was already downloaded) (\S+\.whl)", line)
        if match:
            files.add(Path(match.group(1)).name)
            print("  " + line.strip(), flush=True)
        elif "error" in line.lower() and "WARNING" not in line:
            print("  " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        print("\n".join(lines[-20:]))
        raise SystemExit(f"error: pip download failed (exit {proc.returncode}); see the lines above")
    return sorted(files)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk), copying where linking fails."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_bundles(variant_dir: Path, wheel_files: List[str], part_bytes: int, meta: Dict) -> Dict:
    """Split big wheels, pack every piece into bundles, write manifest.json and SHA256SUMS."""
    wheels_dir, bundles_dir = variant_dir / "wheels", variant_dir / "bundles"
    staging = variant_dir / "parts.tmp"
    for path in (bundles_dir, staging):
        shutil.rmtree(path, ignore_errors=True)
    wheels, items = [], []
    for name in wheel_files:
        path = wheels_dir / name
        size = path.stat().st_size
        print(f"  sha256 {name} ({size / MIB:.1f} MiB)", flush=True)
        entry = {"file": name, "size": size, "sha256": sha256_file(path), "pieces": []}
        if size > part_bytes:
            parts = split_file(path, part_bytes, staging)
            print(f"    split into {len(parts)} parts of <= {part_bytes / MIB:.0f} MiB", flush=True)
            entry["pieces"] = [dict(p, source="part") for p in parts]
        else:
            entry["pieces"] = [{"file": name, "size": size, "sha256": entry["sha256"], "source": "wheel"}]
        items += entry["pieces"]
        wheels.append(entry)
    bundles = pack_bundles(items, part_bytes)
    where = {item["file"]: bundle for bundle, content in bundles.items() for item in content}
    for entry in wheels:
        for piece in entry["pieces"]:
            piece["bundle"] = where[piece["file"]]
    manifest = dict(meta, part_bytes=part_bytes, wheels=wheels,
                    bundles=[{"name": b, "size": sum(i["size"] for i in c), "files": [i["file"] for i in c]}
                             for b, c in bundles.items()])
    text = json.dumps(manifest, indent=1) + "\n"
    for bundle, content in bundles.items():
        target = bundles_dir / bundle
        target.mkdir(parents=True)
        for item in content:
            if item["source"] == "part":
                os.replace(staging / item["file"], target / item["file"])
            else:
                link_or_copy(wheels_dir / item["file"], target / item["file"])
        (target / MANIFEST).write_text(text)
    shutil.rmtree(staging, ignore_errors=True)
    (variant_dir / MANIFEST).write_text(text)
    sums = [f"{w['sha256']}  wheels/{w['file']}" for w in wheels]
    sums += [f"{p['sha256']}  bundles/{p['bundle']}/{p['file']}" for w in wheels for p in w["pieces"]]
    (variant_dir / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    """Download the set for ``--variant``, bundle it and print its sizes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cu112",
                        help="MXNet build: cu112 / cu117 (CUDA, with NVIDIA's CUDA 11 libraries) or cpu "
                             "(the dry run) (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu_wheels", help="(default: .gpu_wheels/)")
    parser.add_argument("--part-mib", type=float, default=60.0,
                        help="largest piece and bundle, MiB: one device command carries one bundle plus the "
                             "working tree, 64 MiB in all (default: %(default)s)")
    parser.add_argument("--python-version", default="3.12", help="target interpreter (default: %(default)s)")
    parser.add_argument("--no-cuda-libs", action="store_true",
                        help="leave out NVIDIA's CUDA 11 library wheels (a machine that has CUDA 11.x installed)")
    args = parser.parse_args(argv)
    if args.part_mib <= 1:
        parser.error("--part-mib must be above 1")
    started = time.time()
    variant_dir = args.out / args.variant
    wheels_dir = variant_dir / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    pins = requirement_pins([REPO / "requirements.txt", REPO / "requirements-dev.txt"], args.python_version)
    extra = [p for p in VARIANTS[args.variant] if not (args.no_cuda_libs and p.startswith("nvidia-"))]
    print(f"variant {args.variant}: {len(pins)} pins from requirements*.txt for Python {args.python_version} + "
          f"{', '.join(extra)}", flush=True)
    files = pip_download(pins + extra, wheels_dir, args.python_version)
    kept = []
    for name in files:
        if project_of(name) in EXCLUDED:
            print(f"  leaving out {name}: replaced by {EXCLUDED[project_of(name)]}")
            (wheels_dir / name).unlink(missing_ok=True)
        else:
            kept.append(name)
    for stale in sorted(set(p.name for p in wheels_dir.iterdir()) - set(kept)):
        print(f"  removing {stale}: no longer part of the set")
        (wheels_dir / stale).unlink()
    projects: Dict[str, List[str]] = {}
    for name in kept:
        projects.setdefault(project_of(name), []).append(name)
    doubles = {k: v for k, v in projects.items() if len(v) > 1}
    if doubles:
        raise SystemExit(f"error: several versions of one project would be installed: {doubles}")
    numpy = [n for n in kept if project_of(n) == "numpy"]
    if not numpy or not numpy[0].startswith("numpy-1."):
        raise SystemExit(f"error: the set must hold numpy 1.x (MXNet 1.9.1 fails with numpy 2), got {numpy}")
    meta = {"variant": args.variant, "python_version": args.python_version, "pins": pins + extra,
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    mxnet_wheel = [n for n in kept if project_of(n).startswith("mxnet")]
    if mxnet_wheel and args.variant != "cpu":
        from inspect_wheel import inspect
        print(f"reading the GPU architectures of {mxnet_wheel[0]} ...", flush=True)
        report = inspect(wheels_dir / mxnet_wheel[0])
        meta["mxnet_build"] = {"wheel": mxnet_wheel[0], "sass": report["fatbin"]["sass"],
                               "ptx": report["fatbin"]["ptx"], "needed": report["needed"]}
        print(f"  SASS {report['fatbin']['sass']}, PTX {report['fatbin']['ptx'] or 'none'}; needs "
              f"{', '.join(n for n in report['needed'] if n.startswith(('libcu', 'libnccl', 'libnv')))}", flush=True)
    manifest = build_bundles(variant_dir, kept, int(args.part_mib * MIB), meta)
    total = sum(w["size"] for w in manifest["wheels"])
    big = [w for w in manifest["wheels"] if len(w["pieces"]) > 1]
    split = ", ".join("%s %.0f MiB" % (w["file"], w["size"] / MIB) for w in big) or "none"
    print(f"\n{len(manifest['wheels'])} wheels, {total / MIB:.1f} MiB in all; {len(big)} split ({split}); "
          f"{len(manifest['bundles'])} bundles of <= {args.part_mib:.0f} MiB under {variant_dir / 'bundles'}")
    largest = sorted(manifest["wheels"], key=lambda w: -w["size"])[:8]
    print("largest (MiB): " + ", ".join("%s %.0f" % (w["file"].split("-")[0], w["size"] / MIB) for w in largest))
    print(f"done in {time.time() - started:.0f} s; next: python benchmarks/gpu/plan.py --variant {args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
