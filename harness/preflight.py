"""Preflight: everything that can be checked before a cell runs is checked here, in the parent, in seconds.

`run_preflight(loaded, cells, ...)` looks at the cells that are about to run and returns every problem at once:

- models: each model source checks its own (`ModelSource.check_many`): a local folder has a config.json, a GGUF
  file starts with the GGUF magic bytes, a package that ships a model is installed; a hub id is in the local hub
  cache, or the hub answers one short request (at most one timeout per hub host, never one per cell; with
  `HF_HUB_OFFLINE` set no request is made at all);
- evaluation tasks: a built-in task's data file loads (its own validating loader), an lm-eval task name exists
  (lm-eval's task folders or `eval.include_path`), a custom task's local data files exist;
- training data: every file parses (JSON / JSONL line, UTF-8, CSV, Parquet) and the records the cell would use
  have the fields their format needs, after the dataset's `fields` renames;
- numbers: `train.max_seq_length` within the model's positions;
- places: the results, cache and report folders can be written and have free space.

The CLI prints the problems as one error and exits 2 before anything runs (`--dry-run` too). Nothing here imports
torch, transformers or lm_eval (lm_eval only to confirm an unknown task name before calling it unknown).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

HUB_TIMEOUT_S = 5.0  # one short request per hub host (and one per model once the host answered)
MIN_FREE_BYTES = 200 * 1024**2  # a results / cache folder with less free space than this is an error
MAX_RECORDS_CHECKED = 200_000  # records per training file whose fields are checked (the file is always parsed)


@dataclass
class PreflightResult:
    errors: list[str] = field(default_factory=list)  # each one line (or a few): where, what, what to do
    warnings: list[str] = field(default_factory=list)  # what would otherwise happen quietly; nothing stops
    unreachable: dict[str, str] = field(default_factory=dict)  # model id -> why (hub models)
    checked: dict[str, int] = field(default_factory=dict)  # what was checked, for the summary line
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        what = ", ".join(f"{n} {k}" for k, n in self.checked.items() if n)
        state = "ok" if self.ok else f"{len(self.errors)} problem(s)"
        return f"preflight: {state} ({what or 'nothing to check'}; {self.seconds:.1f} s)"

    def message(self, source: str) -> str:
        lines = [f"error: preflight found {len(self.errors)} problem(s); nothing ran"]
        for e in self.errors:
            first, *rest = e.splitlines()
            lines.append(f"{source}: {first}")
            lines.extend(f"  {r}" for r in rest)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- models


def check_models(models: list[Any], timeout: float = HUB_TIMEOUT_S, check_network: bool = True) -> PreflightResult:
    """Every model source checks its own models (`ModelSource.check_many`: a hub source makes at most one request
    per host, none offline); a source's failure is reported, never a crash."""
    from harness.models.sources import source_for

    res = PreflightResult()
    by_source: dict[str, list[Any]] = {}
    for m in models:
        by_source.setdefault(m.source, []).append(m)
    for name, specs in by_source.items():
        try:
            source = source_for(name)
            if not check_network and source.network_needs(specs[0]):
                continue
            unreachable, errors = source.check_many(specs, timeout)
        except Exception as exc:  # a source's check must report, never crash the preflight
            unreachable, errors = {}, [f"models ({', '.join(s.id for s in specs)}): source {name!r}: {exc}"]
        res.unreachable.update(unreachable)
        res.errors.extend(errors)
    return res


UNREACHABLE_FIX = (
    "fix: download each model where the hub is reachable and use `source: local` with `path:` "
    "(a folder with config.json), or set HF_ENDPOINT to a mirror, or fill the local hub cache "
    "(`hf download <hub_id>`) and set HF_HUB_OFFLINE=1; --only can leave these models out. "
    "(The data dir does not hold models.)"
)


def unreachable_message(unreachable: dict[str, str]) -> str:
    lines = [f"models: {len(unreachable)} hub model(s) cannot be loaded on this machine:"]
    lines += [f"  {mid}: {why}" for mid, why in unreachable.items()]
    lines.append(UNREACHABLE_FIX)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- tasks

_TASK_NAME_RE = re.compile(r"^[\"']?(task|group|tag)[\"']?\s*:\s*(.*)$", re.M)
_LIST_ITEM_RE = re.compile(r"^\s+-\s+(\S+)\s*$")


