"""What every executor shares: the protocol, the cell's child process, and the record of a child that died.

An executor receives the cells the plan says to run and must leave, for each, a complete result file in the results
folder (or none at all when interrupted, so that the next run redoes the cell). The child process is the same
everywhere: `python -m harness.cell SPEC` in its own session, killed as a process group on timeout or interrupt, and
killed by the kernel if its parent dies (PR_SET_PDEATHSIG), so no orphan keeps writing. A child that ends without
writing its record (killed, segfault, timeout) gets one written by the parent (`parent_result`), with its log's tail.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from harness.plugins import Component
from harness.results import CellResult

if TYPE_CHECKING:  # pragma: no cover
    from harness.cells import Cell, PlannedCell
    from harness.executors.progress import MatrixProgress

LOG_TAIL_LINES = 40
POLL_INTERVAL_S = 0.5
KILL_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


class Executor(Component):
    """Runs the cells of a plan. Subclass, set `name`, implement `run`, decorate with `@register`; its `Options`
    are the keys of the matrix's `execution:` besides `executor`, its `cli_flags` override them."""

    def __init__(self, options: BaseModel | None = None):
        self.options = options if options is not None else self.Options()

    def place(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        """The plan as this executor can run it: cells that fit no device become `skip` with the reason."""
        return planned

    def capacity(self) -> dict[str, int]:
        """Slots per device label, for the progress bar's occupancy (e.g. {"NVIDIA H100 80GB HBM3": 8})."""
        return {"this machine": 1}

    def run(self, cells: list[Cell], results_dir: Path, progress: MatrixProgress) -> None:
        """Run every cell; for each, leave its result file in `results_dir` and call `progress.finished`.
        On KeyboardInterrupt: stop the running cells (finished results stay) and re-raise."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what `place` or `run` acquired (a Ray session, ...)."""


# ---------------------------------------------------------------------------------------------------- the child


@dataclass
class ChildOutcome:
    returncode: int | None
    timed_out: bool
    wall_s: float


def cell_spec(cell: Cell, *, results_dir: str | None = None, execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `python -m harness.cell` reads: the cell, its resolved config (with `results_dir` replaced when the
    child writes somewhere else, e.g. a Ray worker's local folder) and where it runs (recorded in its result)."""
    config = cell.config.model_dump(mode="json")
    if results_dir is not None:
        config["runtime"]["results_dir"] = results_dir
    spec: dict[str, Any] = {"cell_id": cell.id, "config_hash": cell.config_hash, "config": config}
    if execution:
        spec["execution"] = execution
    return spec


def local_execution(executor: str) -> dict[str, Any]:
    """Where a cell runs, as its record's `environment.execution` says: executor, node, visible GPUs."""
    return {
        "executor": executor,
        "node": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "share_gpu": False,
    }


def _die_with_parent() -> None:
    # If the parent is killed (even with SIGKILL) its running cell dies too: no orphan keeps writing.
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_child(
    spec_path: Path,
    log_path: Path,
    timeout_s: float | None,
    on_poll: Callable[[], None],
    *,
    env: dict[str, str] | None = None,
    grace_s: float = KILL_GRACE_S,
) -> ChildOutcome:
    """Run `python -m harness.cell SPEC` in a new session, its output appended to `log_path`; kill the whole process
    group on timeout or on any exception here (KeyboardInterrupt, a cancelled Ray task), then re-raise."""
    t0 = time.monotonic()
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cell", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            preexec_fn=_die_with_parent,
            cwd=os.getcwd(),
        )
        timed_out = False
        try:
            while proc.poll() is None:
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    timed_out = True
                    kill_group(proc, grace_s)
                    break
                on_poll()
                time.sleep(POLL_INTERVAL_S)
        except BaseException:
            kill_group(proc, grace_s)
            raise
    return ChildOutcome(proc.returncode, timed_out, time.monotonic() - t0)


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = KILL_GRACE_S) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------------- records


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 64_000, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def outcome_reason(outcome: ChildOutcome, timeout_s: float | None) -> tuple[str, str]:
    """(status, reason) of a child that ended without writing its record."""
    if outcome.timed_out:
        return "timeout", f"cell exceeded its timeout of {timeout_s:.0f} s and was killed"
    if outcome.returncode is not None and outcome.returncode < 0:
        sig = signal.Signals(-outcome.returncode).name
        return "failed", f"cell process killed by {sig}" + (
            " (possibly the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
        )
    return "failed", f"cell process exited with code {outcome.returncode} without writing a result"


def parent_result(
    cell: Cell,
    status: str,
    reason: str,
    *,
    log_path: Path | None,
    wall_s: float | None,
    execution: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> CellResult:
    """The record the parent writes for a cell whose child wrote none (or whose worker was lost), with the progress
    the cell reached (its last progress file: phase, epoch, step, loss) in `metrics.progress` and in the reason."""
    from harness import environment

    env = environment.collect(with_device=False)
    if execution:
        env["execution"] = execution
        env["hostname"] = execution.get("node") or env["hostname"]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    metrics: dict[str, Any] = {}
    if progress:
        metrics["progress"] = progress
        reason += f" ({progress_summary(progress)})"
    return CellResult(
        cell_id=cell.id,
        config_hash=cell.config_hash,
        matrix=cell.config.matrix,
        status=status,
        reason=reason,
        traceback=(log_tail(log_path) if log_path else "") or None,
        config=cell.config.model_dump(mode="json"),
        metrics=metrics,
        timings={"wall_s": wall_s, "finished_at": now},
        environment=env,
        artifacts={"log": f"{cell.id}/cell.log"},
    )


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object written by a cell (its progress, its trackers' handles), or None."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def progress_summary(progress: dict[str, Any]) -> str:
    """Where a cell was when it stopped, in words: "stopped at step 16 of 22 (epoch 1 of 1), loss 0.412"."""
    if progress.get("phase") != "train" or not progress.get("step"):
        return f"stopped during {progress.get('phase') or 'start-up'}"
    text = f"stopped at step {progress['step']} of {progress.get('total_steps', '?')}"
    text += f" (epoch {progress.get('epoch', '?')} of {progress.get('epochs', '?')})"
    if isinstance(progress.get("loss"), (int, float)):
        text += f", loss {progress['loss']:.4g}"
    return text


def end_tracking(config: Any, workdir: Path, status: str, reason: str) -> None:
    """The cell's tracker runs, left open by a killed child, ended with its status (harness/trackers/)."""
    runtime = config.runtime
    if runtime.tracking:
        from harness.trackers import end_from_parent

        store = Path(runtime.tracking_dir or Path(runtime.results_dir) / "tracking")
        end_from_parent(runtime.tracking, store, workdir, status, reason)


def skipped_result(cell: Cell, reason: str) -> CellResult:
    """The record of a cell the plan skips before any process starts; a method that must be imported first
    (`Method.import_first`) still has that order recorded, with why nothing was imported."""
    from harness import environment
    from harness.methods.base import method_class

    env = environment.collect(with_device=False)
    cls = method_class(cell.config.method.kind)
    if cls is not None and cls.import_first:
        env["import_first"] = {
            "modules": list(cls.import_first),
            "loaded_before": [],
            "imported": [],
            "not_imported": {
                m: f"not attempted: skipped before its process started: {reason}" for m in cls.import_first
            },
        }
    return CellResult(
        cell_id=cell.id,
        config_hash=cell.config_hash,
        matrix=cell.config.matrix,
        status="skipped",
        reason=reason,
        config=cell.config.model_dump(mode="json"),
        environment=env,
    )


def progress_text(raw: str | None) -> str:
    """One line from a cell's progress.json text (epoch, step, loss), or ""."""
    try:
        p = json.loads(raw or "")
    except ValueError:
        return ""
    if not isinstance(p, dict):
        return ""
    text = f"ep {p.get('epoch')}/{p.get('epochs')} step {p.get('step')}/{p.get('total_steps')}"
    if p.get("loss") is not None:
        text += f" loss {p['loss']:.3f}"
    return text


def read_text(path: Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None
