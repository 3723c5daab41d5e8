"""Read a results folder into one pandas DataFrame (one row per cell) plus the paired comparisons.

Everything downstream (figures, tables, the gate) reads this frame, never the JSON files. Records from older
or partial runs may lack any group or field: every field is optional here and becomes None / NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from harness.results import CellResult

from harness.report.columns import measurement_columns, read_column

# numeric columns besides the measurement columns (harness/report/columns.py)
NUMERIC_COLUMNS = (
    "r",
    "epochs",
    "lr",
    "seed",
    "max_seq_length",
    "train_time",
    "wall_s",
    "trainable_share",
    "est_memory",
    "est_time_per_epoch",
)


def task_label(task: str) -> str:
    """A built-in task's label (from its folder, harness/evaluation/tasks/<name>/task.py), else the task's name."""
    from harness.evaluation.registry import builtin_task

    builtin = builtin_task(task)
    return builtin.label if builtin else task


def chance_level(task: str) -> tuple[float, float | None] | None:
    """(uniform guessing, always the majority answer or None) of a built-in task, as its folder declares them."""
    from harness.evaluation.registry import builtin_task

    builtin = builtin_task(task)
    if builtin is None or builtin.chance is None:
        return None
    return builtin.chance, builtin.majority


def get(obj: Any, path: str, default: Any = None) -> Any:
    """`obj["a"]["b"]` for path "a.b", or `default` where any step is missing or not a mapping."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return default if obj is None else obj


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def cell_key(config: dict[str, Any]) -> str:
    """A key that names the cell by what it is (survives changes of the config hash):
    model/method/variant/e<epochs>/lr<lr>/s<seed>."""
    lr = _num(config.get("learning_rate")) or 0.0
    return "/".join(
        [
            str(get(config, "model.id", "?")),
            str(get(config, "method.name", "?")),
            str(config.get("variant") or "default"),
            f"e{config.get('epochs', 0)}",
            f"lr{lr:.6g}",
            f"s{config.get('seed', 0)}",
        ]
    )


@dataclass
class ReportData:
    results_dir: Path
    cells: pd.DataFrame  # one row per valid record, columns as built by `_row`
    tasks: list[str]  # tasks with any accuracy, in display order
    comparisons: dict[str, Any]
    records: dict[str, CellResult]  # cell_id -> record (for provenance and tracebacks)
    corrupt: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # problems met while loading, shown in the report
    # comparisons.json: trivial baselines on the base row's items per (model, task), answer distributions per cell
    baselines: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def matrix_names(self) -> list[str]:
        return sorted({r.matrix for r in self.records.values()})


def _load_comparisons(folder: Path, notes: list[str]) -> dict[str, Any]:
    path = folder / "comparisons.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"comparisons.json is unreadable ({exc}); differences vs base are unpaired and have no CI")
        return {}
    return normalize_comparisons(data, notes)


