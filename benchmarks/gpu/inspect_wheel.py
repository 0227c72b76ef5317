#!/usr/bin/env python
"""Which GPU generations can an MXNet build run on? Lists the CUDA machine code (SASS, per ``sm_XY``) and PTX
that ``libmxnet.so`` carries, and the shared libraries it needs.

    python benchmarks/gpu/inspect_wheel.py .gpu_wheels/cu112/wheels/mxnet_cu112-1.9.1-*.whl
    python benchmarks/gpu/inspect_wheel.py /path/to/site-packages/mxnet/libmxnet.so --cc 90

Two independent readings: ``cuobjdump --list-elf/--list-ptx`` where a cuobjdump is found (PATH,
/usr/local/cuda*/bin, or the ``nvidia-cuda-cuobjdump`` wheel's nvidia/cu*/bin), and this script's own
reader of the ``.nv_fatbin`` ELF section (standard library only: it walks the fat-binary headers, each
entry tagged PTX or ELF with its ``sm`` number). A wheel is unpacked to a temporary folder (libmxnet.so only)
that is deleted afterwards.

The rule applied (NVIDIA's compatibility guides, e.g. the Ada and Hopper ones): SASS built for X.y runs on a
GPU of compute capability X.z with z >= y only; PTX for X.y is compiled by the driver for any GPU >= X.y.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from glob import glob
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2


def _sections(handle) -> Dict[str, Tuple[int, int, int]]:
    """``{name: (file offset, size, sh_link)}`` of a 64-bit little-endian ELF file's sections."""
    handle.seek(0)
    header = handle.read(64)
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", header, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
    handle.seek(shoff)
    table = handle.read(shentsize * shnum)
    raw = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
    names_off, names_size = raw[shstrndx][4], raw[shstrndx][5]
    handle.seek(names_off)
    names = handle.read(names_size)
    out = {}
    for entry in raw:
        end = names.index(b"\0", entry[0])
        out[names[entry[0]:end].decode("ascii", "replace")] = (entry[4], entry[5], entry[6])
    return out


def needed_libraries(lib: Path) -> List[str]:
    """The DT_NEEDED entries (sonames the dynamic loader must find) of a shared library."""
    with open(lib, "rb") as handle:
        sections = _sections(handle)
        if ".dynamic" not in sections or ".dynstr" not in sections:
            return []
        off, size, _ = sections[".dynamic"]
        handle.seek(off)
        dynamic = handle.read(size)
        str_off, str_size, _ = sections[".dynstr"]
        handle.seek(str_off)
        strings = handle.read(str_size)
    needed = []
    for i in range(0, len(dynamic) - 15, 16):
        tag, value = struct.unpack_from("<qQ", dynamic, i)
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            needed.append(strings[value:strings.index(b"\0", value)].decode())
    return needed


def _fatbin_entries(handle, start: int, size: int) -> Iterator[Tuple[int, int, int]]:
    """(fat binary number, kind, sm) of every entry of every fat binary in the section at ``start`` (streamed:
    the section of a CUDA build of MXNet is about 530 MB)."""
    pos, end, number = start, start + size, -1
    while pos + 16 <= end:
        handle.seek(pos)
        magic, _version, header_size, fat_size = struct.unpack("<IHHQ", handle.read(16))
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned, with padding between them
            continue
        number += 1
        entry, fat_end = pos + header_size, pos + header_size + fat_size
        while entry + 32 <= fat_end:
            handle.seek(entry)
            raw = handle.read(32)
            kind, _unknown, entry_header, payload = struct.unpack_from("<HHIQ", raw, 0)
            sm, = struct.unpack_from("<I", raw, 28)
            yield number, kind, sm
            if entry_header == 0:
                break
            entry += entry_header + payload
        pos = fat_end


def fatbin_summary(lib: Path) -> Dict[str, object]:
    """``{"fatbins", "sass": [sm...], "ptx": [sm...], "entries": {"ELF sm_80": n...}}`` read from the
    ``.nv_fatbin`` section (empty lists for a CPU build, which has none)."""
    with open(lib, "rb") as handle:
        sections = _sections(handle)
        if ".nv_fatbin" not in sections:
            return {"fatbins": 0, "sass": [], "ptx": [], "entries": {}}
        off, size, _ = sections[".nv_fatbin"]
        counts: Dict[str, int] = {}
        sass, ptx, fatbins = set(), set(), set()
        for number, kind, sm in _fatbin_entries(handle, off, size):
            fatbins.add(number)
            label = {KIND_PTX: "PTX", KIND_ELF: "ELF"}.get(kind, f"kind{kind}")
            counts[f"{label} sm_{sm}"] = counts.get(f"{label} sm_{sm}", 0) + 1
            (ptx if kind == KIND_PTX else sass if kind == KIND_ELF else set()).add(sm)
    return {"fatbins": len(fatbins), "sass": sorted(sass), "ptx": sorted(ptx), "entries": counts}


