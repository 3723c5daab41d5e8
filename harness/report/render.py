"""Assemble the report: load the results folder, compute the headline, tables and figures, render one
self-contained HTML file with Jinja2 (autoescape on: every string from results and matrices is text).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.formatting import (
    fmt_bytes,
    fmt_count,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_pts,
    fmt_seconds,
    fmt_sig,
    fmt_signed,
    lr_text,
    p_text,
    value,
)
from harness.methods.base import kind_label
from harness.report.columns import measurement_columns
from harness.report.cost import cost_section
from harness.report.decision import build_decision
from harness.report.extras import headline_extras, seed_table
from harness.report.loader import ReportData, chance_level, get, load_report_data, task_label, winners
from harness.report.provenance_text import cpu_text, shown_data_path

if TYPE_CHECKING:  # pragma: no cover
    from harness.report.gate import GateResult

TEMPLATE = "report.html.j2"
ALPHA = 0.05
TRACEBACK_LINES = 40


def _int(x: Any) -> int | None:
    x = value(x)
    return None if x is None else int(x)


def _sortable(x: Any) -> Any:
    x = value(x)
    if x is None:
        return ""
    if isinstance(x, float):
        return repr(x)
    return x


# ---------------------------------------------------------------------------------------------------- helpers


def method_order(df: Any) -> list[str]:
    """Names of the trained methods in their kinds' display order (`Method.display_order`: full, LoRA, QLoRA,
    Unsloth, others), by rank within a kind, ties by name (untrained rows, which are never drawn as a method, are
    left out so that they take no colour)."""
    from harness.methods.base import display_order

    if df.empty:
        return []
    seen: dict[str, tuple[Any, ...]] = {}
    for r in df[~df["is_base"].astype(bool)][["method", "kind", "r"]].to_dict("records"):
        key = (display_order(r["kind"]), value(r["r"]) or 0, r["method"])
        seen[r["method"]] = min(seen.get(r["method"], key), key)
    return sorted(seen, key=lambda m: seen[m])


def _model_order(df: Any) -> list[str]:
    if df.empty:
        return []
    pairs = {(bool(s), m) for m, s in zip(df["model"], df["synthetic"])}
    return [m for _, m in sorted(pairs)]


def _se(row: dict[str, Any], task: str) -> float | None:
    se = value(row.get(f"se:{task}"))
    if se is not None:
        return float(se)
    acc, n = value(row.get(f"acc:{task}")), value(row.get(f"n:{task}"))
    if acc is None or not n or n < 2:
        return None
    return math.sqrt(acc * (1 - acc) / (n - 1))


def _cell_summary(row: dict[str, Any]) -> str:
    """e.g. "lora-r16, 2 ep, lr 2e-4" (the variant in brackets after the method, the seed when seeds vary)."""
    name = row["method"]
    if row.get("variant") and row["variant"] != "default":
        name += f" [{row['variant']}]"
    parts = [name]
    if value(row.get("epochs")):
        parts.append(f"{int(row['epochs'])} ep")
    if value(row.get("lr")):
        parts.append(f"lr {lr_text(row['lr'])}")
    if value(row.get("seed")) is not None and row.get("_multi_seed"):
        parts.append(f"seed {int(row['seed'])}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------- headline


def _verdict(
    task: str,
    base: float | None,
    paired: bool,
    delta: float | None,
    lo: float | None,
    hi: float | None,
    p: float | None,
) -> tuple[str, str]:
    """The headline's sentence on the best cell vs the untrained model, and its level (good / bad / neutral / ...)."""
    if base is None:
        verdict, level = ("This model has no successful base row, so the gain cannot be measured.", "unknown")
    elif not paired or p is None:
        verdict, level = (
            f"{fmt_pts(delta)} points over the untrained model (unpaired difference: no "
            f"paired test in comparisons.json, so no CI or p-value).",
            "unknown",
        )
    else:
        ci_has_zero = lo is None or hi is None or lo <= 0 <= hi
        if delta is not None and delta > 0 and p < ALPHA and not ci_has_zero:
            verdict, level = (
                f"Significantly better than the untrained model: {fmt_pts(delta)} points "
                f"(95 % CI {fmt_pts(lo)} to {fmt_pts(hi)}, {p_text(p)}).",
                "good",
            )
        elif delta is not None and delta <= 0:
            verdict, level = (
                f"Fine-tuning did not beat the untrained model on {task_label(task)}: the "
                f"best cell is {fmt_pts(delta)} points from it ({p_text(p)}).",
                "bad",
            )
        else:
            ci = (
                "no CI"
                if lo is None or hi is None
                else f"95 % CI {fmt_pts(lo)} to {fmt_pts(hi)}" + (" includes 0" if ci_has_zero else "")
            )
            verdict, level = (
                f"Not significantly better than the untrained model: {fmt_pts(delta)} "
                f"points is within noise ({p_text(p)}, {ci}).",
                "neutral",
            )
    return verdict, level


