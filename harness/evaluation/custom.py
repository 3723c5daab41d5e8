"""Custom evaluation tasks: a folder of lm-eval task YAML named by `eval.include_path`.

How paths resolve (README: "Custom evaluation tasks"):
- `eval.include_path` is absolute, or relative to the data dir, like every other data path of a matrix;
- inside a task YAML, relative local data paths (`dataset_kwargs.data_files`, and a `dataset_path` that starts
  with `.` or `/`) resolve against the folder of that YAML, never against the current directory.

What a custom task contributes to a cell:
- its folder's content (every file, by sha256) and the sha256 of every local data file its YAML files name are
  part of the cell's config hash (`folder_digest`), so editing the task YAML or its data reruns the cell;
- the same sha256s are recorded in the cell's result (`data_files`) and in `metrics.eval.<task>.data`;
- `eval.limit` with `limit_strategy: spread` takes N evenly spaced items of the test split when that split is one
  local file (as for the built-in tasks); otherwise the first N are taken and the result says why.

Nothing here imports lm_eval (the YAML is read with a loader that keeps `!function` as text).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from harness.hashing import sha256_file

LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}  # `datasets` builders that read local files
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}


class _TextLoader(yaml.SafeLoader):
    pass


_TextLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def read_task_yaml(path: Path, _seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """A task YAML as data (`include:` merged, the including file winning; `!function` kept as text)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"include cycle at {path}")
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_TextLoader)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(cfg).__name__}")
    inc = cfg.pop("include", None)
    if inc is None:
        return cfg
    merged: dict[str, Any] = {}
    for name in inc if isinstance(inc, list) else [inc]:
        p = Path(name) if Path(name).is_absolute() else path.parent / name
        merged.update(read_task_yaml(p, _seen | {path}))
    merged.update(cfg)
    return merged


def _paths_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [p for v in value for p in _paths_in(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    return []


def _is_remote(p: str) -> bool:
    return "://" in p


def resolve_in(folder: Path, p: str) -> str:
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (Path(folder) / q).resolve())


def rewrite_data_paths(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`cfg` with relative local data paths made absolute against `folder` (the YAML's folder)."""
    out = dict(cfg)
    kwargs = dict(out.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            return v if _is_remote(v) else resolve_in(folder, v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    if files is not None:
        kwargs["data_files"] = fix(files)
        out["dataset_kwargs"] = kwargs
    dp = out.get("dataset_path")
    if isinstance(dp, str) and (dp.startswith(".") or dp.startswith("~")):
        out["dataset_path"] = resolve_in(folder, dp)
    return out


def task_data_files(yaml_path: Path) -> tuple[list[Path], list[Path]]:
    """(existing, missing) local data files named by a task YAML, resolved against its folder."""
    yaml_path = Path(yaml_path)
    cfg = rewrite_data_paths(read_task_yaml(yaml_path), yaml_path.parent)
    candidates = [p for p in _paths_in((cfg.get("dataset_kwargs") or {}).get("data_files")) if not _is_remote(p)]
    dp = cfg.get("dataset_path")
    if isinstance(dp, str) and dp.startswith("/") and dp not in LOCAL_BUILDERS:
        candidates.append(dp)
    found, missing = [], []
    for c in candidates:
        (found if Path(c).exists() else missing).append(Path(c))
    return found, missing


def _stat_key(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _sha256_cached(key: tuple[str, int, int]) -> str:
    return sha256_file(Path(key[0]))


def file_sha256(p: Path) -> str:
    return _sha256_cached(_stat_key(Path(p)))


def folder_files(folder: Path) -> dict[Path, str]:
    """sha256 of every file of a task folder and of every local data file its YAML files name (outside it too)."""
    folder = Path(folder)
    out: dict[Path, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not (set(p.relative_to(folder).parts) & SKIP_DIRS) and p.suffix != ".pyc":
            out[p] = file_sha256(p)
    for y in sorted(folder.rglob("*.yaml")):
        try:
            found, _ = task_data_files(y)
        except Exception:  # an unreadable YAML is reported by the preflight; its bytes are hashed above
            continue
        for f in found:
            if f.is_file():
                out.setdefault(f, file_sha256(f))
            elif f.is_dir():
                for g in sorted(f.rglob("*")):
                    if g.is_file():
                        out.setdefault(g, file_sha256(g))
    return out


def display_path(p: Path, folder: Path, data_dir: Path) -> str:
    """How results show a custom task's file: relative to the data dir, else to the task folder, else its name."""
    p = Path(p).resolve()
    for base in (Path(data_dir), Path(folder)):
        try:
            rel = str(p.relative_to(base.resolve()))
            return rel if rel != "." else p.name
        except ValueError:
            continue
    return p.name


def folder_digest(folder: Path) -> str:
    """One sha256 over a task folder's files and data (names relative to the folder, plus content hashes)."""
    folder = Path(folder)
    items = sorted((display_path(p, folder, folder), sha) for p, sha in folder_files(folder).items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def custom_task_files(cfg: Any) -> dict[str, str]:
    """{shown path: sha256} of a cell's custom task folder and the data its YAML files name (for `data_files`)."""
    folder = include_folder(cfg.eval.include_path, cfg.runtime.data_dir) if cfg.eval.tasks else None
    if folder is None:
        return {}
    return {display_path(p, folder, cfg.runtime.data_dir): sha for p, sha in folder_files(folder).items()}


def include_folder(include_path: str | None, data_dir: str | os.PathLike[str]) -> Path | None:
    if not include_path:
        return None
    from harness.paths import resolve_data_path

    p = resolve_data_path(include_path, data_dir)
    return p if p.is_dir() else None


def count_records(path: Path) -> int | None:
    """Records in a local JSON / JSONL / CSV file (the test split of a custom task), or None if unknown."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                return len(data)
            if isinstance(data, dict) and isinstance(data.get("data"), list):  # datasets' `field: data` layout
                return len(data["data"])
            return None
        if suffix == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as f:
                return sum(1 for _ in csv.DictReader(f))
    except (OSError, ValueError):
        return None
    return None


def test_split_file(cfg: dict[str, Any]) -> Path | None:
    """The one local file holding a (path-rewritten) task config's test split, or None."""
    if cfg.get("dataset_path") not in LOCAL_BUILDERS or cfg.get("process_docs") or cfg.get("custom_dataset"):
        return None
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    split = cfg.get("test_split") or "test"
    if isinstance(files, dict):
        files = files.get(split)
    elif split != "train":  # a bare string / list is the `train` split in `datasets`
        return None
    if isinstance(files, list) and len(files) == 1:
        files = files[0]
    if isinstance(files, str) and not _is_remote(files) and Path(files).is_file():
        return Path(files)
    return None
