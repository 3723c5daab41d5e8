"""Plan and execute cells: one child process per cell; the parent never imports torch or touches CUDA.

The plan decides, from the results folder alone, which cells are done, which run and which are skipped (and why).
A result file is the commit point of a cell: it is written atomically, so a run killed at any moment (SIGKILL
included) and started again redoes only the cells without a complete result. A child that dies without writing
its result (killed, segfault, timeout) gets one written by the parent, with the tail of its log.
"""

from __future__ import annotations

import ctypes
import fcntl
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.matrix import Cell
from harness.results import (
    CellResult,
    atomic_write_text,
    cell_dir,
    read_result,
    remove_stale_temp_files,
    result_path,
    write_result,
)

Action = Literal["run", "done", "skip"]
LOG_TAIL_LINES = 40


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


def plan(cells: list[Cell], results_dir: Path, *, rerun_failed: bool = False,
         only: list[str] | None = None) -> list[PlannedCell]:
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
            out.append(PlannedCell(cell, "done", f"{existing.status} before (use --rerun-failed): "
                                                 f"{existing.reason}", existing))
    return out


# ---------------------------------------------------------------------------------------------------- executors

@dataclass
class ChildOutcome:
    returncode: int | None
    timed_out: bool
    wall_s: float


class Executor(Protocol):
    def run(self, spec_path: Path, log_path: Path, timeout_s: float | None,
            on_poll: Callable[[], None]) -> ChildOutcome: ...


def _die_with_parent() -> None:
    # If the runner is killed (even with SIGKILL) its running cell dies too: no orphan keeps writing.
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class SubprocessExecutor:
    """Runs `python -m harness.cell SPEC` in a new session; kills the whole process group on timeout."""

    poll_interval = 0.5
    grace_s = 10.0

    def run(self, spec_path: Path, log_path: Path, timeout_s: float | None,
            on_poll: Callable[[], None]) -> ChildOutcome:
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cell", str(spec_path)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent, cwd=os.getcwd())
            timed_out = False
            try:
                while proc.poll() is None:
                    if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                        timed_out = True
                        self._kill(proc)
                        break
                    on_poll()
                    time.sleep(self.poll_interval)
            except BaseException:
                self._kill(proc)
                raise
        return ChildOutcome(proc.returncode, timed_out, time.monotonic() - t0)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


EXECUTORS: dict[str, Callable[[], Executor]] = {"subprocess": SubprocessExecutor}


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
            raise ResultsBusy(f"another run_matrix (pid {holder}) is using {self.path.parent}; wait for it or "
                              f"use another --results folder") from None
        self._f.truncate(0)
        self._f.write(str(os.getpid()))
        self._f.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 64_000, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _parent_result(cell: Cell, outcome: ChildOutcome, log_path: Path, timeout_s: float | None) -> CellResult:
    """The record for a child that ended without writing its own."""
    from harness import environment

    if outcome.timed_out:
        status, reason = "timeout", f"cell exceeded its timeout of {timeout_s:.0f} s and was killed"
    elif outcome.returncode is not None and outcome.returncode < 0:
        sig = signal.Signals(-outcome.returncode).name
        status = "failed"
        reason = f"cell process killed by {sig}" + (" (possibly the kernel's out-of-memory killer)"
                                                     if sig == "SIGKILL" else "")
    else:
        status, reason = "failed", f"cell process exited with code {outcome.returncode} without writing a result"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return CellResult(cell_id=cell.id, config_hash=cell.config_hash, matrix=cell.config.matrix, status=status,
                      reason=reason, traceback=_log_tail(log_path) or None, config=cell.config.model_dump(mode="json"),
                      timings={"wall_s": outcome.wall_s, "finished_at": now},
                      environment=environment.collect(with_device=False),
                      artifacts={"log": f"{cell.id}/cell.log"})


