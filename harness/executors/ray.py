"""The Ray executor: the cells of a plan as Ray tasks, over every GPU of this machine or of a Ray cluster.

    python run_matrix.py MATRIX --executor ray                       # Ray on this machine, one GPU per cell
    python run_matrix.py MATRIX --executor ray --ray-address auto    # an existing cluster (`ray start --head`)

Each cell is one Ray task (`num_gpus` = --gpus-per-cell, `num_cpus` = --cpus-per-cell; Ray sets
CUDA_VISIBLE_DEVICES). The task runs the cell exactly as the local executor does, in its own child process
(`harness.executors.base.run_child`: own session, process group killed on timeout or cancel, killed with its
worker), but writes into a temporary folder on its node. It returns the result record, the per-item files and the
log, and the driver writes them atomically into the results folder, the record last: no filesystem is shared
between nodes, and the results folder is only ever written by the driver, which holds its lock. Caches (converted
models, tokenized data) live on each node, at the same --cache-dir path; the data dir must exist on every node.

Guarantees, as for the local executor: a driver killed (even with SIGKILL) takes its tasks with it (Ray ties tasks
to their owner) and the next run redoes the cells without a record; a cell over its timeout is killed and recorded
`timeout`; a worker or node lost mid-cell is retried up to `max_retries` times, then recorded `failed` with the
reason; Ctrl-C cancels the running cells and leaves the finished ones. While a cell runs, its log streams to
`<results>/<cell>/cell.log` on the driver, and its progress (epoch, step, loss) reaches the driver's progress bar.

Placement: cells never share a GPU unless `share_gpu` (fractional --gpus-per-cell, accuracy-only: the record says
so and the report marks the cell's speed and memory as not comparable). The estimator predicts each cell's peak
memory on every kind of device in the cluster; a cell that fits none is skipped in the plan with the reason, and
the longest cells (predicted time, then memory) are submitted first, so that they do not end up alone at the tail
of the run.

`ray` is imported only inside functions: choosing another executor never imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.executors import register
from harness.executors.base import (
    KILL_GRACE_S,
    ChildOutcome,
    Executor,
    cell_spec,
    end_tracking,
    outcome_reason,
    parent_result,
    progress_text,
    read_json,
    read_text,
    run_child,
)
from harness.plugins import Flag
from harness.results import CellResult, atomic_write_bytes, cell_dir, read_result, result_path, write_result

if TYPE_CHECKING:  # pragma: no cover
    from harness.cells import Cell, PlannedCell
    from harness.executors.progress import MatrixProgress

INSTALL_HINT = "the Ray executor needs ray: pip install -e '.[ray]' (bash scripts/setup.sh installs it)"
STREAM_INTERVAL_S = 2.0  # how often a running cell sends its new log lines and progress to the driver
STREAM_CHUNK_BYTES = 256_000
HARD_TIMEOUT_MARGIN_S = 60.0  # a task still running this long after its cell's timeout (+ grace) is force-cancelled
WAIT_S = 0.5
ENV_PREFIXES = ("HF_", "MEDBENCH_", "TRANSFORMERS_", "TOKENIZERS_", "PYTORCH_")  # not OMP_*: Ray sets it per task
NOT_RETURNED = ("cell.json", "progress.json")


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


# ---------------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device of the cluster: a GPU model (name, memory) or a node's CPU (name "cpu", its RAM)."""

    name: str
    memory_bytes: int | None
    count: int  # devices of this kind in the cluster (GPUs, or nodes for "cpu")


def _probe_node() -> dict[str, Any]:
    """On one node: its host name, RAM, and its GPUs as NVML sees them (no CUDA context, no torch)."""
    import psutil

    gpus: list[dict[str, Any]] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                }
            )
    except Exception:  # no NVIDIA driver on this node: no GPUs to name
        pass
    return {"hostname": socket.gethostname(), "memory_bytes": int(psutil.virtual_memory().total), "gpus": gpus}


def _gpu_label(gpu_ids: list[Any]) -> str:
    """The name of the first GPU Ray gave this task (NVML), "GPU" when NVML cannot name it, "cpu" without GPUs."""
    if not gpu_ids:
        return "cpu"
    try:
        index = int(gpu_ids[0])
        for gpu in _probe_node()["gpus"]:
            if gpu["index"] == index:
                return str(gpu["name"])
    except (TypeError, ValueError):
        pass
    return "GPU"


