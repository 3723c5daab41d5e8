"""How long the report takes on a 200-cell results folder (requirement: < 10 s).

    pytest benchmarks/bench_report.py --benchmark-only

The folder is made by the fixture generator (tests/fixtures/report/generate.py): 5 models (one synthetic),
full / LoRA r8, r16, r64 / QLoRA, 1-3 epochs x 3 learning rates, skipped Unsloth cells; exactly 200 records
plus comparisons.json. The first round includes the one-off imports of pandas / matplotlib / seaborn /
jinja2 when this is the first test of the session (a fresh `medbench report` process pays them once).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "report" / "generate.py"
LIMIT_S = 10.0


def _generator():
    spec = importlib.util.spec_from_file_location("report_fixture_generator", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results_200(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _generator().write_large_matrix(tmp_path_factory.mktemp("bench") / "results", n_cells=200)
    assert len([p for p in folder.glob("*.json") if p.name != "comparisons.json"]) == 200
    return folder


def test_bench_render_200_cells(benchmark, results_200: Path, tmp_path: Path) -> None:
    from harness.report import render_report

    out = tmp_path / "report.html"
    benchmark.pedantic(render_report, args=(results_200, out), rounds=3, iterations=1, warmup_rounds=0)
    html = out.read_text()
    assert html.count('<tr class="st-') == 200
    assert benchmark.stats.stats.median < LIMIT_S, f"render took {benchmark.stats.stats.median:.1f} s"


def test_bench_load_200_cells(benchmark, results_200: Path) -> None:
    from harness.report.loader import load_report_data

    data = benchmark(load_report_data, results_200)
    assert len(data.cells) == 200


def test_bench_gate_200_cells(benchmark, results_200: Path, tmp_path: Path) -> None:
    from harness.config import Thresholds
    from harness.report import check_baseline, write_baseline

    baseline = tmp_path / "baseline.json"
    write_baseline(results_200, baseline)
    result = benchmark(check_baseline, results_200, baseline, Thresholds())
    assert result.passed
