#!/usr/bin/env bash
# GPU speed and memory benchmark in TWO device calls of at most 6 minutes each (no network on the GPU machine).
#
# Here, once (PyPI access, ../shared/data):
#   bash scripts/prepare_gpu_wheels.sh        # .whl/: the wheels the GPU machine lacks (~30 MiB)
#   bash scripts/gpu_bench.sh --prepare       # .gpu/data, .gpu/tokenizer; checks sizes; prints the plan of both calls
# On the GPU machine (the device tool's `run`, carry: [".whl", ".gpu"], timeout_s 360), then back here:
#   bash scripts/gpu_bench.sh --call 1        # LoRA r16 packed / padded, full, QLoRA, Unsloth LoRA r16
#   bash scripts/gpu_bench.sh --collect FILES_AT   # the archive into .gpu/results (the next call continues from it)
#   bash scripts/gpu_bench.sh --call 2        # the rest (right away: the machine stays warm 30 s), then give_back
#   bash scripts/gpu_bench.sh --collect FILES_AT   # and into results/gpu/<date>-<device>/, to commit
# Before any GPU is lent, the same driver and cells on tiny shapes on this CPU, into OUTDIR as if it were $OUT:
#   bash scripts/gpu_bench.sh --rehearse OUTDIR    # checks what would come back (≤ 8 files, ≤ 2 folders deep)
#
# On the machine it installs .whl/*.whl into /tmp/site (--no-index --no-deps), prints nvidia-smi and versions, then
# scripts/gpu/bench.py runs the call's cells of scripts/gpu/plan.py in value order within GPU_BENCH_BUDGET_S (default
# 330 s from the start of this script). $OUT gets 6 files: results.tar.gz (every finished cell, rewritten after each
# one), summary.txt / summary.json, gpu_bench.log and the reports (scripts/gpu/outbox.py).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DATA_DIR=${GPU_BENCH_DATA_DIR:-.gpu/data}
RESULTS=${GPU_BENCH_RESULTS:-.gpu/results}
WHL_DIR=${WHL_DIR:-.whl}
BUDGET_S=${GPU_BENCH_BUDGET_S:-330}
TREE_LIMIT_MIB=64
REHEARSE_SITE=${GPU_REHEARSE_SITE:-.gpu/rehearse-site}
# The GPU machine's own packages (scripts/gpu/box_packages.txt), installed here for the rehearsal where they install
DEVICE_PACKAGES=(transformers==5.17.0 huggingface_hub==1.33.0 tokenizers==0.23.2 accelerate==1.15.0 httpx httpcore
                 h11 anyio)
START=$(date +%s)

here_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; elif [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi
}

prepare() {
  local py
  py=$(here_python)
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
  carried=$(du -cb "$WHL_DIR" .gpu --exclude=rehearse-site | tail -1 | cut -f1)
  total=$(( ${tree:-0} + carried ))
  awk -v t="${tree:-0}" -v c="$carried" -v l="$TREE_LIMIT_MIB" \
    'BEGIN { printf "travelling tree: code %.1f MiB + .whl/.gpu %.1f MiB = %.1f MiB (limit %d)\n", t/2^20, c/2^20, (t+c)/2^20, l }'
  if [ "$total" -gt $(( TREE_LIMIT_MIB * 1048576 )) ]; then
    echo "error: over the device tool's ${TREE_LIMIT_MIB} MiB limit" >&2
    return 1
  fi
  "$py" scripts/gpu/plan.py --cache-dir /nonexistent-fresh-cache
  echo "ready: run on the GPU machine  bash scripts/gpu_bench.sh --call 1  with carry [\".whl\", \".gpu\"], timeout_s 360"
}

prepare_rehearsal() {  # the device's transformers / hub / tokenizers versions, for --rehearse (needs PyPI, once)
  local py
  py=$(here_python)
  rm -rf "$REHEARSE_SITE"
  if "$py" -m pip install -q --no-deps --target "$REHEARSE_SITE" "${DEVICE_PACKAGES[@]}"; then
    echo "rehearsal site: ${DEVICE_PACKAGES[*]} in $REHEARSE_SITE"
  else
    rm -rf "$REHEARSE_SITE"
    echo "warning: the device's package versions could not be installed here; --rehearse will use this environment's"
  fi
}

