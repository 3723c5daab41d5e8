"""Power of the paired McNemar test, the minimum detectable difference and the sizing command, checked against
published and hand-computed values."""

from __future__ import annotations

import math

import pytest

from harness.evaluation import power as pw
from harness.evaluation.sizing import main as sizing_main


def test_connor_sample_size_matches_published_calculators() -> None:
    # powerandsamplesize.com, "McNemar Z-test, 2-sided" (Connor 1987): p01 = 0.45, p10 = 0.05, alpha 0.05,
    # power 0.8 -> 23 pairs
    assert math.ceil(pw.mcnemar_sample_size(0.40, 0.50)) == 23
    # clinicaltrials-tools McNemar calculator (Connor 1987): discordance 0.45, |p10 - p01| 0.15 -> 155 pairs,
    # achieved power 80.1 %
    assert math.ceil(pw.mcnemar_sample_size(0.15, 0.45)) == 155
    assert pw.mcnemar_power(155, 0.15, 0.45) == pytest.approx(0.801, abs=5e-4)


def brute_force_power(n: int, p01: float, p10: float, alpha: float = 0.05) -> float:
    """The exact McNemar test's power by the definition: every (discordant d, wins k), scipy's binomial."""
    from scipy.stats import binom

    from harness.evaluation.stats import mcnemar_exact_p

    psi = p01 + p10
    total = 0.0
    for d in range(n + 1):
        pd = binom.pmf(d, n, psi)
        total += pd * sum(binom.pmf(k, d, p01 / psi) for k in range(d + 1) if mcnemar_exact_p(d - k, k) < alpha)
    return total


@pytest.mark.parametrize("n, p01, p10", [(40, 0.2, 0.05), (120, 0.15, 0.08), (300, 0.12, 0.08), (60, 0.2, 0.0)])
def test_exact_power_is_the_binomial_computation(n, p01, p10) -> None:
    assert pw.exact_power(n, p01, p10) == pytest.approx(brute_force_power(n, p01, p10), abs=1e-9)


@pytest.mark.parametrize("delta, psi", [(0.03, 0.2), (0.03, 0.145), (0.06, 0.2), (0.1, 0.3), (0.4, 0.5), (0.15, 0.45)])
def test_sizing_reaches_the_power_by_the_exact_test_where_connor_falls_short(delta, psi) -> None:
    n = pw.required_items(delta, psi)
    p01, p10 = (psi + delta) / 2, (psi - delta) / 2
    assert pw.exact_power(n, p01, p10) >= 0.80
    connor = math.ceil(pw.mcnemar_sample_size(delta, psi))
    assert n >= connor and pw.exact_power(connor, p01, p10) < 0.80  # Connor's n is a little short (0.77-0.79)
    if n <= 500:  # checked against the definition itself where that is quick
        assert brute_force_power(n, p01, p10) >= 0.80


def test_hand_computed_sample_size_and_mdd() -> None:
    # psi = 0.2, delta = 0.1: (1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.19))^2 / 0.01 = 154.60
    za, zb = 1.959963984540054, 0.8416212335729143
    expected = (za * math.sqrt(0.2) + zb * math.sqrt(0.19)) ** 2 / 0.01
    assert pw.mcnemar_sample_size(0.1, 0.2) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(154.60, abs=0.01)
    # Connor's MDD, solved directly, inverts Connor's sample size
    assert pw.connor_mdd(expected, 0.2) == pytest.approx(0.1, abs=1e-9)
    # the exact MDD is a little larger, and exactly where the exact power reaches 0.8
    mdd = pw.minimum_detectable_difference(100, 0.2)
    assert mdd == pytest.approx(0.1277, abs=5e-4) and mdd > pw.connor_mdd(100, 0.2) == pytest.approx(0.1238, abs=5e-4)
    assert pw.exact_power(100, (0.2 + mdd) / 2, (0.2 - mdd) / 2) == pytest.approx(0.8, abs=1e-6)
    assert pw.required_items(0.03, 0.2) == 1800


def test_mdd_shrinks_with_items_and_grows_with_discordance() -> None:
    small, large = (pw.minimum_detectable_difference(n, 0.2) for n in (100, 1000))
    assert large < small
    assert pw.minimum_detectable_difference(500, 0.1) < pw.minimum_detectable_difference(500, 0.3)


