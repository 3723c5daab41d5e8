#!/usr/bin/env bash
# Download, HERE (a machine with PyPI access), the wheels that the lent GPU machine lacks, into .whl/ (ignored by
# git, carried to the machine with `carry: [".whl", ".gpu"]`). scripts/gpu_bench.sh installs them there with
# `pip install --no-index --no-deps --target /tmp/site`.
#
# The GPU machine (see .library/device/KINDS.md and scripts/gpu/box_packages.txt) has Python 3.12, torch 2.11
# (CUDA 13.0), transformers 5.17, accelerate, peft, pandas, seaborn, jinja2, pyyaml, psutil, nvidia-ml-py, but no
# pydantic, bitsandbytes, datasets, lm-eval, trl, unsloth. Never torch, torchvision, triton, xformers or nvidia-*:
# they would replace the machine's CUDA stack (and are GBs).
#
# The working tree that travels is limited to 64 MiB (code + .whl + .gpu data), so two wheels are slimmed
# (scripts/gpu/slim_wheel.py): bitsandbytes keeps only its CUDA 13 and CPU libraries (43 -> ~3 MB) and unsloth
# drops "Unsloth Studio", its web UI (29 -> ~2 MB). Versions are pinned: unsloth 2026.10.9 accepts
# transformers <= 5.17.0 (the machine's), trl <= 1.15.0 and datasets < 5, so those are pinned to match.
#
# Usage: bash scripts/prepare_gpu_wheels.sh [--groups core,bnb,liger,unsloth,eval] [--max-mib 50] [--list]
#   WHL_DIR   destination (default .whl)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${WHL_DIR:-.whl}
GROUP_LIST=core,bnb,liger,unsloth,eval
MAX_MIB=50
LIST_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --groups) GROUP_LIST=$2; shift 2 ;;
    --max-mib) MAX_MIB=$2; shift 2 ;;
    --list) LIST_ONLY=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# ---- what to carry, by group (name==version; all pure Python unless noted)
CORE=(pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5  # pydantic-core: binary
      gguf==0.19.0 peft==0.21.2)        # peft pinned to the version the harness is tested with
BNB=(bitsandbytes==0.50.2)              # binary, slimmed below
LIGER=(liger-kernel==0.8.5)
# unsloth's metadata also asks for certifi>=2026.10.19, which PyPI does not have (newest: 2026.10.18): the
# machine's certifi is used (only TLS downloads need it; the machine is offline).
UNSLOTH=(unsloth==2026.10.9 unsloth-zoo==2026.10.9 trl==1.15.0 tyro==1.0.17 docstring-parser==0.18.0
         typeguard==4.6.0 cut-cross-entropy==25.1.1 msgspec==0.22.0 json5==0.17.3 nest-asyncio==1.6.0
         structlog==26.1.0)
# datasets 4.8.5 (unsloth needs < 5) pins fsspec <= 2026.2.0; the machine's fsspec version is not known, so it
# travels too (huggingface_hub and torch accept it).
EVAL=(datasets==4.8.5 fsspec==2026.2.0 dill==0.4.1 multiprocess==0.70.19 lm-eval==0.4.13 evaluate==0.4.6 pytablewriter==1.2.1
      dataproperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5
      chardet==6.0.0.post1 rouge-score==0.1.2 nltk==3.10.4 sqlitedict==2.1.0 word2number==1.1
      more-itertools==11.2.1 defusedxml==0.7.1)

WANTED=()
IFS=, read -r -a groups <<<"$GROUP_LIST"
for g in "${groups[@]}"; do
  case "$g" in
    core) WANTED+=("${CORE[@]}") ;;
    bnb) WANTED+=("${BNB[@]}") ;;
    liger) WANTED+=("${LIGER[@]}") ;;
    unsloth) WANTED+=("${UNSLOTH[@]}") ;;
    eval) WANTED+=("${EVAL[@]}") ;;
    *) echo "unknown group: $g (allowed: core, bnb, liger, unsloth, eval)" >&2; exit 2 ;;
  esac
done
for w in "${WANTED[@]}"; do
  case "${w%%==*}" in
    torch|torchvision|torchaudio|triton|xformers|nvidia-*)
      echo "refusing to carry ${w}: the machine's CUDA stack must stay" >&2; exit 2 ;;
  esac
done
if [ "$LIST_ONLY" = 1 ]; then printf '%s\n' "${WANTED[@]}"; exit 0; fi

PY=${PYTHON:-python3}
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
          --platform linux_x86_64 --platform any)
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/medbench-wheels.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$DEST"
rm -f "$DEST"/*.whl

for w in "${WANTED[@]}"; do
  if ! "$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$STAGE" "$w" 2>"$STAGE/err.txt"; then
    # A few small projects publish only a source archive: build a (pure-Python) wheel from it here.
    echo "no wheel on the index for $w: building one from its source archive"
    "$PY" -m pip wheel -q --no-deps -w "$STAGE" "$w" || { cat "$STAGE/err.txt" >&2; exit 1; }
  fi
done

for f in "$STAGE"/*.whl; do
  base=$(basename "$f")
  case "$base" in
    bitsandbytes-*)
      "$PY" scripts/gpu/slim_wheel.py "$f" "$DEST/$base" --drop 'bitsandbytes/libbitsandbytes_*.so' \
        --keep 'bitsandbytes/libbitsandbytes_cuda13*.so' --keep 'bitsandbytes/libbitsandbytes_cpu.so' ;;
    unsloth-20*)
      "$PY" scripts/gpu/slim_wheel.py "$f" "$DEST/$base" --drop 'studio/*' ;;
    *) cp "$f" "$DEST/" ;;
  esac
done

echo "wheels in $DEST:"
"$PY" scripts/gpu/check_wheels.py "$DEST" --max-mib "$MAX_MIB"
