"""Numbers that cannot mislead (issue 21): trivial baselines on the same items, constant-answer cells flagged in the
comparisons, the report's decision block and table, and the regression gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.evaluation.baselines import answer_distribution, trivial_baselines
from harness.evaluation.stats import versus_constant

ROOT = Path(__file__).resolve().parent.parent


def items(targets: str, chosen: str) -> list[dict]:
    return [{"id": i, "target": t, "chosen": c, "correct": t == c} for i, (t, c) in enumerate(zip(targets, chosen))]


def test_constant_answers_are_the_share_of_their_keys():
    its = items("AABCDAAB", "AAAAAAAA")
    b = trivial_baselines("medqa", its)
    assert b["constant"] == {"A": 4 / 8, "B": 2 / 8, "C": 1 / 8, "D": 1 / 8} and b["chance"] == 0.25
    assert b["majority"] == {"answer": "A", "acc": 0.5}


def test_a_cell_giving_one_answer_everywhere_is_degenerate_and_says_why():
    d = answer_distribution("medqa", items("AABCDAAB", "AAAAAAAA"))
    assert d["degenerate"] and d["top"] == "A" and d["counts"] == {"A": 8, "B": 0, "C": 0, "D": 0}
    assert (
        d["sentence"] == "answers A on 100.0 % of items: its accuracy is about the share of A keys (50.0 %), not skill"
    )
    varied = answer_distribution("medqa", items("AABCDAAB", "AABCDAAC"))
    assert not varied["degenerate"] and "sentence" not in varied
    assert answer_distribution("t", [{"id": 1, "target": "x", "response": "y", "correct": False}]) is None


def test_a_cell_against_always_the_majority_answer():
    cell = items("yyyyyynnnm", "yyyyyynnny")  # 9 of 10 right; always "y": 6 of 10
    vs = versus_constant(cell, "y")
    assert vs["acc"] == 0.6 and vs["diff"] == pytest.approx(0.3) and vs["p_value"] == 0.25  # 3 vs 0 discordant
    assert not vs["beats"] and vs["ci_low"] < 0 < vs["ci_high"]  # the interval agrees with the test


@pytest.fixture
def quickstart(tmp_path):
    """The committed quickstart results, with comparisons.json recomputed (trivial baselines, answers)."""
    from harness.evaluation.stats import compute_comparisons

    folder = tmp_path / "quickstart"
    shutil.copytree(ROOT / "results" / "quickstart", folder, ignore=shutil.ignore_patterns("*.log", "adapter"))
    compute_comparisons(folder)
    return folder


def test_committed_comparisons_carry_baselines_and_answers():
    for name in ("quickstart", "cpu_smollm2"):
        data = json.loads((ROOT / "results" / name / "comparisons.json").read_text())
        tasks = {b["task"] for b in data["baselines"]}
        assert tasks == {"medqa", "pubmedqa"}, name
        assert all(c["vs_majority"]["answer"] for c in data["comparisons"]), name
        # SmolLM2-135M answers A on every MedQA item, trained or not: every cell is flagged
        assert all(a["medqa"]["degenerate"] for a in data["answers"].values()), name


def test_the_decision_states_trivial_baselines_and_flags_every_constant_answer_cell(quickstart):
    from harness.report.decision import build_decision
    from harness.report.loader import load_report_data

    data = load_report_data(quickstart)
    (model,) = build_decision(data)
    by_task = {t["task"]: t for t in model["tasks"]}
    medqa, pubmedqa = by_task["medqa"], by_task["pubmedqa"]
    assert medqa["sentences"][0].startswith("MedQA (60 items): no method differs detectably from the untrained model")
    assert "95 % CI" in medqa["sentences"][0] and "p = " in medqa["sentences"][0]
    assert any('does not beat always answering "A"' in s for s in medqa["sentences"])
    assert any("the untrained model answers A on 100.0 % of items" in f for f in medqa["flags"])
    assert 'always "yes" 56.7 %' in pubmedqa["trivial"] and "chance 33.3 %" in pubmedqa["trivial"]
    # the report's table flags every constant-answer accuracy
    from harness.report.render import build_table, method_order

    table = build_table(data, method_order(data.cells))
    medqa_col = next(i for i, c in enumerate(table["columns"]) if c["label"] == "MedQA acc")
    assert all(row["cells"][medqa_col]["text"].endswith("⚑") for row in table["rows"])


def test_the_gate_fails_a_cell_that_became_a_constant_answerer(quickstart, tmp_path):
    from harness.report.gate import check_baseline, write_baseline

    baseline = write_baseline(quickstart, tmp_path / "b.json")
    key = next(k for k, c in baseline["cells"].items() if "pubmedqa" in c["degenerate"])
    assert baseline["cells"][key]["degenerate"]["pubmedqa"] is False
    # the cell now answers "no" everywhere
    cell_id = baseline["cells"][key]["cell_id"]
    path = quickstart / cell_id / "items" / "pubmedqa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "chosen": "no", "correct": r["target"] == "no"}) + "\n" for r in rows))
    from harness.evaluation.stats import compute_comparisons

    compute_comparisons(quickstart)
    gate = check_baseline(quickstart, tmp_path / "b.json", {"max_accuracy_drop": 1.0})
    failed = [(r.cell, r.metric) for r in gate.rows if not r.ok]
    assert (key, "degenerate:pubmedqa") in failed and not gate.passed
