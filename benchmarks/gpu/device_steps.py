#!/usr/bin/env python3
"""The steps that run on the rented GPU machine (standard library only; any Python 3.8+ there):

    python3 benchmarks/gpu/device_steps.py preflight .gpu_wheels/cu112/bundles/b00 # can this GPU run the build?
    python3 benchmarks/gpu/device_steps.py receive .gpu_wheels/cu112/bundles/b00   # once per bundle
    python3 benchmarks/gpu/device_steps.py status
    python3 benchmarks/gpu/device_steps.py install          # join parts, verify sha256, pip install --target
    python3 benchmarks/gpu/device_steps.py check -- [gpu_check.py flags]

``receive`` checks each piece of a carried bundle against the sha256 in its manifest and moves it out of the
working-tree copy into ``--store`` (default /tmp/gf_parts), which survives between commands while the machine
stays warm. ``install`` needs every bundle: it joins the parts of each big wheel in order, checks every wheel's
sha256, and runs ``pip install --no-index --no-deps --no-compile --target /tmp/gf_site`` on them (pip reaches
no index: everything comes from the files), adding a sitecustomize.py that runs the .pth files installed there
(setuptools' ``distutils`` shim, which MXNet needs on Python 3.12). ``check`` runs gpu_check.py with
``PYTHONPATH=/tmp/gf_site:<repo>``
(the carried numpy 1.26.4 wins over the machine's numpy 2) and ``LD_LIBRARY_PATH`` naming the CUDA 11
libraries of the ``nvidia-*-cu11`` wheels. dry_run.sh runs the same steps here with ``--copy`` and temporary
folders.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from glob import glob
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from wheelparts import MANIFEST, MIB, join_parts, load_manifest, pieces, sha256_file  # noqa: E402

DEFAULT_STORE, DEFAULT_WHEELS, DEFAULT_TARGET = Path("/tmp/gf_parts"), Path("/tmp/gf_wheels"), Path("/tmp/gf_site")
INSTALLED_MARK = ".gf_installed.json"
#: Written into the target folder. A folder on PYTHONPATH is not a site directory, so Python does not run the
#: .pth files installed there, among them setuptools' distutils-precedence.pth, which provides ``distutils`` on
#: Python 3.12 (removed from the standard library; MXNet 1.9.1 imports it). This runs them, then any
#: sitecustomize of the machine's own that this one shadows.
SITECUSTOMIZE = '''"""Make this pip --target folder act as a site directory (by benchmarks/gpu/device_steps.py)."""
import importlib.util as _util
import os as _os
import site as _site
import sys as _sys

_here = _os.path.dirname(_os.path.abspath(__file__))
_site.addsitedir(_here)  # runs the .pth files here (setuptools' distutils shim)
for _entry in list(_sys.path):
    _other = _os.path.join(_os.path.abspath(_entry or "."), "sitecustomize.py")
    if _os.path.dirname(_other) != _here and _os.path.isfile(_other):
        _spec = _util.spec_from_file_location("_shadowed_sitecustomize", _other)
        _spec.loader.exec_module(_util.module_from_spec(_spec))
        break
'''


def _ranges(names: List[str]) -> str:
    """``b03, b04, b05, b09`` -> ``b03-b05, b09``."""
    numbers = sorted(int(n[1:]) for n in names)
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(f"b{start:02d}" if start == n else f"b{start:02d}-b{n:02d}")
            start = None
    return ", ".join(out)


def missing_bundles(manifest: Dict, store: Path) -> List[str]:
    """Bundles with a piece absent from ``store`` (or of the wrong size)."""
    missing = set()
    for piece in pieces(manifest):
        path = store / piece["file"]
        if not path.is_file() or path.stat().st_size != piece["size"]:
            missing.add(piece["bundle"])
    return sorted(missing)


def receive(bundle: Path, store: Path, copy: bool) -> int:
    """Verify the pieces of one carried bundle and move (``copy``: copy) them into ``store``."""
    started = time.time()
    manifest = load_manifest(bundle / MANIFEST)
    name = bundle.name
    entry = next((b for b in manifest["bundles"] if b["name"] == name), None)
    if entry is None:
        print(f"error: {bundle}: its manifest lists no bundle {name!r}", file=sys.stderr)
        return 2
    store.mkdir(parents=True, exist_ok=True)
    stored = store / MANIFEST
    if stored.is_file() and json.loads(stored.read_text()).get("created") != manifest.get("created"):
        print(f"note: {store} held pieces of another wheel set ({json.loads(stored.read_text()).get('created')}); "
              f"starting over", flush=True)
        shutil.rmtree(store)
        store.mkdir(parents=True)
    stored.write_text(json.dumps(manifest, indent=1) + "\n")
    expected = {p["file"]: p for p in pieces(manifest) if p["bundle"] == name}
    size = 0
    for file_name, piece in sorted(expected.items()):
        src = bundle / file_name
        if not src.is_file():
            print(f"error: bundle {name}: {file_name} did not arrive (was {bundle} carried whole?)", file=sys.stderr)
            return 3
        digest = sha256_file(src)
        if digest != piece["sha256"]:
            print(f"error: bundle {name}: {file_name} sha256 {digest[:12]}... != {piece['sha256'][:12]}...: "
                  f"send this bundle again", file=sys.stderr)
            return 3
        (shutil.copy2 if copy else shutil.move)(str(src), str(store / file_name))
        size += piece["size"]
    missing = missing_bundles(manifest, store)
    total = len(manifest["bundles"])
    print(f"bundle {name}: {len(expected)} piece(s), {size / MIB:.1f} MiB, sha256 ok ({time.time() - started:.1f} s); "
          f"{store} holds {total - len(missing)}/{total} bundles"
          + (f"; missing {_ranges(missing)}" if missing else "; complete: run install"), flush=True)
    return 0


def status(store: Path) -> int:
    """Print which bundles are in ``store``; exit 0 only when all are."""
    if not (store / MANIFEST).is_file():
        print(f"{store}: empty (no bundle received yet; a cold machine starts bare)")
        return 2
    manifest = load_manifest(store / MANIFEST)
    missing = missing_bundles(manifest, store)
    total = len(manifest["bundles"])
    print(f"{store}: {manifest['variant']} set of {manifest['created']}: {total - len(missing)}/{total} bundles"
          + (f"; missing {_ranges(missing)}" if missing else "; complete"))
    return 0 if not missing else 2


def install(store: Path, wheels: Path, target: Path, force: bool) -> int:
    """Join and verify every wheel from ``store`` into ``wheels``, then pip-install them into ``target``."""
    manifest = load_manifest(store / MANIFEST)
    mark = target / INSTALLED_MARK
    if not force and mark.is_file() and json.loads(mark.read_text()).get("created") == manifest["created"]:
        print(f"{target}: this wheel set is already installed (install --force to redo it)")
        return 0
    missing = missing_bundles(manifest, store)
    if missing:
        print(f"error: bundles {_ranges(missing)} have not been received (receive each first); nothing installed",
              file=sys.stderr)
        return 2
    t0 = time.time()
    wheels.mkdir(parents=True, exist_ok=True)
    paths = []
    for wheel in manifest["wheels"]:
        out = wheels / wheel["file"]
        sources = [store / p["file"] for p in wheel["pieces"]]
        if len(sources) == 1:
            shutil.copy2(sources[0], out)
        else:
            join_parts(sources, out)
        digest = sha256_file(out)
        if digest != wheel["sha256"]:
            print(f"error: {wheel['file']}: sha256 after joining {digest[:12]}... != {wheel['sha256'][:12]}...",
                  file=sys.stderr)
            return 3
        paths.append(str(out))
    t1 = time.time()
    total = sum(w["size"] for w in manifest["wheels"])
    print(f"joined and verified {len(paths)} wheels, {total / MIB:.1f} MiB, in {t1 - t0:.1f} s", flush=True)
    if target.exists():
        shutil.rmtree(target)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--no-deps",
           "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target)] + paths
    print(f"$ {' '.join(cmd[:12])} <{len(paths)} wheels>", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
        print(f"error: pip install failed (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    (target / "sitecustomize.py").write_text(SITECUSTOMIZE)
    t2 = time.time()
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    mark.write_text(json.dumps({"created": manifest["created"], "variant": manifest["variant"],
                                "join_s": round(t1 - t0, 1), "pip_s": round(t2 - t1, 1)}) + "\n")
    print(f"installed into {target} ({size / MIB:.0f} MiB) in {t2 - t1:.1f} s (pip); join + verify + install "
          f"{t2 - t0:.1f} s", flush=True)
    return 0


def preflight(bundle: Path) -> int:
    """Before anything is sent: does this machine's GPU run the MXNet build of the wheel set? (compute
    capability from the CUDA driver against the build's SASS/PTX recorded in the manifest)."""
    from gpu_check import cuda_devices
    from inspect_wheel import runs_on

    manifest = load_manifest(bundle / MANIFEST)
    build = manifest.get("mxnet_build")
    devices, error = cuda_devices()
    print(f"python {sys.version.split()[0]} at {sys.executable}; GPUs: "
          + (", ".join(f"{d['name']} sm_{d['cc']} {d['memory'] / 2**30:.0f} GiB" for d in devices) or error or "none"))
    if not devices:
        print("error: the CUDA driver reports no GPU", file=sys.stderr)
        return 4
    if not build:
        print(f"{manifest['variant']} set: no CUDA build recorded; nothing to check")
        return 0
    bad = [(d, runs_on(d["cc"], build["sass"], build["ptx"])[1]) for d in devices
           if not runs_on(d["cc"], build["sass"], build["ptx"])[0]]
    for device, why in bad:
        print(f"error: {build['wheel']} cannot run on GPU {device['index']} ({device['name']}): {why}", file=sys.stderr)
    if not bad:
        print(f"{build['wheel']} runs here: " + "; ".join(runs_on(d["cc"], build["sass"], build["ptx"])[1]
                                                         for d in devices))
    return 5 if bad else 0


