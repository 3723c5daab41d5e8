"""Benchmarks of the matrix runner's bookkeeping (no training): expansion, --dry-run and loading results at 500 cells.

.venv/bin/python -m pytest benchmarks/bench_matrix.py --benchmark-only
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import CellRuntime
from harness.matrix import expand, load_matrix
from harness.results import CellResult, load_results, write_result

ROOT = Path(__file__).resolve().parent.parent

# 5 synthetic models x (base + 3 methods x 12 lrs x 3 epochs x 2 seeds) = 1085 cells, pruned by rules to
# 5 x (base + 3 x 11 x 3 x 1) = 500.
MATRIX_500 = textwrap.dedent("""\
    name: bench500
    models:
      - {id: m1, source: synthetic, architecture: tiny-llama}
      - {id: m2, source: synthetic, architecture: smollm2-135m}
      - {id: m3, source: synthetic, architecture: smollm2-360m}
      - {id: m4, source: synthetic, architecture: tinyllama-1.1b}
      - {id: m5, source: synthetic, architecture: llama-3.2-1b}
    methods: [full, lora-r8, lora-r16]
    epochs: [1, 2, 3]
    learning_rates: [1.0e-5, 2.0e-5, 5.0e-5, 1.0e-4, 1.5e-4, 2.0e-4, 3.0e-4, 5.0e-4, 7.0e-4, 1.0e-3, 2.0e-3, 5.0e-3]
    seeds: [0, 1]
    train:
      datasets: [{path: train.json, format: instruction}]
    eval: {tasks: [{name: medqa, data: mq.jsonl}]}
    exclude:
      - {seed: 1}
      - {learning_rate: 5.0e-3, method: "*"}
    """)


@pytest.fixture(scope="module")
def matrix_500(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("bench")
    (d / "train.json").write_text("[]")
    # a valid MedQA file: the preflight of --dry-run loads it
    (d / "mq.jsonl").write_text((ROOT / "tests" / "fixtures" / "ci_data" / "medqa_fixture.jsonl").read_text())
    (d / "m.yaml").write_text(MATRIX_500)
    return d / "m.yaml", d


def _cells(path: Path, data_dir: Path):
    return expand(
        load_matrix(path, data_dir=data_dir), CellRuntime(data_dir=str(data_dir), results_dir="/r", cache_dir="/c")
    )


def test_matrix_has_500_cells(matrix_500):
    assert len(_cells(*matrix_500)) == 500


def test_bench_expand_500(benchmark, matrix_500):
    cells = benchmark(_cells, *matrix_500)
    assert len(cells) == 500


def test_bench_dry_run_500_process(benchmark, matrix_500, tmp_path):
    """The whole `run_matrix.py --dry-run` command, interpreter start included."""
    path, data_dir = matrix_500
    cmd = [
        sys.executable,
        str(ROOT / "run_matrix.py"),
        str(path),
        "--data-dir",
        str(data_dir),
        "--dry-run",
        "--results",
        str(tmp_path / "r"),
    ]

    def run() -> str:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    out = benchmark.pedantic(run, rounds=5, iterations=1)
    assert "500 cells" in out


def test_bench_load_500_results(benchmark, matrix_500, tmp_path):
    cells = _cells(*matrix_500)
    for cell in cells:
        write_result(
            tmp_path,
            CellResult(
                cell_id=cell.id,
                config_hash=cell.config_hash,
                matrix="bench500",
                status="success",
                config=cell.config.model_dump(mode="json"),
                metrics={
                    "train": {"loss_curve": [[i, 2.0 - i / 1000] for i in range(1, 301)], "tokens_per_s": 1000.0},
                    "eval": {"medqa": {"acc": 0.3, "acc_stderr": 0.013, "n": 1273}},
                },
            ),
        )
    good, bad = benchmark(load_results, tmp_path)
    assert len(good) == 500 and not bad


def test_bench_dry_run_research_matrix(benchmark, tmp_path):
    """`--dry-run` of matrices/small_models.yaml (327 cells, the preflight, the contamination and power lines), the
    whole process, with its cache warm (the first plan of a data set cleans every training example once and keeps
    the counts). Target: under 1 s on a quiet 2-core machine. Needs the real data dir (../shared/data or
    $MEDBENCH_DATA_DIR); hub models are left unreachable offline (their cells are planned as skipped)."""
    import os

    data_dir = Path(os.environ.get("MEDBENCH_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (data_dir / "chatdoctor5k").is_dir():
        pytest.skip(f"the real data dir is not at {data_dir} (set MEDBENCH_DATA_DIR)")
    cmd = [
        sys.executable,
        str(ROOT / "run_matrix.py"),
        str(ROOT / "matrices" / "small_models.yaml"),
        "--data-dir",
        str(data_dir),
        "--dry-run",
        "--results",
        str(tmp_path / "r"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run() -> str:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout

    run()  # the cache's first fill, not timed
    out = benchmark.pedantic(run, rounds=5, iterations=1)
    assert "matrix small_models" in out