def test_mdd_is_none_when_no_difference_up_to_the_discordance_has_the_power() -> None:
    # 6 % discordance on 100 items: even delta = psi (every disagreement one way) has power < 0.8
    assert pw.minimum_detectable_difference(100, 0.06) is None
    with pytest.raises(ValueError, match="cannot exceed the discordance"):
        pw.mcnemar_power(100, 0.3, 0.2)


def test_discordance_measured_from_comparisons_or_assumed() -> None:
    comps = [
        {"cell": "a", "task": "pubmedqa", "n": 100, "n_only_a": 1, "n_only_b": 5},
        {"cell": "b", "task": "pubmedqa", "n": 100, "n_only_a": 2, "n_only_b": 7},
        {"cell": "a", "task": "medqa", "n": 100, "n_only_a": 0, "n_only_b": 0},
    ]
    d = pw.discordance_for("pubmedqa", comps)
    assert d.source == "measured" and d.rate == pytest.approx(15 / 200)
    assert "15 of 200" in d.detail and "2 cells" in d.detail
    medqa = pw.discordance_for("medqa", comps, assumed=0.25)
    assert medqa.source == "assumed" and medqa.rate == 0.25 and "never disagree" in medqa.detail
    assert pw.discordance_for("other", comps).detail == "assumed before any result exists"


def test_sentence_reads_as_the_plan_prints_it() -> None:
    d = pw.detectability("medqa", 100, pw.Discordance(0.2, "assumed", "assumed"), target=0.03)
    text = pw.sentence(d, "MedQA")
    assert text.startswith(
        "MedQA, 100 items: differences under ≈ 12.8 points are invisible; ≈ 1800 items would show 3 points"
    )


def test_seed_aware_sizing_is_connor_without_seed_spread_and_costs_with_it() -> None:
    # no seed spread: the exact test's sizing, and Connor's MDD (the seed-aware condition is Connor's form)
    assert pw.items_needed_with_seeds(0.1, 0.2, 0.0, 1) == pw.required_items(0.1, 0.2) == 168
    assert pw.mdd_with_seeds(100, 0.2, 0.0, 1) == pytest.approx(pw.connor_mdd(100, 0.2), abs=1e-7)
    # any seed spread makes the detectable difference larger and the items needed more
    assert pw.mdd_with_seeds(100, 0.2, 0.02, 3) > pw.connor_mdd(100, 0.2)
    n = pw.items_needed_with_seeds(0.05, 0.2, 0.01, 3)
    assert n > pw.required_items(0.05, 0.2)
    # hand check of the condition d = za sqrt(psi/n + s2) + zb sqrt((psi - d^2)/n + s2) at n and n - 1
    za, zb, s2 = 1.959963984540054, 0.8416212335729143, 0.01**2 / 3

    def gap(m: int) -> float:
        return 0.05 - za * math.sqrt(0.2 / m + s2) - zb * math.sqrt((0.2 - 0.0025) / m + s2)

    assert gap(n) >= 0 > gap(n - 1)
    # a seed sd of 3 points with one seed hides 3 points whatever the number of items; 10 seeds do not
    assert pw.items_needed_with_seeds(0.03, 0.2, 0.03, 1) is None
    assert pw.items_needed_with_seeds(0.03, 0.2, 0.03, 10) is not None
    assert pw.seeds_needed(0.03, 100, 0.2, 0.015) is None  # 100 items cannot show 3 points
    k = pw.seeds_needed(0.05, 2000, 0.2, 0.02)
    assert k is not None and pw.mdd_with_seeds(2000, 0.2, 0.02, k) <= 0.05 + 1e-9
    assert pw.mdd_with_seeds(2000, 0.2, 0.02, k - 1) > 0.05


def test_sizing_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert sizing_main(["--items", "100", "--target", "3"]) == 0
    out = capsys.readouterr().out
    assert "100 items: differences under ≈ 12.8 points are invisible; ≈ 1800 items would show 3 points" in out
    assert sizing_main(["--items", "1273", "--target", "3", "--seed-sd", "1.5", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 points with 3 seeds: ≈ 5036 items" in out and "differences under ≈ 4.3 points" in out
    assert sizing_main([]) == 2
