"""The result record of one cell, and the results folder that holds them.

Layout of `results/<matrix>/`:

    <cell-id>.json            the record below, written atomically (temp file + fsync + rename): it either
                              exists complete or not at all, so a run killed at any moment resumes cleanly
    <cell-id>/cell.log        the cell's log (not committed)
    <cell-id>/items/<task>.jsonl   per-item evaluation records (item id, chosen answer, correct)
    comparisons.json          paired statistics of trained cells against their base rows

Record (`CellResult`): `status` is one of STATUSES; `metrics` holds the groups `train`, `memory`, `data`,
`eval` (task -> acc, acc_stderr, acc_norm, acc_norm_stderr, n, wall_s, items), `generation`, and `saved`
(the kept adapter or checkpoint: kind, path relative to the results folder, bytes, sha256, files); `timings` holds
`wall_s` and the phases `load_s`, `data_s`, `train_s`, `eval_s`, `save_s`, and `overhead_s` (the rest);
`environment` the versions, hardware and git state; `data_files` maps each data file used to its sha256.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# 2: train.tokens_per_s / mfu are steady-state figures (harness/measures.py)
# 3: meter readings keyed by region (metrics.meters.<region>.<meter>), derived figures in metrics.derived
SCHEMA_VERSION = 3
STATUSES = ("success", "failed", "oom", "timeout", "skipped")
Status = Literal["success", "failed", "oom", "timeout", "skipped"]


class CellResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    cell_id: str
    config_hash: str
    matrix: str
    status: Status
    reason: str | None = None  # why it failed or was skipped, one line
    traceback: str | None = None  # the tail of the traceback or of the log
    config: dict[str, Any]  # the resolved CellConfig
    metrics: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    data_files: dict[str, str] = Field(default_factory=dict)  # path -> sha256
    estimate: dict[str, Any] | None = None  # predicted memory / time (harness.estimator)
    artifacts: dict[str, str] = Field(default_factory=dict)  # name -> path relative to the results folder


def result_path(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / f"{cell_id}.json"


def cell_dir(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / cell_id


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a partial one."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# Where a cell ran from is this machine's business: records travel (committed, shared, gathered by Ray), so the
# runtime folders are written as these placeholders. Data files are recorded relative to the data dir, with sha256.
PORTABLE_RUNTIME = {
    "data_dir": "<data dir>",
    "results_dir": "<results dir>",
    "cache_dir": "<cache dir>",
    "tracking_dir": "<tracking dir>",
}


def portable_record(record: dict) -> dict:
    """The record with its config's runtime folders replaced by PORTABLE_RUNTIME's placeholders."""
    runtime = (record.get("config") or {}).get("runtime")
    if not isinstance(runtime, dict):
        return record
    return {
        **record,
        "config": {
            **record["config"],
            "runtime": {**runtime, **{k: v for k, v in PORTABLE_RUNTIME.items() if k in runtime}},
        },
    }


def write_result(results_dir: Path, result: CellResult) -> Path:
    path = result_path(results_dir, result.cell_id)
    record = portable_record(result.model_dump(mode="json"))
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def upgrade_record(raw: Any) -> Any:
    """A record of an older schema in today's terms.

    Schema 1 (before steady-state timing) measured `tokens_per_s` and `mfu` over whole epochs, warm-up included:
    they are read as the whole-run figures, and no steady-state figure is claimed for them.
    Schema 2 kept meter readings at the top of `metrics` (`memory`, `energy` of training, `energy_eval`): they move
    under `metrics.meters.<region>.<meter>`, and tokens per joule to `metrics.derived.train`."""
    if not isinstance(raw, dict) or raw.get("schema_version", SCHEMA_VERSION) >= SCHEMA_VERSION:
        return raw
    version = raw.get("schema_version", SCHEMA_VERSION)
    metrics = dict(raw.get("metrics") or {})
    train = metrics.get("train")
    if version < 2 and isinstance(train, dict) and "steady" not in train:
        metrics["train"] = {
            **train,
            "wall_tokens_per_s": train.get("tokens_per_s"),
            "wall_mfu": train.get("mfu"),
            "tokens_per_s": None,
            "mfu": None,
            "steady": {"steps": 0, "reason": "recorded before steady-state timing (schema 1): whole-run figures only"},
        }
    moved = {"memory": ("train", "memory"), "energy": ("train", "energy"), "energy_eval": ("eval", "energy")}
    for old, (region, name) in moved.items():
        if isinstance(metrics.get(old), dict):
            reading = dict(metrics.pop(old))
            per_joule = reading.pop("tokens_per_joule", None)
            metrics.setdefault("meters", {}).setdefault(region, {})[name] = reading
            if old == "energy":
                metrics.setdefault("derived", {}).setdefault("train", {})["tokens_per_joule"] = per_joule
    return {**raw, "metrics": metrics, "schema_version": SCHEMA_VERSION}


def split_foreign(records: list[CellResult], matrix: str | None = None) -> tuple[list[CellResult], list[CellResult]]:
    """(the records of `matrix`, the records of other matrices): a result file copied in from another matrix is never
    mixed into this one's statistics or report. Without `matrix`, the matrix most of the records belong to."""
    if matrix is None:
        names = [r.matrix for r in records]
        matrix = max(sorted(set(names)), key=names.count) if names else None
    return [r for r in records if r.matrix == matrix], [r for r in records if r.matrix != matrix]


def foreign_note(foreign: list[CellResult]) -> str:
    shown = ", ".join(f"{r.cell_id} (matrix {r.matrix})" for r in foreign[:5])
    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
    return f"{len(foreign)} result file(s) of another matrix in this folder, left out: {shown}{more}"


def read_result(path: Path) -> CellResult | None:
    """The record at `path` (in today's schema), or None if it is missing, unreadable or not a valid record."""
    try:
        return CellResult.model_validate(upgrade_record(json.loads(Path(path).read_text())))
    except (OSError, ValueError, ValidationError):
        return None


def load_results(results_dir: Path) -> tuple[list[CellResult], list[Path]]:
    """All valid records of a folder, and the paths of files that are not valid records."""
    good: list[CellResult] = []
    bad: list[Path] = []
    folder = Path(results_dir)
    if not folder.is_dir():
        return good, bad
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or path.name in NON_RESULT_FILES:
            continue
        record = read_result(path)
        (good.append(record) if record else bad.append(path))
    return good, bad


RUN_FILE = "run.json"  # where the folder's matrix file and data dir are, relative to the folder (for export)
NON_RESULT_FILES = {"comparisons.json", "baseline.json", "plan.json", RUN_FILE}


def write_run_file(results_dir: Path, matrix_path: Path, data_dir: Path) -> None:
    """The matrix file and data dir of the run that fills this folder, relative to the folder (no machine path):
    what `medbench export` needs to find the tasks' data without being told again."""
    import os

    folder = Path(results_dir)
    info = {
        "matrix_file": os.path.relpath(Path(matrix_path).resolve(), folder.resolve()),
        "data_dir": os.path.relpath(Path(data_dir).resolve(), folder.resolve()),
    }
    atomic_write_text(folder / RUN_FILE, json.dumps(info, indent=1) + "\n")


def run_data_dir(results_dir: Path) -> Path | None:
    """The data dir the run that filled this folder used (from its run file), if the folder says and it exists."""
    try:
        info = json.loads((Path(results_dir) / RUN_FILE).read_text())
        found = (Path(results_dir) / info["data_dir"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if found.is_dir() else None


def remove_stale_temp_files(results_dir: Path) -> int:
    """Temp files left by a killed writer; they were never renamed, so no record depends on them."""
    n = 0
    for tmp in Path(results_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
