#!/usr/bin/env bash
# GPU speed and memory benchmark (matrices/gpu_bench.yaml) in one command on a lent GPU machine (no network).
#
# Here, once (PyPI access, ../shared/data):
#   bash scripts/prepare_gpu_wheels.sh        # .whl/: the wheels the GPU machine lacks (~30 MiB)
#   bash scripts/gpu_bench.sh --prepare       # .gpu/data, .gpu/tokenizer; checks sizes; prints the plan
# On the GPU machine (the device tool's `run`, carry: [".whl", ".gpu"]):
#   bash scripts/gpu_bench.sh --part 1        # parts 1, 2, 3 each fit one 10-minute call (scripts/gpu/plan.py)
#   bash scripts/gpu_bench.sh [run_matrix.py arguments, e.g. --only 'llama-3.2-1b_full_*']
#
# On the machine it installs .whl/*.whl into /tmp/site (--no-index --no-deps), prints nvidia-smi and versions, runs
#   python3 run_matrix.py matrices/gpu_bench.yaml --data-dir .gpu/data --results .gpu/results/gpu_bench ...
# under a time budget (GPU_BENCH_BUDGET_S, default 530 s from the start of the script) so that it always ends in
# time to pack what it measured, then writes to $OUT (at most 5 files): gpu_bench-<tag>.log (everything printed),
# results-<tag>.tar.gz (results/gpu_bench/*.json + cell logs), report-<tag>.html, summary-<tag>.json, and prints
# a summary table last. Results carried in .gpu/results are skipped (done), so after extracting a returned tar
# into .gpu/ (tar xzf results-<tag>.tar.gz -C .gpu) the same command resumes where a call stopped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
MATRIX=${GPU_BENCH_MATRIX:-matrices/gpu_bench.yaml}
DATA_DIR=${GPU_BENCH_DATA_DIR:-.gpu/data}
RESULTS=${GPU_BENCH_RESULTS:-.gpu/results/gpu_bench}
WHL_DIR=${WHL_DIR:-.whl}
BUDGET_S=${GPU_BENCH_BUDGET_S:-530}
TREE_LIMIT_MIB=64
START=$(date +%s)

