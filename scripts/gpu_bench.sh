#!/usr/bin/env bash
# GPU speed and memory benchmark in ONE device call of at most 8 minutes (no network on the GPU machine).
#
# Here, once (PyPI access, ../shared/data):
#   bash scripts/prepare_gpu_wheels.sh        # .whl/: the wheels the GPU machine lacks (~30 MiB)
#   bash scripts/gpu_bench.sh --prepare       # .gpu/data, .gpu/tokenizer; checks sizes; prints the ordered plan
# On the GPU machine (the device tool's `run`, carry: [".whl", ".gpu"], timeout_s 540):
#   bash scripts/gpu_bench.sh
# Back here, with the folder the call returned (the device tool's files_at):
#   bash scripts/gpu_bench.sh --collect FILES_AT   # results into .gpu/results (a second call continues where the
#                                                  # first stopped) and into results/gpu/<date>-<device>/ to commit
#
# On the machine it installs .whl/*.whl into /tmp/site (--no-index --no-deps), prints nvidia-smi and versions, then
# scripts/gpu/bench.py runs the cells of scripts/gpu/plan.py in value order within GPU_BENCH_BUDGET_S (default 450 s
# from the start of this script), copying every finished cell (result JSON, per-item files, log) and a running
# summary table into $OUT as soon as the cell ends. Everything printed goes to $OUT/gpu_bench.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DATA_DIR=${GPU_BENCH_DATA_DIR:-.gpu/data}
RESULTS=${GPU_BENCH_RESULTS:-.gpu/results}
WHL_DIR=${WHL_DIR:-.whl}
BUDGET_S=${GPU_BENCH_BUDGET_S:-450}
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
  "$py" scripts/gpu/plan.py --budget-s "$BUDGET_S"
  echo "ready: run on the GPU machine  bash scripts/gpu_bench.sh  with carry [\".whl\", \".gpu\"]"
}

collect() {  # FILES_AT: what a call returned -> .gpu/results (to continue) and results/gpu/<date>-<device>/ (to commit)
  local from=${1:?usage: gpu_bench.sh --collect FILES_AT} py=${PYTHON:-.venv/bin/python}
  [ -d "$from/results" ] || { echo "error: $from/results not found (nothing finished in that call?)" >&2; return 1; }
  mkdir -p "$RESULTS" && cp -r "$from/results/." "$RESULTS/"
  local device dest
  device=$("$py" - "$from/results" <<'PY'
import json, re, sys
from pathlib import Path
for p in sorted(Path(sys.argv[1]).rglob("*.json")):
    dev = json.loads(p.read_text()).get("environment", {}).get("device", {})
    name = dev.get("name") if isinstance(dev, dict) else None
    if name:
        print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")); break
else:
    print("unknown-device")
PY
)
  dest=results/gpu/$(date -u +%Y-%m-%d)-$device
  mkdir -p "$dest" && cp -r "$from/results/." "$dest/"
  for f in "$from"/summary.txt "$from"/summary.json "$from"/gpu_bench.log "$from"/report-*.html; do
    [ -f "$f" ] && cp "$f" "$dest/"
  done
  echo "collected into $RESULTS (a second call skips these cells) and $dest (commit it)"
}

if [ "${1:-}" = "--prepare" ]; then
  shift
  prepare "$@"
  exit $?
fi
if [ "${1:-}" = "--collect" ]; then
  shift
  collect "$@"
  exit $?
fi

# ------------------------------------------------------------------------------------------ on the GPU machine
[ $# -eq 0 ] || { echo "usage: gpu_bench.sh [--prepare | --collect FILES_AT]" >&2; exit 2; }
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

echo "== gpu_bench  $(date -u +%Y-%m-%dT%H:%M:%SZ)  budget ${BUDGET_S}s"
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

echo "== run (plan, then every cell in value order; each one is in \$OUT as soon as it ends)"
python3 scripts/gpu/bench.py --out "$OUTDIR" --budget-s "$BUDGET_S" --started-at "$START" --data-dir "$DATA_DIR" \
  --results "$RESULTS" --cache-dir "$MEDBENCH_CACHE_DIR"
rc=$?
echo "== done in $(( $(date +%s) - START ))s, bench exit code $rc"
finish $rc
