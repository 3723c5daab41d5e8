"""Local data files of the built-in evaluation tasks: validate, normalise, cache (light: no lm_eval import).

lm-eval reads every built-in task from a normalised JSONL copy (one record per line, with an `id`) that this
module writes into the cache, keyed by the sha256 of the original file and FORMAT_VERSION: a file changes, its
copy changes. Each task's own loader (`harness/evaluation/tasks/<name>/task.py`) validates the file first, and
every error names the file, the line or record, and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.evaluation.registry import BuiltinTask
from harness.hashing import sha256_file

FORMAT_VERSION = 1
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class EvalDataError(ValueError):
    """An evaluation data file is missing or malformed; the message says which file, where, and what to do."""


@dataclass(frozen=True)
class PreparedTaskData:
    source: Path  # the original file
    sha256: str  # of the original file
    path: Path  # the normalised JSONL copy lm-eval reads
    ids: tuple[Any, ...]  # item ids, in file order

    @property
    def n(self) -> int:
        return len(self.ids)


def is_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)


def missing_file_error(
    task: BuiltinTask, path: Path, data_dir: Path, given: str | None, what: str = "data file"
) -> EvalDataError:
    if given:
        origin = f"eval.tasks[].data is {given!r}" + (
            "" if Path(given).is_absolute() else f", under the data dir {data_dir}"
        )
    else:
        origin = f"the default {task.default_data!r} under the data dir {data_dir}"
    hub = ""
    if task.hub_dataset and not given:
        hub = f"\n  the Hub copy {task.hub_dataset} is not used: " + (
            "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if is_offline() else "a local file was asked for"
        )
    return EvalDataError(
        f"{what} for task '{task.name}' not found: {path}\n"
        f"  looked for: {path} ({origin})\n"
        f"  how to obtain: {task.how_to_obtain}\n"
        f"  then put it at {path}, or point eval.tasks[].data at it (absolute, or relative to the data dir; "
        f"the data dir is --data-dir or $MEDBENCH_DATA_DIR){hub}"
    )


# ---------------------------------------------------------------------------------------------------- prepare


def prepare_local_data(task: BuiltinTask, path: Path, cache_dir: Path) -> PreparedTaskData:
    """Validate `path` with the task's loader and write (once) its normalised JSONL copy under
    `cache_dir/eval-data/`."""
    from harness.results import atomic_write_text

    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"data file not found: {path}")
    digest = sha256_file(path)
    records = task.load(path)
    ids = tuple(r["id"] for r in records)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)[:5]
        raise EvalDataError(f"{path}: item ids are not unique (e.g. {dup})")
    out = Path(cache_dir) / "eval-data" / f"{task.name}-{digest[:20]}-v{FORMAT_VERSION}.jsonl"
    if not out.is_file():
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return PreparedTaskData(source=path, sha256=digest, path=out, ids=ids)


def spread_indices(n: int, k: int) -> list[int]:
    """k indices evenly spaced over range(n), first item included: a deterministic subset that keeps the
    proportions of a file sorted by label or by source."""
    if k >= n:
        return list(range(n))
    return [(i * n) // k for i in range(k)]
