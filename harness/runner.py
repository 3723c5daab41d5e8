"""Execute a plan: one child process per cell; the parent never imports torch or touches CUDA.

Data flows one way: matrix -> cells -> plan (harness/planning.py) -> executor (harness/executors/) -> cell process ->
result record -> report. A result file is the commit point of a cell: it is written atomically, so a run killed at any
moment (SIGKILL included) and started again redoes only the cells without a complete result. A child that dies
without writing its result (killed, segfault, timeout) gets one written by the parent, with the tail of its log.
How the cells run (one after the other here, or as Ray tasks over a cluster) is the executor's business; the
guarantees are the same. One runner per results folder at a time (`ResultsLock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cells import PlannedCell
from harness.executors.base import Executor, skipped_result
from harness.results import read_result, remove_stale_temp_files, result_path, write_result

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
    planned: list[PlannedCell],
    results_dir: Path,
    *,
    executor: str | Executor = "local",
    progress: bool = True,
    lock: bool = True,
) -> RunSummary:
    """Run the plan's `run` cells with `executor` (a name or an instance, e.g. one that already placed the plan),
    record its `skip` cells, and count the statuses of every planned cell from the results folder afterwards.
    The results lock is held here, by the driver, for the whole run (`lock=False`: the caller holds it already)."""
    from harness.executors import executor_class
    from harness.executors.progress import MatrixProgress

    results_dir = Path(results_dir)
    summary = RunSummary()
    t_start = time.monotonic()
    runner = executor_class(executor)() if isinstance(executor, str) else executor
    skips = [p for p in planned if p.action == "skip"]
    runs = [p.cell for p in planned if p.action == "run"]
    try:
        with ResultsLock(results_dir) if lock else contextlib.nullcontext():
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
