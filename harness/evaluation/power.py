"""Power of the paired test the report uses (the exact McNemar test), and what it implies: the smallest difference an
eval can see, and the items it takes to see a given one.

Two cells scored on the same n items give pairs of 0/1 outcomes. Only the discordant items (one cell right, the other
wrong) carry information. With ψ = p10 + p01 the share of discordant items and δ = p01 - p10 the accuracy difference
(|δ| ≤ ψ always), Connor (1987, Biometrics 43:207-211) approximates the two-sided test at level α by

    n(δ, ψ)  = (z_{1-α/2}·√ψ + z_{1-β}·√(ψ - δ²))² / δ²
    δ(n, ψ)  = the root of (n + z_β²)·δ² - 2·z_α·√(ψn)·δ + (z_α² - z_β²)·ψ = 0      (solved directly)

The report runs the EXACT test (conditional binomial on the discordant pairs), whose power at Connor's n is a little
short of the target (0.77-0.79 for 0.80). So sizing is by exact power, with Connor as the starting point: the number
of discordant items D is Binomial(n, ψ); given D = d, the items the second cell wins are Binomial(d, p01/ψ); the test
rejects when its exact two-sided p-value is below α. `exact_power` sums that over d (only where Binomial(n, ψ) holds
mass: ±12 standard deviations), `required_items` is the smallest n from Connor's up with exact power ≥ the target,
`minimum_detectable_difference` the smallest δ from Connor's up with it. numpy only (no scipy): the dry-run stays fast.

The discordance ψ is what a plan has to assume: measured on the base row's comparisons once results exist (the share
of items on which trained cells and the untrained model disagree), an assumed rate before that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

from harness.formatting import fmt_pct

ALPHA = 0.05
POWER = 0.8
ASSUMED_DISCORDANCE = 0.20  # a planning assumption before any result exists: 1 item in 5 changes its outcome
METHOD = "exact power of the two-sided exact McNemar test (binomial), from Connor's (1987) approximation"
_WINDOW_SD = 12.0  # Binomial(n, ψ) mass beyond this many standard deviations is below 1e-30


def _z(q: float) -> float:
    return NormalDist().inv_cdf(q)


def _check(discordance: float, alpha: float, power: float | None = None) -> None:
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1] (got {discordance})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    if power is not None and not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1) (got {power})")


def _check_delta(delta: float, discordance: float) -> float:
    d = abs(delta)
    if d > discordance + 1e-12:
        raise ValueError(
            f"|delta| ({d}) cannot exceed the discordance ({discordance}): a difference needs at least "
            "that many items on which the two cells disagree"
        )
    return min(d, discordance)


# ---------------------------------------------------------------------------------------------------- Connor


def mcnemar_power(n: float, delta: float, discordance: float, alpha: float = ALPHA) -> float:
    """Connor's (1987) normal approximation to the power with n pairs for a true difference `delta`."""
    _check(discordance, alpha)
    d = _check_delta(delta, discordance)
    if n <= 0:
        return 0.0
    za, phi = _z(1 - alpha / 2), NormalDist().cdf
    spread = math.sqrt(max(discordance - d * d, 1e-300))
    root_n = math.sqrt(n)
    return phi((d * root_n - za * math.sqrt(discordance)) / spread) + phi(
        (-d * root_n - za * math.sqrt(discordance)) / spread
    )


