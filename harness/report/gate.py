"""The regression gate: a small baseline JSON from one results folder, and a check of another folder against it.

Cells are matched by a stable key (model/method/variant/epochs/lr/seed, see `loader.cell_key`), not by their
id, so a change of the config hash (a new default somewhere) does not hide a cell from the gate. Checked per
cell: accuracy per task may drop by at most `max_accuracy_drop` (absolute, 0.02 = 2 points), headline memory
may grow by at most `max_memory_growth` and time per epoch by at most `max_time_growth` (relative), forgetting
(the increase of general-text cross-entropy, `eval.forgetting`) by at most `max_forgetting_increase` nats/token
over the baseline's when that threshold is set, and a cell that succeeded in the baseline must succeed again.
A baseline cell missing from the results fails the gate;
new cells are listed but do not fail it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINE_SCHEMA = 1


@dataclass
class GateRow:
    cell: str  # the stable key
    metric: str  # "acc:medqa", "memory", "time_per_epoch", "status"
    baseline: float | str | None
    current: float | str | None
    change: float | None  # accuracy: absolute (current - baseline); memory / time: relative
    limit: float | None  # the threshold the change was held to
    ok: bool
    cell_id: str | None = None  # the current cell's id
    note: str = ""

    @property
    def kind(self) -> str:
        return self.metric.split(":", 1)[0]


@dataclass
class GateResult:
    passed: bool
    rows: list[GateRow]
    missing: list[str] = field(default_factory=list)  # keys in the baseline, absent from the results
    new: list[str] = field(default_factory=list)  # keys in the results, absent from the baseline
    thresholds: dict[str, float] = field(default_factory=dict)
    baseline_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[GateRow]:
        return [r for r in self.rows if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": [asdict(r) for r in self.rows],
            "missing": self.missing,
            "new": self.new,
            "thresholds": self.thresholds,
            "baseline_path": self.baseline_path,
            "notes": self.notes,
        }

    def summary(self) -> str:
        """A few lines for a terminal: the verdict and every failing row."""
        lines = [
            f"regression gate: {'PASSED' if self.passed else 'FAILED'} "
            f"({len(self.rows)} checks, {len(self.failures)} failed, {len(self.missing)} missing cells, "
            f"{len(self.new)} new cells)"
        ]
        for r in self.failures:
            lines.append(
                f"  FAIL {r.cell} {r.metric}: {format_value(r.metric, r.baseline)} -> "
                f"{format_value(r.metric, r.current)} ({format_change(r)}; limit {format_limit(r)})"
                + (f" {r.note}" if r.note else "")
            )
        for key in self.missing:
            lines.append(f"  MISSING {key}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True)
class MetricFormat:
    """How the gate writes one kind of metric: its value, its change against the baseline, and its limit."""

    value: Callable[[Any], str]
    change: Callable[[float], str]
    limit: Callable[[float | None], str]


def _percent_growth(c: float) -> str:
    return f"{100 * c:+.1f} %"


def _growth_limit(limit: float | None) -> str:
    return "–" if limit is None else f"growth ≤ {100 * limit:.0f} %"


# by the part of the metric name before ':' ("acc:medqa" -> "acc")
METRIC_FORMATS: dict[str, MetricFormat] = {
    "acc": MetricFormat(
        lambda v: f"{100 * v:.1f} %",
        lambda c: f"{100 * c:+.1f} pts",
        lambda lim: "–" if lim is None else f"drop ≤ {100 * lim:.1f} pts",
    ),
    "memory": MetricFormat(lambda v: f"{v / 2**30:.2f} GiB", _percent_growth, _growth_limit),
    "time_per_epoch": MetricFormat(lambda v: f"{v:.1f} s", _percent_growth, _growth_limit),
    "forgetting": MetricFormat(
        lambda v: f"{v:+.3f} nats",
        lambda c: f"{c:+.3f} nats",
        lambda lim: "–" if lim is None else f"increase ≤ {lim:.3f} nats",
    ),
    "degenerate": MetricFormat(
        lambda v: "one answer" if v else "varied answers", _percent_growth, lambda lim: "no new one-answer cell"
    ),
}
OTHER_FORMAT = MetricFormat(lambda v: f"{v:g}", _percent_growth, _growth_limit)


def metric_format(metric: str) -> MetricFormat:
    return METRIC_FORMATS.get(metric.split(":")[0], OTHER_FORMAT)


def format_value(metric: str, v: Any) -> str:
    if v is None:
        return "–"
    return v if isinstance(v, str) else metric_format(metric).value(v)


def format_change(r: GateRow) -> str:
    return "–" if r.change is None else metric_format(r.metric).change(r.change)


def format_limit(r: GateRow) -> str:
    return metric_format(r.metric).limit(r.limit)


def _threshold(thresholds: Any, name: str) -> float:
    if isinstance(thresholds, dict):
        value = thresholds.get(name)
    else:
        value = getattr(thresholds, name, None)
    if value is None:
        from harness.config import Thresholds

        value = getattr(Thresholds(), name)
    return float(value)


def _cells_from_folder(results_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    from harness.formatting import value
    from harness.report.loader import load_report_data

    data = load_report_data(results_dir)
    df = data.cells
    notes = list(data.notes)
    if data.corrupt:
        notes.append(f"{len(data.corrupt)} unreadable result file(s): " + ", ".join(p.name for p in data.corrupt[:5]))
    cells: dict[str, dict[str, Any]] = {}
    for _, row in df.iterrows():
        entry = {
            "cell_id": row["cell_id"],
            "status": row["status"],
            "synthetic": bool(row.get("synthetic")),
            "accuracy": {t: value(row.get(f"acc:{t}")) for t in data.tasks if value(row.get(f"acc:{t}")) is not None},
            "memory_bytes": value(row.get("mem_headline")),
            "memory_metric": value(row.get("mem_headline_name")),
            "memory_device": value(row.get("mem_device")),
            "time_per_epoch_s": value(row.get("time_per_epoch")),
            "device_type": value(row.get("device_type")),
            "shared_device": bool(value(row.get("shared_device"))),
            "forgetting": value(row.get("forgetting")),
            # one answer on nearly every item (harness/evaluation/baselines.py), per task
            "degenerate": {t: bool(row.get(f"degenerate:{t}")) for t in data.tasks if row.get(f"answers:{t}")},
        }
        key = row["key"]
        old = cells.get(key)
        if old is not None:
            # the same cell twice (an old record whose hash changed): keep a success, else the first
            notes.append(
                f"two records for {key} ({old['cell_id']}, {entry['cell_id']}); "
                f"using {'the successful one' if entry['status'] == 'success' else old['cell_id']}"
            )
            if not (entry["status"] == "success" and old["status"] != "success"):
                continue
        cells[key] = entry
    return cells, notes


def write_baseline(results_dir: Path, path: Path) -> dict[str, Any]:
    """Write (atomically) and return the baseline of a results folder: per cell key its id, status,
    accuracy per task, headline memory (with its metric and device) and time per epoch."""
    from harness.results import atomic_write_text

    cells, notes = _cells_from_folder(Path(results_dir))
    baseline = {
        "schema": BASELINE_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(results_dir),
        "notes": notes,
        "cells": dict(sorted(cells.items())),
    }
    atomic_write_text(Path(path), json.dumps(baseline, indent=1) + "\n")
    return baseline


def check_baseline(results_dir: Path, baseline_path: Path, thresholds: Any) -> GateResult:
    """Compare a results folder with a baseline file. `thresholds` is a `harness.config.Thresholds` (or a dict
    or any object with its fields; missing fields take Thresholds' defaults)."""
    limits = {
        name: _threshold(thresholds, name) for name in ("max_accuracy_drop", "max_memory_growth", "max_time_growth")
    }
    forgetting_limit = (
        thresholds.get("max_forgetting_increase")
        if isinstance(thresholds, dict)
        else getattr(thresholds, "max_forgetting_increase", None)
    )
    if forgetting_limit is not None:
        limits["max_forgetting_increase"] = float(forgetting_limit)
    try:
        baseline = json.loads(Path(baseline_path).read_text())
        base_cells = baseline["cells"]
        if not isinstance(base_cells, dict):
            raise ValueError("'cells' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return GateResult(
            passed=False,
            rows=[],
            thresholds=limits,
            baseline_path=str(baseline_path),
            notes=[f"cannot read the baseline {baseline_path}: {exc}"],
        )
    current, notes = _cells_from_folder(Path(results_dir))
    rows: list[GateRow] = []
    missing = sorted(k for k in base_cells if k not in current)
    new = sorted(k for k in current if k not in base_cells)
    for key in sorted(k for k in base_cells if k in current):
        b, c = base_cells[key], current[key]
        cid = c.get("cell_id")
        syn = " (synthetic model: accuracy guards the pipeline, not quality)" if c.get("synthetic") else ""
        if b.get("status") == "success" and c.get("status") != "success":
            rows.append(
                GateRow(
                    key, "status", b.get("status"), c.get("status"), None, None, False, cid, "succeeded in the baseline"
                )
            )
            continue
        if c.get("status") != "success":
            continue  # failed / skipped in both: nothing to compare
        for task, b_acc in sorted((b.get("accuracy") or {}).items()):
            c_acc = (c.get("accuracy") or {}).get(task)
            if b_acc is None:
                continue
            if c_acc is None:
                rows.append(
                    GateRow(
                        key,
                        f"acc:{task}",
                        b_acc,
                        None,
                        None,
                        limits["max_accuracy_drop"],
                        False,
                        cid,
                        "no accuracy in the current results",
                    )
                )
                continue
            change = c_acc - b_acc
            ok = change >= -limits["max_accuracy_drop"] - 1e-12
            rows.append(
                GateRow(key, f"acc:{task}", b_acc, c_acc, change, limits["max_accuracy_drop"], ok, cid, syn.strip())
            )
        device, why_not = _same_device(b, c)
        rows += _growth_row(
            key,
            cid,
            "memory",
            b.get("memory_bytes"),
            c.get("memory_bytes"),
            limits["max_memory_growth"],
            same=device
            and (b.get("memory_metric"), b.get("memory_device")) == (c.get("memory_metric"), c.get("memory_device")),
            what=why_not
            or f"{b.get('memory_metric')} on {b.get('memory_device')} vs "
            f"{c.get('memory_metric')} on {c.get('memory_device')}",
        )
        rows += _growth_row(
            key,
            cid,
            "time_per_epoch",
            b.get("time_per_epoch_s"),
            c.get("time_per_epoch_s"),
            limits["max_time_growth"],
            same=device,
            what=why_not,
        )
        rows += _degenerate_rows(key, cid, b.get("degenerate"), c.get("degenerate") or {})
        if "max_forgetting_increase" in limits and b.get("forgetting") is not None:
            rows.append(
                _forgetting_row(key, cid, b["forgetting"], c.get("forgetting"), limits["max_forgetting_increase"])
            )
    passed = not missing and all(r.ok for r in rows)
    if not base_cells:
        notes.append("the baseline holds no cells")
    return GateResult(
        passed=passed,
        rows=rows,
        missing=missing,
        new=new,
        thresholds=limits,
        baseline_path=str(baseline_path),
        notes=notes,
    )


def _same_device(b: dict[str, Any], c: dict[str, Any]) -> tuple[bool, str]:
    """Whether speed and memory of two records compare: the same device type (unknown counts as the same, for
    baselines written before devices were recorded) and neither on a shared GPU."""
    if b.get("shared_device") or c.get("shared_device"):
        return False, "ran on a shared GPU (share_gpu)"
    bt, ct = b.get("device_type"), c.get("device_type")
    if bt and ct and bt != ct:
        return False, f"different devices: {bt} vs {ct}"
    return True, ""


def _growth_row(
    key: str, cid: str | None, metric: str, b: Any, c: Any, limit: float, same: bool, what: str
) -> list[GateRow]:
    if b is None or b <= 0:
        return []
    if c is None:
        return [GateRow(key, metric, b, None, None, limit, False, cid, "not measured in the current results")]
    if not same:
        return [GateRow(key, metric, b, c, None, limit, True, cid, f"not comparable: {what}")]
    change = c / b - 1.0
    return [GateRow(key, metric, b, c, change, limit, change <= limit + 1e-12, cid)]


def _degenerate_rows(key: str, cid: str | None, b: dict[str, bool] | None, c: dict[str, bool]) -> list[GateRow]:
    """A cell that gives one answer on nearly every item where the baseline's did not fails: its accuracy became the
    share of one answer's keys. Baselines written before this check have no entry: nothing to compare."""
    if b is None:
        return []
    rows = []
    for task, was in sorted(b.items()):
        now = c.get(task)
        if now is None:
            continue
        note = "one answer on ≥ 95 % of items: accuracy = the share of that answer's keys" if now else ""
        rows.append(GateRow(key, f"degenerate:{task}", was, now, None, None, was or not now, cid, note))
    return rows


def _forgetting_row(key: str, cid: str | None, b: float, c: float | None, limit: float) -> GateRow:
    """Forgetting (nats/token) may exceed the baseline's by at most `limit` (absolute)."""
    if c is None:
        return GateRow(key, "forgetting", b, None, None, limit, False, cid, "not measured in the current results")
    change = c - b
    return GateRow(key, "forgetting", b, c, change, limit, change <= limit + 1e-12, cid)
