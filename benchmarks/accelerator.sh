#!/usr/bin/env bash
# The accelerator benchmark, end to end, in one command:
#
#   bash benchmarks/accelerator.sh [--smoke] [OUT_DIR]
#
# Writes OUT_DIR/table.md (with latest.json and ratios.png next to it); OUT_DIR defaults
# to benchmarks/out/accelerator-<platform> (git-ignored). Nothing is published.
#
# On a GPU or TPU (JAX installed with its CUDA/TPU plugin; for the peers, `pip install -e
# ".[bench]"` with a CUDA build of torch==2.13.0): every case on the small and the large
# average-pool models, the peers on CUDA, the scaling sweeps; no case or sweep starts after
# 6 minutes (the rest are listed as skipped), so it ends in under 8 minutes.
# On CPU: the quick set on the small model (a few minutes), so CI keeps the script working.
# --smoke: one case, one timed round, no peers (seconds): checks the script itself.
#
# The backend is whatever JAX finds: set JAX_PLATFORMS yourself to choose one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
# JAX and torch share the accelerator: JAX allocates on demand instead of taking 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
platform=$("$PY" -c 'import jax; print(jax.default_backend())')
out="${1:-benchmarks/out/accelerator-$platform}"
if [ "$smoke" = 1 ]; then
  args=(--quick --only saliency --no-peers --repeats 1)
elif [ "$platform" = cpu ]; then
  args=(--quick)
else
  args=(--models small-avg large-avg --skip sample_efficiency --max-minutes 6)
fi
start=$(date +%s)
"$PY" -m benchmarks "${args[@]}" --out "$out"
echo "accelerator benchmark on $platform: $(( $(date +%s) - start )) s; table: $out/table.md"