def _trivial_text(
    data: ReportData, model: str, task: str, best: dict[str, Any], acc: float, se: float | None
) -> dict[str, Any]:
    """The trivial baselines a headline cell is read against: measured on the same items where comparisons.json has
    them (the majority answer, chance), else the task's declared chance level."""
    b = data.baselines.get((model, task))
    if b and b.get("majority"):
        maj = b["majority"]
        out: dict[str, Any] = {
            "chance": f'always "{maj["answer"]}" {fmt_pct(maj["acc"])} (the majority answer on these items), '
            f"chance {fmt_pct(b.get('chance'))}"
        }
        vs = ((data.comparisons.get(best["cell_id"]) or {}).get(task) or {}).get("vs_majority") or {}
        if vs and not vs.get("beats"):
            out["near_chance"] = True
        return out
    ch = chance_level(task)
    if ch is None:
        return {}
    uniform, majority = ch
    out = {"chance": f"chance {fmt_pct(uniform)}" + (f", always-majority {fmt_pct(majority)}" if majority else "")}
    if se is not None and acc < max(uniform, majority or 0) + 2 * se:
        out["near_chance"] = True
    return out


def build_headline(data: ReportData) -> dict[str, Any]:
    df = data.cells
    out: dict[str, Any] = {"models": [], "synthetic_models": [], "empty": df.empty}
    if df.empty:
        return out
    multi_seed = df["seed"].nunique() > 1 if "seed" in df else False
    ok = df[(df["status"] == "success") & (~df["is_base"].astype(bool))]
    picks = winners(data)
    for model in _model_order(df):
        rows_m = df[df["model"] == model]
        if bool(rows_m["synthetic"].iloc[0]):
            out["synthetic_models"].append({"model": model, "architecture": value(rows_m["architecture"].iloc[0])})
            continue
        entry: dict[str, Any] = {"model": model, "tasks": []}
        cand_all = ok[ok["model"] == model]
        for task in data.tasks:
            cand = cand_all[cand_all[f"acc:{task}"].notna()]
            base = data.cells.attrs.get("base_acc", {}).get((model, task))
            t: dict[str, Any] = {
                "task": task,
                "label": task_label(task),
                "base_acc": fmt_pct(base),
                "n_cells": len(cand),
            }
            if cand.empty:
                t["verdict"] = f"No successful trained cell of this model has a {task_label(task)} score."
                t["level"] = "none"
                entry["tasks"].append(t)
                continue
            cand = cand.assign(_mem=cand["mem_headline"].fillna(math.inf))
            best = dict(picks[(model, task)])
            best["_multi_seed"] = multi_seed
            acc = float(best[f"acc:{task}"])
            se = _se(best, task)
            n = _int(best.get(f"n:{task}"))
            delta = value(best.get(f"delta:{task}"))
            lo, hi = value(best.get(f"ci_low:{task}")), value(best.get(f"ci_high:{task}"))
            p = value(best.get(f"p:{task}"))
            paired = bool(best.get(f"paired:{task}"))
            t.update(
                {
                    "cell": _cell_summary(best),
                    "cell_id": best["cell_id"],
                    "acc": fmt_pct(acc),
                    "se": fmt_pts(se).lstrip("+") if se is not None else "–",
                    "delta": fmt_pts(delta),
                    "ci": (f"[{fmt_pts(lo)}, {fmt_pts(hi)}]" if lo is not None and hi is not None else "–"),
                    "p": fmt_p(p),
                    "memory": fmt_bytes(best.get("mem_headline")),
                    "memory_metric": value(best.get("mem_headline_name")) or "",
                    "time_per_epoch": fmt_seconds(best.get("time_per_epoch")),
                    "n": n,
                }
            )
            noise = (
                (
                    f"Noise level: 1 SE ≈ {100 * se:.1f} points on {n if n else '?'} items; differences smaller "
                    f"than about 2 SE are indistinguishable from noise."
                )
                if se is not None
                else ""
            )
            verdict, level = _verdict(task, base, paired, delta, lo, hi, p)
            t.update({"verdict": verdict, "level": level, "noise": noise})
            t.update(headline_extras(data, model, task, n))  # detectable difference; seeds (report/extras.py)
            # the cells a reader cannot tell apart from the best (within 1 SE), and the cheapest of them
            if se is not None:
                near = cand[cand[f"acc:{task}"] >= acc - se - 1e-12]
                if "device_type" in near:  # cost is compared on one device type, never on a shared GPU
                    near = near[
                        (near["device_type"].fillna("") == (best.get("device_type") or ""))
                        & ~near["shared_device"].astype(bool)
                    ]
                    near = near if best["cell_id"] in set(near["cell_id"]) else near.iloc[0:0]
                t["n_near"] = max(len(near) - 1, 0)
                cheap = near.sort_values(["_mem", "time_per_epoch"]).iloc[0].to_dict() if len(near) else best
                cheap["_multi_seed"] = multi_seed
                if cheap["cell_id"] != best["cell_id"] and value(cheap.get("mem_headline")) is not None:
                    t["cheapest_near"] = {
                        "cell": _cell_summary(cheap),
                        "acc": fmt_pct(cheap[f"acc:{task}"]),
                        "memory": fmt_bytes(cheap["mem_headline"]),
                        "time_per_epoch": fmt_seconds(cheap.get("time_per_epoch")),
                    }
            if len(cand) > 1:
                t["selection"] = (
                    f"Chosen as the best of {len(cand)} cells after the fact, so its gain is "
                    "optimistic (winner's curse)."
                )
            t.update(_trivial_text(data, model, task, best, acc, se))
            entry["tasks"].append(t)
        out["models"].append(entry)
    return out


