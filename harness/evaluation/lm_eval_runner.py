"""Run the evaluation tasks of a cell with lm-evaluation-harness on an in-memory model.

Flow, per cell:
  1. `resolve_tasks` turns `cell.eval` into lm-eval task specs before any model work, so a missing or malformed
     data file fails fast:
     - a built-in task (`harness.evaluation.registry`) is the shipped YAML (`tasks/<name>/*.yaml`, loaded with
       lm-eval's own YAML loader) with exactly one runtime change: `dataset_kwargs.data_files` points at the
       validated, normalised copy of the local file (`harness.evaluation.data`). With no local file given or
       found and the machine online, the Hub copy is used instead (`dataset_path` / `dataset_name` /
       `process_docs` set to the Hub variant; recorded in `data.kind = "hub"`).
     - any other name goes to lm-eval's `TaskManager`, which also scans `eval.include_path` (a folder of task
       YAML, relative to the data dir unless absolute).
  2. One `HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cell.model.eval_batch_size)` wraps the model
     object (no copy, no reload); each task runs through `lm_eval.simple_evaluate` with its own
     `num_fewshot` / `limit` (task-level values override the eval-level ones) and `log_samples=True`.
  3. Per-item records go to `out_dir/items/<task>.jsonl` in dataset order:
     `{"id", "target", "chosen", "correct", "acc_norm_correct"?, "ll"}` for multiple-choice tasks
     (`ll`: the log-likelihood of each choice, rounded to 6 decimals); for other output types
     `{"id", "target", "response", "correct"?, <per-item metrics>}`.

The model is put in eval mode for the run and its previous mode is restored afterwards; its weights are not
touched. Nothing here reaches a network unless a task is explicitly read from the Hub.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import CellConfig, EvalConfig
from harness.evaluation.data import (
    EvalDataError,
    PreparedTaskData,
    is_offline,
    missing_file_error,
    prepare_local_data,
    spread_indices,
)
from harness.evaluation.registry import BuiltinTask, builtin_task, builtin_tasks, task_data_path

log = logging.getLogger(__name__)


class EvalTaskError(ValueError):
    """A task name or task folder cannot be resolved."""


@dataclass
class ResolvedTask:
    key: str  # the name in results and in items/<key>.jsonl (the matrix's task name)
    lm_eval_name: str  # the task's name inside lm-eval
    spec: str | dict[str, Any]  # what lm-eval's TaskManager.load() gets: a name or a full task config
    num_fewshot: int
    limit: int | None
    data: dict[str, Any]  # where the items come from (recorded in the results)
    id_field: str | None = None  # the doc field holding the item id; None: lm-eval's doc index
    expected_ids: tuple[Any, ...] | None = None  # built-in local tasks: ids in file order (a check)
    fewshot_source: str | None = None
    builtin: bool = False
    samples: list[int] | None = None  # item indices to evaluate (lm-eval's `samples`), instead of a limit
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- resolve


def _builtin_config(task: BuiltinTask) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(task.yaml_path, resolve_func=True)


def _resolve_builtin(
    task: BuiltinTask,
    spec: Any,
    num_fewshot: int,
    limit: int | None,
    key: str,
    data_dir: Path,
    cache_dir: Path,
    limit_strategy: str = "first",
    exclude: list[Any] | None = None,
) -> ResolvedTask:
    from harness.paths import display_data_path, resolve_data_path

    cfg = _builtin_config(task)
    path = task_data_path(spec, data_dir)
    if not path.is_file():
        if spec.data is None and task.hub_dataset and task.record_from_hub and not is_offline():
            return _resolve_hub(task, cfg, num_fewshot, limit, key)
        raise missing_file_error(task, path, data_dir, spec.data)

    prepared = prepare_local_data(task, path, cache_dir)
    data = {"kind": "local", "path": display_data_path(path, data_dir), "sha256": prepared.sha256, "n_file": prepared.n}
    lm_eval_limit, samples, expected_ids = limit, None, prepared.ids
    if limit is not None and limit_strategy == "spread" and limit < prepared.n:
        # lm-eval's limit keeps the first N items; a label-sorted file (PubMedQA's test split) would then be
        # one label only. Ask lm-eval for N evenly spaced items instead (its `samples`), the file left whole.
        samples = spread_indices(prepared.n, limit)
        expected_ids = tuple(prepared.ids[i] for i in samples)
        data["subset"] = f"spread: {limit} of {prepared.n} items, evenly spaced"
        lm_eval_limit = None
    if exclude:  # eval.decontaminate: drop: the contaminated items are left out of what this cell is scored on
        chosen = samples if samples is not None else list(range(min(limit or prepared.n, prepared.n)))
        dropped = set(exclude)
        samples = [i for i in chosen if prepared.ids[i] not in dropped]
        expected_ids = tuple(prepared.ids[i] for i in samples)
        data["decontaminated"] = {"dropped": len(chosen) - len(samples), "of": len(chosen)}
        lm_eval_limit = None
    data_files = {"test": str(prepared.path)}
    fewshot_source = None
    if num_fewshot > 0:
        shots = resolve_data_path(task.fewshot_data, data_dir) if task.fewshot_data else None
        if shots is not None and shots.is_file():
            fs: PreparedTaskData = prepare_local_data(task, shots, cache_dir)
            data_files["train"] = str(fs.path)
            cfg["training_split"] = "train"  # as lm-eval's built-in: few-shot examples from the training split
            fewshot_source = f"train split: {display_data_path(shots, data_dir)} (sha256 {fs.sha256})"
        else:
            # lm-eval excludes the evaluated item from the examples only when the few-shot split is the test split
            cfg["fewshot_split"] = "test"
            fewshot_source = "test split, never the item under evaluation" + (
                f" ({shots} not found)" if shots is not None else " (no train split for this task)"
            )
    cfg["dataset_kwargs"] = {"data_files": data_files}
    return _builtin_resolved(
        key,
        cfg,
        num_fewshot,
        lm_eval_limit,
        data,
        fewshot_source,
        expected_ids=expected_ids,
        samples=samples,
        extra={"limit": limit, "limit_strategy": limit_strategy, "dropped_ids": list(exclude or [])},
    )


def _resolve_hub(task: BuiltinTask, cfg: dict[str, Any], num_fewshot: int, limit: int | None, key: str) -> ResolvedTask:
    cfg = dict(cfg)
    cfg.pop("dataset_kwargs", None)
    cfg["dataset_path"] = task.hub_dataset
    if task.hub_name:
        cfg["dataset_name"] = task.hub_name
    cfg["test_split"] = task.hub_split
    cfg["process_docs"] = task.from_hub
    fewshot_source = None
    if num_fewshot > 0:
        cfg["training_split"] = "train"
        fewshot_source = f"train split of {task.hub_dataset}"
    data = {"kind": "hub", "dataset": task.hub_dataset, "name": task.hub_name, "split": task.hub_split}
    return _builtin_resolved(key, cfg, num_fewshot, limit, data, fewshot_source)


def _builtin_resolved(
    key: str,
    cfg: dict[str, Any],
    num_fewshot: int,
    limit: int | None,
    data: dict[str, Any],
    fewshot_source: str | None,
    **more: Any,
) -> ResolvedTask:
    """A built-in task as lm-eval runs it, from its local file or its Hub copy."""
    return ResolvedTask(
        key=key,
        lm_eval_name=cfg["task"],
        spec=cfg,
        num_fewshot=num_fewshot,
        limit=limit,
        data=data,
        id_field="id",
        fewshot_source=fewshot_source,
        builtin=True,
        **more,
    )


def include_dir(eval_cfg: EvalConfig, data_dir: Path) -> Path | None:
    """The task folder of `eval.include_path` (relative to the data dir, like every path of a matrix)."""
    if not eval_cfg.include_path:
        return None
    from harness.paths import resolve_data_path

    p = resolve_data_path(eval_cfg.include_path, data_dir)
    if not p.is_dir():
        raise EvalTaskError(f"eval.include_path: task folder not found: {p}")
    return p


def resolve_tasks(
    eval_cfg: EvalConfig,
    data_dir: Path,
    cache_dir: Path,
    task_manager: Any | None = None,
    exclude: dict[str, list[Any]] | None = None,
) -> list[ResolvedTask]:
    """Every task of `eval_cfg`, with its data validated; raises EvalDataError / EvalTaskError. `exclude`: item ids
    to leave out per built-in task (eval.decontaminate: drop)."""
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    resolved: list[ResolvedTask] = []
    for spec in eval_cfg.tasks:
        shots = spec.num_fewshot if spec.num_fewshot is not None else eval_cfg.num_fewshot
        limit = spec.limit if spec.limit is not None else eval_cfg.limit
        builtin = builtin_task(spec.name)
        if builtin is not None:
            resolved.append(
                _resolve_builtin(
                    builtin,
                    spec,
                    shots,
                    limit,
                    spec.name,
                    data_dir,
                    cache_dir,
                    eval_cfg.limit_strategy,
                    (exclude or {}).get(spec.name),
                )
            )
            continue
        if spec.data:
            raise EvalTaskError(
                f"eval.tasks: task '{spec.name}' is not a built-in task "
                f"({', '.join(builtin_tasks())}), so 'data' cannot be set: the task's YAML says "
                f"where its data is"
            )
        resolved.append(
            ResolvedTask(
                key=spec.name,
                lm_eval_name=spec.name,
                spec=spec.name,
                num_fewshot=shots,
                limit=limit,
                data={"kind": "lm-eval", "task": spec.name},
            )
        )
    needs_index = [t for t in resolved if not t.builtin]
    if needs_index:
        tm = task_manager or make_task_manager(eval_cfg, data_dir)
        inc = include_dir(eval_cfg, data_dir)
        for t in needs_index:
            if t.lm_eval_name not in tm.all_tasks:
                import difflib

                close = difflib.get_close_matches(t.lm_eval_name, tm.all_tasks, n=5)
                raise EvalTaskError(
                    f"eval.tasks: unknown task '{t.lm_eval_name}': not a built-in task "
                    f"({', '.join(builtin_tasks())}), not an lm-eval task"
                    + (f", not in the task folder {inc}" if inc else " (no eval.include_path given)")
                    + (f"; did you mean {', '.join(close)}?" if close else "")
                )
            entry = tm.task_index[t.lm_eval_name]
            if inc is not None and entry.yaml_path is not None and _inside(Path(entry.yaml_path), inc):
                _resolve_custom(t, Path(entry.yaml_path), inc, data_dir, eval_cfg.limit_strategy)
            elif entry.yaml_path is not None:
                t.data["yaml"] = Path(entry.yaml_path).name  # one of lm-eval's own tasks
    return resolved


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _resolve_custom(t: ResolvedTask, yaml_path: Path, inc: Path, data_dir: Path, limit_strategy: str) -> None:
    """A task of `eval.include_path`: its YAML as a full config with its relative data paths resolved against the
    YAML's folder, its files' sha256 recorded, and `limit_strategy: spread` applied when its test split is one
    local file (harness/evaluation/custom.py)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from harness.evaluation import custom

    shown = lambda p: custom.display_path(p, inc, data_dir)
    t.data.update(
        {
            "kind": "custom",
            "include_path": shown(inc),
            "yaml": shown(yaml_path),
            "yaml_sha256": custom.file_sha256(yaml_path),
            "folder_sha256": custom.folder_digest(inc),
        }
    )
    found, _ = custom.task_data_files(yaml_path)
    t.data["files"] = {shown(f): custom.file_sha256(f) for f in found if f.is_file()}
    cfg = load_yaml(yaml_path, resolve_func=True)
    if "group" in cfg or not isinstance(cfg.get("task"), str):
        t.extra = {"limit": t.limit, "limit_strategy": "first"}
        return  # a group of tasks: lm-eval resolves it by name
    cfg = custom.rewrite_data_paths(cfg, yaml_path.parent)
    t.spec = cfg
    t.extra = {"limit": t.limit, "limit_strategy": "first"}
    if t.limit is None or limit_strategy != "spread":
        return
    test_file = custom.test_split_file(custom.rewrite_data_paths(custom.read_task_yaml(yaml_path), yaml_path.parent))
    n = custom.count_records(test_file) if test_file is not None else None
    if n is None:
        t.data["subset"] = (
            f"first {t.limit} items: limit_strategy spread needs the test split as one local "
            f"JSON / JSONL / CSV file without process_docs or custom_dataset"
        )
        return
    t.extra["limit_strategy"] = "spread"
    if t.limit < n:
        t.samples = spread_indices(n, t.limit)
        t.data["subset"] = f"spread: {t.limit} of {n} items, evenly spaced"
        t.limit = None


