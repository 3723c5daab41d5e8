"""The local executor: one cell after the other on this machine, each in its own child process.

The child writes its result straight into the results folder (atomically); the parent writes one only when the
child did not (killed, crashed, timed out). Never imports ray or torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.executors import register
from harness.executors.base import (
    Executor,
    cell_spec,
    end_tracking,
    local_execution,
    outcome_reason,
    parent_result,
    progress_text,
    read_json,
    read_text,
    run_child,
)
from harness.results import atomic_write_text, cell_dir, read_result, result_path, write_result

if TYPE_CHECKING:  # pragma: no cover
    from harness.cells import Cell
    from harness.executors.progress import MatrixProgress


@register
class LocalExecutor(Executor):
    name = "local"

    def run(self, cells: list[Cell], results_dir: Path, progress: MatrixProgress) -> None:
        for cell in cells:
            self.run_one(cell, Path(results_dir), progress)

    def execution_record(self) -> dict[str, Any]:
        """Where a cell runs, as its record's `environment.execution` says (a subclass may add to it)."""
        return local_execution(self.name)

    def run_one(self, cell: Cell, results_dir: Path, progress: MatrixProgress) -> None:
        workdir = cell_dir(results_dir, cell.id)
        workdir.mkdir(parents=True, exist_ok=True)
        spec = workdir / "cell.json"
        execution = self.execution_record()
        atomic_write_text(spec, json.dumps(cell_spec(cell, execution=execution), indent=1))
        progress_file = workdir / "progress.json"
        progress_file.unlink(missing_ok=True)
        log_path = workdir / "cell.log"
        path = result_path(results_dir, cell.id)
        mtime_before = path.stat().st_mtime_ns if path.exists() else None
        progress.started(cell.id, "this machine")
        timeout_s = cell.config.runtime.timeout_s
        outcome = run_child(
            spec, log_path, timeout_s, on_poll=lambda: progress.update(cell.id, progress_text(read_text(progress_file)))
        )
        written = read_result(path)
        fresh = (
            written is not None
            and written.config_hash == cell.config_hash
            and (mtime_before is None or path.stat().st_mtime_ns != mtime_before)
        )
        if outcome.timed_out or not fresh:
            status, reason = outcome_reason(outcome, timeout_s)
            end_tracking(cell.config, workdir, status, reason)
            write_result(
                results_dir,
                parent_result(
                    cell,
                    status,
                    reason,
                    log_path=log_path,
                    wall_s=outcome.wall_s,
                    execution=execution,
                    progress=read_json(progress_file),
                ),
            )
        spec.unlink(missing_ok=True)
        progress_file.unlink(missing_ok=True)
        progress.finished(cell.id, read_result(path), outcome.wall_s)
