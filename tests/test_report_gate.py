"""The regression gate: a baseline from the fixture folder, then checks against changed copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config import Thresholds
from harness.report import GateResult, check_baseline, render_report, write_baseline

SMALL = Path(__file__).parent / "fixtures" / "report" / "small"
LIMITS = Thresholds(max_accuracy_drop=0.02, max_memory_growth=0.10, max_time_growth=0.50)
REAL_LORA = "smollm2-360m/lora-r16/default/e2/lr0.0002/s0"
REAL_FULL = "smollm2-360m/full/default/e1/lr2e-05/s0"


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "baseline.json"
    write_baseline(SMALL, path)
    return path


@pytest.fixture
def current(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SMALL, tmp_path / "current"))


def edit(folder: Path, key_prefix: str, change) -> str:
    """Apply `change(record)` to the one record whose stable key is `key_prefix`; returns its cell id."""
    from harness.report.loader import cell_key

    hits = []
    for path in folder.glob("*.json"):
        if path.name == "comparisons.json":
            continue
        rec = json.loads(path.read_text())
        if cell_key(rec["config"]) == key_prefix:
            change(rec)
            path.write_text(json.dumps(rec))
            hits.append(rec["cell_id"])
    assert len(hits) == 1, (key_prefix, hits)
    return hits[0]


def failing(result: GateResult) -> set[tuple[str, str]]:
    return {(r.cell, r.metric) for r in result.rows if not r.ok}


def test_baseline_content(baseline: Path) -> None:
    data = json.loads(baseline.read_text())
    assert data["schema"] == 1 and len(data["cells"]) == 37
    cell = data["cells"][REAL_LORA]
    assert cell["cell_id"].startswith("smollm2-360m_lora-r16_e2_lr2e-4_s0-")
    assert cell["status"] == "success" and set(cell["accuracy"]) == {"medqa", "pubmedqa"}
    assert cell["memory_bytes"] > 0 and cell["memory_metric"] == "max_reserved_bytes"
    assert cell["memory_device"] == "cuda" and cell["time_per_epoch_s"] > 0
    skipped = [c for c in data["cells"].values() if c["status"] == "skipped"]
    assert len(skipped) == 2 and all(c["accuracy"] == {} for c in skipped)


def test_identical_results_pass(baseline: Path, current: Path) -> None:
    result = check_baseline(current, baseline, LIMITS)
    assert result.passed, result.summary()
    assert result.missing == [] and result.new == [] and failing(result) == set()
    # 34 successful cells: 2 accuracies + memory each, and time per epoch for the 32 trained ones
    assert len(result.rows) == 34 * 3 + 32
    assert "PASSED" in result.summary()


def test_changes_within_the_limits_pass(baseline: Path, current: Path) -> None:
    def small_changes(rec):
        rec["metrics"]["eval"]["medqa"]["acc"] -= 0.015  # 1.5 points < 2
        rec["metrics"]["memory"]["headline_bytes"] = int(rec["metrics"]["memory"]["headline_bytes"] * 1.08)
        rec["metrics"]["train"]["time_per_epoch_s"] *= 1.4

    edit(current, REAL_LORA, small_changes)
    assert check_baseline(current, baseline, LIMITS).passed


def test_accuracy_drop_fails(baseline: Path, current: Path) -> None:
    def drop(rec):
        rec["metrics"]["eval"]["pubmedqa"]["acc"] -= 0.03

    edit(current, REAL_LORA, drop)
    result = check_baseline(current, baseline, LIMITS)
    assert not result.passed
    assert failing(result) == {(REAL_LORA, "acc:pubmedqa")}
    row = result.failures[0]
    assert row.change == pytest.approx(-0.03) and row.limit == 0.02
    assert "FAIL" in result.summary() and "-3.0 pts" in result.summary()


def test_accuracy_gain_is_not_a_regression(baseline: Path, current: Path) -> None:
    def gain(rec):
        rec["metrics"]["eval"]["medqa"]["acc"] += 0.10

    edit(current, REAL_LORA, gain)
    assert check_baseline(current, baseline, LIMITS).passed


def test_memory_growth_fails(baseline: Path, current: Path) -> None:
    def grow(rec):
        rec["metrics"]["memory"]["headline_bytes"] = int(rec["metrics"]["memory"]["headline_bytes"] * 1.25)

    edit(current, REAL_FULL, grow)
    result = check_baseline(current, baseline, LIMITS)
    assert failing(result) == {(REAL_FULL, "memory")}
    assert result.failures[0].change == pytest.approx(0.25, abs=1e-6)


def test_time_growth_fails(baseline: Path, current: Path) -> None:
    def slower(rec):
        rec["metrics"]["train"]["time_per_epoch_s"] *= 1.6

    edit(current, REAL_FULL, slower)
    result = check_baseline(current, baseline, LIMITS)
    assert failing(result) == {(REAL_FULL, "time_per_epoch")}
    # with a looser limit the same change passes: thresholds are honoured, also given as a dict
    assert check_baseline(current, baseline, {"max_time_growth": 0.7}).passed


def test_missing_cell_fails_and_new_cell_is_listed(baseline: Path, current: Path) -> None:
    from harness.report.loader import cell_key

    victim = next(p for p in current.glob("smollm2-360m_lora-r8_e1*.json"))
    key = cell_key(json.loads(victim.read_text())["config"])
    victim.unlink()
    extra = json.loads(next(current.glob("smollm2-360m_lora-r8_e2_lr2e-4*.json")).read_text())
    extra["config"]["seed"] = 1
    extra["cell_id"] = "smollm2-360m_lora-r8_e2_lr2e-4_s1-12345678"
    (current / f"{extra['cell_id']}.json").write_text(json.dumps(extra))
    result = check_baseline(current, baseline, LIMITS)
    assert not result.passed
    assert result.missing == [key]
    assert result.new == ["smollm2-360m/lora-r8/default/e2/lr0.0002/s1"]
    assert failing(result) == set()  # the failure is the missing cell alone
    assert f"MISSING {key}" in result.summary()


def test_a_cell_that_now_fails_fails_the_gate(baseline: Path, current: Path) -> None:
    def crash(rec):
        rec["status"], rec["reason"], rec["metrics"] = "failed", "RuntimeError: boom", {}

    edit(current, REAL_LORA, crash)
    result = check_baseline(current, baseline, LIMITS)
    assert failing(result) == {(REAL_LORA, "status")}


def test_cells_are_matched_by_key_not_by_hash(baseline: Path, current: Path) -> None:
    """A new default changes every config hash (and cell id); the gate still finds each cell."""
    for path in list(current.glob("*.json")):
        if path.name == "comparisons.json":
            continue
        rec = json.loads(path.read_text())
        rec["config_hash"] = "f" * 64
        rec["cell_id"] = rec["cell_id"].rsplit("-", 1)[0] + "-ffffffff"
        rec["config"]["train"]["max_seq_length"] = 2048
        path.unlink()
        (current / f"{rec['cell_id']}.json").write_text(json.dumps(rec))
    result = check_baseline(current, baseline, LIMITS)
    assert result.passed and result.missing == [] and result.new == []


def test_memory_measured_differently_is_not_compared(baseline: Path, current: Path) -> None:
    def on_cpu(rec):
        rec["metrics"]["memory"].update(device="cpu", headline="peak_rss_bytes", headline_bytes=10**12)

    edit(current, REAL_LORA, on_cpu)
    result = check_baseline(current, baseline, LIMITS)
    assert result.passed
    row = next(r for r in result.rows if r.cell == REAL_LORA and r.metric == "memory")
    assert row.change is None and "not comparable" in row.note


def test_unreadable_baseline_fails(tmp_path: Path, current: Path) -> None:
    bad = tmp_path / "nope.json"
    bad.write_text("{")
    result = check_baseline(current, bad, LIMITS)
    assert not result.passed and "cannot read the baseline" in result.notes[0]


def test_gate_section_in_the_report(baseline: Path, current: Path, tmp_path: Path) -> None:
    def drop(rec):
        rec["metrics"]["eval"]["medqa"]["acc"] -= 0.05

    edit(current, REAL_LORA, drop)
    next(current.glob("smollm2-360m_qlora-r16_e1_lr1e-4*.json")).unlink()
    gate = check_baseline(current, baseline, LIMITS)
    html = render_report(current, tmp_path / "r.html", gate=gate).read_text()
    start = html.index('<section id="gate">')
    sec = html[start : html.index("</section>", start)]
    assert start < html.index('<section id="headline">')  # near the top
    assert "FAILED" in sec and REAL_LORA in sec and "−5.0 pts" not in sec  # gate uses ASCII minus
    assert "-5.0 pts" in sec and "smollm2-360m/qlora-r16/default/e1/lr0.0001/s0" in sec
    assert sec.count('badge b-fail">FAIL<') == 1
    assert 'badge b-pass">pass' in sec  # passing rows are listed too
    json.dumps(gate.to_dict())  # serialisable for the CLI
