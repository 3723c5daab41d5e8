"""Paired statistics of two cells evaluated on the same items (light: standard library only).

For one task, cells A and B are aligned by item id (`items/<task>.jsonl`); every item gives a pair of 0/1
outcomes (a_i, b_i). With b = the items only A gets right and c = the items only B gets right (the discordant pairs,
d = b + c of them) among n, reported are:
- `diff` = acc_B - acc_A = (c - b) / n;
- the exact McNemar test: two-sided binomial test of the discordant pairs, p = min(1, 2 · P(X <= min(b, c))) with
  X ~ Binomial(d, 1/2), computed exactly with integers (p = 1 when there is no discordant pair);
- the 95 % interval the test inverts: conditional on the d discordant pairs, c ~ Binomial(d, π) and
  diff = (d / n)(2π - 1); the Clopper-Pearson interval for π (equal tails of α/2, exact binomial), mapped to the
  difference. It excludes 0 exactly when the exact McNemar p is below 0.05 (both are the same two binomial tails),
  so an interval and its p-value never disagree; with no discordant pair it is [0, 0].

`compute_comparisons` pairs every successful trained cell with its model's base row (method kind `base`, same
model id) and writes `comparisons.json` in the results folder atomically, with the trivial baselines of every task on
the same items and each cell's answer distribution (harness/evaluation/baselines.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal
ALPHA = 0.05
CI_METHOD = (
    "95% exact conditional interval inverting the exact McNemar test: Clopper-Pearson on the discordant pairs, "
    "times their share"
)
TEST_METHOD = "exact McNemar: two-sided binomial test on discordant pairs"
COMPARISONS_FILE = "comparisons.json"
COMPARISONS_SCHEMA = 2  # 2: the exact interval; trivial baselines and answer distributions


class ItemsMismatchError(ValueError):
    """Two sets of per-item records cannot be paired (different items, targets, or no correctness)."""


@dataclass(frozen=True)
class Comparison:
    task: str
    n: int  # paired items
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    ci_low: float | None
    ci_high: float | None
    n_only_a: int  # items A got right and B wrong
    n_only_b: int  # items B got right and A wrong
    mcnemar_p: float
    cell_a: str | None = None
    cell_b: str | None = None
    dropped: int = 0  # contaminated items left out of both sides (eval.decontaminate: drop)
    ci_method: str = CI_METHOD
    test: str = TEST_METHOD

    @property
    def significant(self) -> bool:
        """McNemar p < 0.05 (one test; no correction for the number of comparisons)."""
        return self.mcnemar_p < 0.05

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def mcnemar_exact_p(n_only_a: int, n_only_b: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts."""
    if n_only_a < 0 or n_only_b < 0:
        raise ValueError("discordant counts must be >= 0")
    n = n_only_a + n_only_b
    if n == 0:
        return 1.0
    k = min(n_only_a, n_only_b)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to many thousands)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def _root(f: Any, lo: float, hi: float) -> float:
    """The root of a monotone `f` on [lo, hi] with f(lo), f(hi) of opposite signs, by bisection to 1e-12."""
    flo = f(lo)
    for _ in range(100):
        mid = (lo + hi) / 2
        fm = f(mid)
        if (fm < 0) == (flo < 0):
            lo, flo = mid, fm
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def clopper_pearson(successes: int, trials: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval for a binomial proportion, equal tails of alpha / 2."""
    x, n = successes, trials
    lower = 0.0 if x == 0 else _root(lambda p: (1 - _binom_cdf(x - 1, n, p)) - alpha / 2, 0.0, 1.0)
    upper = 1.0 if x == n else _root(lambda p: _binom_cdf(x, n, p) - alpha / 2, 0.0, 1.0)
    return lower, upper


def mcnemar_exact_interval(
    n_only_a: int, n_only_b: int, n: int, alpha: float = ALPHA
) -> tuple[float, float | None, float | None]:
    """(diff, low, high) of acc_B - acc_A: the interval that inverts the exact McNemar test (module doc)."""
    if n <= 0:
        raise ValueError("no paired items")
    d = n_only_a + n_only_b
    diff = (n_only_b - n_only_a) / n
    if d == 0:
        return diff, 0.0, 0.0
    lo, hi = clopper_pearson(n_only_b, d, alpha)
    low, high = (d / n) * (2 * lo - 1), (d / n) * (2 * hi - 1)
    # the same two tails as the test: at the boundary, trust the exact p-value's integers over the bisection
    if mcnemar_exact_p(n_only_a, n_only_b) < alpha:
        low, high = (max(low, 1e-12), high) if diff > 0 else (low, min(high, -1e-12))
    elif low > 0 or high < 0:
        low, high = min(low, 0.0), max(high, 0.0)
    return diff, low, high


def paired_interval(diffs: Sequence[float], z: float = Z95) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of the paired normal (Wald) interval on per-item differences; low/high None when n < 2.
    Not what the report shows (it disagrees with the exact test on small samples): kept for comparison."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no differences")
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None, None
    var = math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def read_items(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ItemsMismatchError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
    return records


def _index(items: Iterable[dict[str, Any]], label: str) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for rec in items:
        if "id" not in rec:
            raise ItemsMismatchError(f"{label}: a record has no 'id'")
        key = rec["id"]
        if key in out:
            raise ItemsMismatchError(f"{label}: item id {key!r} appears more than once")
        if not isinstance(rec.get("correct"), bool):
            raise ItemsMismatchError(f"{label}: item {key!r} has no 0/1 'correct' outcome; cannot pair")
        out[key] = rec
    return out


def compare_items(
    items_a: Iterable[dict[str, Any]],
    items_b: Iterable[dict[str, Any]],
    task: str = "",
    cell_a: str | None = None,
    cell_b: str | None = None,
) -> Comparison:
    """Pair two cells' per-item records by id; refuses item sets that differ."""
    name_a, name_b = cell_a or "A", cell_b or "B"
    a = _index(items_a, f"{task} {name_a}".strip())
    b = _index(items_b, f"{task} {name_b}".strip())
    if not a or not b:
        raise ItemsMismatchError(f"{task}: no items to compare ({name_a}: {len(a)}, {name_b}: {len(b)})")
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    if only_a or only_b:
        raise ItemsMismatchError(
            f"{task}: the cells were not evaluated on the same items ({name_a}: {len(a)} items, {name_b}: "
            f"{len(b)}; {len(only_a)} only in {name_a}, e.g. {only_a[:3]}; {len(only_b)} only in {name_b}, "
            f"e.g. {only_b[:3]}). Same data file and limit for both?"
        )
    differing = [k for k in a if a[k].get("target") != b[k].get("target")]
    if differing:
        k = differing[0]
        raise ItemsMismatchError(
            f"{task}: {len(differing)} items have the same id but different targets (e.g. id {k!r}: "
            f"{a[k].get('target')!r} vs {b[k].get('target')!r}); were different data files used?"
        )
    pairs = [(int(a[k]["correct"]), int(b[k]["correct"])) for k in a]
    n = len(pairs)
    only_a_right = sum(1 for x, y in pairs if x == 1 and y == 0)
    only_b_right = sum(1 for x, y in pairs if x == 0 and y == 1)
    diff, lo, hi = mcnemar_exact_interval(only_a_right, only_b_right, n)
    return Comparison(
        task=task,
        n=n,
        acc_a=sum(x for x, _ in pairs) / n,
        acc_b=sum(y for _, y in pairs) / n,
        diff=diff,
        ci_low=lo,
        ci_high=hi,
        n_only_a=only_a_right,
        n_only_b=only_b_right,
        mcnemar_p=mcnemar_exact_p(only_a_right, only_b_right),
        cell_a=cell_a,
        cell_b=cell_b,
    )


# ---------------------------------------------------------------------------------------------------- cells


def versus_constant(items: Sequence[dict[str, Any]], answer: str, task: str = "") -> dict[str, Any]:
    """The cell against "always `answer`" on its own items: the paired difference, its exact interval and p."""
    constant = [{**i, "chosen": answer, "correct": str(i.get("target")) == answer} for i in items]
    c = compare_items(constant, items, task=task, cell_a=f"always {answer}", cell_b="cell")
    return {
        "answer": answer,
        "acc": c.acc_a,
        "diff": c.diff,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "p_value": c.mcnemar_p,
        "beats": c.diff > 0 and c.significant,
    }


def _items_path(results_dir: Path, record: Any, task: str) -> Path:
    entry = (record.metrics.get("eval") or {}).get(task) or {}
    rel = entry.get("items")
    if rel:
        p = Path(rel)
        return p if p.is_absolute() else Path(results_dir) / p
    return Path(results_dir) / record.cell_id / "items" / f"{task}.jsonl"


def _load_cell(results_dir: Path, cell_id: str) -> Any:
    from harness.results import read_result, result_path

    record = read_result(result_path(results_dir, cell_id))
    if record is None:
        raise FileNotFoundError(f"no valid result for cell {cell_id!r} in {results_dir}")
    return record


def _without(items: list[dict[str, Any]], ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in items if str(r.get("id")) not in ids] if ids else items


def compare_records(
    results_dir: Path, rec_a: Any, rec_b: Any, tasks: Iterable[str] | None = None
) -> dict[str, Comparison]:
    eval_a = rec_a.metrics.get("eval") or {}
    eval_b = rec_b.metrics.get("eval") or {}
    names = list(tasks) if tasks is not None else [t for t in eval_b if t in eval_a]
    out = {}
    for task in names:
        if task not in eval_a or task not in eval_b:
            raise ItemsMismatchError(f"task {task!r} is not evaluated in both cells ({rec_a.cell_id}, {rec_b.cell_id})")
        # eval.decontaminate: drop: items a cell left out as contaminated are left out of the other cell's side too,
        # so that both are compared on the same clean items
        dropped = {str(i) for e in (eval_a[task], eval_b[task]) for i in (e.get("dropped_ids") or [])}
        comparison = compare_items(
            _without(read_items(_items_path(results_dir, rec_a, task)), dropped),
            _without(read_items(_items_path(results_dir, rec_b, task)), dropped),
            task=task,
            cell_a=rec_a.cell_id,
            cell_b=rec_b.cell_id,
        )
        out[task] = dataclasses.replace(comparison, dropped=len(dropped)) if dropped else comparison
    return out


def compare_cells(
    results_dir: Path, cell_a: str, cell_b: str, tasks: Iterable[str] | None = None
) -> dict[str, Comparison]:
    """Paired comparison of any two cells by id (diff = B - A), for the given or all shared tasks."""
    results_dir = Path(results_dir)
    return compare_records(results_dir, _load_cell(results_dir, cell_a), _load_cell(results_dir, cell_b), tasks)


def _is_base(record: Any) -> bool:
    from harness.methods.base import trains

    return not trains((record.config.get("method") or {}).get("kind") or "")


def _model_id(record: Any) -> str | None:
    return (record.config.get("model") or {}).get("id")


def _pick_base(candidates: list[Any], cell: Any) -> Any | None:
    if not candidates:
        return None
    same_seed = [c for c in candidates if c.config.get("seed") == cell.config.get("seed")]
    return sorted(same_seed or candidates, key=lambda c: c.cell_id)[0]


def _cell_items(results_dir: Path, record: Any) -> dict[str, list[dict[str, Any]]]:
    """task -> the cell's per-item records (tasks without a readable item file are left out)."""
    out = {}
    for task in record.metrics.get("eval") or {}:
        try:
            out[task] = read_items(_items_path(results_dir, record, task))
        except (ItemsMismatchError, OSError):
            continue
    return out


def base_record_for(results_dir: Path, record: Any) -> Any | None:
    """The successful base row a trained cell is compared with (same model, same seed first), if it is there."""
    from harness.results import load_results

    if _is_base(record):
        return None
    records, _bad = load_results(Path(results_dir))
    candidates = [r for r in records if r.status == "success" and _is_base(r) and _model_id(r) == _model_id(record)]
    return _pick_base(candidates, record)


def compute_comparisons(results_dir: Path, matrix: str | None = None) -> dict[str, Any]:
    """Every successful trained cell against its model's base row, per task, with the trivial baselines of every
    task on the base row's items and every cell's answer distribution; writes comparisons.json. Records of another
    matrix (`matrix`, or the one most records belong to) are left out."""
    from harness.evaluation.baselines import answer_distribution, trivial_baselines
    from harness.results import atomic_write_text, load_results, split_foreign

    results_dir = Path(results_dir)
    records, _bad = load_results(results_dir)
    records, _foreign = split_foreign(records, matrix)
    ok = [r for r in records if r.status == "success"]
    items = {r.cell_id: _cell_items(results_dir, r) for r in ok}
    bases: dict[str | None, list[Any]] = {}
    for r in ok:
        if _is_base(r):
            bases.setdefault(_model_id(r), []).append(r)
    baselines = [
        {"model": _model_id(b), "base_cell": b.cell_id, "task": task, **trivial_baselines(task, task_items)}
        for model_bases in bases.values()
        for b in model_bases
        for task, task_items in items[b.cell_id].items()
    ]
    answers = {
        cell: {task: dist for task, its in tasks.items() if (dist := answer_distribution(task, its)) is not None}
        for cell, tasks in items.items()
    }
    comparisons: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for cell in sorted(ok, key=lambda r: r.cell_id):
        if _is_base(cell) or not (cell.metrics.get("eval") or {}):
            continue
        base = _pick_base(bases.get(_model_id(cell), []), cell)
        if base is None:
            problems.append(
                {"cell": cell.cell_id, "task": None, "reason": f"no successful base row for model {_model_id(cell)!r}"}
            )
            continue
        for task in cell.metrics["eval"]:
            if task not in (base.metrics.get("eval") or {}):
                problems.append(
                    {
                        "cell": cell.cell_id,
                        "task": task,
                        "reason": f"the base row {base.cell_id} has no result for this task",
                    }
                )
                continue
            try:
                comp = compare_records(results_dir, base, cell, [task])[task]
            except (ItemsMismatchError, OSError) as exc:
                problems.append({"cell": cell.cell_id, "task": task, "reason": str(exc)})
                continue
            entry = {
                "cell": cell.cell_id,
                "base_cell": base.cell_id,
                "model": _model_id(cell),
                "method": (cell.config.get("method") or {}).get("name"),
                **comp.to_dict(),
            }
            own = items[cell.cell_id].get(task) or []
            majority = trivial_baselines(task, own)["majority"] if own else None
            if majority and majority["answer"] is not None:  # on the cell's own items (after any drop)
                entry["vs_majority"] = versus_constant(own, majority["answer"], task)
            comparisons.append(entry)
    out = {
        "schema_version": COMPARISONS_SCHEMA,
        "convention": "A = the base row, B = the trained cell; diff = acc_B - acc_A",
        "ci_method": CI_METHOD,
        "test": TEST_METHOD,
        "comparisons": comparisons,
        "baselines": baselines,
        "answers": answers,
        "problems": problems,
    }
    atomic_write_text(results_dir / COMPARISONS_FILE, json.dumps(out, indent=1) + "\n")
    return out
