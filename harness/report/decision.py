"""The report's first screen: per base model and task, in the matrix's task order, one or two sentences a researcher
can quote — which method wins, by how much (95 % CI and p of the paired exact test), whether that exceeds the smallest
detectable difference and the seed spread, what it costs in memory and time against the runner-up, whether it beats
the trivial baselines on the same items, whether a cell answers one option on nearly every item, and whether any cell
is contaminated. Nulls are said as nulls ("no method differs detectably from the untrained model on MedQA at 200
items"). Reads the report's frame only (harness/report/loader.py).
"""

from __future__ import annotations

import math
from typing import Any

from harness.formatting import fmt_bytes, fmt_pct, fmt_pts, fmt_seconds, p_text, value
from harness.report.loader import ReportData, task_label

ALPHA = 0.05


def _f(x: Any) -> float | None:
    v = value(x)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _label(row: dict[str, Any]) -> str:
    name = row["method"] + (f" [{row['variant']}]" if row.get("variant") not in (None, "default") else "")
    bits = [name]
    if _f(row.get("epochs")):
        bits.append(f"{int(row['epochs'])} ep")
    if _f(row.get("lr")):
        from harness.formatting import lr_text

        bits.append(f"lr {lr_text(row['lr'])}")
    return ", ".join(bits)


def _significant(row: dict[str, Any], task: str) -> bool:
    p, lo, hi = _f(row.get(f"p:{task}")), _f(row.get(f"ci_low:{task}")), _f(row.get(f"ci_high:{task}"))
    return p is not None and p < ALPHA and lo is not None and hi is not None and (lo > 0 or hi < 0)


def _stats(row: dict[str, Any], task: str) -> str:
    lo, hi = _f(row.get(f"ci_low:{task}")), _f(row.get(f"ci_high:{task}"))
    ci = f"95 % CI {fmt_pts(lo)} to {fmt_pts(hi)}" if lo is not None and hi is not None else "no CI"
    return f"{ci}, {p_text(_f(row.get(f'p:{task}')))}"


def task_order(data: ReportData) -> list[str]:
    """The matrix's own order of its evaluation tasks (what the researcher listed first leads), then the rest."""
    order: list[str] = []
    for rec in data.records.values():
        for t in ((rec.config or {}).get("eval") or {}).get("tasks") or []:
            name = t.get("name") if isinstance(t, dict) else None
            if name in data.tasks and name not in order:
                order.append(name)
    return order + [t for t in data.tasks if t not in order]


def _seed_spread(data: ReportData, model: str, row: dict[str, Any], task: str) -> tuple[float, int] | None:
    """(sd of the winner's configuration across seeds, seeds) where it ran with several seeds."""
    from harness.evaluation.seeds import seed_summaries

    records = [
        r for r in data.records.values() if r.status == "success" and (r.config.get("model") or {}).get("id") == model
    ]
    for s in seed_summaries(records, [task]):
        if row["cell_id"] in s.cells and s.sd is not None and len(s.accs) > 1:
            return s.sd, len(s.accs)
    return None


def _trivial(data: ReportData, model: str, task: str, row: dict[str, Any]) -> str:
    """Does the winner beat always giving the majority answer, on its own items?"""
    comp = ((data.comparisons or {}).get(row["cell_id"]) or {}).get(task) or {}
    vs = comp.get("vs_majority")
    if not isinstance(vs, dict) or vs.get("answer") is None:
        return ""
    always = f'always answering "{vs["answer"]}" ({fmt_pct(vs.get("acc"))} on these items)'
    stats = f"{fmt_pts(vs.get('diff'))} points, 95 % CI {fmt_pts(vs.get('ci_low'))} to {fmt_pts(vs.get('ci_high'))}, "
    stats += p_text(_f(vs.get("p_value")))
    if vs.get("beats"):
        return f"It also beats {always}: {stats}."
    if (_f(vs.get("diff")) or 0) <= 0:
        return f"It does not beat {always}: {stats}."
    return f"It is not significantly better than {always}: {stats}."


def _cost(winner: dict[str, Any], runner: dict[str, Any] | None, task: str) -> str:
    if runner is None:
        return ""
    mem = f"{fmt_bytes(winner.get('mem_headline'))} vs {fmt_bytes(runner.get('mem_headline'))} peak memory"
    time = f"{fmt_seconds(winner.get('time_per_epoch'))} vs {fmt_seconds(runner.get('time_per_epoch'))} per epoch"
    delta = _f(runner.get(f"delta:{task}"))
    runner_gain = f" ({fmt_pts(delta)} points, {p_text(_f(runner.get(f'p:{task}')))})" if delta is not None else ""
    return f"Against the runner-up, {_label(runner)}{runner_gain}: {mem}, {time}."