# ---------------------------------------------------------------------------------------------------- table


def build_table(data: ReportData, methods: list[str]) -> dict[str, Any]:
    df = data.cells
    if df.empty:
        return {"columns": [], "rows": []}
    show_variant = (df["variant"] != "default").any()
    show_r = df["r"].notna().any()
    multi_seed = df["seed"].nunique() > 1
    columns: list[dict[str, str]] = [
        {"label": "model", "title": "base model (synthetic = random weights)"},
        {"label": "method", "title": "method name in the matrix"},
    ]
    if show_r:
        columns.append({"label": "rank", "title": "LoRA rank r"})
    if show_variant:
        columns.append({"label": "variant", "title": "train-settings variant"})
    columns += [
        {"label": "epochs", "title": ""},
        {"label": "lr", "title": "learning rate"},
        {"label": "seed", "title": ""},
    ]
    for task in data.tasks:
        columns.append({"label": f"{task_label(task)} acc", "title": "accuracy ± 1 standard error (lm-eval acc)"})
        columns.append(
            {
                "label": f"Δ {task_label(task)}",
                "title": "difference to the model's base row in points; * = p < 0.05 and 95 % CI "
                "excludes 0 (paired test); hover for CI and p",
            }
        )
    measured = [c for c in measurement_columns() if c.in_table]
    columns += [{"label": c.label, "title": c.title} for c in measured]
    columns.append({"label": "status", "title": ""})
    order_m = {m: i + 1 for i, m in enumerate(methods)}  # untrained rows: 0 (below)
    order_model = {m: i for i, m in enumerate(_model_order(df))}
    recs = df.to_dict("records")
    recs.sort(
        key=lambda r: (
            order_model.get(r["model"], 99),
            0 if r["is_base"] else order_m.get(r["method"], 99),
            r["variant"],
            value(r["epochs"]) or 0,
            value(r["lr"]) or 0,
            value(r["seed"]) or 0,
        )
    )
    rows = []
    for r in recs:
        syn = bool(r["synthetic"])
        cells = [
            {
                "text": r["model"],
                "sort": r["model"],
                "badge": "synthetic" if syn else "",
                "title": f"{r['cell_id']} ({r['source']})",
            },
            {
                "text": r["method"],
                "sort": f"{0 if r['is_base'] else order_m.get(r['method'], 99):03d} {r['method']}",
                "title": f"{kind_label(r['kind'])} ({r['kind']})",
                "badge": "contaminated" if r.get("contaminated") else "",
            },
        ]
        if show_r:
            cells.append({"text": str(_int(r["r"])) if value(r["r"]) is not None else "", "sort": _sortable(r["r"])})
        if show_variant:
            cells.append({"text": r["variant"], "sort": r["variant"]})
        cells += [
            {"text": str(_int(r["epochs"])) if value(r["epochs"]) else "–", "sort": _sortable(r["epochs"])},
            {"text": lr_text(value(r["lr"])), "sort": _sortable(r["lr"])},
            {"text": str(_int(r["seed"])) if value(r["seed"]) is not None else "–", "sort": _sortable(r["seed"])},
        ]
        for task in data.tasks:
            cells += _task_cells(r, task, syn)
        cells += [_measured_cell(r, c) for c in measured]
        reason = r.get("reason")
        cells.append(
            {
                "text": r["status"],
                "sort": r["status"],
                "badge_status": r["status"],
                "title": reason if isinstance(reason, str) else "",  # a missing reason is NaN in the frame
            }
        )
        rows.append({"cells": cells, "status": r["status"], "synthetic": syn})
    return {"columns": columns, "rows": rows, "multi_seed": multi_seed}


