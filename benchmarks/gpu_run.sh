#!/usr/bin/env bash
# The command to give the device tool on a lent GPU (no network there):
#
#   prepare here, once per session (the image lacks pydantic; everything else is there):
#     .venv/bin/pip download "pydantic>=2" --python-version 3.12 --only-binary=:all: \
#         --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .device/wheels
#   then run with carry [".device/wheels"] and a timeout that leaves time for one rerun:
#     bash benchmarks/gpu_run.sh            (≤ 8 minutes; results under $OUT)
#
# It installs the carried wheels into the image's Python if pydantic is missing, then runs
# benchmarks/gpu_check.py (correctness on CUDA, the paired benchmark, the timm tests) and
# writes the evidence file for autoplan's CUDA rules. Copy $OUT's files into
# benchmarks/results/ and attndsl/codegen/evidence/ and commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  "$PY" -m pip install --no-index --find-links .device/wheels pydantic
fi
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv > "$OUT/nvidia-smi.csv" || true
PYTHONPATH=. "$PY" -m benchmarks.gpu_check --out "$OUT" --write-evidence --budget-s "${BUDGET_S:-480}" "$@" 2>&1 | tee "$OUT/gpu_check.log"