def yaml_task_names(folder: Path) -> dict[str, Path]:
    """Task, group and tag names defined by the YAML files under `folder` (a text scan: fast, no lm_eval)."""
    names: dict[str, Path] = {}
    for p in sorted(Path(folder).rglob("*.yaml")):
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = _TASK_NAME_RE.match(line)
            if not m:
                continue
            value = m.group(2).split("#")[0].strip().strip("'\"")
            if value and not value.startswith("["):
                names.setdefault(value, p)
            elif not value and m.group(1) == "tag":  # tag:\n  - a\n  - b
                for nxt in lines[i + 1 :]:
                    item = _LIST_ITEM_RE.match(nxt)
                    if not item:
                        break
                    names.setdefault(item.group(1).strip("'\""), p)
    return names


@lru_cache(maxsize=1)
def lm_eval_task_names() -> frozenset[str]:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    return frozenset(yaml_task_names(Path(list(spec.submodule_search_locations)[0]) / "tasks"))


def _confirm_unknown(names: list[str], include: Path | None) -> set[str]:
    """The names lm-eval's own TaskManager does not know either (the text scan can miss generated names)."""
    try:
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=str(include) if include else None, include_defaults=True)
        return {n for n in names if n not in tm.all_tasks}
    except Exception:  # lm-eval not importable here: trust the scan
        return set(names)