def _task_cells(r: dict[str, Any], task: str, syn: bool) -> list[dict[str, Any]]:
    """The accuracy and Δ-vs-base cells of one task in a table row."""
    cells: list[dict[str, Any]] = []
    acc, se = value(r[f"acc:{task}"]), _se(r, task)
    text = "–" if acc is None else (f"{100 * acc:.1f} ± {100 * se:.1f}" if se is not None else f"{100 * acc:.1f}")
    # synthetic accuracies are shown but never ranked: they sort as empty; a cell that gives one answer on
    # nearly every item is flagged, its accuracy being the share of that answer's keys
    degenerate = bool(r.get(f"degenerate:{task}"))
    title = " · ".join(
        x
        for x in (
            f"n = {_int(r[f'n:{task}'])}" if value(r[f"n:{task}"]) else "",
            r.get(f"degenerate_text:{task}") or "",
            r.get(f"answers:{task}") or "",
            f"{(r.get('contaminated') or {}).get(task)} items in the training data"
            if (r.get("contaminated") or {}).get(task)
            else "",
        )
        if x
    )
    cells.append(
        {
            "text": text + (" ⚑" if degenerate and acc is not None else ""),
            "sort": "" if syn else _sortable(acc),
            "cls": "muted" if syn else ("flag" if degenerate else ""),
            "title": "synthetic model: accuracy is meaningless" if syn and acc is not None else title,
        }
    )
    d = value(r.get(f"delta:{task}"))
    lo, hi, p = value(r.get(f"ci_low:{task}")), value(r.get(f"ci_high:{task}")), value(r.get(f"p:{task}"))
    sig = p is not None and p < ALPHA and lo is not None and hi is not None and (lo > 0 or hi < 0)
    title = ""
    if d is not None:
        title = (
            f"95 % CI [{fmt_pts(lo)}, {fmt_pts(hi)}] pts, {p_text(p)} (paired)"
            if r.get(f"paired:{task}")
            else "unpaired difference (no comparisons.json entry)"
        )
    cells.append(
        {
            "text": ("–" if d is None else fmt_pts(d) + ("*" if sig else "")),
            "sort": "" if syn else _sortable(d),
            "cls": ("muted" if syn else ("pos" if sig and d > 0 else "neg" if sig else "")),
            "title": title,
        }
    )
    return cells


def _shown_folder(folder: Path) -> str:
    """A folder as the report shows it: relative to the current directory when inside it (never this machine's
    absolute path in a committed report), else its name."""
    folder = Path(folder).resolve()
    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        return folder.name


