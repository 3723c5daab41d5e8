"""Paired statistics: McNemar exact p, paired interval, item alignment, comparisons.json."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from harness.evaluation.stats import (
    ItemsMismatchError,
    compare_cells,
    compare_items,
    compute_comparisons,
    mcnemar_exact_p,
    paired_interval,
)
from harness.results import CellResult, write_result

# ---------------------------------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    "b, c, p",
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (5, 0, 2 / 32),
        (1, 9, 2 * 11 / 1024),  # 2 * (1 + 10) / 2^10
        (3, 3, 1.0),  # capped at 1
        (2, 8, 2 * (1 + 10 + 45) / 1024),
        (0, 1, 1.0),
    ],
)
def test_mcnemar_exact_hand_computed(b, c, p):
    assert mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest():
    from scipy.stats import binomtest

    for b, c in [(4, 11), (20, 35), (100, 130), (7, 7), (0, 12), (300, 260)]:
        assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)


# ---------------------------------------------------------------------------------------------------- interval


def test_paired_interval_hand_computed():
    # a = [1,1,0,0,1], b = [1,0,1,1,1] -> d = [0,-1,1,1,0]: mean 0.2, sd^2 = 2.8/4 = 0.7
    mean, lo, hi = paired_interval([0, -1, 1, 1, 0])
    half = 1.959963984540054 * math.sqrt(0.7 / 5)
    assert mean == pytest.approx(0.2)
    assert (lo, hi) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert half == pytest.approx(0.73335, abs=1e-5)


def test_paired_interval_degenerate_cases():
    assert paired_interval([0, 0, 0]) == (0.0, 0.0, 0.0)
    assert paired_interval([1]) == (1.0, None, None)
    with pytest.raises(ValueError):
        paired_interval([])


def test_the_interval_excludes_zero_exactly_when_the_exact_test_rejects():
    from harness.evaluation.stats import mcnemar_exact_interval

    for n_only_a in range(0, 45):
        for n_only_b in range(0, 45):
            n = 150
            diff, lo, hi = mcnemar_exact_interval(n_only_a, n_only_b, n)
            assert lo <= diff <= hi
            assert (lo > 0 or hi < 0) == (mcnemar_exact_p(n_only_a, n_only_b) < 0.05), (n_only_a, n_only_b)


def test_the_quickstart_case_a_wald_interval_got_wrong():
    """Full fine-tuning vs base on 60 items: 4 items only the trained cell got right, none the other way. The Wald
    interval [+0.3, +13.0] excluded 0 while the exact test gave p = 0.125; the exact interval includes 0."""
    from harness.evaluation.stats import mcnemar_exact_interval

    diff, lo, hi = mcnemar_exact_interval(0, 4, 60)
    assert mcnemar_exact_p(0, 4) == 0.125 and lo < 0 < hi and diff == pytest.approx(4 / 60)


def test_committed_comparisons_interval_and_test_agree():
    """Every comparison committed under results/ (and the export records' paired scores): the interval excludes 0
    exactly when p < 0.05."""
    root = Path(__file__).resolve().parent.parent / "results"
    walked = 0
    for path in root.rglob("*.json"):
        data = json.loads(path.read_text())
        if path.name == "comparisons.json":
            entries = data.get("comparisons", [])
        elif path.parent.name == "export":  # an exported artifact's score, paired with its cell
            entries = [t.get("vs_cell") for eng in (data.get("scores") or {}).values() for t in eng.values()]
        else:
            continue
        for c in [*entries, *[e.get("vs_majority") for e in entries if isinstance(e, dict)]]:
            if not isinstance(c, dict) or c.get("ci_low") is None:
                continue
            p = c.get("mcnemar_p", c.get("p_value"))
            assert (c["ci_low"] > 0 or c["ci_high"] < 0) == (p < 0.05), (path, c)
            walked += 1
    assert walked > 20


# ---------------------------------------------------------------------------------------------------- compare_items


def items(outcomes, ids=None, targets=None):
    ids = ids if ids is not None else list(range(len(outcomes)))
    return [
        {"id": i, "target": (targets[k] if targets else "A"), "chosen": "A", "correct": bool(o)}
        for k, (i, o) in enumerate(zip(ids, outcomes))
    ]


def test_compare_items_aligns_by_id_not_position():
    a = items([1, 1, 0, 0, 1], ids=["p1", "p2", "p3", "p4", "p5"])
    b = items([1, 0, 1, 1, 1], ids=["p1", "p2", "p3", "p4", "p5"])
    shuffled = list(reversed(b))
    c = compare_items(a, shuffled, task="t", cell_a="base", cell_b="lora")
    assert (c.n, c.acc_a, c.acc_b) == (5, 0.6, 0.8)
    assert c.diff == pytest.approx(0.2)
    assert (c.n_only_a, c.n_only_b) == (1, 2)
    assert c.mcnemar_p == pytest.approx(1.0)  # 2 * P(X<=1), X~Bin(3, .5) = 2 * 4/8
    # the exact interval: Clopper-Pearson for 2 of 3 discordant pairs, times their share 3/5, on the 2π - 1 scale
    from scipy.stats import beta

    assert c.ci_low == pytest.approx(0.6 * (2 * beta.ppf(0.025, 2, 2) - 1), abs=1e-9)
    assert c.ci_high == pytest.approx(0.6 * (2 * beta.ppf(0.975, 3, 1) - 1), abs=1e-9)
    d = c.to_dict()
    assert d["cell_a"] == "base" and d["significant"] is False and "McNemar" in d["test"]


def test_compare_items_significant_case():
    # 12 items B gets right and A wrong, 1 the other way, 20 ties
    a = [1] * 20 + [0] * 12 + [1]
    b = [1] * 20 + [1] * 12 + [0]
    c = compare_items(items(a), items(b))
    assert (c.n_only_a, c.n_only_b) == (1, 12)
    assert c.mcnemar_p == pytest.approx(2 * 14 / 2**13)
    assert c.significant and c.ci_low > 0


def test_compare_items_refuses_different_item_sets():
    with pytest.raises(ItemsMismatchError, match="not evaluated on the same items.*1 only in A.*0 only in B"):
        compare_items(items([1, 0, 1]), items([1, 0]))
    with pytest.raises(ItemsMismatchError, match="same id but different targets"):
        compare_items(items([1, 0], targets=["A", "B"]), items([1, 0], targets=["A", "C"]))
    with pytest.raises(ItemsMismatchError, match="more than once"):
        compare_items(items([1, 0], ids=[7, 7]), items([1, 0], ids=[7, 8]))
    with pytest.raises(ItemsMismatchError, match="no 0/1 'correct'"):
        compare_items([{"id": 1, "target": "x", "correct": None}], items([1]))
    with pytest.raises(ItemsMismatchError, match="no items"):
        compare_items([], [])


def test_compare_items_against_a_brute_force_count():
    rng = random.Random(3)
    a = [rng.random() < 0.4 for _ in range(200)]
    b = [rng.random() < 0.5 for _ in range(200)]
    c = compare_items(items(a), items(b))
    assert c.n_only_a == sum(x and not y for x, y in zip(a, b))
    assert c.n_only_b == sum(y and not x for x, y in zip(a, b))
    assert c.diff == pytest.approx(sum(b) / 200 - sum(a) / 200)


# ---------------------------------------------------------------------------------------------------- results folder


def write_cell(
    results_dir: Path,
    cell_id: str,
    model: str,
    kind: str,
    outcomes: dict[str, list[int]],
    status: str = "success",
    seed: int = 0,
) -> None:
    ev = {}
    for task, outs in outcomes.items():
        rel = f"{cell_id}/items/{task}.jsonl"
        p = results_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in items(outs)))
        ev[task] = {
            "acc": sum(outs) / len(outs),
            "acc_stderr": None,
            "acc_norm": None,
            "acc_norm_stderr": None,
            "n": len(outs),
            "wall_s": 1.0,
            "num_fewshot": 0,
            "limit": None,
            "items": rel,
        }
    write_result(
        results_dir,
        CellResult(
            cell_id=cell_id,
            config_hash="h" + cell_id,
            matrix="m",
            status=status,
            config={"model": {"id": model}, "method": {"kind": kind, "name": f"{kind}-x"}, "seed": seed},
            metrics={"eval": ev},
        ),
    )


def test_compute_comparisons_pairs_trained_cells_with_their_base_row(tmp_path):
    write_cell(tmp_path, "base-m1", "m1", "base", {"medqa": [1, 0, 0, 1], "pubmedqa": [1, 1, 0]})
    write_cell(tmp_path, "lora-m1", "m1", "lora", {"medqa": [1, 1, 1, 1], "pubmedqa": [1, 1, 0]})
    write_cell(tmp_path, "full-m1", "m1", "full", {"medqa": [0, 0, 0, 1, 1]})  # different items: refused
    write_cell(tmp_path, "lora-m2", "m2", "lora", {"medqa": [1]})  # no base row for m2
    write_cell(tmp_path, "base-m3", "m3", "base", {"medqa": [1, 1]})
    write_cell(tmp_path, "qlora-m3", "m3", "qlora", {"medqa": [0, 0]}, status="failed")  # not compared
    out = compute_comparisons(tmp_path)
    saved = json.loads((tmp_path / "comparisons.json").read_text())
    assert saved == json.loads(json.dumps(out))
    comps = {(c["cell"], c["task"]): c for c in out["comparisons"]}
    assert set(comps) == {("lora-m1", "medqa"), ("lora-m1", "pubmedqa")}
    c = comps[("lora-m1", "medqa")]
    assert (c["base_cell"], c["model"], c["method"]) == ("base-m1", "m1", "lora-x")
    assert (c["acc_a"], c["acc_b"], c["diff"], c["n_only_b"], c["n_only_a"]) == (0.5, 1.0, 0.5, 2, 0)
    assert c["mcnemar_p"] == pytest.approx(0.5)
    assert comps[("lora-m1", "pubmedqa")]["mcnemar_p"] == 1.0
    problems = {(p["cell"], p["task"]): p["reason"] for p in out["problems"]}
    assert "not evaluated on the same items" in problems[("full-m1", "medqa")]
    assert "no successful base row for model 'm2'" in problems[("lora-m2", None)]
    assert not any(p[0] == "qlora-m3" for p in problems)
    # comparisons.json is not a cell record
    from harness.results import load_results

    good, bad = load_results(tmp_path)
    assert len(good) == 6 and bad == []


def test_compare_cells_by_id(tmp_path):
    write_cell(tmp_path, "a", "m", "lora", {"medqa": [1, 0, 1], "pubmedqa": [0, 0]})
    write_cell(tmp_path, "b", "m", "full", {"medqa": [1, 1, 1]})
    comps = compare_cells(tmp_path, "a", "b")
    assert list(comps) == ["medqa"]
    assert comps["medqa"].diff == pytest.approx(1 / 3) and comps["medqa"].cell_b == "b"
    with pytest.raises(ItemsMismatchError, match="not evaluated in both"):
        compare_cells(tmp_path, "a", "b", tasks=["pubmedqa"])
    with pytest.raises(FileNotFoundError, match="no valid result for cell 'zz'"):
        compare_cells(tmp_path, "a", "zz")