def cluster_devices(
    nodes: list[dict[str, Any]], probes: dict[str, dict[str, Any]]
) -> tuple[list[DeviceKind], list[DeviceKind]]:
    """(GPU kinds, CPU kinds) of a cluster from `ray.nodes()` and each node's probe (node id -> `_probe_node()`).
    A GPU that Ray counts but NVML cannot name (logical GPUs, e.g. `ray.init(num_gpus=2)`) is a "GPU" of unknown
    memory: it never rules a cell out."""
    gpus: dict[tuple[str, int | None], int] = {}
    cpus: dict[tuple[str, int | None], int] = {}
    for node in nodes:
        if not node.get("Alive", True):
            continue
        res = node.get("Resources") or {}
        probe = probes.get(node.get("NodeID", "")) or {}
        n_gpu = int(res.get("GPU", 0))
        named = probe.get("gpus") or []
        for i in range(n_gpu):
            key = (named[i]["name"], named[i]["memory_bytes"]) if i < len(named) else ("GPU", None)
            gpus[key] = gpus.get(key, 0) + 1
        if res.get("CPU"):
            key = ("cpu", probe.get("memory_bytes"))
            cpus[key] = cpus.get(key, 0) + 1
    return ([DeviceKind(n, m, c) for (n, m), c in gpus.items()], [DeviceKind(n, m, c) for (n, m), c in cpus.items()])


def place_cells(
    planned: list[PlannedCell], kinds: list[DeviceKind]
) -> tuple[list[PlannedCell], dict[str, tuple[float, float]]]:
    """The plan with every `run` cell that the estimator predicts to fit none of `kinds` turned into `skip` (with
    the reason), and each cell's priority (predicted seconds, predicted peak bytes): the longest first, which keeps
    a long cell from running alone at the end (longest-processing-time-first list scheduling)."""
    from harness.cells import PlannedCell
    from harness.estimator import DeviceProfile, estimate_cell
    from harness.formatting import fmt_bytes

    out: list[PlannedCell] = []
    priority: dict[str, tuple[float, float]] = {}
    for p in planned:
        if p.action != "run":
            out.append(p)
            continue
        fits: list[bool | None] = []
        peaks: list[float] = []
        walls: list[float] = []
        for kind in kinds:
            profile = (
                DeviceProfile.cpu(None, memory_bytes=kind.memory_bytes)
                if kind.name == "cpu"
                else DeviceProfile.for_device(kind.name, memory_bytes=kind.memory_bytes)
            )
            try:
                est = estimate_cell(p.cell.config, profile)
            except Exception:  # an estimate is a hint: a cell the estimator cannot predict runs
                fits.append(None)
                continue
            fits.append(est.fits)
            peaks.append(float(est.peak_process_bytes or 0))
            walls.append(float(est.cell_wall_s or 0))
        priority[p.cell.id] = (max(walls, default=0.0), max(peaks, default=0.0))
        if fits and all(f is False for f in fits):
            largest = max(kinds, key=lambda k: k.memory_bytes or 0)
            why = (
                f"predicted peak memory {fmt_bytes(min(peaks))} fits no device of the cluster (largest: "
                f"{largest.name}, {fmt_bytes(largest.memory_bytes)})"
            )
            out.append(PlannedCell(p.cell, "skip", why, p.existing))
        else:
            out.append(p)
    return out, priority


# ---------------------------------------------------------------------------------------------------- the task


class _Sink:
    """A tiny actor on the driver's side: running cells put events (started, log lines, progress), the driver
    drains them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out


class _Streamer:
    """In the task: every few seconds, the log's new bytes and the progress line go to the driver."""

    def __init__(self, sink: Any, cell_id: str, token: str, log_path: Path, progress_path: Path):
        self.sink, self.cell_id, self.token = sink, cell_id, token
        self.log_path, self.progress_path = log_path, progress_path
        self.offset = 0
        self.last = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if self.sink is None or now - self.last < STREAM_INTERVAL_S:
            return
        self.last = now
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(STREAM_CHUNK_BYTES)
        except OSError:
            chunk = b""
        self.offset += len(chunk)
        self.sink.put.remote(
            {
                "type": "log",
                "cell_id": self.cell_id,
                "token": self.token,
                "chunk": chunk,
                "progress": progress_text(read_text(self.progress_path)),
            }
        )