def find_cuobjdump() -> Optional[str]:
    """A cuobjdump executable: PATH, /usr/local/cuda*/bin, or an ``nvidia-cuda-cuobjdump`` wheel on sys.path."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    candidates = sorted(glob("/usr/local/cuda*/bin/cuobjdump"))
    for entry in sys.path:
        candidates += sorted(glob(os.path.join(entry, "nvidia", "cu*", "bin", "cuobjdump")))
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def cuobjdump_summary(lib: Path, tool: str) -> Dict[str, object]:
    """SASS and PTX architectures as ``cuobjdump --list-elf`` / ``--list-ptx`` list them."""
    elf = subprocess.run([tool, "--list-elf", str(lib)], capture_output=True, text=True)
    ptx = subprocess.run([tool, "--list-ptx", str(lib)], capture_output=True, text=True)
    sass_counts: Dict[int, int] = {}
    for sm in re.findall(r"\.sm_(\d+)\.cubin", elf.stdout):
        sass_counts[int(sm)] = sass_counts.get(int(sm), 0) + 1
    ptx_archs = sorted({int(sm) for sm in re.findall(r"\.sm_(\d+)\.ptx", ptx.stdout)})
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return {"tool": tool, "version": version[-1] if version else "", "sass": sorted(sass_counts),
            "sass_files": sum(sass_counts.values()), "ptx": ptx_archs,
            "ptx_note": (ptx.stdout + ptx.stderr).strip().splitlines()[0] if not ptx_archs and
            (ptx.stdout + ptx.stderr).strip() else ""}


def runs_on(cc: int, sass: List[int], ptx: List[int]) -> Tuple[bool, str]:
    """Whether code with these SASS/PTX architectures runs on a GPU of compute capability ``cc`` (e.g. 90),
    and how (SASS of the same major version and a minor version <= the GPU's, else PTX <= cc via the driver's
    JIT)."""
    same_major = [sm for sm in sass if sm // 10 == cc // 10 and sm <= cc]
    if same_major:
        return True, f"SASS sm_{max(same_major)} runs on sm_{cc}"
    jit = [sm for sm in ptx if sm <= cc]
    if jit:
        return True, f"no SASS for sm_{cc // 10}x; the driver JIT-compiles PTX sm_{max(jit)} at start-up"
    return False, (f"no SASS for sm_{cc // 10}x (has {', '.join(f'sm_{s}' for s in sass) or 'none'}) and no PTX "
                   f"<= sm_{cc}: kernels fail with 'no kernel image is available for execution on the device'")


def libmxnet_from(path: Path, scratch: Path) -> Path:
    """libmxnet.so from a wheel (extracted into ``scratch``), an mxnet package folder, or the file itself."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            names = [n for n in wheel.namelist() if n.endswith("/libmxnet.so")]
            if not names:
                raise SystemExit(f"error: {path} holds no libmxnet.so")
            print(f"unpacking {names[0]} from {path.name} ...", file=sys.stderr, flush=True)
            return Path(wheel.extract(names[0], scratch))
    if path.is_dir():
        path = path / "libmxnet.so"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file")
    return path


def inspect(path: Path, cc: Optional[int] = None) -> Dict[str, object]:
    """The full report for one wheel / library: fat-binary reading, cuobjdump reading (when available),
    needed libraries, and, with ``cc``, whether it runs on that compute capability."""
    scratch = Path(tempfile.mkdtemp(prefix="gf_inspect_"))
    try:
        lib = libmxnet_from(path, scratch)
        report: Dict[str, object] = {"input": str(path), "library": lib.name, "library_bytes": lib.stat().st_size}
        report["fatbin"] = fatbin_summary(lib)
        tool = find_cuobjdump()
        report["cuobjdump"] = cuobjdump_summary(lib, tool) if tool else None
        report["needed"] = needed_libraries(lib)
        if cc:
            ok, why = runs_on(cc, report["fatbin"]["sass"], report["fatbin"]["ptx"])
            report["runs_on"] = {"cc": cc, "ok": ok, "why": why}
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def print_report(report: Dict[str, object]) -> None:
    """Human-readable lines for one report."""
    fat = report["fatbin"]
    print(f"{report['input']}: {report['library']} {report['library_bytes'] / 2**20:.0f} MiB")
    if not fat["entries"]:
        print("  .nv_fatbin: none (a CPU build)")
    else:
        print(f"  .nv_fatbin (own reader): {fat['fatbins']} fat binaries; SASS "
              f"{', '.join(f'sm_{s}' for s in fat['sass'])}; PTX {', '.join(f'sm_{s}' for s in fat['ptx']) or 'none'}")
        print("    entries: " + ", ".join(f"{k} x{v}" for k, v in sorted(fat["entries"].items())))
    dump = report.get("cuobjdump")
    if dump:
        print(f"  cuobjdump ({dump['version']}): {dump['sass_files']} cubins, SASS "
              f"{', '.join(f'sm_{s}' for s in dump['sass'])}; PTX {', '.join(f'sm_{s}' for s in dump['ptx']) or 'none'}"
              + (f" ({dump['ptx_note']})" if dump["ptx_note"] else ""))
    else:
        print("  cuobjdump: not found (pip install --target DIR nvidia-cuda-cuobjdump gives one)")
    cuda = [n for n in report["needed"] if re.match(r"lib(cu|nccl|nvrtc|nvToolsExt)", n)]
    print(f"  needs (CUDA libraries, not in the wheel): {', '.join(cuda) or 'none'}")
    for cc in (70, 75, 80, 86, 89, 90):
        ok, why = runs_on(cc, fat["sass"], fat["ptx"])
        if fat["entries"]:
            print(f"    sm_{cc}: {'yes' if ok else 'NO '} - {why}")


def main(argv: Optional[List[str]] = None) -> int:
    """Inspect each path given; exit 1 when ``--cc`` is given and some build cannot run there."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="MXNet wheels, libmxnet.so files or mxnet folders")
    parser.add_argument("--cc", type=int, help="compute capability to judge, e.g. 90 for H100/H200")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON here")
    args = parser.parse_args(argv)
    reports, status = [], 0
    for path in args.paths:
        report = inspect(path, args.cc)
        print_report(report)
        if args.cc and not report["runs_on"]["ok"]:
            print(f"  => cannot run on sm_{args.cc}: {report['runs_on']['why']}")
            status = 1
        reports.append(report)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