def normalize_comparisons(data: Any, notes: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """`{cell_id: {task: {base_cell, diff, ci_low, ci_high, p_value, n, b, c}}}` from the
    comparisons.json written by `harness.evaluation.stats.compute_comparisons`
    (`{"comparisons": [{"cell", "task", "diff", "ci_low", "ci_high", "mcnemar_p", "n_only_a", ...}],
    "problems": [...]}`). Anything else is ignored with a note."""
    notes = notes if notes is not None else []
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if isinstance(data, dict) and isinstance(data.get("comparisons"), list):
        for c in data["comparisons"]:
            if not isinstance(c, dict) or not isinstance(c.get("cell"), str) or not c.get("task"):
                continue
            out.setdefault(c["cell"], {})[str(c["task"])] = {
                "base_cell": c.get("base_cell", c.get("cell_a")),
                "diff": c.get("diff"),
                "ci_low": c.get("ci_low"),
                "ci_high": c.get("ci_high"),
                "p_value": c.get("p_value", c.get("mcnemar_p")),
                "n": c.get("n"),
                "b": c.get("b", c.get("n_only_a")),
                "c": c.get("c", c.get("n_only_b")),
                "dropped": c.get("dropped") or 0,
                "vs_majority": c.get("vs_majority"),
            }
        problems = [p for p in data.get("problems") or [] if isinstance(p, dict)]
        if problems:
            reasons = list(dict.fromkeys(str(p.get("reason")) for p in problems))
            notes.append(
                f"comparisons.json: {len(problems)} cell/task pair(s) could not be compared with their "
                f"base row, e.g. " + "; ".join(reasons[:3])
            )
        return out
    notes.append("comparisons.json has an unknown shape; differences vs base are unpaired and have no CI")
    return {}


def device_type(device: Any) -> str | None:
    """What speed and memory may be compared within: the GPU's name ("NVIDIA H100 80GB HBM3"), "cpu", or None."""
    if not isinstance(device, dict):
        return None
    if device.get("type") == "cpu":
        return "cpu"
    if device.get("name"):
        return str(device["name"])
    return {"cuda": "GPU"}.get(str(device.get("type")), device.get("type") or None)


def perf_rows(df: pd.DataFrame, notes: list[str] | None = None) -> pd.DataFrame:
    """The rows whose speed and memory can be drawn against each other: not run on a shared GPU, and all of one
    device type (the most common; the others stay in the table, grouped by device). Says what it left out."""
    if df.empty or "device_type" not in df:
        return df
    out = df[~df["shared_device"].astype(bool)]
    if notes is not None and len(out) < len(df):
        notes.append(
            f"{len(df) - len(out)} cell(s) ran on a shared GPU (share_gpu): their speed and memory are not "
            "comparable and are left out of the speed and memory figures"
        )
    types = out["device_type"].dropna()
    if types.nunique() > 1:
        main = types.value_counts().index[0]
        others = sorted(set(types) - {main})
        if notes is not None:
            notes.append(
                f"cells ran on {types.nunique()} device types: speed and memory figures show the cells on "
                f"{main}; those on {', '.join(others)} are in the table, grouped by device, never ranked "
                "against them"
            )
        out = out[out["device_type"].isna() | (out["device_type"] == main)]
    return out


def _row(rec: CellResult) -> dict[str, Any]:
    from harness.methods.base import rank, trains

    cfg = rec.config or {}
    env = rec.environment if isinstance(rec.environment, dict) else {}
    execution = env.get("execution") if isinstance(env.get("execution"), dict) else {}
    m = rec.metrics or {}
    train = m.get("train") if isinstance(m.get("train"), dict) else {}
    mem = get(m, "meters.train.memory") or {}
    est = rec.estimate if isinstance(rec.estimate, dict) else {}
    kind = str(get(cfg, "method.kind", "?"))
    train_s = _num(get(rec.timings, "train_s"))
    r = rank(cfg["method"]) if isinstance(cfg.get("method"), dict) else None
    row: dict[str, Any] = {
        "cell_id": rec.cell_id,
        "key": cell_key(cfg),
        "matrix": rec.matrix,
        "status": rec.status,
        "reason": rec.reason,
        "model": str(get(cfg, "model.id", "?")),
        "source": str(get(cfg, "model.source", "?")),
        "synthetic": get(cfg, "model.source") == "synthetic",
        "architecture": get(cfg, "model.architecture"),
        "method": str(get(cfg, "method.name", "?")),
        "kind": kind,
        "is_base": not trains(kind),
        "r": _num(r),
        "variant": str(cfg.get("variant") or "default"),
        "epochs": _num(cfg.get("epochs")),
        "lr": _num(cfg.get("learning_rate")),
        "seed": _num(cfg.get("seed")),
        "max_seq_length": _num(get(cfg, "train.max_seq_length")),
        "packing": get(cfg, "train.packing"),
        "attention": attention_text(train.get("attention")),
        "mem_device": mem.get("device"),
        "mem_headline_name": mem.get("headline"),
        "wall_s": _num(get(rec.timings, "wall_s")),
        "loss_curve": train.get("loss_curve") or [],
        "val_loss": train.get("val_loss") or [],
        "est_memory": _num(est.get("peak_memory_bytes")),
        "est_time_per_epoch": _num(est.get("time_per_epoch_s")),
        "contaminated": {
            task: c["contaminated"]
            for task, c in (m.get("contamination") or {}).items()
            if isinstance(c, dict) and c.get("checked") and c.get("contaminated")
        },
        "node": execution.get("node") or env.get("hostname"),
        "device_type": device_type(env.get("device")),
        "shared_device": bool(execution.get("share_gpu")),  # speed and memory not comparable
    }
    for col in measurement_columns():
        row[col.key] = _num(read_column(m, col))
    if row["mem_headline_name"] is None:
        row["mem_headline_name"] = next(
            (
                n
                for n in ("max_reserved_bytes", "max_allocated_bytes", "nvml_process_peak_bytes", "peak_rss_bytes")
                if _num(mem.get(n)) is not None
            ),
            None,
        )
    epochs = row["epochs"]
    if row["time_per_epoch"] is None and train_s and epochs:
        row["time_per_epoch"] = train_s / epochs
    tpe = row["time_per_epoch"]
    row["train_time"] = train_s if train_s else (tpe * epochs if tpe is not None and epochs else None)
    row["trainable_share"] = _num(train.get("trainable_share"))
    if row["trainable_share"] is None and row["trainable_params"] and row["total_params"]:
        row["trainable_share"] = row["trainable_params"] / row["total_params"]
    for task, ev in (m.get("eval") or {}).items():
        if isinstance(ev, dict):
            row[f"acc:{task}"] = _num(ev.get("acc"))
            row[f"se:{task}"] = _num(ev.get("acc_stderr"))
            row[f"n:{task}"] = _num(ev.get("n"))
    return row


def attention_text(record: Any) -> str | None:
    """ "flex_attention, block mask" / "sdpa, dense mask": the kernel a cell trained with (harness/attention.py)."""
    if not isinstance(record, dict) or not record.get("implementation"):
        return None
    mask = record.get("mask") or ("dense mask" if record.get("dense_mask") else "no dense mask")
    mask = {"dense": "dense mask", "block_mask": "block mask", "none": "no mask"}.get(mask, mask)
    layout = ", rows flattened" if record.get("packed_layout") == "flattened" else ""
    return f"{record['implementation']}, {mask}{layout}"


def _order_tasks(tasks: set[str]) -> list[str]:
    """Built-in tasks first, in their display order; other tasks alphabetically."""
    from harness.evaluation.registry import builtin_tasks

    first = [t for t in builtin_tasks() if t in tasks]
    return first + sorted(tasks - set(first))


def winners(data: ReportData) -> dict[tuple[str, str], dict[str, Any]]:
    """The headline's pick per (model, task): the successful trained cell of a real-weight model with the highest
    accuracy, then the lowest peak memory (one rule, for the report's headline and `medbench export --best`)."""
    import math

    df = data.cells
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if df.empty:
        return out
    ok = df[(df["status"] == "success") & (~df["is_base"].astype(bool)) & (~df["synthetic"].astype(bool))]
    for model in ok["model"].unique():
        for task in data.tasks:
            cand = ok[(ok["model"] == model) & ok[f"acc:{task}"].notna()]
            if not cand.empty:
                cand = cand.assign(_mem=cand["mem_headline"].fillna(math.inf))
                out[(model, task)] = (
                    cand.sort_values([f"acc:{task}", "_mem"], ascending=[False, True]).iloc[0].to_dict()
                )
    return out


def input_notes(records: list[CellResult]) -> list[str]:
    """What the records show happened quietly: a limit larger than a task, few-shot examples from the evaluated
    split, model ids that differ only by case."""
    out = []
    for task, what in sorted(
        {
            (task, f"limit {e['limit']} > its {e['n']} items (all {e['n']} scored)")
            for r in records
            for task, e in ((r.metrics or {}).get("eval") or {}).items()
            if isinstance(e, dict)
            and isinstance(e.get("limit"), int)
            and isinstance(e.get("n"), int)
            and e["limit"] > e["n"]
        }
    ):
        out.append(f"{task}: {what}")
    for task, source in sorted(
        {
            (task, str(e.get("fewshot_source")))
            for r in records
            for task, e in ((r.metrics or {}).get("eval") or {}).items()
            if isinstance(e, dict) and str(e.get("fewshot_source") or "").startswith("test split")
        }
    ):
        out.append(f"{task}: few-shot examples from the evaluated split ({source})")
    ids = sorted({str(get(r.config, "model.id", "")) for r in records})
    for a in ids:
        twins = [b for b in ids if b > a and b.lower() == a.lower()]
        if twins:
            out.append(f"model ids '{a}' and '{twins[0]}' differ only by case: perhaps one model twice")
    return out


def load_report_data(results_dir: Path, matrix: str | None = None) -> ReportData:
    """The results of one matrix (`matrix`, or the one most records belong to; others are left out with a note)."""
    import pandas as pd

    from harness.results import foreign_note, load_results, split_foreign

    folder = Path(results_dir)
    notes: list[str] = []
    if not folder.is_dir():
        notes.append(f"results folder {folder} does not exist")
    good, bad = load_results(folder)
    good, foreign = split_foreign(good, matrix)
    if foreign:
        notes.append(foreign_note(foreign))
    notes.extend(input_notes(good))
    comparisons = _load_comparisons(folder, notes) if folder.is_dir() else {}
    baselines, answers = _load_baselines(folder)
    rows = [_row(rec) for rec in good]
    tasks: set[str] = set()
    for row in rows:
        tasks.update(k.split(":", 1)[1] for k in row if k.startswith("acc:") and row[k] is not None)
    ordered = _order_tasks(tasks)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(
            columns=[
                "cell_id",
                "key",
                "status",
                "model",
                "method",
                "kind",
                "is_base",
                "synthetic",
                "device_type",
                "shared_device",
            ]
        )
    for task in ordered:
        for prefix in ("acc", "se", "n"):
            if f"{prefix}:{task}" not in df:
                df[f"{prefix}:{task}"] = None
            df[f"{prefix}:{task}"] = pd.to_numeric(df[f"{prefix}:{task}"], errors="coerce").astype(float)
    for col in [*NUMERIC_COLUMNS, *(c.key for c in measurement_columns())]:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    _attach_deltas(df, ordered, comparisons)
    perf_rows(df[df["status"] == "success"], notes)  # notes on shared GPUs and mixed device types
    _attach_answers(df, ordered, answers)
    return ReportData(
        results_dir=folder,
        cells=df,
        tasks=ordered,
        comparisons=comparisons,
        records={r.cell_id: r for r in good},
        corrupt=list(bad),
        notes=notes,
        baselines=baselines,
        answers=answers,
    )


def _load_baselines(folder: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """comparisons.json's trivial baselines by (model, task) and answer distributions by cell (empty when absent:
    results from before they were computed)."""
    try:
        data = json.loads((folder / "comparisons.json").read_text())
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    baselines = {
        (str(b.get("model")), str(b.get("task"))): b for b in data.get("baselines") or [] if isinstance(b, dict)
    }
    answers = data.get("answers") if isinstance(data.get("answers"), dict) else {}
    return baselines, answers


def answers_text(dist: dict[str, Any] | None) -> str:
    """e.g. "answers: A 60, B 0, C 0, D 0" (the tooltip of an accuracy)."""
    if not dist or not isinstance(dist.get("counts"), dict):
        return ""
    return "answers: " + ", ".join(f"{a} {n}" for a, n in dist["counts"].items())


def _attach_answers(df: pd.DataFrame, tasks: list[str], answers: dict[str, Any]) -> None:
    """Columns degenerate:<task> (one answer on nearly every item) and answers:<task> (the distribution, as text)."""
    for task in tasks:
        dists = [(answers.get(cid) or {}).get(task) for cid in df["cell_id"]] if not df.empty else []
        df[f"degenerate:{task}"] = [bool(d and d.get("degenerate")) for d in dists]
        df[f"degenerate_text:{task}"] = [(d or {}).get("sentence", "") for d in dists]
        df[f"answers:{task}"] = [answers_text(d) for d in dists]


def _attach_deltas(df: pd.DataFrame, tasks: list[str], comparisons: dict[str, Any]) -> None:
    """Columns delta/ci_low/ci_high/p/paired per task: from comparisons.json where present (paired test),
    else the unpaired difference to the base row of the same model (no CI, no p-value)."""
    import pandas as pd

    if df.empty:
        df.attrs["base_acc"] = {}
        return
    base_acc: dict[tuple[str, str], float] = {}
    for _, row in df[(df["is_base"]) & (df["status"] == "success")].iterrows():
        for task in tasks:
            acc = row.get(f"acc:{task}")
            if acc is not None and not _isnan(acc):
                base_acc[(row["model"], task)] = acc
    for task in tasks:
        delta, lo, hi, p, paired, base_of = [], [], [], [], [], []
        for _, row in df.iterrows():
            comp = get(comparisons, f"{row['cell_id']}")
            comp = comp.get(task) if isinstance(comp, dict) else None
            acc = row.get(f"acc:{task}")
            if row["is_base"] or acc is None or _isnan(acc):
                delta.append(None), lo.append(None), hi.append(None), p.append(None), paired.append(False)
                base_of.append(None)
                continue
            if isinstance(comp, dict) and _num(comp.get("diff")) is not None:
                delta.append(_num(comp.get("diff")))
                lo.append(_num(comp.get("ci_low")))
                hi.append(_num(comp.get("ci_high")))
                p.append(_num(comp.get("p_value")))
                paired.append(True)
                base_of.append(comp.get("base_cell"))
            else:
                b = base_acc.get((row["model"], task))
                delta.append(None if b is None else acc - b)
                lo.append(None), hi.append(None), p.append(None), paired.append(False), base_of.append(None)
        for name, col in (("delta", delta), ("ci_low", lo), ("ci_high", hi), ("p", p)):
            df[f"{name}:{task}"] = pd.to_numeric(pd.Series(col, index=df.index, dtype=object), errors="coerce").astype(
                float
            )
        df[f"paired:{task}"] = paired
        df[f"base_cell:{task}"] = base_of
    df.attrs["base_acc"] = base_acc


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)
