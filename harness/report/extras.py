"""The report's statistics beyond one cell against its base row: the smallest difference each headline comparison
could have detected (harness/evaluation/power.py), and, with several seeds, each configuration's mean ± sd across
seeds and its hierarchical (items × seeds) comparison with the base row (harness/evaluation/seeds.py).
render.py calls `headline_extras` per model and task and `seed_table` once; everything else is here.
"""

from __future__ import annotations

from typing import Any

from harness.formatting import fmt_pct, fmt_pts, lr_text, p_text
from harness.report.loader import ReportData, task_label


def _comparison_list(data: ReportData) -> list[dict[str, Any]]:
    """The loader's {cell: {task: {..., n, b, c}}} back into comparisons.json's list form."""
    return [
        {"cell": cell, "task": task, "n": c.get("n"), "n_only_a": c.get("b"), "n_only_b": c.get("c")}
        for cell, tasks in (data.comparisons or {}).items()
        for task, c in tasks.items()
    ]


def detectable_difference(
    data: ReportData, task: str, n: int | None, assumed: float | None = None, target: float | None = None
) -> dict[str, Any] | None:
    """The minimum detectable difference at α = 0.05 / power 0.8 for `n` items of `task`, with the discordance
    measured on the base row's comparisons in these results (assumed where they never disagree)."""
    from harness.evaluation import power as pw

    if not n:
        return None
    disc = pw.discordance_for(task, _comparison_list(data), assumed or pw.ASSUMED_DISCORDANCE)
    d = pw.detectability(task, int(n), disc, target or 0.03)
    return {
        **d.as_dict(),
        "mdd_value": d.mdd,
        "mdd": None if d.mdd is None else f"≈ {100 * d.mdd:.1f}",
        "text": pw.sentence(d, task_label(task)),
    }


def _config_label(key: tuple[str, str, str, int, float]) -> str:
    _model, method, variant, epochs, lr = key
    name = method + (f" [{variant}]" if variant != "default" else "")
    return f"{name}, {epochs} ep, lr {lr_text(lr)}"


def _multi_seed(data: ReportData) -> bool:
    df = data.cells
    return bool(not df.empty and "seed" in df and df["seed"].nunique() > 1)


def headline_extras(data: ReportData, model: str, task: str, n: int | None) -> dict[str, Any]:
    """Keys the headline template shows for one model and task: `mdd` (and `mdd_text`), and with several seeds
    `seeds` ({config, mean_sd, test, verdict})."""
    out: dict[str, Any] = {}
    try:
        det = detectable_difference(data, task, n)
    except Exception as exc:  # advice beside a number: never break the report
        det = None
        out["mdd_text"] = f"detectable difference unavailable: {type(exc).__name__}: {exc}"
    if det:
        out["mdd"], out["mdd_text"] = det["mdd"] or "–", det["text"]
    if _multi_seed(data):
        try:
            seeds = _seed_headline(data, model, task)
        except Exception as exc:
            seeds = {"verdict": f"seed comparison unavailable: {type(exc).__name__}: {exc}"}
        if seeds:
            out["seeds"] = {
                "config": "?",
                "n_configs": 0,
                "mean_sd": None,
                "n_seeds": 0,
                "seeds": "",
                "test": None,
                "significant": False,
                "verdict": None,
                **seeds,
            }
    return out


def _records_of(data: ReportData, model: str) -> tuple[list[Any], list[Any]]:
    from harness.methods.base import trains

    base, trained = [], []
    for r in data.records.values():
        if r.status != "success" or (r.config.get("model") or {}).get("id") != model:
            continue
        kind = (r.config.get("method") or {}).get("kind") or ""
        (trained if trains(kind) else base).append(r)
    return base, trained


def _seed_headline(data: ReportData, model: str, task: str) -> dict[str, Any] | None:
    from harness.evaluation.seeds import compare_groups, seed_summaries, seed_verdict

    if any(bool(s) for s in data.cells.loc[data.cells["model"] == model, "synthetic"]):
        return None
    base, trained = _records_of(data, model)
    summaries = seed_summaries(trained, [task])
    if not summaries:
        return None
    best = max(summaries, key=lambda s: (s.mean, len(s.accs)))
    by_id = {r.cell_id: r for r in trained}
    sd = best.sd
    out: dict[str, Any] = {
        "config": _config_label(best.key),
        "n_configs": len(summaries),
        "mean_sd": f"{fmt_pct(best.mean)} ± {100 * sd:.1f}" if sd is not None else fmt_pct(best.mean),
        "n_seeds": len(best.accs),
        "seeds": ", ".join(str(s) for s in best.seeds),
    }
    if base:
        res = compare_groups(data.results_dir, base[:1], [by_id[c] for c in best.cells], task)
        if res is not None:
            out["test"] = (
                f"{fmt_pts(res.diff)} points vs the untrained model, 95 % CI {fmt_pts(res.ci_low)} to "
                f"{fmt_pts(res.ci_high)}, {p_text(res.p_value)} (bootstrap over {res.n} items and "
                f"{res.seeds_b} seed{'s' if res.seeds_b != 1 else ''})"
            )
            out["significant"] = res.p_value < 0.05 and (res.ci_low > 0 or res.ci_high < 0)
            out["verdict"] = seed_verdict(res.diff, sd, len(best.accs))
    if len(best.accs) < 2:
        out["verdict"] = (
            "Only one seed of this configuration succeeded: its spread across seeds is unknown, and "
            "seed-to-seed variation is often as large as the gain."
        )
    return out


def seed_table(data: ReportData) -> list[dict[str, Any]]:
    """With several seeds: one row per configuration of a real model, mean ± sd of each task across its seeds."""
    from harness.evaluation.seeds import seed_summaries

    if not _multi_seed(data):
        return []
    synthetic = set(data.cells.loc[data.cells["synthetic"].astype(bool), "model"]) if not data.cells.empty else set()
    rows: dict[tuple, dict[str, Any]] = {}
    for s in seed_summaries(data.records.values(), data.tasks):
        row = rows.setdefault(
            s.key,
            {
                "model": s.key[0],
                "config": _config_label(s.key),
                "synthetic": s.key[0] in synthetic,
                "tasks": {},
                "seeds": ", ".join(map(str, s.seeds)),
            },
        )
        row["tasks"][s.task] = (
            f"{fmt_pct(s.mean)} ± {100 * s.sd:.1f}" if s.sd is not None else f"{fmt_pct(s.mean)} (1 seed)"
        )
    return [{**r, "cells": [r["tasks"].get(t, "–") for t in data.tasks]} for r in rows.values()]
