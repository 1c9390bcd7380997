#!/usr/bin/env bash
# moonxp's CUDA checks in one go, on a GPU machine without network (see docs/gpu.md).
#
#   bench/gpu-check.sh RESULTS_DIR             # on the GPU machine (the device command: bench/gpu-check.sh "$OUT")
#   bench/gpu-check.sh --cpu RESULTS_DIR       # the same steps on this CPU (smoke sizes): proves the script
#   bench/gpu-check.sh --dry-run RESULTS_DIR   # print the steps and their time limits only
#
# First installs the wheels carried in .whl/ (array-api-compat, array-api-strict; the
# machine has no network) into a temporary folder. Then, each step with its own time
# limit: nvidia-smi; `moonxp info`; the CUDA-marked tests; `python -m moonxp --device cuda`
# end to end (the float64 homework, then a float32 ensemble of 4096 networks; --no-plot);
# the quick benchmark on the GPU (CuPy, with PyTorch/JAX peers and the NumPy baseline in
# the same run, one process per backend).
# RESULTS_DIR gets three files: gpu-check.log (everything), bench.json, bench.txt (the
# table, also printed last). A device command may run 600 s and return 8 files: the
# step limits add up to 420 s at most (checked below).
set -u
mode=gpu
case ${1:-} in --cpu|--dry-run) mode=${1#--}; shift ;; esac
[ $# -eq 1 ] || { echo "usage: bench/gpu-check.sh [--cpu|--dry-run] RESULTS_DIR" >&2; exit 2; }
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
work=$(mktemp -d) || exit 2  # CLI outputs and the wheels' install: not among the files that come back
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# step time limits (seconds)
t_wheels=20 t_smi=10 t_info=40 t_tests=120 t_homework=30 t_ensemble=30 t_bench=170
total=$((t_wheels + t_smi + t_info + t_tests + t_homework + t_ensemble + t_bench))
[ "$total" -le 420 ] || { echo "gpu-check: step limits add up to $total s, over the 420 s budget" >&2; exit 2; }

if [ "$mode" = cpu ]; then
  device=cpu sizes=(--sizes smoke) networks=64
else
  device=cuda sizes=(--quick) networks=4096
fi

step() {  # step NAME SECONDS COMMAND...: run it with a time limit and log its exit code
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit $limit s): $*"
  [ "$mode" = dry-run ] && return 0
  local start=$SECONDS
  timeout -k 5 "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - start)) s"
}

{
  echo "=== gpu-check ($mode mode), $(date -u +%FT%TZ), budget $total s"
  if compgen -G ".whl/*.whl" > /dev/null; then
    step wheels "$t_wheels" "$py" -m pip install -q --no-index --no-deps --target "$work/site" .whl/*.whl
    export PYTHONPATH="$work/site:$PYTHONPATH"
  else
    echo "=== wheels: no .whl/ here (carry it: see docs/gpu.md); using the installed packages"
  fi
  if [ "$mode" = cpu ]; then
    echo "=== nvidia-smi: skipped (cpu mode)"
  else
    step nvidia-smi "$t_smi" nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  fi
  step info "$t_info" "$py" -m moonxp info
  step cuda-tests "$t_tests" "$py" -m pytest -q -m cuda -p no:cacheprovider tests/
  step homework "$t_homework" "$py" -m moonxp --device "$device" --no-plot --out "$work/homework"
  step ensemble "$t_ensemble" "$py" -m moonxp --device "$device" --dtype float32 --ensemble "$networks" --no-plot \
    --out "$work/ensemble"
  step bench "$t_bench" bash -c '"$0" -m moonxp bench --device "$1" "${@:4}" --json "$2/bench.json" | tee "$3"' \
    "$py" "$device" "$out" "$work/bench.txt" "${sizes[@]}"
  [ -s "$work/bench.txt" ] && cp "$work/bench.txt" "$out/bench.txt"
  echo "=== done in $SECONDS s"
} 2>&1 | tee "$out/gpu-check.log"
[ -s "$out/bench.txt" ] && { echo; echo "=== the benchmark table"; cat "$out/bench.txt"; }
! grep -q "^=== .*: exit [1-9]" "$out/gpu-check.log"  # fails if any step failed
