"""The plan: which cells are done, which run and which are skipped (and why), decided from the results folder
alone; and what the plan predicts for each cell on this machine, and the time limit that follows from it.

Training time comes from the estimator (harness/estimator.py) calibrated on measured cells: this matrix's finished
cells and the results folders its `report.calibrate_from` names (e.g. an earlier matrix on the same machine), keeping
only cells measured on this kind of device (a CPU plan never calibrates on GPU cells). Evaluation time is the measured
seconds per item of each task in those cells, times the items this cell scores. A GPU plan without measured cells
uses `report.plan_device` with the estimator's default throughput.

Limits: with `timeout_minutes: auto` (the default) a cell may run LIMIT_FACTOR times its predicted wall time, never
less than LIMIT_FLOOR_S; without a prediction, FALLBACK_LIMIT_S. A number in the matrix (or --timeout-minutes) is a
fixed limit for every cell. The plan prints each cell's prediction and limit. Pure Python: no torch.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cells import Cell, PlannedCell
from harness.results import read_result, result_path

# ---------------------------------------------------------------------------------------------------- plan


def matches_only(cell_id: str, patterns: list[str]) -> bool:
    """`--only`: glob patterns on cell ids; a pattern without wildcards matches as a substring."""
    if not patterns:
        return True
    for p in patterns:
        if any(ch in p for ch in "*?["):
            if fnmatch.fnmatchcase(cell_id, p):
                return True
        elif p in cell_id:
            return True
    return False


def preflight_reason(cell: Cell) -> str | None:
    """Why the cell's method cannot run on this machine (decided without torch), or None."""
    from harness.methods.base import get_method

    method = get_method(cell.config.method.kind)
    return method.preflight(method.Options.model_validate(cell.config.method.options))


def plan(
    cells: list[Cell], results_dir: Path, *, rerun_failed: bool = False, only: list[str] | None = None
) -> list[PlannedCell]:
    out: list[PlannedCell] = []
    preflight_cache: dict[str, str | None] = {}
    for cell in cells:
        if not matches_only(cell.id, only or []):
            continue
        key = json.dumps([cell.config.method.kind, cell.config.method.options], sort_keys=True)
        if key not in preflight_cache:
            preflight_cache[key] = preflight_reason(cell)
        skip = preflight_cache[key]
        existing = read_result(result_path(results_dir, cell.id))
        if existing is not None and existing.config_hash != cell.config_hash:
            existing = None  # an id collision with another config: never trust it
        if existing is None:
            out.append(PlannedCell(cell, "skip", skip) if skip else PlannedCell(cell, "run", "no result yet"))
        elif existing.status == "success":
            out.append(PlannedCell(cell, "done", "complete result with the same config hash", existing))
        elif existing.status == "skipped":
            if skip:
                out.append(PlannedCell(cell, "done", f"skipped: {existing.reason}", existing))
            else:
                out.append(PlannedCell(cell, "run", "was skipped, can run on this machine now", existing))
        elif rerun_failed:
            out.append(PlannedCell(cell, "run", f"--rerun-failed: was {existing.status}", existing))
        else:
            out.append(
                PlannedCell(cell, "done", f"{existing.status} before (use --rerun-failed): {existing.reason}", existing)
            )
    return out


# ---------------------------------------------------------------------------------------------------- predictions

LIMIT_FACTOR = 4.0  # a loaded machine can be several times slower than the one the prediction was fitted on
LIMIT_FLOOR_S = 20 * 60.0
FALLBACK_LIMIT_S = 2 * 3600.0  # no prediction at all (nothing measured on this kind of device yet)


@dataclass(frozen=True)
class CellPrediction:
    train_s: float | None  # start-up + training (the estimator's cell_wall_s)
    eval_s: float | None  # evaluation, from measured seconds per item
    limit_s: float | None  # the cell's time limit
    limit_rule: str  # how the limit was set

    @property
    def wall_s(self) -> float | None:
        if self.train_s is None and self.eval_s is None:
            return None
        return (self.train_s or 0.0) + (self.eval_s or 0.0)