FORMATS = {
    "bytes": fmt_bytes,
    "seconds": fmt_seconds,
    "pct": fmt_pct,
    "num": fmt_num,
    "count": fmt_count,
    "sig": fmt_sig,
    "signed": fmt_signed,
}


def _measured_cell(row: dict[str, Any], column: Any) -> dict[str, str]:
    """One measurement cell of the table; the tooltip says which metric or share it is where that varies."""
    v = value(row.get(column.key))
    title = ""
    if column.key == "mem_headline" and v is not None:
        title = f"{row.get('mem_headline_name') or ''} on {row.get('mem_device') or '?'}"
    elif column.key == "trainable_params" and value(row.get("trainable_share")) is not None:
        title = f"{100 * value(row['trainable_share']):.3g} % of all parameters"
    elif column.key in ("tokens_per_s", "mfu"):
        title = steady_title(row)
    return {"text": FORMATS.get(column.fmt, fmt_num)(v), "sort": _sortable(v), "title": title}


def steady_title(row: dict[str, Any]) -> str:
    """What a steady-state figure covers: its steps, the warm-up left out, the whole-run tokens/s."""
    steps, warm = value(row.get("steady_steps")), value(row.get("warmup_steps"))
    if steps is None and warm is None:
        return ""
    parts = [f"over {_int(steps) or 0} steady steps"]
    if warm:
        parts.append(f"warm-up left out: {_int(warm)} steps, {fmt_seconds(value(row.get('warmup_s')))}")
    if value(row.get("compile_s")):
        parts.append(f"torch.compile {fmt_seconds(value(row.get('compile_s')))}")
    if value(row.get("wall_tokens_per_s")) is not None:
        parts.append(f"whole run {fmt_num(value(row['wall_tokens_per_s']))} tokens/s")
    if row.get("attention"):
        parts.append(f"attention: {row['attention']}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------- failures


def build_failures(data: ReportData) -> list[dict[str, Any]]:
    df = data.cells
    if df.empty:
        return []
    out = []
    for r in df[df["status"] != "success"].to_dict("records"):
        rec = data.records.get(r["cell_id"])
        tb = (rec.traceback or "") if rec else ""
        tail = "\n".join(tb.rstrip().splitlines()[-TRACEBACK_LINES:])
        out.append(
            {
                "cell_id": r["cell_id"],
                "model": r["model"],
                "method": r["method"],
                "epochs": _int(r["epochs"]),
                "lr": lr_text(value(r["lr"])),
                "status": r["status"],
                "reason": r.get("reason") or "(no reason recorded)",
                "traceback": tail,
                "synthetic": bool(r["synthetic"]),
            }
        )
    order = {"oom": 0, "failed": 1, "timeout": 2, "skipped": 3}
    out.sort(key=lambda f: (order.get(f["status"], 9), f["cell_id"]))
    return out


# ---------------------------------------------------------------------------------------------------- provenance


def build_provenance(
    data: ReportData, matrix_text: str | None, matrix_path: str | None, command: str | None
) -> dict[str, Any]:
    envs: dict[str, dict[str, Any]] = {}
    data_files: dict[str, set[str]] = {}
    for rec in data.records.values():
        ddir = get(rec.config or {}, "runtime.data_dir")
        for path, digest in (rec.data_files or {}).items():
            data_files.setdefault(shown_data_path(path, ddir), set()).add(str(digest))
        env = rec.environment or {}
        if not env:
            continue
        summary = {
            "host": str(env.get("hostname") or "?"),
            "device": _device_text(env.get("device")),
            "cpu": cpu_text(env.get("cpu")),
            "platform": str(env.get("platform") or "?"),
            "python": str(env.get("python") or "?"),
            "packages": ", ".join(f"{k} {v}" for k, v in sorted((env.get("packages") or {}).items()) if v is not None),
            "git": (
                str(get(env, "git.commit", "?"))[:12]
                + (" (dirty: uncommitted changes)" if get(env, "git.dirty") else " (clean)")
            ),
        }
        key = json.dumps(summary, sort_keys=True)
        envs.setdefault(key, {**summary, "cells": 0})["cells"] += 1
    estimates = []
    df = data.cells
    if not df.empty:
        for r in df[(df["est_memory"].notna()) | (df["est_time_per_epoch"].notna())].to_dict("records"):
            estimates.append(
                {
                    "cell_id": r["cell_id"],
                    "status": r["status"],
                    "mem_pred": fmt_bytes(r["est_memory"]),
                    "mem_meas": fmt_bytes(r["mem_headline"]),
                    "mem_ratio": _ratio(r["mem_headline"], r["est_memory"]),
                    "time_pred": fmt_seconds(r["est_time_per_epoch"]),
                    "time_meas": fmt_seconds(r["time_per_epoch"]),
                    "time_ratio": _ratio(r["time_per_epoch"], r["est_time_per_epoch"]),
                }
            )
    return {
        "environments": sorted(envs.values(), key=lambda e: -e["cells"]),
        "data_files": [{"path": p, "hashes": sorted(h), "conflict": len(h) > 1} for p, h in sorted(data_files.items())],
        "matrix_text": matrix_text,
        "matrix_path": matrix_path,
        "command": command,
        "estimates": estimates,
        "corrupt": [str(p) for p in data.corrupt],
        "results_dir": _shown_folder(data.results_dir),
    }


def _ratio(measured: Any, predicted: Any) -> str:
    m, p = value(measured), value(predicted)
    if m is None or not p:
        return "–"
    return f"{m / p:.2f}×"


def _device_text(device: Any) -> str:
    from harness.report.provenance_text import device_text

    return device_text(device)


PERF_LABELS = ("peak mem", "allocated", "reserved", "process / RSS", "time / epoch", "tokens/s", "MFU")


def group_by_device(table: dict[str, Any], data: ReportData) -> dict[str, Any]:
    """Speed and memory in the table, for results from several device types or shared GPUs (Ray executor): a
    device column; each speed or memory cell sorts within its device type (a string key "device|value"), never
    against another type; a cell that shared its GPU (share_gpu) is muted and never ranked."""
    df = data.cells
    if df.empty or "device_type" not in df or not table.get("columns"):
        return table
    types = df["device_type"].dropna().unique()
    if len(types) < 2 and not df["shared_device"].astype(bool).any():
        return table
    labels = [c["label"] for c in table["columns"]]
    perf = [i for i, label in enumerate(labels) if label in PERF_LABELS]
    if not perf:
        return table
    at = perf[0]
    table["columns"].insert(
        at,
        {
            "label": "device",
            "title": "where the cell ran; speed and memory sort within a device type, never across types",
        },
    )
    rows_by_id = {r["cell_id"]: r for r in df.to_dict("records")}
    for row in table["rows"]:
        r = rows_by_id.get(str(row["cells"][0].get("title", "")).split(" (")[0], {})
        shared = bool(r.get("shared_device"))
        dtype = r.get("device_type") or "?"
        row["cells"].insert(
            at,
            {"text": dtype + (" (shared)" if shared else ""), "sort": dtype, "title": f"node {r.get('node') or '?'}"},
        )
        for i in perf:
            c = row["cells"][i + 1]
            if shared:
                c.update(cls="muted", sort="", title="ran on a shared GPU (share_gpu): not comparable")
            elif len(types) > 1 and c.get("sort") not in ("", None):
                try:
                    c["sort"] = f"{dtype}|{float(c['sort']):024.6f}"
                except (TypeError, ValueError):
                    pass
    return table


# ---------------------------------------------------------------------------------------------------- gate


def build_gate(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    from harness.report.gate import format_change, format_limit, format_value

    rows = [
        {
            "cell": r.cell,
            "metric": r.metric.replace("acc:", "acc ").replace("_", " "),
            "baseline": format_value(r.metric, r.baseline),
            "current": format_value(r.metric, r.current),
            "change": format_change(r),
            "limit": format_limit(r),
            "ok": r.ok,
            "note": r.note,
        }
        for r in gate.rows
    ]
    return {
        "passed": gate.passed,
        "failed": [r for r in rows if not r["ok"]],
        "passing": [r for r in rows if r["ok"]],
        "missing": gate.missing,
        "new": gate.new,
        "notes": gate.notes,
        "baseline_path": gate.baseline_path,
        "thresholds": gate.thresholds,
        "n_rows": len(rows),
    }


# ---------------------------------------------------------------------------------------------------- render


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def build_context(
    data: ReportData,
    *,
    matrix_text: str | None = None,
    matrix_path: str | None = None,
    command: str | None = None,
    gate: GateResult | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    from harness.report import figures

    df = data.cells
    methods = method_order(df)
    counts: dict[str, int] = {}
    if not df.empty:
        for s in df["status"]:
            counts[s] = counts.get(s, 0) + 1
    names = data.matrix_names
    pareto = figures.pareto_figures(data, methods)
    for fig in pareto:
        fig["front_rows"] = {
            axis: [
                {
                    "cell": _cell_summary({**r, "_multi_seed": False}),
                    "model": r["model"],
                    "acc": fmt_pct(r["acc"]),
                    "trivial": _below_trivial(data, r, fig["task"]),
                    "x": fmt_bytes(r["mem_headline"])
                    if axis == "memory"
                    else fmt_signed(r.get("forgetting"))
                    if axis == "forgetting"
                    else fmt_seconds(r["train_time"]),
                }
                for r in rows
            ]
            for axis, rows in fig["fronts"].items()
        }
    heat, heat_skipped = figures.heatmaps(data, methods)
    synthetic_models = sorted(set(df[df["synthetic"].astype(bool)]["model"])) if not df.empty else []
    return {
        "title": title or (f"medbench report: {', '.join(names)}" if names else "medbench report"),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results_dir": _shown_folder(data.results_dir),
        "matrix_names": names,
        "n_cells": len(df),
        "counts": counts,
        "tasks": [{"task": t, "label": task_label(t)} for t in data.tasks],
        "notes": data.notes,
        "corrupt": [str(p) for p in data.corrupt],
        "synthetic_models": synthetic_models,
        "gate": build_gate(gate),
        "decision": build_decision(data),
        "headline": build_headline(data),
        "pareto": pareto,
        "table": group_by_device(build_table(data, methods), data),
        "curves": figures.training_curves(data, methods),
        "heatmaps": heat,
        "heatmaps_skipped": heat_skipped,
        "cost": figures.cost_bars(data, methods),
        "seed_table": seed_table(data),
        "money": cost_section(data, matrix_text),
        "failures": build_failures(data),
        "provenance": build_provenance(data, matrix_text, matrix_path, command),
        "has_comparisons": bool(data.comparisons),
        "export": _export_section(data),
    }


def _below_trivial(data: ReportData, row: dict[str, Any], task: str) -> str:
    """ "below always "yes" (55.2 %)" when a Pareto point does not beat the best constant answer on its items."""
    maj = (data.baselines.get((row["model"], task)) or {}).get("majority") or {}
    if maj.get("acc") is not None and row["acc"] <= maj["acc"]:
        return f'not above always "{maj["answer"]}" ({fmt_pct(maj["acc"])})'
    return ""


def _export_section(data: ReportData) -> dict[str, Any]:
    from harness.export.report import build_export  # `medbench export` records beside the cells

    return build_export(data.results_dir)


def render_html(context: dict[str, Any]) -> str:
    return _environment().get_template(TEMPLATE).render(**context)


def render_report(
    results_dir: Path,
    out_path: Path,
    *,
    matrix_text: str | None = None,
    matrix_path: str | None = None,
    command: str | None = None,
    gate: GateResult | None = None,
    title: str | None = None,
    matrix: str | None = None,
) -> Path:
    """Render the report of one results folder into one self-contained HTML file at `out_path`.

    Works for full, partial, failed-only and empty folders. `matrix_text` (the matrix file as written) and
    `command` (how to reproduce) go into the provenance section; when only `matrix_path` is given and the file
    is readable, its text is read from there. `gate` (from `check_baseline`) adds the regression-gate section.
    """
    from harness.results import atomic_write_text

    if matrix_text is None and matrix_path:
        try:
            matrix_text = Path(matrix_path).read_text()
        except OSError:
            matrix_text = None
    data = load_report_data(Path(results_dir), matrix)
    context = build_context(
        data, matrix_text=matrix_text, matrix_path=matrix_path, command=command, gate=gate, title=title
    )
    out = Path(out_path)
    atomic_write_text(out, render_html(context))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o644 & ~umask)  # the temp-file writer creates 0600; a report is meant to be shared
    return out


__all__ = ["render_report", "build_context", "render_html", "fmt_bytes", "fmt_seconds"]
