#!/usr/bin/env bash
# moonxp's CUDA checks in one go, on a GPU machine without network (see docs/gpu.md).
#
#   bench/gpu-check.sh RESULTS_DIR             # on the GPU machine (the device command: bench/gpu-check.sh "$OUT")
#   bench/gpu-check.sh --cpu RESULTS_DIR       # the same steps on this CPU (smoke sizes): proves the script
#   bench/gpu-check.sh --dry-run RESULTS_DIR   # print the steps and their time limits only
#
# First installs the wheels carried in .whl/ (array-api-compat, array-api-strict; the
# machine has no network) into a temporary folder, and stops (one line) if array_api_compat
# still cannot be imported. Then, the most valuable figures first, each step with its own
# time limit: nvidia-smi; `moonxp info`; the homework end to end with its figures; a
# float32 ensemble of 4096 networks (its ensemble.png); the quick benchmark (CuPy, PyTorch
# and JAX on the card, the NumPy baseline on the host, one process per backend); last, the
# CUDA-marked tests, verbose, so a cut-off run still names each test it finished.
# RESULTS_DIR gets at most 8 files: gpu-check.log (everything), metrics.json, boundaries.png,
# curve.png (the homework), ensemble.png, bench.json and bench.txt (rewritten after every
# case, so a benchmark cut short by its limit keeps what it measured). A device command may
# run 600 s and return 8 files: the step limits add up to 420 s at most (checked below).
set -u -o pipefail
mode=gpu
case ${1:-} in --cpu|--dry-run) mode=${1#--}; shift ;; esac
[ $# -eq 1 ] || { echo "usage: bench/gpu-check.sh [--cpu|--dry-run] RESULTS_DIR" >&2; exit 2; }
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
work=$(mktemp -d) || exit 2  # the wheels' install and the ensemble's other outputs: not among the files that come back
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# step time limits (seconds)
t_wheels=20 t_smi=10 t_info=40 t_homework=30 t_ensemble=30 t_bench=170 t_tests=120
total=$((t_wheels + t_smi + t_info + t_homework + t_ensemble + t_bench + t_tests))
[ "$total" -le 420 ] || { echo "gpu-check: step limits add up to $total s, over the 420 s budget" >&2; exit 2; }

if [ "$mode" = cpu ]; then
  device=cpu sizes=(--sizes smoke) networks=64
else
  device=cuda sizes=(--quick) networks=4096
fi
per_test=()  # pytest-timeout (on the GPU image; optional elsewhere): one stuck test does not eat the step
"$py" -c "import pytest_timeout" 2> /dev/null && per_test=(--timeout 60)

step() {  # step NAME SECONDS COMMAND...: run it with a time limit and log its exit code and time
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit $limit s): $*"
  [ "$mode" = dry-run ] && return 0
  local start=$SECONDS code
  timeout -k 5 "$limit" "$@"
  code=$?
  echo "=== $name: exit $code after $((SECONDS - start)) s"
}

{
  echo "=== gpu-check ($mode mode), $(date -u +%FT%TZ), budget $total s"
  if compgen -G ".whl/*.whl" > /dev/null; then
    step wheels "$t_wheels" "$py" -m pip install -q --no-index --no-deps --target "$work/site" .whl/*.whl
    export PYTHONPATH="$work/site:$PYTHONPATH"
  else
    echo "=== wheels: no .whl/ here (carry it: see docs/gpu.md); using the installed packages"
  fi
  if [ "$mode" != dry-run ] && ! "$py" -c "import array_api_compat" 2> /dev/null; then
    echo "=== gpu-check: stopped: array_api_compat cannot be imported (carry .whl/ with its wheel: see docs/gpu.md)"
    exit 2
  fi
  if [ "$mode" = cpu ]; then
    echo "=== nvidia-smi: skipped (cpu mode)"
  else
    step nvidia-smi "$t_smi" nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  fi
  step info "$t_info" "$py" -m moonxp info
  step homework "$t_homework" "$py" -m moonxp --device "$device" --out "$out"
  step ensemble "$t_ensemble" "$py" -m moonxp --device "$device" --dtype float32 --ensemble "$networks" \
    --out "$work/ensemble"
  [ -s "$work/ensemble/ensemble.png" ] && cp "$work/ensemble/ensemble.png" "$out/ensemble.png"
  step bench "$t_bench" "$py" -m moonxp bench --device "$device" "${sizes[@]}" --json "$out/bench.json" \
    --table "$out/bench.txt"
  step cuda-tests "$t_tests" "$py" -m pytest -v -rfE --tb=line -p no:cacheprovider --continue-on-collection-errors \
    "${per_test[@]}" -m cuda tests/
  echo "=== done in $SECONDS s"
} 2>&1 | tee "$out/gpu-check.log"
status=$?
[ -s "$out/bench.txt" ] && { echo; echo "=== the benchmark table"; cat "$out/bench.txt"; }
[ "$status" -eq 0 ] || exit "$status"
! grep -q "^=== .*: exit [1-9]" "$out/gpu-check.log"  # fails if any step failed
