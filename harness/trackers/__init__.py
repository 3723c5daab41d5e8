"""Experiment trackers: one file each in this package (or a plug-in), chosen in the matrix (`tracking: [mlflow]`,
`tracking: [{name: mlflow, uri: http://host:5000}]`) or on the command line (`--track tensorboard,wandb`), off by
default.

A tracker is a small context manager around one cell's run, as optimum-benchmark's are, and lives in the cell's own
process (a Ray cell logs from its worker): `start` opens one run per cell, grouped by matrix, with the resolved config
as parameters and the cell id, commit and device as tags; `log` writes per-step and per-epoch values; `finish` writes
the final figures, the status and the result JSON. A cell killed from outside (timeout, lost worker) cannot finish
its own run: the parent ends it from the handle the cell left in `<cell>/tracking.json` (`end_from_parent`).

Tracking never changes a cell's id or its result: a tracker's options live in the cell's runtime (outside its
identity), and a tracker that fails mid-cell is reported once in the cell's log and switched off, never failing the
cell. A tracker that cannot start at all (package missing, not logged in, server unreachable) is an error of the
preflight, before any cell runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from harness.plugins import Component, Registry, ref_parts

TRACKING_FILE = "tracking.json"  # in the cell's folder: each tracker's handle on its run (for the parent)
INSTALL = "pip install -e '.[tracking]' (bash scripts/setup.sh installs it)"


class Tracker(Component):
    """Subclass, set `name` and `requires` (importable modules), implement the hooks, decorate with `@register`."""

    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any, store: Path):
        self.options, self.store = options, store  # store: the matrix's tracking folder (a local default)

    @classmethod
    def preflight(cls, options: Any, store: Path) -> str | None:
        """Why this tracker cannot start here (one line), or None; no run is created."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed: {INSTALL}"
        return None

    def start(self, run: RunInfo) -> dict[str, Any]:
        """Open the cell's run; return its handle (JSON), which `end_from_parent` receives if the cell is killed."""
        raise NotImplementedError

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], status: str, reason: str | None, record_path: Path | None) -> None:
        raise NotImplementedError

    @classmethod
    def end_from_parent(cls, options: Any, store: Path, handle: dict[str, Any], status: str, reason: str) -> None:
        """End a run whose cell was killed before it could (timeout, lost worker): mark it with the status."""


class RunInfo:
    """What a tracker's run is told at its start (plain data)."""

    def __init__(self, matrix: str, cell_id: str, params: dict[str, str], tags: dict[str, str]):
        self.matrix, self.cell_id, self.params, self.tags = matrix, cell_id, params, tags


REGISTRY: Registry[Tracker] = Registry("tracker", Tracker, "harness.trackers")
register = REGISTRY.register


def resolve_tracking(refs: list[Any]) -> list[dict[str, Any]]:
    """Each tracker named in the matrix or on the command line, validated by its own `Options`:
    [{name, <options>}]. ValueError naming the tracker and the key."""
    from harness.config import _plugin_options

    out = []
    for ref in refs:
        name, given = ref_parts(ref)
        cls = REGISTRY.get(name)
        out.append({"name": name, **_plugin_options(f"tracker '{name}'", cls.Options, given)})
    return out


def _instance_parts(ref: dict[str, Any]) -> tuple[type[Tracker], Any]:
    name, given = ref_parts(ref)
    cls = REGISTRY.get(name)
    return cls, cls.Options.model_validate(given)


