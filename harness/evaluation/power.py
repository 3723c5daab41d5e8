"""Power of the paired test the report uses (McNemar), and what it implies: the smallest difference an eval can see.

Two cells scored on the same n items give pairs of 0/1 outcomes. Only the discordant items (one cell right, the other
wrong) carry information. With ψ = p10 + p01 the share of discordant items and δ = p01 - p10 the accuracy difference
(|δ| ≤ ψ always), Connor (1987, Biometrics 43:207-211) gives for the two-sided test at level α:

    power(n, δ, ψ) = Φ((|δ|·√n - z_{1-α/2}·√ψ) / √(ψ - δ²)) + Φ((-|δ|·√n - z_{1-α/2}·√ψ) / √(ψ - δ²))
    n(δ, ψ)        = (z_{1-α/2}·√ψ + z_{1-β}·√(ψ - δ²))² / δ²

The minimum detectable difference (MDD) for n items is the smallest δ whose power reaches 1-β (0.8 by default); it is
found by root finding on the power (δ ≤ ψ). The exact conditional power of the exact McNemar test (which the report
runs) is computed by `exact_power` for checking the approximation on small n.

The discordance ψ is what a plan has to assume: measured on the base row's comparisons once results exist (the
share of items on which trained cells and the untrained model disagree), an assumed rate before that. scipy is
imported inside the functions, so that importing this module stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05
POWER = 0.8
ASSUMED_DISCORDANCE = 0.20  # a planning assumption before any result exists: 1 item in 5 changes its outcome
METHOD = "Connor (1987) normal approximation to the two-sided McNemar test"


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def _check(discordance: float, alpha: float, power: float | None = None) -> None:
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1] (got {discordance})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    if power is not None and not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1) (got {power})")


def mcnemar_power(n: float, delta: float, discordance: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided McNemar test with n pairs for a true difference `delta` (Connor 1987)."""
    from scipy.stats import norm

    _check(discordance, alpha)
    d = abs(delta)
    if d > discordance + 1e-12:
        raise ValueError(
            f"|delta| ({d}) cannot exceed the discordance ({discordance}): a difference needs at least "
            "that many items on which the two cells disagree"
        )
    if n <= 0:
        return 0.0
    za = _z(1 - alpha / 2)
    spread = math.sqrt(max(discordance - d * d, 1e-300))
    root_n = math.sqrt(n)
    return float(
        norm.cdf((d * root_n - za * math.sqrt(discordance)) / spread)
        + norm.cdf((-d * root_n - za * math.sqrt(discordance)) / spread)
    )


