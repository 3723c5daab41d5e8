"""Nothing merged, clamped, borrowed or mixed without a word: ranges the libraries enforce are schema errors; repeats,
a limit above a task's size, few-shot examples from the evaluated split and case-twin model ids are named warnings
before anything runs; a result file of another matrix is named and left out of the run's statistics and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CI_DATA, ROOT, matrix_yaml

from harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from harness.matrix import MatrixError, load_matrix


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("seeds", ["[-1]", "[4294967296]"])
def test_seeds_outside_what_numpy_takes_are_errors(tmp_path: Path, seeds: str) -> None:
    with pytest.raises(MatrixError, match=r"seeds: seeds must be integers from 0 to 4294967295"):
        load_matrix(_write(tmp_path, matrix_yaml(extra=f"seeds: {seeds}\n")), data_dir=CI_DATA)


def test_repeats_and_case_twins_are_named(tmp_path: Path) -> None:
    text = matrix_yaml(
        "[full, {name: l, preset: lora-r8, learning_rates: [1.0e-4, 1.0e-4]}]",
        extra="learning_rates: [1.0e-4, 2.0e-4, 1.0e-4]\n"
        "eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl}, {name: medqa, data: medqa_fixture.jsonl}]\n",
    ).replace(
        "  - {id: tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}",
        "  - {id: tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}\n"
        "  - {id: Tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}",
    )
    warnings = load_matrix(_write(tmp_path, text), data_dir=CI_DATA).warnings
    assert "learning_rates: 0.0001 is listed more than once; its cells are the same cells and run once" in warnings
    assert "methods[1].learning_rates: 0.0001 is listed more than once; its cells are the same cells and run once" in (
        warnings
    )
    assert "eval.tasks: 'medqa' is named more than once; each cell scores it once" in warnings
    assert any(w.startswith("models: ids 'Tiny' and 'tiny' differ only by case") for w in warnings)
    assert len(warnings) == 4


def test_a_limit_above_the_task_and_borrowed_fewshot_are_warned_in_the_plan(tmp_path: Path, capsys) -> None:
    n = sum(1 for line in (CI_DATA / "medqa_fixture.jsonl").read_text().splitlines() if line.strip())
    text = matrix_yaml(
        "[lora-r8]",
        extra="eval:\n  num_fewshot: 2\n  tasks: [{name: medqa, data: medqa_fixture.jsonl, limit: 1000}]\n",
    )
    path = _write(tmp_path, text)
    rc = main([str(path), "--dry-run", "--data-dir", str(CI_DATA), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == EXIT_OK, err
    assert (
        f"warning: {path}: eval.tasks[0] (medqa): limit 1000 is more than the {n} items of medqa_fixture.jsonl" in err
    )
    assert f"warning: {path}: eval.tasks[0] (medqa): num_fewshot 2, but the task has no few-shot split" in err


def test_a_foreign_record_is_named_and_left_out_of_run_and_report(tmp_path: Path, capsys) -> None:
    results = tmp_path / "r"
    shutil.copytree(ROOT / "results" / "tiny_ci", results)
    foreign = json.loads((results / "tiny-llama_base-85ac4448.json").read_text())
    foreign.update(matrix="another_matrix", cell_id="x_base-00000000")
    (results / "x_base-00000000.json").write_text(json.dumps(foreign))
    args = [str(ROOT / "matrices" / "tiny_ci.yaml"), "--results", str(results), "--report", str(tmp_path / "r.html")]
    assert main([*args, "--dry-run"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "1 result file(s) of another matrix in this folder, left out: x_base-00000000 (matrix another_matrix)" in err
    assert main([*args, "--report-only"]) == EXIT_OK
    assert "x_base-00000000 (matrix another_matrix)" in capsys.readouterr().err
    html = (tmp_path / "r.html").read_text()
    assert "x_base-00000000 (matrix another_matrix)" in html  # the report's notes name it ...
    assert 'title="tiny-llama_base-85ac4448' in html  # its own cells are rows ...
    assert 'title="x_base-00000000' not in html and "another_matrix, tiny_ci" not in html  # ... the foreign one not
    comparisons = json.loads((results / "comparisons.json").read_text())
    assert "x_base-00000000" not in json.dumps(comparisons)


def test_an_unknown_executor_flag_value_is_exit_2(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, matrix_yaml())
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--dry-run", "--data-dir", str(CI_DATA), "--executor", "slurm"])
    assert exc.value.code == EXIT_BAD_INPUT
    assert "invalid choice: 'slurm'" in capsys.readouterr().err