def _skipped_result(cell: Cell, reason: str) -> CellResult:
    from harness import environment

    return CellResult(cell_id=cell.id, config_hash=cell.config_hash, matrix=cell.config.matrix, status="skipped",
                      reason=reason, config=cell.config.model_dump(mode="json"),
                      environment=environment.collect(with_device=False))


@dataclass
class RunSummary:
    counts: Counter = field(default_factory=Counter)  # status -> number of cells, after this run
    ran: int = 0
    wall_s: float = 0.0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (cell id, status, reason)

    @property
    def all_ok(self) -> bool:
        return not any(self.counts.get(s) for s in ("failed", "oom", "timeout"))


def _progress_text(path: Path) -> str:
    try:
        p = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    text = f"ep {p.get('epoch')}/{p.get('epochs')} step {p.get('step')}/{p.get('total_steps')}"
    if p.get("loss") is not None:
        text += f" loss {p['loss']:.3f}"
    return text


def execute(planned: list[PlannedCell], results_dir: Path, *, executor: str = "subprocess",
            progress: bool = True) -> RunSummary:
    from tqdm import tqdm

    results_dir = Path(results_dir)
    summary = RunSummary()
    t_start = time.monotonic()
    todo = [p for p in planned if p.action in ("run", "skip")]
    interactive = sys.stderr.isatty()
    with ResultsLock(results_dir):
        remove_stale_temp_files(results_dir)
        bar = tqdm(total=len(todo), unit="cell", disable=not progress, file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5 if interactive else 60.0,
                   bar_format="{desc} {n_fmt}/{total_fmt} cells |{bar}| {elapsed}<{remaining} {postfix}")
        runner = EXECUTORS[executor]()
        for done_n, p in enumerate(todo, start=1):
            cell = p.cell
            bar.set_description_str(cell.id[:60])
            if p.action == "skip":
                write_result(results_dir, _skipped_result(cell, p.why))
                if not progress or not interactive:
                    bar.write(f"[{done_n}/{len(todo)}] {cell.id}: skipped - {p.why}", file=sys.stderr)
                bar.update(1)
                continue
            workdir = cell_dir(results_dir, cell.id)
            workdir.mkdir(parents=True, exist_ok=True)
            spec = workdir / "cell.json"
            atomic_write_text(spec, json.dumps({"cell_id": cell.id, "config_hash": cell.config_hash,
                                                "config": cell.config.model_dump(mode="json")}, indent=1))
            progress_file = workdir / "progress.json"
            progress_file.unlink(missing_ok=True)
            log_path = workdir / "cell.log"
            before = result_path(results_dir, cell.id)
            mtime_before = before.stat().st_mtime_ns if before.exists() else None
            outcome = runner.run(spec, log_path, cell.config.runtime.timeout_s,
                                 on_poll=lambda: bar.set_postfix_str(_progress_text(progress_file),
                                                                     refresh=interactive))
            summary.ran += 1
            written = read_result(before)
            fresh = written is not None and written.config_hash == cell.config_hash and (
                mtime_before is None or before.stat().st_mtime_ns != mtime_before)
            if outcome.timed_out or not fresh:
                write_result(results_dir, _parent_result(cell, outcome, log_path, cell.config.runtime.timeout_s))
            spec.unlink(missing_ok=True)
            progress_file.unlink(missing_ok=True)
            final = read_result(before)
            if (not progress or not interactive) and final is not None:  # one line per cell in logs
                bar.write(f"[{done_n}/{len(todo)}] {cell.id}: {final.status} ({outcome.wall_s:.1f} s)"
                          + (f" - {final.reason}" if final.reason else ""), file=sys.stderr)
            bar.update(1)
        bar.close()
    for p in planned:
        record = read_result(result_path(results_dir, p.cell.id))
        status = record.status if record else "missing"
        summary.counts[status] += 1
        if record and status in ("failed", "oom", "timeout"):
            summary.problems.append((p.cell.id, status, record.reason or ""))
    summary.wall_s = time.monotonic() - t_start
    return summary
