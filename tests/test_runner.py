"""The runner: plans from the results folder, isolates every cell in its own process, survives being killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.planning import matches_only, plan
from harness.results import CellResult, atomic_write_text, load_results, read_result, result_path, write_result
from harness.runner import execute

ROOT = Path(__file__).resolve().parent.parent


def record(cell, status: str, **kw) -> CellResult:
    return CellResult(
        cell_id=cell.id,
        config_hash=cell.config_hash,
        matrix="t",
        status=status,
        config=cell.config.model_dump(mode="json"),
        **kw,
    )


# ---------------------------------------------------------------------------------------------------- no torch


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_truncated_or_foreign_files_are_not_results(tmp_path, make_cells):
    (cell,) = make_cells("[full]")
    path = write_result(tmp_path, record(cell, "success"))
    assert read_result(path).status == "success"
    path.write_text(path.read_text()[:50])  # what a non-atomic writer would leave after a kill
    assert read_result(path) is None
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    good, bad = load_results(tmp_path)
    assert good == [] and sorted(p.name for p in bad) == sorted([path.name, "x.json"])


def test_plan_from_results_folder(tmp_path, make_cells):
    cells = make_cells("[full, lora-r8, lora-r16, lora-r64, unsloth]", results=tmp_path)
    full, r8, r16, r64, unsloth = cells
    write_result(tmp_path, record(full, "success"))
    write_result(tmp_path, record(r8, "failed", reason="boom"))
    stale = record(r16, "success").model_copy(update={"config_hash": "0" * 64})
    write_result(tmp_path, stale)  # same id, other config: must not count as done
    result_path(tmp_path, r64.id).write_text("{ truncated")
    actions = {p.cell.id: (p.action, p.why) for p in plan(cells, tmp_path)}
    assert actions[full.id][0] == "done"
    assert actions[r8.id] == ("done", "failed before (use --rerun-failed): boom")
    assert actions[r16.id][0] == "run" and actions[r64.id][0] == "run"
    assert actions[unsloth.id][0] == "skip" and "CUDA GPU" in actions[unsloth.id][1]
    rerun = {p.cell.id: p.action for p in plan(cells, tmp_path, rerun_failed=True)}
    assert rerun[r8.id] == "run" and rerun[full.id] == "done"
    only = plan(cells, tmp_path, only=["*lora-r1*"])
    assert [p.cell.id for p in only] == [r16.id]


def test_only_patterns():
    assert matches_only("tiny_lora-r8_e1_lr1e-3_s0-abc", ["lora-r8"])
    assert matches_only("tiny_lora-r8_e1_lr1e-3_s0-abc", ["tiny_*_e1_*"])
    assert not matches_only("tiny_full_e1_lr1e-3_s0-abc", ["lora"])
    assert matches_only("anything", [])


# ---------------------------------------------------------------------------------------------------- real children


def _kill_child_when_started(results_dir: Path, cell_id: str, after_s: float) -> threading.Thread:
    import psutil

    def watch() -> None:
        spec = results_dir / cell_id / "cell.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for child in psutil.Process().children(recursive=True):
                try:
                    if str(spec) in " ".join(child.cmdline()):
                        time.sleep(after_s)
                        child.send_signal(signal.SIGKILL)
                        return
                except psutil.Error:
                    pass
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_failures_are_recorded_and_the_matrix_goes_on(tmp_path, make_cells):
    cells = make_cells(
        "[full, lora-r8, lora-r16]", train="max_steps: 2\nvalidation_fraction: 0.0\n", results=tmp_path / "res"
    )
    # A cell whose model folder does not exist raises inside its child; one with a 1 s timeout is killed.
    from harness.cells import Cell
    from harness.config import ModelSpec
    from harness.matrix import config_hash

    bad_cfg = cells[0].config.model_copy(
        update={"model": ModelSpec(id="broken", source="local", path="/nonexistent/model-folder")}
    )
    bad = Cell(id="broken_full-00000000", config_hash=config_hash(bad_cfg), config=bad_cfg)
    full, r8, r16 = cells
    r8 = type(r8)(
        id=r8.id,
        config_hash=r8.config_hash,
        config=r8.config.model_copy(update={"runtime": r8.config.runtime.model_copy(update={"timeout_s": 1.0})}),
    )
    results_dir = tmp_path / "res"
    planned = plan([full, r8, r16, bad], results_dir)
    watcher = _kill_child_when_started(results_dir, r16.id, after_s=1.0)
    summary = execute(planned, results_dir, progress=False)
    watcher.join(timeout=5)
    got = {c.id: read_result(result_path(results_dir, c.id)) for c in (full, r8, r16, bad)}
    assert got[full.id].status == "success"
    assert got[full.id].metrics["train"]["steps"] == 2
    assert got[r8.id].status == "timeout" and "timeout of 1 s" in got[r8.id].reason
    assert got[r16.id].status == "failed" and got[r16.id].reason.startswith("cell process killed by SIGKILL")
    assert got[bad.id].status == "failed" and "/nonexistent/model-folder" in got[bad.id].reason
    assert "Traceback" in got[bad.id].traceback
    assert summary.counts == {"success": 1, "timeout": 1, "failed": 2} and not summary.all_ok
    assert (results_dir / full.id / "cell.log").stat().st_size > 0


@pytest.mark.slow
def test_sigkill_and_resume(tmp_path):
    from conftest import CI_DATA, matrix_yaml

    matrix = tmp_path / "m.yaml"
    matrix.write_text(matrix_yaml("[full, lora-r8, lora-r16]", train="max_steps: 2\nvalidation_fraction: 0.0\n"))
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "run_matrix.py"),
        str(matrix),
        "--data-dir",
        str(CI_DATA),
        "--results",
        str(results),
        "--no-report",
        "--no-progress",
        "--cache-dir",
        os.environ.get("MEDBENCH_TEST_CACHE") or str(tmp_path / "cache"),
    ]
    runner = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(results.glob("*.json")):
        time.sleep(0.05)
    first = list(results.glob("*.json"))
    assert first, "no cell finished in time"
    time.sleep(0.3)  # kill it in the middle of the second cell
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(1.0)  # PDEATHSIG: the running cell dies with its parent
    import psutil

    orphans = [p for p in psutil.process_iter(["cmdline"]) if str(results) in " ".join(p.info["cmdline"] or [])]
    assert orphans == []
    done_before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert all(read_result(results / name) for name in done_before)  # nothing corrupt

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    good, bad = load_results(results)
    assert bad == [] and len(good) == 3 and all(r.status == "success" for r in good)
    for name, mtime in done_before.items():  # finished cells were not redone
        assert (results / name).stat().st_mtime_ns == mtime
    assert not list(results.glob(".*.tmp"))
    again = subprocess.run(cmd + ["--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "(run 0, done 3, skip 0)" in again.stdout


def test_records_never_carry_this_machines_folders(tmp_path):
    from harness.results import PORTABLE_RUNTIME, CellResult, read_result, write_result

    runtime = {
        "data_dir": str(tmp_path / "data"),
        "results_dir": str(tmp_path / "r"),
        "cache_dir": "/home/x/.cache",
        "timeout_s": 60.0,
        "tracking_dir": str(tmp_path / "r" / "tracking"),
    }
    path = write_result(
        tmp_path / "r",
        CellResult(cell_id="c", config_hash="h", matrix="m", status="success", config={"runtime": runtime, "seed": 0}),
    )
    text = path.read_text()
    assert str(tmp_path) not in text and "/home/x" not in text
    assert read_result(path).config["runtime"] == {**PORTABLE_RUNTIME, "timeout_s": 60.0}