prepare() {
  local py=${PYTHON:-}
  if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
  fi
  "$py" scripts/gpu/prepare_data.py "$@" || return 1
  if ! ls "$WHL_DIR"/*.whl >/dev/null 2>&1; then
    echo "error: no wheels in $WHL_DIR/: run  bash scripts/prepare_gpu_wheels.sh  first" >&2
    return 1
  fi
  "$py" scripts/gpu/check_wheels.py "$WHL_DIR" --max-mib 50 >/dev/null \
    || { "$py" scripts/gpu/check_wheels.py "$WHL_DIR"; return 1; }
  # What travels: tracked and untracked-not-ignored files, plus the carried .whl and .gpu (results included).
  local tree carried total
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb -- 2>/dev/null | tail -1 | cut -f1)
  carried=$(du -cb "$WHL_DIR" .gpu | tail -1 | cut -f1)
  total=$(( ${tree:-0} + carried ))
  awk -v t="${tree:-0}" -v c="$carried" -v l="$TREE_LIMIT_MIB" \
    'BEGIN { printf "travelling tree: code %.1f MiB + .whl/.gpu %.1f MiB = %.1f MiB (limit %d)\n", t/2^20, c/2^20, (t+c)/2^20, l }'
  if [ "$total" -gt $(( TREE_LIMIT_MIB * 1048576 )) ]; then
    echo "error: over the device tool's ${TREE_LIMIT_MIB} MiB limit" >&2
    return 1
  fi
  "$py" scripts/gpu/plan.py "$MATRIX" | tail -4
  echo "ready: run on the GPU machine  bash scripts/gpu_bench.sh --part 1  (then 2, 3) with carry [\".whl\", \".gpu\"]"
}

if [ "${1:-}" = "--prepare" ]; then
  shift
  prepare "$@"
  exit $?
fi

# ------------------------------------------------------------------------------------------ on the GPU machine
TAG=all
ONLY=()
if [ "${1:-}" = "--part" ]; then
  [ $# -ge 2 ] || { echo "usage: gpu_bench.sh --part N [run_matrix args]" >&2; exit 2; }
  TAG=part$2
  mapfile -t patterns < <(python3 scripts/gpu/plan.py --patterns "$2") || true
  [ ${#patterns[@]} -gt 0 ] || { echo "error: unknown part $2" >&2; exit 2; }
  for p in "${patterns[@]}"; do ONLY+=(--only "$p"); done
  shift 2
elif [ $# -gt 0 ]; then
  TAG=custom
fi
OUTDIR=${OUT:-$ROOT/.gpu/out}
mkdir -p "$OUTDIR" "$RESULTS"
LOG=$OUTDIR/gpu_bench-$TAG.log
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
finish() {  # let tee write the last lines before the device tool collects $OUT
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$1"
}

echo "== gpu_bench $TAG  $(date -u +%Y-%m-%dT%H:%M:%SZ)  budget ${BUDGET_S}s"
needs=("$DATA_DIR")
grep -q '\.gpu/tokenizer' "$MATRIX" && needs+=(.gpu/tokenizer)
[ "${GPU_BENCH_SKIP_INSTALL:-0}" = 1 ] || needs+=("$WHL_DIR")
for need in "${needs[@]}"; do
  [ -e "$need" ] || { echo "error: $need missing: run  bash scripts/gpu_bench.sh --prepare  here and carry .whl, .gpu"
                      finish 2; }
done

if [ "${GPU_BENCH_SKIP_INSTALL:-0}" = 1 ]; then
  echo "== GPU_BENCH_SKIP_INSTALL=1: using this Python's packages"
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
  wheels=("$WHL_DIR"/*.whl)
  echo "== installing ${#wheels[@]} wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${wheels[@]}" || { echo "error: wheel install failed"; finish 2; }
  export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TOKENIZERS_PARALLELISM=false MEDBENCH_CACHE_DIR=${MEDBENCH_CACHE_DIR:-/tmp/medbench-cache}
export UNSLOTH_COMPILE_LOCATION=/tmp/unsloth_compiled_cache

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "(no nvidia-smi)"
python3 - <<'EOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo", "trl",
             "liger-kernel", "datasets", "lm_eval", "pydantic", "triton"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (missing)")
try:
    import torch
    print("cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")
except Exception as exc:
    print("torch import failed:", exc)
try:  # the slimmed wheel keeps only the CUDA 13 libraries: check that one loads
    import bitsandbytes.cextension as ce
    print("bitsandbytes library:", getattr(ce, "BNB_BACKEND", "?"), getattr(getattr(ce, "lib", None), "_name", "?"))
except Exception as exc:
    print("bitsandbytes import failed:", exc)
EOF

echo "== plan"
python3 run_matrix.py "$MATRIX" --data-dir "$DATA_DIR" --results "$RESULTS" --dry-run "${ONLY[@]}" "$@" | tail -40

ELAPSED=$(( $(date +%s) - START ))
REMAIN=$(( BUDGET_S - ELAPSED ))
echo "== run (${REMAIN}s left of the budget)"
rc=0
if [ "$REMAIN" -gt 30 ]; then
  timeout -s INT -k 20 "$REMAIN" python3 run_matrix.py "$MATRIX" --data-dir "$DATA_DIR" --results "$RESULTS" \
    --report "$OUTDIR/report-$TAG.html" --cache-dir "$MEDBENCH_CACHE_DIR" --no-progress "${ONLY[@]}" "$@"
  rc=$?
  [ $rc -eq 124 ] && echo "== budget reached: stopped; finished cells are saved, run the same command again to resume"
else
  echo "== no time left to run cells"; rc=124
fi

echo "== packing results"
TAR=$OUTDIR/results-$TAG.tar.gz
RES_PARENT=$(dirname "$RESULTS")
RES_NAME=$(basename "$RESULTS")
EXCLUDES=(--exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='checkpoint*' --exclude='.*.tmp*'
          --exclude='.lock' --exclude='progress.json')
tar -czf "$TAR" -C "$(dirname "$RES_PARENT")" "${EXCLUDES[@]}" "$(basename "$RES_PARENT")/$RES_NAME"
if [ "$(stat -c %s "$TAR")" -gt $(( 15 * 1048576 )) ]; then
  echo "results tar over 15 MiB: packing without cell logs"
  tar -czf "$TAR" -C "$(dirname "$RES_PARENT")" "${EXCLUDES[@]}" --exclude='*.log' \
    "$(basename "$RES_PARENT")/$RES_NAME"
fi
ls -la "$OUTDIR"

python3 scripts/gpu/summary.py "$RESULTS" --json "$OUTDIR/summary-$TAG.json" || true
echo "== done in $(( $(date +%s) - START ))s, run_matrix exit code $rc"
finish $rc