def mcnemar_sample_size(delta: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs (items) needed to detect `delta` with the given power (Connor 1987); not rounded up."""
    _check(discordance, alpha, power)
    d = abs(delta)
    if d == 0:
        return math.inf
    if d > discordance:
        raise ValueError(f"|delta| ({d}) cannot exceed the discordance ({discordance})")
    za, zb = _z(1 - alpha / 2), _z(power)
    return (za * math.sqrt(discordance) + zb * math.sqrt(discordance - d * d)) ** 2 / (d * d)


def required_items(delta: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """`mcnemar_sample_size` rounded up to whole items."""
    n = mcnemar_sample_size(delta, discordance, alpha, power)
    return math.ceil(n - 1e-9) if math.isfinite(n) else 0


def minimum_detectable_difference(
    n: float, discordance: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest |δ| that n paired items detect with the given power, or None when no difference up to the
    discordance itself reaches that power (too few items for that much disagreement)."""
    from scipy.optimize import brentq

    _check(discordance, alpha, power)
    if n <= 0 or mcnemar_power(n, discordance, discordance, alpha) < power:
        return None
    lo = 1e-9
    if mcnemar_power(n, lo, discordance, alpha) >= power:
        return lo
    return float(brentq(lambda d: mcnemar_power(n, d, discordance, alpha) - power, lo, discordance, xtol=1e-10))


def exact_power(n: int, p01: float, p10: float, alpha: float = ALPHA) -> float:
    """Exact unconditional power of the exact (conditional binomial) McNemar test: the number of discordant items D
    is Binomial(n, ψ); given D, the items the second cell gets right are Binomial(D, p01/ψ); the test rejects when
    its exact two-sided p-value is below alpha."""
    import numpy as np
    from scipy.stats import binom

    psi = p01 + p10
    if psi <= 0:
        return 0.0
    share = p01 / psi
    total = 0.0
    for d in range(1, n + 1):
        k = np.arange(d + 1)
        low = np.minimum(k, d - k)
        pvals = np.minimum(1.0, 2 * binom.cdf(low, d, 0.5))
        reject = pvals < alpha
        if reject.any():
            total += float(binom.pmf(d, n, psi) * binom.pmf(k[reject], d, share).sum())
    return total


# ---------------------------------------------------------------------------------------------------- discordance


@dataclass(frozen=True)
class Discordance:
    rate: float
    source: str  # "measured" or "assumed"
    detail: str  # where the figure comes from, for the reader

    def text(self) -> str:
        return f"discordance {100 * self.rate:.0f} % ({self.detail})"


def measured_discordance(comparisons: Iterable[dict[str, Any]], task: str) -> tuple[float, int, int] | None:
    """Pooled share of discordant items over the paired comparisons of one task (trained cells vs their base row):
    (rate, discordant items, items), or None when there is no comparison or no disagreement at all."""
    disc = items = 0
    for c in comparisons:
        if c.get("task") != task or not c.get("n"):
            continue
        a = c.get("n_only_a", c.get("b")) or 0
        b = c.get("n_only_b", c.get("c")) or 0
        disc += int(a) + int(b)
        items += int(c["n"])
    if not items or not disc:
        return None
    return disc / items, disc, items


def discordance_for(
    task: str, comparisons: Iterable[dict[str, Any]] | None, assumed: float = ASSUMED_DISCORDANCE
) -> Discordance:
    """The measured discordance of `task` where comparisons with the base row exist, else the assumed rate."""
    comps = list(comparisons or [])
    measured = measured_discordance(comps, task)
    if measured is not None:
        rate, disc, items = measured
        cells = len({c.get("cell") for c in comps if c.get("task") == task})
        return Discordance(
            rate,
            "measured",
            f"measured vs the base row: {disc} of {items} paired items over {cells} cell{'s' if cells != 1 else ''}",
        )
    if any(c.get("task") == task for c in comps):
        return Discordance(
            assumed,
            "assumed",
            "assumed: the measured cells never disagree with the base row, which tells nothing about a cell that would",
        )
    return Discordance(assumed, "assumed", "assumed before any result exists")


@dataclass(frozen=True)
class Detectability:
    task: str
    n: int
    discordance: Discordance
    mdd: float | None  # smallest detectable |δ| at alpha / power
    target: float  # the difference the researcher cares about
    items_for_target: int | None  # items that would detect `target` (None: target > discordance)
    alpha: float = ALPHA
    power: float = POWER

    def mdd_points(self) -> str:
        return "–" if self.mdd is None else f"{100 * self.mdd:.1f}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.n,
            "discordance": self.discordance.rate,
            "discordance_source": self.discordance.source,
            "discordance_detail": self.discordance.detail,
            "mdd": self.mdd,
            "target": self.target,
            "items_for_target": self.items_for_target,
            "alpha": self.alpha,
            "power": self.power,
            "method": METHOD,
        }


def detectability(
    task: str, n: int, discordance: Discordance, target: float = 0.03, alpha: float = ALPHA, power: float = POWER
) -> Detectability:
    mdd = minimum_detectable_difference(n, discordance.rate, alpha, power) if n > 0 else None
    need = required_items(target, discordance.rate, alpha, power) if target <= discordance.rate else None
    return Detectability(task, n, discordance, mdd, target, need, alpha, power)