def make_task_manager(eval_cfg: EvalConfig, data_dir: Path) -> Any:
    """lm-eval's TaskManager: with lm-eval's own task index (slow, ~6 s) only when a non-built-in task needs it."""
    from lm_eval.tasks import TaskManager

    if all(builtin_task(spec.name) for spec in eval_cfg.tasks):
        return TaskManager(include_defaults=False)  # built-in tasks are passed as full configs
    inc = include_dir(eval_cfg, data_dir)
    return TaskManager(include_path=str(inc) if inc else None, include_defaults=True)


# ---------------------------------------------------------------------------------------------------- records


def _none_if_na(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def _choice_text(continuation: str, delimiter: str) -> str:
    return continuation[len(delimiter) :] if delimiter and continuation.startswith(delimiter) else continuation


def _target_text(target: Any, choices: list[str]) -> Any:
    if isinstance(target, bool):
        return target
    if isinstance(target, int) and 0 <= target < len(choices):
        return choices[target]
    if isinstance(target, list):
        return [_target_text(t, choices) for t in target]
    return target


def _item_id(sample: dict[str, Any], id_field: str | None) -> Any:
    if id_field is not None:
        doc = sample.get("doc") or {}
        if id_field in doc:
            return doc[id_field]
    return sample["doc_id"]


def item_records(
    samples: list[dict[str, Any]], output_type: str, target_delimiter: str, id_field: str | None
) -> list[dict[str, Any]]:
    """Per-item records from lm-eval's logged samples, in dataset order."""
    records = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        rid = _item_id(s, id_field)
        if output_type == "multiple_choice":
            choices = [_choice_text(args[1], target_delimiter) for args in s["arguments"]]
            lls = [float(r[0]) for r in s["filtered_resps"]]
            best = max(range(len(lls)), key=lambda i: lls[i])  # first maximum, as numpy.argmax
            rec: dict[str, Any] = {
                "id": rid,
                "target": _target_text(s["target"], choices),
                "chosen": choices[best],
                "correct": bool(s["acc"]) if "acc" in s else None,
            }
            if "acc_norm" in s:
                rec["acc_norm_correct"] = bool(s["acc_norm"])
            rec["ll"] = [round(x, 6) for x in lls]
        else:
            resp = s["filtered_resps"][0] if s.get("filtered_resps") else None
            rec = {"id": rid, "target": s.get("target"), "response": resp}
            for metric in s.get("metrics", []):
                v = s.get(metric)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rec[metric] = v
            primary = next((m for m in ("acc", "exact_match") if m in rec), None)
            rec["correct"] = bool(rec[primary]) if primary and rec[primary] in (0, 1) else None
        records.append(rec)
    return records


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from harness.results import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# ---------------------------------------------------------------------------------------------------- run


def run_task(lm: Any, task: ResolvedTask, task_manager: Any, items_dir: Path) -> dict[str, dict[str, Any]]:
    """Evaluate one resolved task (possibly a group: one entry per leaf task); writes the item files."""
    from lm_eval import simple_evaluate

    t0 = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task.spec],
        num_fewshot=task.num_fewshot,
        limit=task.limit,
        samples={task.lm_eval_name: task.samples} if task.samples else None,
        log_samples=True,
        task_manager=task_manager,
    )
    wall_s = time.perf_counter() - t0
    if out is None:
        raise RuntimeError(f"lm-eval returned no results for task '{task.key}'")
    leaves = list(out["samples"].keys())
    entries: dict[str, dict[str, Any]] = {}
    for leaf in leaves:
        key = task.key if len(leaves) == 1 else leaf
        cfg = out["configs"][leaf]
        records = item_records(
            out["samples"][leaf], cfg.get("output_type", ""), cfg.get("target_delimiter", " "), task.id_field
        )
        if task.expected_ids is not None:
            want = list(task.expected_ids[: len(records)])
            got = [r["id"] for r in records]
            n_expected = len(task.expected_ids) if task.limit is None else min(task.limit, len(task.expected_ids))
            if got != want or len(records) != n_expected:
                raise RuntimeError(
                    f"task '{key}': lm-eval's items do not line up with the data file "
                    f"({len(records)} items, expected {n_expected}; first ids {got[:3]} vs {want[:3]})"
                )
        items_path = items_dir / f"{_safe_filename(key)}.jsonl"
        _write_jsonl(items_path, records)
        res = out["results"][leaf]
        # lm-eval's other metrics of this task ("name,filter" -> value), e.g. exact_match of a custom task
        metrics = {
            k: v
            for k, v in res.items()
            if "," in k
            and isinstance(v, (int, float))
            and k.split(",")[0] not in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")
        }
        entries[key] = {
            "acc": _none_if_na(res.get("acc,none")),
            "acc_stderr": _none_if_na(res.get("acc_stderr,none")),
            "acc_norm": _none_if_na(res.get("acc_norm,none")),
            "acc_norm_stderr": _none_if_na(res.get("acc_norm_stderr,none")),
            "n": len(records),
            "wall_s": round(wall_s / len(leaves), 3),
            "num_fewshot": out.get("n-shot", {}).get(leaf, task.num_fewshot),
            "limit": task.extra.get("limit", task.limit),
            "limit_strategy": task.extra.get("limit_strategy", "first"),
            "dropped_ids": task.extra.get("dropped_ids", []),  # eval.decontaminate: drop
            "batch_size": getattr(lm, "batch_size_per_gpu", None),
            "items": items_path,
            "lm_eval_task": leaf,
            "data": task.data,
            "fewshot_source": task.fewshot_source,
            "metrics": metrics,
        }
    return entries