TASK_FOLDER_PREFIX = "medbench-ray-"
CLAIM_FILE = ".claim"
UNCLAIMED_GRACE_S = 600  # a folder not claimed yet is only just made (or from before claims): left this long


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<folder>/.claim` while the task runs: the kernel drops it when the task's process
    dies however it dies, which is how the next task tells a dead task's folder from a live one."""
    with open(folder / CLAIM_FILE, "w") as claim:
        fcntl.flock(claim, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(claim, fcntl.LOCK_UN)


def remove_dead_task_folders(cache_dir: Path) -> list[Path]:
    """Remove the task folders of tasks that died without cleaning up (a SIGKILLed driver takes its tasks along);
    the folders of running tasks (their claim held) are left alone."""
    removed = []
    for folder in sorted(Path(cache_dir).glob(TASK_FOLDER_PREFIX + "*")):
        claim = folder / CLAIM_FILE
        try:
            if not claim.is_file():
                if time.time() - folder.stat().st_mtime < UNCLAIMED_GRACE_S:
                    continue
            else:
                with open(claim) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its task is alive
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except OSError:  # removed meanwhile by another task: fine
            continue
    return removed


def run_cell_task(spec: dict[str, Any], env: dict[str, str], sink: Any, share_gpu: bool) -> dict[str, Any]:
    """One cell, as a Ray task on whatever node Ray chose: run it in a child process in a temporary folder, return
    the outcome, where it ran, its record (text or None) and its files (path relative to the results folder ->
    bytes). A checkpoint (`train.save: keep`) stays on the node, under the cache dir."""
    import ray

    ctx = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    cell_id = spec["cell_id"]
    token = uuid.uuid4().hex
    execution = {
        "executor": "ray",
        "node": socket.gethostname(),
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ctx.get_node_id(),
        "device": _gpu_label(gpu_ids),
        "gpu_ids": gpu_ids,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "share_gpu": share_gpu,
    }
    if sink is not None:
        sink.put.remote({"type": "started", "cell_id": cell_id, "token": token, "execution": execution})
    cache_dir = Path(spec["config"]["runtime"]["cache_dir"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_task_folders(cache_dir)
    with tempfile.TemporaryDirectory(prefix=TASK_FOLDER_PREFIX, dir=cache_dir) as tmp, claimed(Path(tmp)):
        spec = {
            **spec,
            "config": {**spec["config"], "runtime": {**spec["config"]["runtime"], "results_dir": tmp}},
            "execution": execution,
        }
        workdir = Path(tmp) / cell_id
        workdir.mkdir(parents=True)
        spec_path = workdir / "cell.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        log_path = workdir / "cell.log"
        streamer = _Streamer(sink, cell_id, token, log_path, workdir / "progress.json")
        outcome = run_child(spec_path, log_path, spec["config"]["runtime"].get("timeout_s"), streamer.poll, env=env)
        checkpoint = None
        if (workdir / "checkpoint").is_dir():
            checkpoint = cache_dir / "checkpoints" / cell_id
            shutil.rmtree(checkpoint, ignore_errors=True)
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(workdir / "checkpoint"), checkpoint)
        files = {
            str(p.relative_to(tmp)): p.read_bytes()
            for p in sorted(workdir.rglob("*"))
            if p.is_file() and p.name not in NOT_RETURNED
        }
        record = read_text(Path(tmp) / f"{cell_id}.json")
        reached = None
        if record is None:  # killed here: its progress goes back, its tracker runs end here (they were opened here)
            from harness.config import CellConfig

            reached = read_json(workdir / "progress.json")
            status, reason = outcome_reason(outcome, spec["config"]["runtime"].get("timeout_s"))
            end_tracking(CellConfig.model_validate(spec["config"]), workdir, status, reason)
    return {
        "progress": reached,
        "outcome": [outcome.returncode, outcome.timed_out, outcome.wall_s],
        "execution": execution,
        "record": record,
        "files": files,
        "checkpoint": str(checkpoint) if checkpoint else None,
    }


# ---------------------------------------------------------------------------------------------------- the driver


@dataclass
class _InFlight:
    cell: Cell
    submitted: float
    started: float | None = None
    token: str | None = None
    attempts: int = 0
    log_offset: int | None = None  # size of the driver's copy of the log when the current attempt started
    execution: dict[str, Any] = field(default_factory=dict)


class RayOptions(BaseModel):
    """`execution:` keys of the Ray executor (each also a command-line flag, which wins)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    address: str | None = None  # an existing cluster (`ray start --head`); None starts Ray on this machine
    gpus_per_cell: float | None = Field(None, ge=0)  # None = 1 where the cluster has GPUs, else 0
    cpus_per_cell: float = Field(1.0, gt=0)
    max_concurrent: int | None = Field(None, ge=1)  # cells in flight at once (None: as many as fit)
    share_gpu: bool = False  # allow a fraction of a GPU per cell (accuracy-only: speed and memory not comparable)
    max_retries: int = Field(2, ge=0)  # a cell whose worker or node is lost runs again up to this many times

    @model_validator(mode="after")
    def _whole_gpus(self) -> RayOptions:
        g = self.gpus_per_cell
        if g is not None and g != int(g) and not self.share_gpu:
            raise ValueError(
                f"gpus_per_cell {g} is a fraction of a GPU: cells would share a device and their speed "
                "and memory would mean nothing; set share_gpu: true (--share-gpu) for accuracy-only runs"
            )
        return self


@register
class RayExecutor(Executor):
    name = "ray"
    Options = RayOptions
    cli_flags = (
        Flag(
            "ray-address",
            "address",
            "an existing Ray cluster (e.g. 10.0.0.1:6379 or auto); default: start Ray on this machine",
            metavar="ADDR",
        ),
        Flag("gpus-per-cell", "gpus_per_cell", "GPUs per cell (default 1 where the cluster has GPUs, else 0)", float),
        Flag("cpus-per-cell", "cpus_per_cell", "CPU cores per cell (default 1)", float),
        Flag("max-concurrent", "max_concurrent", "cells running at once at most", int),
        Flag(
            "max-retries",
            "max_retries",
            "runs again a cell whose worker or node was lost up to N times (default 2)",
            int,
        ),
        Flag(
            "share-gpu",
            "share_gpu",
            "let cells share a GPU (fractional --gpus-per-cell): accuracy-only, the report marks their speed and "
            "memory as not comparable",
            None,
        ),
    )
    options: RayOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._owns_session = False
        self._priority: dict[str, tuple[float, float]] = {}
        self._gpu_kinds: list[DeviceKind] | None = None
        self._cpu_kinds: list[DeviceKind] = []
        self._nodes: list[dict[str, Any]] = []
        self._hard_timeouts: set[Any] = set()

    # ------------------------------------------------------------------ session, cluster

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():  # a session the caller started (a test, a notebook) is reused, never shut down
            import logging

            ray.init(
                address=self.options.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            self._owns_session = True
        return ray

    def close(self) -> None:
        if self._owns_session:
            _ray().shutdown()
            self._owns_session = False

    def _discover(self) -> None:
        if self._gpu_kinds is not None:
            return
        ray = self._connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(_probe_node)
        refs = {
            n["NodeID"]: probe.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in self._nodes
        }
        probes: dict[str, dict[str, Any]] = {}
        for node_id, ref in refs.items():
            try:
                probes[node_id] = ray.get(ref, timeout=60)
            except Exception:  # a node that cannot answer is still used; its devices are just not named
                probes[node_id] = {}
        self._gpu_kinds, self._cpu_kinds = cluster_devices(self._nodes, probes)

    def gpus_per_cell(self) -> float:
        self._discover()
        if self.options.gpus_per_cell is not None:
            return float(self.options.gpus_per_cell)
        return 1.0 if self._gpu_kinds else 0.0

    def _check_feasible(self) -> None:
        g, c = self.gpus_per_cell(), self.options.cpus_per_cell
        if any((n["Resources"].get("GPU", 0) >= g) and (n["Resources"].get("CPU", 0) >= c) for n in self._nodes):
            return
        have = (
            ", ".join(
                f"{n['NodeManagerAddress']}: {n['Resources'].get('GPU', 0):g} GPU, {n['Resources'].get('CPU', 0):g} CPU"
                for n in self._nodes
            )
            or "no nodes"
        )
        raise ValueError(
            f"no node of the Ray cluster has {g:g} GPU(s) and {c:g} CPU(s) for a cell ({have}); "
            "lower --gpus-per-cell / --cpus-per-cell"
        )

    def capacity(self) -> dict[str, int]:
        self._discover()
        g, c = self.gpus_per_cell(), self.options.cpus_per_cell
        if g > 0:
            return {k.name: int(k.count / g) for k in self._gpu_kinds or []}
        slots = sum(int(n["Resources"].get("CPU", 0) // c) for n in self._nodes)
        return {"cpu": slots}

    def place(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        self._discover()
        self._check_feasible()
        kinds = self._gpu_kinds if self.gpus_per_cell() > 0 else self._cpu_kinds
        placed, self._priority = place_cells(planned, kinds or [])
        return placed

    # ------------------------------------------------------------------ running

    def run(self, cells: list[Cell], results_dir: Path, progress: MatrixProgress) -> None:
        ray = self._connect()
        self._discover()
        self._check_feasible()
        results_dir = Path(results_dir)
        task = ray.remote(run_cell_task).options(
            num_cpus=self.options.cpus_per_cell,
            num_gpus=self.gpus_per_cell(),
            max_retries=self.options.max_retries,
            retry_exceptions=False,
        )
        sink = ray.remote(_Sink).options(num_cpus=0).remote()
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        order = sorted(cells, key=lambda c: tuple(-x for x in self._priority.get(c.id, (0.0, 0.0))))
        queue = list(reversed(order))
        pending: dict[Any, _InFlight] = {}
        limit = self.options.max_concurrent
        try:
            while queue or pending:
                while queue and (limit is None or len(pending) < limit):
                    cell = queue.pop()
                    cell_dir(results_dir, cell.id).mkdir(parents=True, exist_ok=True)
                    ref = task.remote(cell_spec(cell), env, sink, self.options.share_gpu)
                    pending[ref] = _InFlight(cell, time.monotonic())
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=WAIT_S)
                self._drain(ray, sink, pending, results_dir, progress)
                for ref in ready:
                    self._collect(ray, ref, pending.pop(ref), results_dir, progress)
                self._enforce_timeouts(ray, pending)
        except BaseException:
            self._cancel(ray, pending, progress)
            raise

    def _drain(
        self, ray: Any, sink: Any, pending: dict[Any, _InFlight], results_dir: Path, progress: MatrixProgress
    ) -> None:
        try:
            events = ray.get(sink.drain.remote(), timeout=30)
        except Exception:  # a slow actor only delays the live log; the final log comes with the result
            return
        by_id = {f.cell.id: f for f in pending.values()}
        for ev in events:
            f = by_id.get(ev["cell_id"])
            if f is None:
                continue  # an event that arrived after its cell's result: the result has it all
            log = cell_dir(results_dir, f.cell.id) / "cell.log"
            if ev["type"] == "started":
                f.attempts += 1
                f.token, f.started, f.execution = ev["token"], time.monotonic(), ev["execution"]
                where = f"{f.execution['node']}/{f.execution['device']}"
                if f.attempts > 1:
                    with open(log, "ab") as fh:
                        fh.write(
                            f"\n[ray] attempt {f.attempts} on {where}: the previous worker or node was lost\n".encode()
                        )
                f.log_offset = log.stat().st_size if log.exists() else 0
                progress.started(f.cell.id, f.execution["device"], where)
            elif ev["type"] == "log" and ev["token"] == f.token:
                if ev["chunk"]:
                    with open(log, "ab") as fh:
                        fh.write(ev["chunk"])
                if ev.get("progress"):
                    progress.update(f.cell.id, ev["progress"])

    def _collect(self, ray: Any, ref: Any, f: _InFlight, results_dir: Path, progress: MatrixProgress) -> None:
        cell, timeout_s = f.cell, f.cell.config.runtime.timeout_s
        log = cell_dir(results_dir, cell.id) / "cell.log"
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            if ref not in self._hard_timeouts:
                raise
            out = None
        except ray.exceptions.RayTaskError as exc:  # an error in the task's own code, not the cell's
            out = None
            if ref not in self._hard_timeouts:
                self._record(
                    results_dir,
                    cell,
                    "failed",
                    f"the Ray task failed: {_first_line(exc.cause or exc)}",
                    log,
                    f,
                    progress,
                )
                return
        except ray.exceptions.RayError as exc:  # worker or node lost on every attempt
            out = None
            if ref not in self._hard_timeouts:
                self._record(
                    results_dir,
                    cell,
                    "failed",
                    f"Ray worker or node lost on each of {self.options.max_retries + 1} attempt(s) "
                    f"(max_retries {self.options.max_retries}): {type(exc).__name__}: {_first_line(exc)}",
                    log,
                    f,
                    progress,
                )
                return
        if out is None:  # force-cancelled after its timeout
            self._record(
                results_dir,
                cell,
                "timeout",
                f"cell exceeded its timeout of {timeout_s:.0f} s and its Ray task was cancelled",
                log,
                f,
                progress,
            )
            return
        outcome = ChildOutcome(*out["outcome"])
        f.execution = out["execution"]
        self._write_files(results_dir, cell, out["files"], f)
        record = _record_from_text(out["record"], cell)
        if record is None or outcome.timed_out:
            status, reason = outcome_reason(outcome, timeout_s)
            self._record(
                results_dir, cell, status, reason, log, f, progress, wall_s=outcome.wall_s, reached=out.get("progress")
            )
            return
        execution = {**record.environment.get("execution", f.execution), "attempts": max(f.attempts, 1)}
        artifacts = dict(record.artifacts)
        if out.get("checkpoint"):
            artifacts["checkpoint"] = f"{f.execution['node']}:{out['checkpoint']}"
        record = record.model_copy(
            update={  # (runtime folders: write_result makes them placeholders)
                "environment": {**record.environment, "execution": execution},
                "artifacts": artifacts,
            }
        )
        write_result(results_dir, record)
        progress.finished(cell.id, record, outcome.wall_s)

    def _write_files(self, results_dir: Path, cell: Cell, files: dict[str, bytes], f: _InFlight) -> None:
        """The cell's files, atomically, before its record; its log after what earlier runs and attempts left."""
        root = results_dir.resolve()
        for rel, data in files.items():
            target = (results_dir / rel).resolve()
            if not target.is_relative_to(root / cell.id):
                continue  # only the cell's own folder
            if rel == f"{cell.id}/cell.log":
                log = cell_dir(results_dir, cell.id) / "cell.log"
                before = log.read_bytes() if log.exists() else b""
                offset = f.log_offset if f.log_offset is not None else len(before)
                data = before[:offset] + data
            atomic_write_bytes(target, data)

    def _record(
        self,
        results_dir: Path,
        cell: Cell,
        status: str,
        reason: str,
        log: Path,
        f: _InFlight,
        progress: MatrixProgress,
        wall_s: float | None = None,
        reached: dict[str, Any] | None = None,
    ) -> None:
        execution = {**(f.execution or {"executor": "ray"}), "attempts": f.attempts}
        if wall_s is None and f.started is not None:
            wall_s = time.monotonic() - f.started
        record = parent_result(cell, status, reason, log_path=log, wall_s=wall_s, execution=execution, progress=reached)
        write_result(results_dir, record)
        progress.finished(cell.id, read_result(result_path(results_dir, cell.id)), wall_s)

    def _enforce_timeouts(self, ray: Any, pending: dict[Any, _InFlight]) -> None:
        """The task kills its own cell on timeout; a task that still runs well after that (a hung worker) is
        force-cancelled here and its cell recorded `timeout`."""
        now = time.monotonic()
        for ref, f in pending.items():
            limit = f.cell.config.runtime.timeout_s
            if (
                limit is not None
                and f.started is not None
                and ref not in self._hard_timeouts
                and now - f.started > limit + KILL_GRACE_S + 5 + HARD_TIMEOUT_MARGIN_S
            ):
                self._hard_timeouts.add(ref)
                ray.cancel(ref, force=True)

    def _cancel(self, ray: Any, pending: dict[Any, _InFlight], progress: MatrixProgress) -> None:
        """Ctrl-C (or any error in the driver): cancel every task; each kills its cell's process group. No record is
        written for them, so the next run redoes them."""
        if not pending:
            return
        progress.write(f"interrupted: cancelling {len(pending)} running or queued cell(s)")
        for ref in pending:
            ray.cancel(ref)
        _, left = ray.wait(list(pending), num_returns=len(pending), timeout=KILL_GRACE_S + 10)
        for ref in left:
            ray.cancel(ref, force=True)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


def _record_from_text(text: str | None, cell: Cell) -> CellResult | None:
    if not text:
        return None
    try:
        record = CellResult.model_validate_json(text)
    except ValueError:
        return None
    return record if record.config_hash == cell.config_hash else None
