"""Custom evaluation tasks (eval.include_path) as a researcher expects (harness/evaluation/custom.py): the folder
resolves against the data dir; relative data paths inside a task YAML against the YAML's folder, from any working
directory; the YAML and its data are part of the cell's hash and provenance; `limit_strategy: spread` applies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import CellRuntime, EvalConfig
from harness.evaluation import custom
from harness.matrix import expand, load_matrix
from harness.results import NON_RESULT_FILES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_task"
TASK = "medbench_example_mcq"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "ex")
    return tmp_path / "ex"


def _cells(folder: Path, limit: int | None = 4):
    text = (folder / "matrix.yaml").read_text()
    if limit is None:
        text = text.replace("  limit: 4", "")
    (folder / "matrix.yaml").write_text(text)
    loaded = load_matrix(folder / "matrix.yaml")
    return expand(loaded, CellRuntime(data_dir=str(loaded.data_dir), results_dir="/r", cache_dir="/c"))


def test_relative_paths_in_the_yaml_resolve_against_its_folder(example, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # anywhere but the task folder
    yaml_path = example / "tasks" / f"{TASK}.yaml"
    cfg = custom.rewrite_data_paths(custom.read_task_yaml(yaml_path), yaml_path.parent)
    assert cfg["dataset_kwargs"]["data_files"] == {"test": str((example / "tasks" / "data" / "test.jsonl").resolve())}
    found, missing = custom.task_data_files(yaml_path)
    assert found == [(example / "tasks" / "data" / "test.jsonl").resolve()] and missing == []


def test_resolved_task_uses_the_yaml_folder_spreads_and_records_hashes(example, monkeypatch, tmp_path):
    from harness.evaluation.lm_eval_runner import resolve_tasks

    monkeypatch.chdir(tmp_path)
    (t,) = resolve_tasks(
        EvalConfig(tasks=[TASK], include_path="tasks", limit=4), data_dir=example, cache_dir=tmp_path / "cache"
    )
    assert t.spec["dataset_kwargs"]["data_files"]["test"] == str((example / "tasks/data/test.jsonl").resolve())
    assert t.samples == [0, 2, 4, 6] and t.limit is None and t.extra["limit_strategy"] == "spread"
    assert t.data["subset"] == "spread: 4 of 8 items, evenly spaced"
    assert t.data["yaml"] == f"tasks/{TASK}.yaml" and t.data["include_path"] == "tasks"
    assert t.data["files"] == {"tasks/data/test.jsonl": custom.file_sha256(example / "tasks/data/test.jsonl")}
    assert not any(str(v).startswith("/") for v in t.data.values())  # no absolute paths in results
    (first,) = resolve_tasks(
        EvalConfig(tasks=[TASK], include_path="tasks", limit=4, limit_strategy="first"),
        data_dir=example,
        cache_dir=tmp_path / "cache",
    )
    assert first.samples is None and first.limit == 4


def test_spread_refused_with_the_reason_when_the_test_split_is_not_one_file(tmp_path):
    from harness.evaluation.lm_eval_runner import resolve_tasks

    fix = ROOT / "tests" / "fixtures" / "eval"
    (t,) = resolve_tasks(
        EvalConfig(tasks=["medbench_fixture_yesno"], include_path="custom_tasks", limit=2),
        data_dir=fix,
        cache_dir=tmp_path / "cache",
    )
    assert t.samples is None and t.limit == 2 and t.extra["limit_strategy"] == "first"
    assert t.data["subset"].startswith("first 2 items: limit_strategy spread needs the test split as one local")


def test_editing_the_task_yaml_or_its_data_changes_the_cell(example):
    (before,) = _cells(example)
    (same,) = _cells(example)
    assert same.id == before.id
    y = example / "tasks" / f"{TASK}.yaml"
    y.write_text(y.read_text().replace('doc_to_text: "Question:', 'doc_to_text: "Q:'))
    (after_yaml,) = _cells(example)
    assert after_yaml.config_hash != before.config_hash and after_yaml.id != before.id
    d = example / "tasks" / "data" / "test.jsonl"
    d.write_text(d.read_text().replace("scurvy", "rickets"))
    (after_data,) = _cells(example)
    assert after_data.config_hash != after_yaml.config_hash


def test_cells_without_custom_tasks_keep_their_ids():
    loaded = load_matrix(ROOT / "matrices" / "tiny_ci.yaml")
    cells = expand(loaded, CellRuntime(data_dir=str(loaded.data_dir), results_dir="/r", cache_dir="/c"))
    committed = {p.stem for p in (ROOT / "results" / "tiny_ci").glob("*.json") if p.name not in NON_RESULT_FILES}
    assert committed and {c.id for c in cells} <= committed


def test_provenance_lists_the_folder_files_relative(example):
    (cell,) = _cells(example)
    files = custom.custom_task_files(cell.config)
    assert set(files) == {f"tasks/{TASK}.yaml", "tasks/data/test.jsonl"}
    assert all(len(v) == 64 for v in files.values())


def test_preflight_catches_a_missing_task_data_file(example, capsys):
    from harness.cli import EXIT_BAD_INPUT, main

    (example / "tasks" / "data" / "test.jsonl").unlink()
    rc = main([str(example / "matrix.yaml"), "--dry-run", "--results", str(example / "r")])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT
    assert f"data file not found: {(example / 'tasks' / 'data' / 'test.jsonl').resolve()}" in err
    assert "resolve against the YAML's folder" in err


def test_readme_example_dry_run_from_another_directory(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_matrix.py"),
            str(EXAMPLE / "matrix.yaml"),
            "--dry-run",
            "--results",
            str(tmp_path / "r"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "preflight: ok (1 models, 1 eval tasks" in proc.stdout


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_matrix.py"),
            str(EXAMPLE / "matrix.yaml"),
            "--results",
            str(tmp_path / "r"),
            "--report",
            str(tmp_path / "r.html"),
            "--no-progress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "PYTHONPATH": str(ROOT),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MEDBENCH_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json") if p.name not in NON_RESULT_FILES]
    ev = result["metrics"]["eval"][TASK]
    assert result["status"] == "success" and ev["n"] == 4 and ev["limit_strategy"] == "spread"
    assert set(result["data_files"]) == {f"tasks/{TASK}.yaml", "tasks/data/test.jsonl"}