def mcnemar_sample_size(delta: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs (items) Connor's approximation asks for to detect `delta` with the given power; not rounded up."""
    _check(discordance, alpha, power)
    d = _check_delta(delta, discordance)
    if d == 0:
        return math.inf
    za, zb = _z(1 - alpha / 2), _z(power)
    return (za * math.sqrt(discordance) + zb * math.sqrt(discordance - d * d)) ** 2 / (d * d)


def connor_mdd(n: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Connor's smallest detectable |δ| for n pairs, solved directly (the larger root of the quadratic in the module
    doc); None when no δ up to the discordance reaches the power."""
    _check(discordance, alpha, power)
    if n <= 0:
        return None
    za, zb = _z(1 - alpha / 2), _z(power)
    a, b, c = n + zb * zb, -2 * za * math.sqrt(discordance * n), (za * za - zb * zb) * discordance
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    d = (-b + math.sqrt(disc)) / (2 * a)
    return d if 0 < d <= discordance else None


# ---------------------------------------------------------------------------------------------------- exact


@lru_cache(maxsize=64)
def _log_factorials(n: int) -> Any:
    import numpy as np

    return np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))))


def _critical_counts(ds: Any, alpha: float) -> Any:
    """For each discordant count d: the largest k with exact two-sided p = 2·P(X ≤ k | d, 1/2) < α (-1: none), so
    the test rejects exactly when min(wins of A, wins of B) ≤ k."""
    import numpy as np

    dmax = int(ds.max()) if len(ds) else 0
    lf = _log_factorials(max(dmax, 1))
    ks = np.arange(dmax // 2 + 1)
    logpmf = (
        lf[ds][:, None] - lf[ks][None, :] - lf[np.maximum(ds[:, None] - ks[None, :], 0)] - ds[:, None] * math.log(2)
    )
    pmf = np.where(ks[None, :] <= ds[:, None] // 2, np.exp(logpmf), 0.0)
    cdf = np.cumsum(pmf, axis=1)
    reject = 2 * cdf < alpha
    return np.where(reject.any(axis=1), reject.sum(axis=1) - 1, -1)  # cdf increases in k: the rejecting k lead


def exact_power(n: int, p01: float, p10: float, alpha: float = ALPHA) -> float:
    """Exact power of the exact two-sided McNemar test at level α with n pairs, when a pair is discordant in favour of
    the second cell with probability p01 and of the first with p10 (see the module doc)."""
    import numpy as np

    psi = p01 + p10
    if n <= 0 or psi <= 0:
        return 0.0
    law = _discordant_law(n, psi, alpha)
    if law is None:
        return 0.0
    weight, crit, ks, ds, inside, base = law
    share = p01 / psi
    with np.errstate(divide="ignore", invalid="ignore"):
        tails = 0.0
        for s in (share, 1 - share):  # P(B wins ≤ k) + P(A wins ≤ k): both tails of the two-sided test
            if s <= 0:
                tails = tails + np.where(crit >= 0, 1.0, 0.0)  # always 0 wins: the lower tail holds everything
                continue
            if s >= 1:
                continue
            logpmf = base + ks[None, :] * math.log(s) + (ds[:, None] - ks[None, :]) * math.log1p(-s)
            tails = tails + np.where(inside, np.exp(logpmf), 0.0).sum(axis=1)
    return float(np.clip((weight * tails).sum(), 0.0, 1.0))


@lru_cache(maxsize=256)
def _discordant_law(n: int, psi: float, alpha: float) -> tuple[Any, ...] | None:
    """What exact power needs that does not depend on which cell wins a discordant pair: the binomial weight of each
    discordant count d near n·ψ, the test's critical count for it, and the log binomial coefficients. Cached, since
    sizing and the detectable difference evaluate many shares at the same n and ψ (read-only arrays)."""
    import numpy as np

    sd = math.sqrt(n * psi * (1 - psi))
    lo = max(1, int(n * psi - _WINDOW_SD * sd) - 2)
    hi = min(n, int(n * psi + _WINDOW_SD * sd) + 2)
    ds = np.arange(lo, hi + 1)
    lf = _log_factorials(n)
    with np.errstate(divide="ignore"):
        log_psi, log_rest = np.log(psi), np.log1p(-psi) if psi < 1 else -np.inf
        weight = np.exp(lf[n] - lf[ds] - lf[n - ds] + ds * log_psi + np.where(n - ds > 0, (n - ds) * log_rest, 0.0))
    crit = _critical_counts(ds, alpha)
    kmax = int(crit.max())
    if kmax < 0:
        return None
    ks = np.arange(kmax + 1)
    inside = ks[None, :] <= crit[:, None]
    base = lf[ds][:, None] - lf[ks][None, :] - lf[np.maximum(ds[:, None] - ks[None, :], 0)]
    return weight, crit, ks, ds, inside, base


def _exact(n: int, delta: float, discordance: float, alpha: float) -> float:
    d = _check_delta(delta, discordance)
    return exact_power(n, (discordance + d) / 2, (discordance - d) / 2, alpha)


@lru_cache(maxsize=1024)  # pure; the plan and the report ask again for the same tasks
def required_items(delta: float, discordance: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """The smallest n, from Connor's up, at which the exact test reaches `power` for `delta` (0 for δ = 0)."""
    connor = mcnemar_sample_size(delta, discordance, alpha, power)
    if not math.isfinite(connor):
        return 0
    n = max(1, math.ceil(connor - 1e-9))
    step = max(1, n // 100)
    while _exact(n, delta, discordance, alpha) < power:  # exact power is a sawtooth around a rising curve
        n += step
        if n > 100 * max(connor, 10):
            raise ValueError(f"no n up to {n} reaches power {power} for delta {delta} (discordance {discordance})")
    for m in range(max(1, n - step + 1), n):  # the smallest n of the last step that reaches it
        if _exact(m, delta, discordance, alpha) >= power:
            return m
    return n


@lru_cache(maxsize=1024)  # pure; the plan and the report ask again for the same tasks
def minimum_detectable_difference(
    n: float, discordance: float, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest |δ| that the exact test on n pairs detects with `power` (bisection from Connor's δ up; exact power
    rises with δ), or None when not even δ = the discordance reaches it."""
    _check(discordance, alpha, power)
    n = int(n)
    if n <= 0 or _exact(n, discordance, discordance, alpha) < power:
        return None
    lo = min(connor_mdd(n, discordance, alpha, power) or discordance, discordance) * 0.9
    if _exact(n, lo, discordance, alpha) >= power:
        lo = 0.0
    hi = discordance
    while hi - lo > 1e-7:  # a thousandth of the 0.1 point the difference is printed with
        mid = (lo + hi) / 2
        if _exact(n, mid, discordance, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------------------------------------------- discordance


@dataclass(frozen=True)
class Discordance:
    rate: float
    source: str  # "measured" or "assumed"
    detail: str  # where the figure comes from, for the reader

    def text(self) -> str:
        return f"discordance {fmt_pct(self.rate)} ({self.detail})"  # 58 of 400: 14.5 %, never "14 %"


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


def _bisect(f: Any, lo: float, hi: float, tol: float) -> float:
    """The root of an increasing `f` on [lo, hi] (f(lo) < 0 ≤ f(hi)), to `tol`."""
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return hi


def mdd_with_seeds(
    n: int, discordance: float, seed_sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest |δ| detectable by the mean of `seeds` runs on n items (None: not below the discordance); a normal
    approximation (the seed variance has no exact binomial form)."""
    _check(discordance, alpha, power)
    if _seed_gap(discordance, n, discordance, seed_sd, seeds, alpha, power) < 0:
        return None
    return _bisect(lambda d: _seed_gap(d, n, discordance, seed_sd, seeds, alpha, power), 1e-12, discordance, 1e-10)


def items_needed_with_seeds(
    delta: float, discordance: float, seed_sd: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Items for `seeds` runs to detect δ; None when the seed noise alone hides δ (more seeds are needed). Without a
    seed spread this is the exact test's `required_items`."""
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
    n = _bisect(lambda m: _seed_gap(d, m, discordance, seed_sd, seeds, alpha, power), 1e-9, hi, 1e-6)
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