def evaluate_model(
    model: Any, tokenizer: Any, cell: CellConfig, out_dir: Path, exclude: dict[str, list[Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Run every task of `cell.eval` on the in-memory `model`; per-item records go to `out_dir/items/`.

    Returns {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n, wall_s, num_fewshot, limit, batch_size,
    items, lm_eval_task, data, fewshot_source, metrics}}:
    - `items`: the ABSOLUTE path of the task's per-item file (under `out_dir/items/`); the caller records it
      relative to the results folder in the cell's result JSON (harness/cell.py does);
    - `acc_norm` / `acc_norm_stderr`: None where the task does not define them (PubMedQA);
    - `data`: where the items came from, e.g. {kind: local, path, sha256, n_file} or {kind: hub, dataset, ...};
    - `metrics`: lm-eval's other metrics of the task ("name,filter" -> value), e.g. exact_match of a custom task.
    """
    if not cell.eval.tasks:
        return {}
    out_dir = Path(out_dir)
    data_dir, cache_dir = Path(cell.runtime.data_dir), Path(cell.runtime.cache_dir)
    task_manager = make_task_manager(cell.eval, data_dir)
    tasks = resolve_tasks(cell.eval, data_dir, cache_dir, task_manager, exclude)  # before model work: fail fast

    from lm_eval.models.huggingface import HFLM

    was_training = bool(getattr(model, "training", False))
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cell.model.eval_batch_size)
        for task in tasks:
            log.info("evaluating %s (%s, %s-shot, limit %s)", task.key, task.lm_eval_name, task.num_fewshot, task.limit)
            results.update(run_task(lm, task, task_manager, out_dir / "items"))
    finally:
        model.train(was_training)
    for entry in results.values():
        entry["items"] = str(Path(entry["items"]).resolve())
    return results


__all__ = [
    "EvalDataError",
    "EvalTaskError",
    "ResolvedTask",
    "evaluate_model",
    "item_records",
    "resolve_tasks",
    "run_task",
]