def sentence(d: Detectability, label: str | None = None, available: int | None = None) -> str:
    """e.g. "MedQA, 100 items: differences under ≈ 12.4 points are invisible; ≈ 1742 items would show 3 points".
    `available`: the items the task has in all; said when the items needed exceed it."""
    name = label or d.task
    target = f"{100 * d.target:g} points"
    if d.mdd is None:
        head = (
            f"{name}, {d.n} items: no difference is reliably visible (power {d.power:.0%} is out of reach at "
            f"this discordance)"
        )
    else:
        head = f"{name}, {d.n} items: differences under ≈ {100 * d.mdd:.1f} points are invisible"
    if d.items_for_target is None:
        tail = f"{target} exceed the assumed discordance"
    elif d.mdd is not None and d.mdd <= d.target:
        tail = f"{target} are visible already (≈ {d.items_for_target} items suffice)"
    else:
        tail = f"≈ {d.items_for_target} items would show {target}"
        if available and d.items_for_target > available:
            tail += f" (more than the {available} the task has)"
    return f"{head}; {tail} [α = {d.alpha:g}, power {d.power:.0%}, {d.discordance.text()}]"


# ---------------------------------------------------------------------------------------------------- seeds

# With several training seeds the estimate of a configuration's gain is the mean over k seeds of (trained - base) on
# the same n items. Its variance is about ψ/n (under no difference; (ψ - δ²)/n under δ) from the items plus σ_s²/k from
# the seeds, where σ_s is the standard deviation of the accuracy across seeds on the same items. Connor's condition
# then reads
#
#     δ = z_{1-α/2}·√(ψ/n + σ_s²/k) + z_{1-β}·√((ψ - δ²)/n + σ_s²/k)
#
# which is Connor (1987) exactly when σ_s = 0. A measured σ_s (on n items) also holds some item noise, so the figures
# for more items than it was measured on are conservative.


def _seed_gap(
    d: float, n: float, discordance: float, seed_sd: float, seeds: float, alpha: float, power: float
) -> float:
    s2 = seed_sd**2 / seeds
    return (
        d
        - _z(1 - alpha / 2) * math.sqrt(discordance / n + s2)
        - _z(power) * math.sqrt(max(discordance - d * d, 0.0) / n + s2)
    )


def mdd_with_seeds(
    n: int, discordance: float, seed_sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest |δ| detectable by the mean of `seeds` runs on n items (None: not below the discordance)."""
    from scipy.optimize import brentq

    _check(discordance, alpha, power)
    if _seed_gap(discordance, n, discordance, seed_sd, seeds, alpha, power) < 0:
        return None
    return float(
        brentq(lambda d: _seed_gap(d, n, discordance, seed_sd, seeds, alpha, power), 1e-12, discordance, xtol=1e-10)
    )


def items_needed_with_seeds(
    delta: float, discordance: float, seed_sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Items for `seeds` runs to detect δ; None when the seed noise alone hides δ (more seeds are needed)."""
    from scipy.optimize import brentq

    _check(discordance, alpha, power)
    d = abs(delta)
    if d == 0 or d > discordance or d - _zsum(alpha, power) * seed_sd / math.sqrt(seeds) <= 0:
        return None
    if seed_sd == 0:
        return required_items(d, discordance, alpha, power)
    hi = 1.0
    while _seed_gap(d, hi, discordance, seed_sd, seeds, alpha, power) < 0:
        hi *= 2
        if hi > 1e12:
            return None
    n = brentq(lambda m: _seed_gap(d, m, discordance, seed_sd, seeds, alpha, power), 1e-9, hi, xtol=1e-6)
    return math.ceil(n - 1e-6)


def seeds_needed(
    delta: float,
    n: int,
    discordance: float,
    seed_sd: float,
    alpha: float = ALPHA,
    power: float = POWER,
    max_seeds: int = 1000,
) -> int | None:
    """Seeds for n items to detect δ; None when the items alone cannot (more items are needed)."""
    d = abs(delta)
    if d == 0 or d > discordance or _seed_gap(d, n, discordance, 0.0, 1, alpha, power) <= 0:
        return None
    for k in range(1, max_seeds + 1):
        if _seed_gap(d, n, discordance, seed_sd, k, alpha, power) >= 0:
            return k
    return None


def _zsum(alpha: float, power: float) -> float:
    return _z(1 - alpha / 2) + _z(power)
