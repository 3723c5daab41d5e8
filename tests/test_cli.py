"""The command line: exit codes, --report-only from a results folder, the regression gate's distinct exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_REGRESSION, main

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def _copy_results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(FIXTURES / "small", results)
    return results


def test_report_only_renders_from_results(tmp_path):
    results = _copy_results(tmp_path)
    report = tmp_path / "r.html"
    rc = main(
        [str(FIXTURES / "small_matrix.yaml"), "--report-only", "--results", str(results), "--report", str(report)]
    )
    assert rc == EXIT_OK
    html = report.read_text()
    assert "fixture-small" in html and "<table" in html
    assert json.loads((results / "comparisons.json").read_text())


def test_gate_passes_against_its_own_baseline_and_fails_on_regression(tmp_path, capsys):
    results = _copy_results(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = [
        str(FIXTURES / "small_matrix.yaml"),
        "--report-only",
        "--results",
        str(results),
        "--report",
        str(tmp_path / "r.html"),
    ]
    assert main(args + ["--write-baseline", str(baseline)]) == EXIT_OK
    assert main(args + ["--baseline", str(baseline)]) == EXIT_OK

    data = json.loads(baseline.read_text())
    first = next(iter(data["cells"].values())) if isinstance(data.get("cells"), dict) else None
    assert first is not None, "baseline has no cells"
    # Pretend the baseline was much faster: the current results are now a time regression.
    for cell in data["cells"].values():
        if cell.get("time_per_epoch_s"):
            cell["time_per_epoch_s"] /= 10
    baseline.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(args + ["--baseline", str(baseline)]) == EXIT_REGRESSION
    assert "time" in capsys.readouterr().out.lower()


def test_bad_matrix_and_bad_flags_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: []\nmethods: [full]\n")
    assert main([str(bad), "--dry-run"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{bad}: models: List should have at least 1 item" in err
    assert main([str(tmp_path / "missing.yaml"), "--dry-run"]) == EXIT_BAD_INPUT
    assert "cannot read the matrix file" in capsys.readouterr().err


def test_only_matching_nothing_is_an_error(tmp_path, capsys):
    from conftest import CI_DATA, matrix_yaml

    matrix = tmp_path / "m.yaml"
    matrix.write_text(matrix_yaml("[full, lora-r8]"))
    rc = main(
        [
            str(matrix),
            "--dry-run",
            "--only",
            "no-such-cell",
            "--results",
            str(tmp_path / "r"),
            "--data-dir",
            str(CI_DATA),
        ]
    )
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT, err
    assert "matches none of the" in err


def test_missing_baseline_file_is_bad_input(tmp_path):
    results = _copy_results(tmp_path)
    rc = main(
        [
            str(FIXTURES / "small_matrix.yaml"),
            "--report-only",
            "--results",
            str(results),
            "--no-report",
            "--baseline",
            str(tmp_path / "nope.json"),
        ]
    )
    assert rc == EXIT_BAD_INPUT
