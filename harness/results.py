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

SCHEMA_VERSION = 2  # 2: train.tokens_per_s / mfu are steady-state figures (harness/measures.py)
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
PORTABLE_RUNTIME = {"data_dir": "<data dir>", "results_dir": "<results dir>", "cache_dir": "<cache dir>"}


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
    """A record of an older schema in today's terms. Schema 1 (before steady-state timing) measured `tokens_per_s`
    and `mfu` over whole epochs, warm-up included: they are read as the whole-run figures, and no steady-state figure
    is claimed for them."""
    if not isinstance(raw, dict) or raw.get("schema_version", SCHEMA_VERSION) >= 2:
        return raw
    train = (raw.get("metrics") or {}).get("train")
    if isinstance(train, dict) and "steady" not in train:
        train = {
            **train,
            "wall_tokens_per_s": train.get("tokens_per_s"),
            "wall_mfu": train.get("mfu"),
            "tokens_per_s": None,
            "mfu": None,
            "steady": {"steps": 0, "reason": "recorded before steady-state timing (schema 1): whole-run figures only"},
        }
        raw = {**raw, "metrics": {**raw["metrics"], "train": train}}
    return {**raw, "schema_version": 2}


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


NON_RESULT_FILES = {"comparisons.json", "baseline.json", "plan.json"}


def remove_stale_temp_files(results_dir: Path) -> int:
    """Temp files left by a killed writer; they were never renamed, so no record depends on them."""
    n = 0
    for tmp in Path(results_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n
