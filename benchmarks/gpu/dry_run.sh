#!/usr/bin/env bash
# The rented-machine procedure (benchmarks/gpu/README.md), done here end to end with the CPU mxnet wheel in place
# of the CUDA one:
#   1. fetch_wheels.py --variant cpu: download the Python 3.12 wheel set, cut files over PART_MIB into parts,
#      pack the bundles (PART_MIB defaults to 20 here so that the mxnet and opencv wheels are split too);
#   2. plan.py: the device commands, each checked against the 64 MiB carried per command;
#   3. a stand-in for the machine's own site-packages with numpy 2 in it, last on PYTHONPATH as there;
#   4. device_steps.py receive, once per bundle, into a temporary store (sha256 of every piece);
#   5. device_steps.py install: join the parts, verify every wheel, pip install --no-index --no-deps --target
#      (timed: the install step's measurement plan.py uses);
#   6. device_steps.py check -- --cpu: gpu_check.py --cpu with PY312 and PYTHONPATH=<target>:<repo>:<numpy 2 site>.
# Everything temporary lives under one mktemp folder, removed at the end; the timings land in
# .gpu_wheels/cpu/dry_run_timing.json and the check's table in .gpu_wheels/cpu/dry_run_summary.txt.
#
#   bash benchmarks/gpu/dry_run.sh             # PY312=/path/to/python3.12 PART_MIB=20 to change either
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
PART_MIB=${PART_MIB:-20}
cd "$REPO"
if ! "$PY312" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    echo "error: PY312=$PY312 is not a Python 3.12 interpreter (the rented machine runs 3.12)" >&2
    exit 2
fi
TMP=$(mktemp -d /tmp/gf_dry_run.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }
T0=$(now)

echo "== 1. fetch_wheels.py --variant cpu --part-mib $PART_MIB"
T=$(now)
"$PY312" benchmarks/gpu/fetch_wheels.py --variant cpu --part-mib "$PART_MIB" | grep -v '^  sha256\|already downloaded'
FETCH_S=$(since "$T")

echo "== 2. plan.py --variant cpu"
"$PY312" benchmarks/gpu/plan.py --variant cpu | grep -v '^         '

echo "== 3. the machine's own numpy 2 (last on PYTHONPATH, as the machine's site-packages is)"
if "$PY312" -m pip install -q --disable-pip-version-check --target "$TMP/machine_site" "numpy>=2,<3" 2>/dev/null; then
    MACHINE_SITE="$TMP/machine_site"
    echo "numpy $(ls "$MACHINE_SITE" | grep -o '^numpy-[0-9.]*' | head -1) in $MACHINE_SITE"
else
    MACHINE_SITE=""
    echo "warning: could not install numpy 2 as a stand-in; checking without it"
fi

echo "== 4. receive every bundle"
T=$(now)
BUNDLES=$(ls -d .gpu_wheels/cpu/bundles/b* | sort)
for bundle in $BUNDLES; do
    "$PY312" benchmarks/gpu/device_steps.py receive "$bundle" --copy --store "$TMP/parts"
done
RECEIVE_S=$(since "$T")
"$PY312" benchmarks/gpu/device_steps.py status --store "$TMP/parts"

echo "== 5. install (join parts, verify sha256, pip install --no-index --no-deps --target)"
T=$(now)
"$PY312" benchmarks/gpu/device_steps.py install --store "$TMP/parts" --wheels "$TMP/wheels" --target "$TMP/site"
INSTALL_S=$(since "$T")
SITE_MIB=$(du -sm "$TMP/site" | cut -f1)

echo "== 6. gpu_check.py --cpu with PYTHONPATH=<target>:<repo>${MACHINE_SITE:+:<numpy 2 site>}"
T=$(now)
set +e
PYTHONPATH="$MACHINE_SITE" "$PY312" benchmarks/gpu/device_steps.py check --target "$TMP/site" -- \
    --cpu --work "$TMP/work" --summary-json "$TMP/summary.json"
CHECK_RC=$?
set -e
CHECK_S=$(since "$T")
cp "$TMP/work/summary.txt" .gpu_wheels/cpu/dry_run_summary.txt 2>/dev/null || true

"$PY312" - "$TMP" "$FETCH_S" "$RECEIVE_S" "$INSTALL_S" "$CHECK_S" "$SITE_MIB" "$CHECK_RC" "$(since "$T0")" <<'EOF'
import json, sys
from pathlib import Path
tmp, fetch_s, receive_s, install_s, check_s, site_mib, rc, total_s = sys.argv[1:]
manifest = json.loads(Path(".gpu_wheels/cpu/manifest.json").read_text())
mark = json.loads((Path(tmp) / "site" / ".gf_installed.json").read_text())
wheels_mib = sum(w["size"] for w in manifest["wheels"]) / 2**20
timing = {"wheels": len(manifest["wheels"]), "wheels_mib": round(wheels_mib, 1), "bundles": len(manifest["bundles"]),
          "parts": sum(len(w["pieces"]) for w in manifest["wheels"] if len(w["pieces"]) > 1),
          "part_mib": manifest["part_bytes"] / 2**20, "fetch_s": float(fetch_s), "receive_s": float(receive_s),
          "install_s": float(install_s), "join_verify_s": mark["join_s"], "pip_s": mark["pip_s"],
          "installed_mib": int(site_mib), "check_s": float(check_s), "check_rc": int(rc), "total_s": float(total_s)}
Path(".gpu_wheels/cpu/dry_run_timing.json").write_text(json.dumps(timing, indent=1) + "\n")
print("\n== dry run: " + ", ".join(f"{k} {v}" for k, v in timing.items()))
EOF
if [ "$CHECK_RC" -ne 0 ]; then
    echo "error: gpu_check.py --cpu failed (exit $CHECK_RC); see its table above" >&2
    exit "$CHECK_RC"
fi
echo "dry run passed"