@dataclass
class Planner:
    profile: Any  # harness.estimator.DeviceProfile or None
    eval_s_per_item: dict[str, float] = field(default_factory=dict)
    startup_s: float | None = None  # an untrained row's start-up, measured
    mean_tokens: float | None = None
    sources: list[str] = field(default_factory=list)  # what calibrated it, for the plan's header
    fixed_limit_s: float | None = None  # a fixed per-cell limit (matrix or --timeout-minutes); None: auto
    measured_s: dict[str, float] = field(default_factory=dict)  # cell id -> its wall time measured on this kind
    _predicted: dict[str, CellPrediction] = field(default_factory=dict, repr=False)

    def predict(self, cell: Any) -> CellPrediction:
        """The cell's predicted time and limit (computed once per cell: the plan asks more than once)."""
        if cell.id not in self._predicted:
            self._predicted[cell.id] = self._predict(cell)
        return self._predicted[cell.id]

    def _predict(self, cell: Any) -> CellPrediction:
        from harness.estimator import estimate_cell
        from harness.methods.base import trains

        cfg = cell.config
        if cell.id in self.measured_s and self.fixed_limit_s is None:  # this very cell, measured on this kind
            wall = self.measured_s[cell.id]
            limit = max(LIMIT_FLOOR_S, LIMIT_FACTOR * wall)
            return CellPrediction(
                wall, None, limit, f"{LIMIT_FACTOR:g} × its measured time, at least {LIMIT_FLOOR_S:.0f} s"
            )
        train_s = None
        if trains(cfg.method.kind):
            try:
                train_s = estimate_cell(cfg, self.profile, mean_tokens_per_example=self.mean_tokens).cell_wall_s
            except Exception:  # a prediction is a hint: the plan prints regardless
                train_s = None
        elif self.profile is not None:
            train_s = self.startup_s if self.startup_s is not None else self.profile.startup_s
        eval_s = self._eval_s(cfg)
        if self.fixed_limit_s is not None:
            return CellPrediction(train_s, eval_s, self.fixed_limit_s, "fixed (timeout_minutes)")
        wall = None if train_s is None and eval_s is None else (train_s or 0.0) + (eval_s or 0.0)
        trained_unknown = trains(cfg.method.kind) and train_s is None
        if wall is None or trained_unknown:
            return CellPrediction(train_s, eval_s, FALLBACK_LIMIT_S, "no prediction on this device: fallback")
        limit = max(LIMIT_FLOOR_S, LIMIT_FACTOR * wall)
        return CellPrediction(train_s, eval_s, limit, f"{LIMIT_FACTOR:g} × predicted, at least {LIMIT_FLOOR_S:.0f} s")

    def _eval_s(self, cfg: Any) -> float | None:
        if not cfg.eval.tasks or not self.eval_s_per_item:
            return None
        from harness.evaluation.plan import task_items

        total = 0.0
        for task in cfg.eval.tasks:
            rate = self.eval_s_per_item.get(task.name)
            n = task_items(task, cfg.eval, Path(cfg.runtime.data_dir))
            if rate is None or not n:
                return None
            total += rate * n
        return total


def _device_kind(record: Any) -> str | None:
    dev = (record.environment or {}).get("device") if isinstance(record.environment, dict) else None
    if not isinstance(dev, dict):
        return None
    return "cpu" if dev.get("type") == "cpu" else dev.get("name")


def _this_machine() -> str:
    from harness.environment import cuda_visible_without_torch

    return "gpu" if cuda_visible_without_torch() else "cpu"


def measured_records(done: list[Any], report: Any, matrix_path: Path | None) -> tuple[list[Any], list[str]]:
    """Successful measured cells to calibrate on: this matrix's done cells and `report.calibrate_from`'s folders."""
    from harness.results import load_results

    records = [r for r in done if r is not None and r.status == "success"]
    sources = [f"{len(records)} finished cells of this matrix"] if records else []
    base = matrix_path.parent if matrix_path is not None else Path(".")
    for folder in getattr(report, "calibrate_from", None) or []:
        path = Path(folder) if Path(folder).is_absolute() else base / folder
        found = [r for r in load_results(path)[0] if r.status == "success"]
        records += found
        sources.append(f"{len(found)} cells of {folder}")
    return records, sources


def make_planner(done: list[Any], report: Any, matrix_path: Path | None, fixed_limit_s: float | None) -> Planner:
    """The plan's predictor for this machine (see the module doc)."""
    from harness.estimator import DeviceProfile, calibrate

    records, sources = measured_records(done, report, matrix_path)
    machine = _this_machine()
    same = [r for r in records if (_device_kind(r) == "cpu") == (machine == "cpu")]
    # a method kind this matrix has measured itself is calibrated on its own cells only (the same data and settings)
    own = {(r.config.get("method") or {}).get("kind") for r in done if r is not None and r.status == "success"}
    done_ids = {r.cell_id for r in done if r is not None}
    same = [r for r in same if r.cell_id in done_ids or (r.config.get("method") or {}).get("kind") not in own]
    plan_device = getattr(report, "plan_device", None)
    profile = None
    if same:
        base = DeviceProfile.for_device(plan_device) if plan_device and machine != "cpu" else None
        profile = calibrate(same, base)
    elif plan_device and machine != "cpu":
        profile = DeviceProfile.for_device(plan_device)
    per_item: dict[str, list[float]] = {}
    startups: list[float] = []
    # the mean example length only from this matrix's own cells (the same data); other folders trained on others
    lengths = [
        m
        for r in done
        if r is not None
        for m in [((r.metrics or {}).get("data") or {}).get("tokens", {}).get("mean_length")]
        if m
    ]
    for r in same:
        for task, ev in ((r.metrics or {}).get("eval") or {}).items():
            if isinstance(ev, dict) and ev.get("n") and ev.get("wall_s"):
                per_item.setdefault(task, []).append(ev["wall_s"] / ev["n"])
        t = r.timings or {}
        if not (r.metrics or {}).get("train") and t.get("wall_s") is not None:
            startups.append(max(0.0, t["wall_s"] - (t.get("eval_s") or 0.0)))
    return Planner(
        profile=profile,
        eval_s_per_item={t: statistics.median(v) for t, v in per_item.items()},
        startup_s=statistics.median(startups) if startups else None,
        mean_tokens=statistics.median(lengths) if lengths else None,
        sources=sources if same else [],
        fixed_limit_s=fixed_limit_s,
        measured_s=_measured_walls(same),
    )


def _measured_walls(records: list[Any]) -> dict[str, float]:
    """Cell id -> median wall time of the cell's measurements (e.g. committed results of the same matrix)."""
    walls: dict[str, list[float]] = {}
    for r in records:
        wall = (r.timings or {}).get("wall_s")
        if isinstance(wall, (int, float)) and wall > 0:
            walls.setdefault(r.cell_id, []).append(float(wall))
    return {cid: statistics.median(v) for cid, v in walls.items()}