rehearse() {  # the very same driver and cells, tiny shapes, this CPU, OUTDIR as $OUT; then the return limits
  local outdir=${1:?usage: gpu_bench.sh --rehearse OUTDIR} py work rc
  py=$(here_python)
  mkdir -p "$outdir"
  work=$(mktemp -d)
  local pypath=$ROOT
  if [ -d "$REHEARSE_SITE" ]; then
    pypath=$ROOT/$REHEARSE_SITE:$ROOT
  else
    echo "(no $REHEARSE_SITE: rehearsing with this environment's packages; --prepare-rehearsal installs the device's)"
  fi
  local -a env_vars=("PYTHONPATH=$pypath${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
                      PYTHONUNBUFFERED=1 "MEDBENCH_CACHE_DIR=${MEDBENCH_CACHE_DIR:-$work/cache}")
  env "${env_vars[@]}" "$py" -c "import transformers, huggingface_hub, tokenizers; print('rehearsal with \
transformers', transformers.__version__, '| huggingface_hub', huggingface_hub.__version__, '| tokenizers', \
tokenizers.__version__)" | tee "$outdir/gpu_bench.log"
  env "${env_vars[@]}" "$py" scripts/gpu/bench.py --rehearse --out "$outdir" --results "$work/results" \
    --cache-dir "${MEDBENCH_CACHE_DIR:-$work/cache}" --budget-s "${GPU_REHEARSE_BUDGET_S:-1800}" 2>&1 \
    | tee -a "$outdir/gpu_bench.log"
  rc=${PIPESTATUS[0]}
  "$py" scripts/gpu/outbox.py check "$outdir" || rc=1
  "$py" scripts/gpu/outbox.py collect "$outdir" --results "$work/collected" --no-commit-copy >/dev/null || rc=1
  "$py" - "$work/results" "$work/collected" <<'PY' || rc=1
import sys
from pathlib import Path
ran = sorted(p.relative_to(sys.argv[1]) for p in Path(sys.argv[1]).rglob("*.json") if p.name != "comparisons.json")
back = sorted(p.relative_to(sys.argv[2]) for p in Path(sys.argv[2]).rglob("*.json") if p.name != "comparisons.json")
assert ran == back, f"collect restored {len(back)} of {len(ran)} records: {sorted(set(map(str, ran)) - set(map(str, back)))}"
print(f"collect: all {len(back)} records restored from the archive")
PY
  rm -rf "$work"
  return "$rc"
}

case "${1:-}" in
  --prepare) shift; prepare "$@"; exit $? ;;
  --prepare-rehearsal) prepare_rehearsal; exit 0 ;;
  --rehearse) shift; rehearse "$@"; exit $? ;;
  --collect)
    shift
    "$(here_python)" scripts/gpu/outbox.py collect "${1:?usage: gpu_bench.sh --collect FILES_AT}" --results "$RESULTS"
    exit $? ;;
esac

# ------------------------------------------------------------------------------------------ on the GPU machine
CALL=all
if [ "${1:-}" = "--call" ]; then CALL=${2:?usage: gpu_bench.sh --call 1|2}; shift 2; fi
case "$CALL" in 1|2|all) ;; *) echo "usage: gpu_bench.sh [--call 1|2 | --prepare | --collect FILES_AT | --rehearse OUTDIR]" >&2; exit 2 ;; esac
[ $# -eq 0 ] || { echo "usage: gpu_bench.sh [--call 1|2 | --prepare | --collect FILES_AT | --rehearse OUTDIR]" >&2; exit 2; }
OUTDIR=${OUT:-$ROOT/.gpu/out}
mkdir -p "$OUTDIR" "$RESULTS"
LOG=$OUTDIR/gpu_bench.log
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
finish() {  # let tee write the last lines before the device tool collects $OUT
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$1"
}

echo "== gpu_bench call $CALL  $(date -u +%Y-%m-%dT%H:%M:%SZ)  budget ${BUDGET_S}s"
needs=("$DATA_DIR" .gpu/tokenizer)
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
import importlib.metadata as md, importlib.util, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo", "trl",
             "liger-kernel", "flash-attn", "datasets", "lm_eval", "pydantic", "triton"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (missing)")
# no `import torch` here: the cells are the only processes that touch CUDA (the parent keeps no context)
print("flex attention:", importlib.util.find_spec("torch.nn.attention.flex_attention") is not None)
EOF
python3 - <<'EOF'  # its own short process: the slimmed wheel keeps only the CUDA 13 libraries, check that one loads
try:
    import bitsandbytes.cextension as ce
    print("bitsandbytes library:", getattr(ce, "BNB_BACKEND", "?"), getattr(getattr(ce, "lib", None), "_name", "?"))
except Exception as exc:
    print("bitsandbytes import failed:", exc)
EOF

echo "== run call $CALL (plan, then the call's cells in value order; results.tar.gz rewritten after each)"
python3 scripts/gpu/bench.py --out "$OUTDIR" --call "$CALL" --budget-s "$BUDGET_S" --started-at "$START" \
  --data-dir "$DATA_DIR" --results "$RESULTS" --cache-dir "$MEDBENCH_CACHE_DIR"
rc=$?
echo "== done in $(( $(date +%s) - START ))s, bench exit code $rc"
finish $rc