def check_tasks(eval_cfg: Any, data_dir: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the evaluation tasks; warnings name what would otherwise happen quietly (a limit larger
    than the task, few-shot examples drawn from the evaluated split)."""
    from harness.evaluation.registry import builtin_task, builtin_tasks, task_data_path
    from harness.paths import display_data_path, resolve_data_path

    errors: list[str] = []
    warnings: list[str] = []
    include: Path | None = None
    custom: dict[str, Path] = {}
    if eval_cfg.include_path:
        include = resolve_data_path(eval_cfg.include_path, data_dir)
        if not include.is_dir():
            errors.append(
                f"eval.include_path: task folder not found: {include} (a relative include_path resolves "
                f"against the data dir {data_dir})"
            )
            include = None
        else:
            custom = yaml_task_names(include)
    unknown: list[tuple[int, str]] = []
    for i, task in enumerate(eval_cfg.tasks):
        where = f"eval.tasks[{i}] ({task.name})"
        builtin = builtin_task(task.name)
        if builtin is None:
            if task.data:
                errors.append(
                    f"{where}.data: '{task.name}' is not a built-in task ({', '.join(builtin_tasks())}), "
                    f"so 'data' cannot be set; the task's own YAML says where its data is"
                )
            if task.name in custom:
                errors.extend(f"{where}: {p}" for p in custom_task_problems(custom[task.name]))
            elif task.name not in lm_eval_task_names():
                unknown.append((i, task.name))
            continue
        path = task_data_path(task, data_dir)
        shots = task.num_fewshot if task.num_fewshot is not None else eval_cfg.num_fewshot
        limit = task.limit or eval_cfg.limit
        files = [path] if path is not None and path.is_file() else []
        fewshot = resolve_data_path(builtin.fewshot_data, data_dir) if builtin.fewshot_data else None
        if shots and fewshot is not None and fewshot.is_file():
            files.append(fewshot)
        elif shots:
            where_from = f"{builtin.fewshot_data} not found" if fewshot else "the task has no few-shot split"
            warnings.append(
                f"{where}: num_fewshot {shots}, but {where_from}: the examples come from the evaluated split itself "
                "(never the item under evaluation, as lm-eval does), which the record and the report say"
            )
        for f in files:
            try:
                items = builtin.load(f)
            except UnicodeDecodeError as exc:
                errors.append(f"{where}: {f}: not UTF-8 text (byte {exc.start}: {exc.reason})")
                continue
            except (ValueError, OSError) as exc:  # EvalDataError is a ValueError naming file and line
                errors.append(f"{where}: {exc}")
                continue
            if f == path and limit and limit > len(items):
                warnings.append(
                    f"{where}: limit {limit} is more than the {len(items)} items of "
                    f"{display_data_path(f, data_dir)}: all {len(items)} are scored (n = {len(items)} in the record)"
                )
    if unknown:
        really = _confirm_unknown([n for _, n in unknown], include)
        choices = sorted(set(builtin_tasks()) | set(custom) | lm_eval_task_names())
        for i, name in unknown:
            if name not in really:
                continue
            close = difflib.get_close_matches(name, choices, n=3)
            errors.append(
                f"eval.tasks[{i}]: unknown task '{name}': not a built-in task ({', '.join(builtin_tasks())}),"
                f" not an lm-eval task"
                + (f", not in {include}" if include else " (no eval.include_path)")
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )
    return errors, warnings


def custom_task_problems(yaml_path: Path) -> list[str]:
    """Local data files named by a custom task YAML that do not exist (relative ones resolve against its folder)."""
    from harness.evaluation.custom import task_data_files

    try:
        _, missing = task_data_files(yaml_path)
    except Exception as exc:  # an unreadable YAML: say so, do not crash
        return [f"{yaml_path}: cannot be read as a task YAML: {exc}"]
    return [
        f"{yaml_path}: data file not found: {m} (relative paths in a task YAML resolve against the YAML's folder)"
        for m in missing
    ]


# ---------------------------------------------------------------------------------------------------- training data


def _passed_marker(cache_dir: Path | None, path: Path, ds: Any) -> Path | None:
    """Where a passed check of this file (its size and time) with this dataset spec is remembered."""
    if cache_dir is None:
        return None
    import hashlib

    stat = path.stat()
    key = json.dumps([str(path), stat.st_size, stat.st_mtime_ns, ds.model_dump(mode="json")], sort_keys=True)
    return Path(cache_dir) / "checked" / hashlib.sha256(key.encode()).hexdigest()[:24]


def check_dataset(
    ds: Any, data_dir: Path, max_records: int = MAX_RECORDS_CHECKED, cache_dir: Path | None = None
) -> str | None:
    """Why the records a cell would read from one training dataset are unusable, or None. With `cache_dir`, a file
    that passed before, unchanged, is not parsed again (a second --dry-run stays fast)."""
    from harness.data.examples import DataError
    from harness.data.loaders import field_names, read_records, records_to_examples, task_examples
    from harness.paths import resolve_data_path

    if ds.format == "eval_task":  # the task's own loader validates its file
        path = resolve_data_path(ds.path, data_dir)
        if not path.is_file():
            return f"train.datasets ({ds.path}): data file not found: {path}"
        try:
            task_examples(ds.task, path, ds.limit)
        except DataError as exc:
            return f"train.datasets ({ds.path}): {exc}"
        return None
    try:
        field_names(ds.format, dict(ds.fields))
    except DataError as exc:
        return f"train.datasets ({ds.path or ds.hub_id}): {exc}"
    if not ds.path:
        from harness.net import is_offline

        if is_offline() or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return (
                f"train.datasets ({ds.hub_id}): a hub dataset, but HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set; "
                f"give a local file with 'path' instead"
            )
        return None
    path = resolve_data_path(ds.path, data_dir)
    if not path.is_file():
        return f"train.datasets ({ds.path}): data file not found: {path}"
    passed = _passed_marker(cache_dir, path, ds)
    if passed is not None and passed.is_file():  # this file, unchanged, passed this check before
        return None
    try:
        records = read_records(path)
        if ds.limit is not None:
            records = records[: ds.limit]
        records_to_examples(
            records[:max_records], fmt=ds.format, fields=dict(ds.fields), where=str(path), source=path.name
        )
    except DataError as exc:
        return f"train.datasets ({ds.path}): {exc}"
    except UnicodeDecodeError as exc:
        return f"train.datasets ({ds.path}): {path}: not UTF-8 text (byte {exc.start}: {exc.reason})"
    except OSError as exc:
        return f"train.datasets ({ds.path}): {path}: cannot be read: {exc.strerror or exc}"
    if passed is not None:
        try:
            passed.parent.mkdir(parents=True, exist_ok=True)
            passed.touch()
        except OSError:  # the check is only not remembered
            pass
    return None


# ---------------------------------------------------------------------------------------------------- places


def writable_problem(path: Path, what: str, min_free: int = MIN_FREE_BYTES) -> str | None:
    """Why files cannot be written under `path` (a folder, created later if missing), or None. Creates nothing."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{what} {path}: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{what} {path}: {existing} is read-only (no write permission, or a read-only file system)"
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return None
    if free < min_free:
        return (
            f"{what} {path}: the disk is full ({free / 1024**2:.0f} MiB free; at least "
            f"{min_free / 1024**2:.0f} MiB needed)"
        )
    return None


# ---------------------------------------------------------------------------------------------------- all


def skip_unreachable(planned: list[Any], res: PreflightResult) -> list[Any]:
    """The default for unreachable hub models: their cells become `skip` (recorded as skipped, with the
    reason; a later run where the hub answers runs them), and their error is dropped from `res`."""
    if not res.unreachable:
        return planned
    message = unreachable_message(res.unreachable)
    res.errors = [e for e in res.errors if e != message]
    for p in planned:
        why = res.unreachable.get(p.cell.config.model.id)
        if why and p.action == "run":
            p.action, p.why = "skip", f"hub model unreachable: {why}"
    return planned


def _unique(items: Iterable[Any], key: Any) -> list[Any]:
    seen: dict[str, Any] = {}
    for it in items:
        seen.setdefault(key(it), it)
    return list(seen.values())


def run_preflight(
    loaded: Any,
    cells: list[Any],
    *,
    places: dict[str, Path] | None = None,
    hub_timeout: float = HUB_TIMEOUT_S,
    check_hub: bool = True,
) -> PreflightResult:
    """Every problem of the cells about to run (see the module docstring). `places`: {what: folder} to check."""
    from harness.methods.base import trains
    from harness.models.sources import architecture_of

    t0 = time.monotonic()
    res = PreflightResult()
    data_dir = Path(loaded.data_dir)
    dump = lambda m: json.dumps(m.model_dump(mode="json"), sort_keys=True)
    models = _unique((c.config.model for c in cells), dump)
    checked = check_models(models, hub_timeout, check_network=check_hub)
    res.unreachable.update(checked.unreachable)
    res.errors.extend(checked.errors)
    res.checked["models"] = len(models)

    # numbers the schema cannot check alone: the sequence length against the model's positions
    for m in models:
        try:
            arch, _ = architecture_of(m)
        except Exception:  # unknown architecture: nothing to compare against
            arch = None
        limit = arch.max_positions if arch is not None else None
        lengths = {
            c.config.train.max_seq_length for c in cells if c.config.model.id == m.id and trains(c.config.method.kind)
        }
        too_long = sorted(n for n in lengths if limit and n > limit)
        if too_long:
            res.errors.append(
                f"train.max_seq_length: {too_long[-1]} is longer than model {m.id}'s "
                f"{limit} positions (max_position_embeddings); allowed: 8 to {limit}"
            )

    evals = _unique((c.config.eval for c in cells if c.config.eval.tasks), dump)
    for ev in evals:
        task_errors, task_warnings = check_tasks(ev, data_dir)
        res.errors.extend(task_errors)
        res.warnings.extend(task_warnings)
    res.checked["eval tasks"] = len({t.name for ev in evals for t in ev.tasks})

    datasets = _unique(
        (
            ds
            for c in cells
            if trains(c.config.method.kind) or c.config.eval.generation.n
            for ds in c.config.train.datasets
        ),
        dump,
    )
    for ds in datasets:
        problem = check_dataset(ds, data_dir, cache_dir=Path(cells[0].config.runtime.cache_dir) if cells else None)
        if problem:
            res.errors.append(problem)
    res.checked["data files"] = len(datasets)

    tracking = cells[0].config.runtime.tracking if cells else []
    if tracking:
        from harness.trackers import preflight_problems

        runtime = cells[0].config.runtime
        res.errors.extend(preflight_problems(tracking, Path(runtime.tracking_dir or runtime.results_dir)))
        res.checked["trackers"] = len(tracking)

    for what, folder in (places or {}).items():
        problem = writable_problem(folder, what)
        if problem:
            res.errors.append(problem)
    if res.unreachable:
        res.errors.insert(0, unreachable_message(res.unreachable))
    res.errors = list(dict.fromkeys(res.errors))
    res.warnings = list(dict.fromkeys(res.warnings))
    res.seconds = time.monotonic() - t0
    return res
