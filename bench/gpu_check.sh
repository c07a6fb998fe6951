#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one run, about 5 minutes on one H100-class GPU.
# Needs only Python with torch (CUDA) and numpy: the project runs from this checkout through
# PYTHONPATH, nothing is installed and nothing is downloaded.
#
#   bash bench/gpu_check.sh                 # writes $OUT/gpu_check.json (OUT default ./gpu_check_out)
#   bash bench/gpu_check.sh --dry-run       # the same code on the CPU at tiny shapes (seconds)
#
# Then, where the docs are built: python -m bench.gpu_report "$OUT/gpu_check.json"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$OUT"
export OUT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), "numpy", numpy.__version__)' | tee "$OUT/versions.txt"
# a hard limit, so a hung run still leaves its partial JSON (rewritten after every section)
timeout "${GPU_CHECK_TIMEOUT:-540}" "$PYTHON" -m bench.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
