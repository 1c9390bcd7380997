#!/usr/bin/env bash
# moonxp's CUDA checks in one go, on a GPU machine without network (see docs/gpu.md).
#
#   bench/gpu-check.sh RESULTS_DIR
#
# Runs: nvidia-smi; `moonxp info`; the CUDA-marked tests; `python -m moonxp --device cuda`
# end to end (float64 homework, then a float32 ensemble of 4096 networks); the quick
# benchmark on the GPU (CuPy, with PyTorch/JAX peers and the NumPy baseline in the same run).
# Log, outputs and JSON go to RESULTS_DIR; the benchmark table is printed last.
# Budget: about 5 minutes on an H100; each step has its own time limit.
set -u
out=${1:?usage: bench/gpu-check.sh RESULTS_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, remember failures
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
}

{
  step nvidia-smi 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  step info 120 "$py" -m moonxp info
  step cuda-tests 150 "$py" -m pytest -q -m cuda -p no:cacheprovider tests/
  step homework-cuda 90 "$py" -m moonxp --device cuda --out "$out/homework-cuda"
  step ensemble-cuda 90 "$py" -m moonxp --device cuda --dtype float32 --ensemble 4096 --out "$out/ensemble-cuda"
  step bench-cuda 240 "$py" -m moonxp bench --device cuda --quick --json "$out/bench-cuda.json"
} 2>&1 | tee "$out/gpu-check.log"
! grep -q "^=== .*: exit [1-9]" "$out/gpu-check.log"  # fails if any step failed
