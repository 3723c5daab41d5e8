"""Plan and execute cells: one child process per cell; the parent never imports torch or touches CUDA.

Data flows one way: matrix -> cells -> plan (here) -> executor (harness/executors/) -> cell process -> result
record -> report. The plan decides, from the results folder alone, which cells are done, which run and which are
skipped (and why). A result file is the commit point of a cell: it is written atomically, so a run killed at any
moment (SIGKILL included) and started again redoes only the cells without a complete result. A child that dies
without writing its result (killed, segfault, timeout) gets one written by the parent, with the tail of its log.
How the cells run (one after the other here, or as Ray tasks over a cluster) is the executor's business; the
guarantees are the same.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.executors.base import Executor, skipped_result
from harness.matrix import Cell
from harness.results import CellResult, read_result, remove_stale_temp_files, result_path, write_result

Action = Literal["run", "done", "skip"]


@dataclass
class PlannedCell:
    cell: Cell
    action: Action
    why: str  # one line: why done / run / skipped
    existing: CellResult | None = None


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


# ---------------------------------------------------------------------------------------------------- running


class ResultsBusy(RuntimeError):
    pass


class ResultsLock:
    """One runner per results folder at a time (a second one would race the first on the same cells)."""

    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / ".lock"

    def __enter__(self) -> "ResultsLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.seek(0)
            holder = self._f.read().strip() or "?"
            self._f.close()
            raise ResultsBusy(
                f"another run_matrix (pid {holder}) is using {self.path.parent}; wait for it or "
                f"use another --results folder"
            ) from None
        self._f.truncate(0)
        self._f.write(str(os.getpid()))
        self._f.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


@dataclass
class RunSummary:
    counts: Counter = field(default_factory=Counter)  # status -> number of cells, after this run
    ran: int = 0
    wall_s: float = 0.0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (cell id, status, reason)

    @property
    def all_ok(self) -> bool:
        return not any(self.counts.get(s) for s in ("failed", "oom", "timeout"))


def execute(
    planned: list[PlannedCell], results_dir: Path, *, executor: str | Executor = "local", progress: bool = True
) -> RunSummary:
    """Run the plan's `run` cells with `executor` (a name or an instance, e.g. one that already placed the plan),
    record its `skip` cells, and count the statuses of every planned cell from the results folder afterwards.
    The results lock is held here, by the driver, for the whole run."""
    from harness.executors import executor_class
    from harness.executors.progress import MatrixProgress

    results_dir = Path(results_dir)
    summary = RunSummary()
    t_start = time.monotonic()
    runner = executor_class(executor)() if isinstance(executor, str) else executor
    skips = [p for p in planned if p.action == "skip"]
    runs = [p.cell for p in planned if p.action == "run"]
    try:
        with ResultsLock(results_dir):
            remove_stale_temp_files(results_dir)
            with MatrixProgress(
                len(skips) + len(runs), enabled=progress, capacity=runner.capacity() if runs else {}
            ) as bar:
                for p in skips:
                    write_result(results_dir, skipped_result(p.cell, p.why))
                    bar.finished(p.cell.id, read_result(result_path(results_dir, p.cell.id)), ran=False)
                if runs:
                    runner.run(runs, results_dir, bar)
                summary.ran = bar.ran
    finally:
        if isinstance(executor, str):
            runner.close()
    for p in planned:
        record = read_result(result_path(results_dir, p.cell.id))
        status = record.status if record else "missing"
        summary.counts[status] += 1
        if record and status in ("failed", "oom", "timeout"):
            summary.problems.append((p.cell.id, status, record.reason or ""))
    summary.wall_s = time.monotonic() - t_start
    return summary