def check_env(target: Path) -> Dict[str, str]:
    """The environment gpu_check.py runs in: the target folder and the repository first on PYTHONPATH, the CUDA
    11 library folders of the nvidia-*-cu11 wheels first on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    before = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)] + before)
    libs = sorted(glob(str(target / "nvidia" / "*" / "lib")))
    if libs:
        before = [env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + before)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch the sub-commands."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("receive", help="verify one carried bundle and move it into the store")
    p.add_argument("bundle", type=Path)
    p.add_argument("--copy", action="store_true", help="copy instead of move (the dry run)")
    sub.add_parser("status", help="which bundles the store holds")
    p = sub.add_parser("preflight", help="can this GPU run the MXNet build of the bundle's wheel set?")
    p.add_argument("bundle", type=Path)
    p = sub.add_parser("install", help="join, verify and pip-install the whole set")
    p.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="(default: %(default)s)")
    p.add_argument("--force", action="store_true", help="install again even if this set is installed")
    p = sub.add_parser("env", help="print the shell exports gpu_check.py runs with")
    p = sub.add_parser("check", help="run gpu_check.py with the installed set (flags after --)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    for action in sub.choices.values():
        action.add_argument("--store", type=Path, default=DEFAULT_STORE, help="(default: %(default)s)")
        action.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.step == "receive":
        return receive(args.bundle, args.store, args.copy)
    if args.step == "status":
        return status(args.store)
    if args.step == "preflight":
        return preflight(args.bundle)
    if args.step == "install":
        return install(args.store, args.wheels, args.target, args.force)
    env = check_env(args.target)
    if args.step == "env":
        for key in ("PYTHONPATH", "LD_LIBRARY_PATH"):
            if key in env:
                print(f"export {key}={env[key]}")
        return 0
    if not (args.target / INSTALLED_MARK).is_file():
        print(f"error: nothing installed in {args.target}: run install first", file=sys.stderr)
        return 2
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    cmd = [sys.executable, str(HERE / "gpu_check.py")] + extra
    print("$ PYTHONPATH=%s LD_LIBRARY_PATH=%s %s" % (env["PYTHONPATH"], env.get("LD_LIBRARY_PATH", ""),
                                                      " ".join(cmd)), flush=True)
    return subprocess.run(cmd, env=env, cwd=str(REPO)).returncode


if __name__ == "__main__":
    sys.exit(main())