def preflight_problems(refs: list[dict[str, Any]], store: Path) -> list[str]:
    problems = []
    for ref in refs:
        cls, options = _instance_parts(ref)
        try:
            why = cls.preflight(options, store)
        except Exception as exc:  # a tracker's check must report, never crash the preflight
            why = f"{type(exc).__name__}: {exc}"
        if why:
            problems.append(f"tracking ({cls.name}): {why}")
    return problems


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and string values (what every tracker's parameter table takes)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return out


def finite(values: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite entries (trackers reject None, NaN and text as metric values)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class Tracking:
    """The trackers of one cell, fanned out; a tracker that fails is reported once and dropped (module doc)."""

    def __init__(self, refs: list[dict[str, Any]], store: Path, workdir: Path):
        self.workdir = workdir
        self.active: list[Tracker] = []
        for ref in refs:
            cls, options = _instance_parts(ref)
            self.active.append(cls(options, store))
        self.handles: dict[str, Any] = {}

    def _each(self, what: str, fn: Any) -> None:
        for tracker in list(self.active):
            try:
                fn(tracker)
            except Exception as exc:  # tracking must never fail a cell
                print(f"[tracking] {tracker.name}: {what} failed ({type(exc).__name__}: {exc}); tracker switched off")
                self.active.remove(tracker)

    @property
    def started(self) -> bool:
        return bool(self.handles)

    def start(self, run: RunInfo) -> None:
        def one(t: Tracker) -> None:
            self.handles[t.name] = t.start(run)

        self._each("start", one)
        (self.workdir / TRACKING_FILE).write_text(json.dumps(self.handles, indent=1, default=str))

    def log(self, values: dict[str, Any], step: int) -> None:
        clean = finite(values)
        if clean:
            self._each("log", lambda t: t.log(clean, step))

    def finish(self, summary: dict[str, Any], status: str, reason: str | None, record_path: Path | None) -> None:
        """End every run with the cell's status (a cell that stopped before its runs started, e.g. skipped, gets
        them opened and ended here, so that every cell has its run)."""
        self._each("finish", lambda t: t.finish(finite(summary), status, reason, record_path))
        (self.workdir / TRACKING_FILE).unlink(missing_ok=True)  # ended: nothing left for the parent to do


def end_from_parent(refs: list[dict[str, Any]], store: Path, workdir: Path, status: str, reason: str) -> None:
    """Runs a killed cell left open (its `tracking.json`), ended with the cell's status by the parent."""
    path = workdir / TRACKING_FILE
    if not refs or not path.is_file():
        return
    handles = json.loads(path.read_text())
    for ref in refs:
        cls, options = _instance_parts(ref)
        if cls.name in handles:
            try:
                cls.end_from_parent(options, store, handles[cls.name], status, reason)
            except Exception as exc:  # the record is what matters; the tracker's run stays open
                print(f"[tracking] {cls.name}: could not end the run of {workdir.name}: {exc}")
    path.unlink(missing_ok=True)


def summary_of(record: Any, base: Any | None, results_dir: Path) -> dict[str, Any]:
    """The final figures of a cell: accuracy with SE per task, the difference to its base row with the exact
    interval and p (when the base row's record is there), MFU, tokens/s, peak memory, losses."""
    m = record.metrics or {}
    out: dict[str, Any] = {}
    for task, e in (m.get("eval") or {}).items():
        if isinstance(e, dict):
            out[f"eval/{task}/acc"] = e.get("acc")
            out[f"eval/{task}/acc_stderr"] = e.get("acc_stderr")
            out[f"eval/{task}/n"] = e.get("n")
    if base is not None and record.status == "success" and base.status == "success":
        from harness.evaluation.stats import compare_records

        try:
            for task, c in compare_records(results_dir, base, record).items():
                out[f"vs_base/{task}/diff"] = c.diff
                out[f"vs_base/{task}/ci_low"] = c.ci_low
                out[f"vs_base/{task}/ci_high"] = c.ci_high
                out[f"vs_base/{task}/p_value"] = c.mcnemar_p
        except Exception as exc:  # e.g. the items differ: the report says why; the run simply lacks the line
            print(f"[tracking] no comparison with the base row: {exc}")
    train = m.get("train") or {}
    for key in ("mfu", "tokens_per_s", "wall_tokens_per_s", "final_train_loss", "trainable_params"):
        out[f"train/{key}"] = train.get(key)
    val = [v for v in train.get("val_loss") or [] if v is not None]
    out["train/final_val_loss"] = val[-1] if val else None
    memory = ((m.get("meters") or {}).get("train") or {}).get("memory") or {}
    out["memory/peak_bytes"] = memory.get("headline_bytes")
    out["time/wall_s"] = (record.timings or {}).get("wall_s")
    return out
