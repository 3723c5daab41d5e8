"""Seeds: mean ± sd across seeds per configuration and the hierarchical (items × seeds) bootstrap, on constructed
results whose answer is known: a real gain, and a gain made of seed noise only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.evaluation.seeds import compare_groups, hierarchical_bootstrap, seed_spread, seed_summaries, seed_verdict
from harness.results import CellResult, write_result

N_ITEMS = 400


def _outcomes(acc: float, rng: random.Random, n: int = N_ITEMS) -> list[int]:
    right = set(rng.sample(range(n), round(acc * n)))
    return [int(i in right) for i in range(n)]


def _shift(base: list[int], gain_items: int, rng: random.Random) -> list[int]:
    """The base outcomes with `gain_items` wrong items made right (a negative number: right items made wrong),
    plus 20 items flipped each way (disagreement that cancels)."""
    out = list(base)
    wrong = [i for i, x in enumerate(out) if not x]
    right = [i for i, x in enumerate(out) if x]
    rng.shuffle(wrong)
    rng.shuffle(right)
    for i in wrong[:20]:
        out[i] = 1
    for i in right[:20]:
        out[i] = 0
    if gain_items > 0:
        for i in wrong[20 : 20 + gain_items]:
            out[i] = 1
    else:
        for i in right[20 : 20 - gain_items]:
            out[i] = 0
    return out


def test_real_gain_is_significant_across_seeds() -> None:
    rng = random.Random(1)
    base = _outcomes(0.40, rng)
    trained = [_shift(base, 40 + d, rng) for d in (-4, 0, 4)]  # +10 points, seeds within ±1 point
    res = hierarchical_bootstrap([base], trained, n_boot=2000)
    assert res.diff == pytest.approx(0.10)
    assert res.ci_low > 0.05 and res.p_value < 0.01
    assert seed_verdict(res.diff, 0.01, 3) is None


def test_seed_noise_only_gain_is_not_significant_though_one_seed_alone_looks_it() -> None:
    rng = random.Random(2)
    base = _outcomes(0.40, rng)
    gains = (-30, 36, 6)  # seeds at -7.5, +9, +1.5 points: mean +1 point, sd 8.3 points
    trained = [_shift(base, g, rng) for g in gains]
    lucky = hierarchical_bootstrap([base], [trained[1]], n_boot=2000)  # the best seed, items only
    assert lucky.ci_low > 0 and lucky.p_value < 0.05
    res = hierarchical_bootstrap([base], trained, n_boot=2000)
    assert res.diff == pytest.approx(0.01)
    assert res.ci_low < 0 < res.ci_high and res.p_value > 0.2
    sd = (sum((g / N_ITEMS - 0.01) ** 2 for g in gains) / 2) ** 0.5
    verdict = seed_verdict(res.diff, sd, 3)
    assert verdict is not None and "larger than the gain" in verdict


def test_bootstrap_is_deterministic_and_checks_shapes() -> None:
    a, b = [[1, 0, 1, 0]], [[1, 1, 1, 0]]
    assert hierarchical_bootstrap(a, b, n_boot=500) == hierarchical_bootstrap(a, b, n_boot=500)
    with pytest.raises(ValueError, match="same items"):
        hierarchical_bootstrap([[1, 0]], [[1, 0, 1]])


def _write_cell(folder: Path, cell_id: str, method: str, seed: int, outcomes: list[int]) -> CellResult:
    kind = "base" if method == "base" else "lora"
    items = folder / cell_id / "items" / "medqa.jsonl"
    items.parent.mkdir(parents=True, exist_ok=True)
    items.write_text(
        "".join(json.dumps({"id": i, "target": "A", "correct": bool(x)}) + "\n" for i, x in enumerate(outcomes))
    )
    rec = CellResult(
        cell_id=cell_id,
        config_hash=cell_id,
        matrix="m",
        status="success",
        config={
            "model": {"id": "m1"},
            "method": {"name": method, "kind": kind},
            "variant": "default",
            "epochs": 0 if kind == "base" else 1,
            "learning_rate": 0.0 if kind == "base" else 1e-4,
            "seed": seed,
        },
        metrics={
            "eval": {
                "medqa": {
                    "acc": sum(outcomes) / len(outcomes),
                    "n": len(outcomes),
                    "items": f"{cell_id}/items/medqa.jsonl",
                }
            }
        },
    )
    write_result(folder, rec)
    return rec


def test_summaries_and_comparison_from_a_results_folder(tmp_path: Path) -> None:
    rng = random.Random(3)
    base = _outcomes(0.40, rng)
    base_rec = _write_cell(tmp_path, "base", "base", 0, base)
    recs = [
        _write_cell(tmp_path, f"lora_s{s}", "lora", s, _shift(base, g, rng)) for s, g in zip((0, 1, 2), (36, 40, 44))
    ]
    (summary,) = seed_summaries([base_rec, *recs], ["medqa"])
    assert summary.seeds == (0, 1, 2)
    assert summary.mean == pytest.approx(0.50)
    assert summary.sd == pytest.approx(0.01)
    res = compare_groups(tmp_path, [base_rec], recs, "medqa", n_boot=1000)
    assert res is not None and res.seeds_b == 3 and res.n == N_ITEMS and res.ci_low > 0
    spread = seed_spread(tmp_path)
    assert spread["medqa"]["sd"] == pytest.approx(0.01) and spread["medqa"]["seeds"] == 3


def test_report_shows_seed_spread_and_says_when_it_exceeds_the_gain(tmp_path: Path) -> None:
    from harness.evaluation.stats import compute_comparisons
    from harness.report import render_report

    rng = random.Random(4)
    base = _outcomes(0.40, rng)
    _write_cell(tmp_path, "base", "base", 0, base)
    for s, g in zip((0, 1, 2), (-30, 36, 6)):
        _write_cell(tmp_path, f"lora_s{s}", "lora", s, _shift(base, g, rng))
    compute_comparisons(tmp_path)
    html = render_report(tmp_path, tmp_path / "r.html").read_text()
    headline = html[html.index('id="headline"') : html.index('id="pareto"')]
    assert "Seeds: mean ± sd across seeds per configuration" in headline
    assert "41.0 % ± 8.3" in headline  # mean 41 %, sd 8.3 points
    assert "bootstrap over 400 items and 3 seeds" in headline
    assert "larger than the gain" in headline
    assert "detectable:" in headline and "Smallest detectable difference" in headline