def _decide_task(data: ReportData, model: str, task: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    from harness.report.extras import detectable_difference

    cand = [r for r in rows if _f(r.get(f"acc:{task}")) is not None]
    if not cand:
        return None
    cand.sort(key=lambda r: (-(_f(r.get(f"acc:{task}")) or 0), _f(r.get("mem_headline")) or math.inf))
    winner = cand[0]
    runner = next((r for r in cand[1:] if r["method"] != winner["method"]), None)
    base = data.cells.attrs.get("base_acc", {}).get((model, task))
    n = int(_f(winner.get(f"n:{task}")) or 0)
    label = task_label(task)
    det = detectable_difference(data, task, n) if n else None
    mdd = _f((det or {}).get("mdd_value"))
    delta = _f(winner.get(f"delta:{task}"))
    parts: list[str] = []
    if _significant(winner, task) and (delta or 0) > 0:
        level = "good"
        text = (
            f"{label} ({n} items): {_label(winner)} wins, {fmt_pct(winner[f'acc:{task}'])} against "
            f"{fmt_pct(base)} untrained, {fmt_pts(delta)} points ({_stats(winner, task)})"
        )
        if mdd is not None:
            text += f", {'above' if delta >= mdd else 'below'} the ≈ {100 * mdd:.1f}-point detectable difference"
        spread = _seed_spread(data, model, winner, task)
        if spread:
            sd, k = spread
            text += (
                f" and {'above' if delta > 2 * sd else 'within'} twice its seed spread "
                f"(sd {100 * sd:.1f} points over {k} seeds)"
            )
        parts.append(text + ".")
    else:
        level = "neutral"
        best = (
            f"the best, {_label(winner)}, is {fmt_pts(delta)} points ({_stats(winner, task)})"
            if delta is not None
            else f"the best, {_label(winner)}, has no paired comparison"
        )
        text = f"{label} ({n} items): no method differs detectably from the untrained model ({fmt_pct(base)}); {best}"
        if mdd is not None:
            text += f"; the smallest difference {n} items can show is ≈ {100 * mdd:.1f} points"
        parts.append(text + ".")
    parts.append(_cost(winner, runner, task))
    parts.append(_trivial(data, model, task, winner))
    flags = _flags(data, model, task, rows, winner)
    if flags:
        level = "warn" if level != "good" else "good-flagged"
    return {
        "task": task,
        "label": label,
        "level": level,
        "sentences": [p for p in parts if p],
        "flags": flags,
        "trivial": _trivial_line(data, model, task),
    }


def _flags(data: ReportData, model: str, task: str, rows: list[dict[str, Any]], winner: dict[str, Any]) -> list[str]:
    """Degenerate answers (the winner, and the untrained row) and contaminated cells, as sentences."""
    flags = []
    base_rows = data.cells[(data.cells["model"] == model) & data.cells["is_base"].astype(bool)]
    for r, who in [(winner, _label(winner)), *[(b, "the untrained model") for b in base_rows.to_dict("records")]]:
        if r.get(f"degenerate:{task}"):
            flags.append(f"{who} {r.get(f'degenerate_text:{task}')}.")
    dirty = [r for r in rows if (r.get("contaminated") or {}).get(task)]
    if dirty:
        names = "; ".join(f"{_label(r)}: {r['contaminated'][task]} items" for r in dirty)
        flags.append(
            f"Contaminated: evaluated {task_label(task)} items are in the training data of {len(dirty)} cell"
            f"{'s' if len(dirty) != 1 else ''} ({names}); their {task_label(task)} scores are not clean "
            "(eval.decontaminate: drop scores them on the clean items only)."
        )
    return flags


def _trivial_line(data: ReportData, model: str, task: str) -> str:
    b = data.baselines.get((model, task))
    if not b or not b.get("constant"):
        return ""
    always = ", ".join(f'always "{a}" {fmt_pct(acc)}' for a, acc in b["constant"].items())
    base = data.cells.attrs.get("base_acc", {}).get((model, task))
    return (
        f"Trivial baselines on these {b.get('n')} items: {always}; chance {fmt_pct(b.get('chance'))}; "
        f"the untrained model {fmt_pct(base)}."
    )


def build_decision(data: ReportData) -> list[dict[str, Any]]:
    """Per real base model: its tasks' decisions, in the matrix's task order (see the module doc)."""
    df = data.cells
    if df.empty:
        return []
    ok = df[(df["status"] == "success") & ~df["is_base"].astype(bool) & ~df["synthetic"].astype(bool)]
    out = []
    for model in sorted(set(ok["model"])):
        rows = ok[ok["model"] == model].to_dict("records")
        tasks = [d for t in task_order(data) if (d := _decide_task(data, model, t, rows)) is not None]
        if tasks:
            out.append({"model": model, "tasks": tasks})
    return out
