"""Seeds: the spread of a configuration across training seeds, and a comparison that counts it.

A configuration is a cell without its seed (model, method, variant, epochs, learning rate). With several seeds:
- `seed_summaries` gives per configuration and task the mean ± sd (ddof = 1) of the accuracy across its seeds;
- `hierarchical_bootstrap` compares two configurations on the same items, resampling both levels of variation:
  each replicate draws the items with replacement (the same draw for both sides: the pairing is kept) and, for each
  side, its seeds with replacement; the statistic is the difference of the mean accuracies. A percentile 95 %
  interval and a two-sided bootstrap p-value (twice the smaller tail share at 0) follow. With one seed per side it is
  the paired bootstrap over items; an untrained base row is deterministic and has one "seed";
- `seed_verdict` says plainly when the seed spread exceeds the gain.

numpy is imported inside the functions (the report imports this module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

N_BOOT = 4000
BOOT_SEED = 20261122  # fixed: the same results give the same interval
METHOD = (
    "hierarchical paired bootstrap: items resampled with replacement (the same items for both sides), seeds "
    "resampled within each configuration; 95 % percentile interval"
)


def config_key(config: dict[str, Any]) -> tuple[str, str, str, int, float]:
    """The configuration a cell belongs to: everything that names it except the seed."""
    return (
        str((config.get("model") or {}).get("id")),
        str((config.get("method") or {}).get("name")),
        str(config.get("variant") or "default"),
        int(config.get("epochs") or 0),
        float(config.get("learning_rate") or 0.0),
    )


@dataclass(frozen=True)
class BootstrapResult:
    diff: float  # mean accuracy of B minus A (over seeds and items)
    ci_low: float
    ci_high: float
    p_value: float
    seeds_a: int
    seeds_b: int
    n: int
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hierarchical_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> BootstrapResult:
    """`a`, `b`: per seed a 0/1 outcome per item, items in the same order on both sides (seeds × items)."""
    import numpy as np

    A = np.asarray(a, dtype=float)
    B = np.asarray(b, dtype=float)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1] or A.shape[1] == 0:
        raise ValueError(f"need seeds × items arrays over the same items (got {A.shape} and {B.shape})")
    n = A.shape[1]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=m) / n  # items drawn with replacement
        acc_a = weights @ A.T  # replicate × seed: accuracy of each seed on the drawn items
        acc_b = weights @ B.T
        pick_a = rng.integers(0, A.shape[0], size=(m, A.shape[0]))
        pick_b = rng.integers(0, B.shape[0], size=(m, B.shape[0]))
        rows = np.arange(m)[:, None]
        diffs[start : start + m] = acc_b[rows, pick_b].mean(axis=1) - acc_a[rows, pick_a].mean(axis=1)
    observed = float(B.mean() - A.mean())
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    p = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))
    return BootstrapResult(observed, float(lo), float(hi), p, A.shape[0], B.shape[0], n)


# ---------------------------------------------------------------------------------------------------- records


def _outcomes(results_dir: Path, record: Any, task: str) -> dict[Any, bool] | None:
    from harness.evaluation.stats import ItemsMismatchError, _items_path, read_items

    try:
        items = read_items(_items_path(Path(results_dir), record, task))
    except (OSError, ItemsMismatchError):
        return None
    out = {r["id"]: bool(r["correct"]) for r in items if "id" in r and isinstance(r.get("correct"), bool)}
    return out or None


def _matrix(
    results_dir: Path, records: Iterable[Any], task: str, ids: list[Any] | None
) -> tuple[list[list[float]], list[Any]] | None:
    rows: list[dict[Any, bool]] = []
    for rec in records:
        got = _outcomes(results_dir, rec, task)
        if got is not None:
            rows.append(got)
    if not rows:
        return None
    shared = ids if ids is not None else sorted(set.intersection(*(set(r) for r in rows)), key=str)
    if not shared or any(not set(shared) <= set(r) for r in rows):
        return None
    return [[float(r[i]) for i in shared] for r in rows], shared


def compare_groups(
    results_dir: Path, records_a: list[Any], records_b: list[Any], task: str, n_boot: int = N_BOOT
) -> BootstrapResult | None:
    """Hierarchical bootstrap of configuration B (its seeds' records) against A on their shared items."""
    ma = _matrix(results_dir, records_a, task, None)
    if ma is None:
        return None
    mb = _matrix(results_dir, records_b, task, ma[1])
    if mb is None:
        return None
    return hierarchical_bootstrap(ma[0], mb[0], n_boot=n_boot)


# ---------------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class SeedSummary:
    key: tuple[str, str, str, int, float]
    task: str
    cells: tuple[str, ...]
    seeds: tuple[int, ...]
    accs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return math.fsum(self.accs) / len(self.accs)

    @property
    def sd(self) -> float | None:
        if len(self.accs) < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((x - m) ** 2 for x in self.accs) / (len(self.accs) - 1))


def _acc(record: Any, task: str) -> float | None:
    ev = ((record.metrics or {}).get("eval") or {}).get(task) or {}
    acc = ev.get("acc")
    return float(acc) if isinstance(acc, int | float) and not isinstance(acc, bool) else None


def seed_summaries(records: Iterable[Any], tasks: Iterable[str]) -> list[SeedSummary]:
    """Per trained configuration and task: its seeds' accuracies (successful cells only)."""
    from harness.methods.base import trains

    groups: dict[tuple[str, str, str, int, float], list[Any]] = {}
    for r in records:
        if r.status != "success" or not trains(((r.config or {}).get("method") or {}).get("kind") or ""):
            continue
        groups.setdefault(config_key(r.config), []).append(r)
    out = []
    for key, recs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        recs = sorted(recs, key=lambda r: r.config.get("seed", 0))
        for task in tasks:
            pairs = [(r, _acc(r, task)) for r in recs]
            pairs = [(r, a) for r, a in pairs if a is not None]
            if pairs:
                out.append(
                    SeedSummary(
                        key,
                        task,
                        tuple(r.cell_id for r, _ in pairs),
                        tuple(int(r.config.get("seed", 0)) for r, _ in pairs),
                        tuple(a for _, a in pairs),
                    )
                )
    return out


def seed_spread(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Per task, the seed sd pooled over configurations with at least two seeds (root of the mean variance):
    {task: {sd, seeds (the most seeds of a configuration), groups}}; tasks without such a configuration are absent."""
    from harness.results import load_results

    records, _ = load_results(Path(results_dir))
    tasks = sorted({t for r in records for t in ((r.metrics or {}).get("eval") or {})})
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        multi = [s for s in seed_summaries(records, [task]) if s.sd is not None]
        if multi:
            out[task] = {
                "sd": math.sqrt(math.fsum(s.sd**2 for s in multi) / len(multi)),
                "seeds": max(len(s.accs) for s in multi),
                "groups": len(multi),
            }
    return out


def seed_verdict(gain: float | None, sd: float | None, seeds: int) -> str | None:
    """A plain sentence when the seed spread is as large as the gain (None when it is not, or is unknown)."""
    if gain is None or sd is None or seeds < 2:
        return None
    if sd >= abs(gain):
        return (
            f"The spread across seeds (sd {100 * sd:.1f} points over {seeds} seeds) is larger than the gain "
            f"({100 * gain:+.1f} points): another seed could erase it or double it."
        )
    return None
