"""What `--dry-run` says about a matrix before anything runs, beyond the cells: how small a difference each task can
see (power of the paired test, harness/evaluation/power.py) and what the matrix will cost (device-hours and money
from the estimator, harness/report/cost.py). Light at import; scipy is imported only when the figures are computed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO


def task_size(task: Any, data_dir: Path) -> int | None:
    """Items in a built-in task's local file, or None (no file, not a built-in task)."""
    from harness.evaluation.registry import builtin_task, task_data_path

    builtin = builtin_task(task.name)
    path = task_data_path(task, data_dir)
    if builtin is None or path is None or not path.is_file():
        return None
    try:
        return len(builtin.load(path))
    except Exception:  # the plan must print regardless; the run itself reports a bad file
        return None


def task_items(task: Any, eval_cfg: Any, data_dir: Path) -> int | None:
    """Items a task will be scored on: its limit (or eval.limit) capped by its local file's size; None if unknown."""
    limit = task.limit or eval_cfg.limit
    total = task_size(task, data_dir)
    if limit and total:
        return min(limit, total)
    return limit or total


def read_comparisons(results_dir: Path) -> list[dict[str, Any]]:
    path = Path(results_dir) / "comparisons.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    comps = data.get("comparisons") if isinstance(data, dict) else None
    return [c for c in comps or [] if isinstance(c, dict)]


def detectability_rows(loaded: Any, results_dir: Path) -> list[Any]:
    """(task, `power.Detectability` or None where the number of items is unknown, items in the task's file)."""
    from harness.evaluation.power import detectability, discordance_for

    matrix = loaded.matrix
    comparisons = read_comparisons(results_dir)
    rows = []
    for task in matrix.eval.tasks:
        n = task_items(task, matrix.eval, Path(loaded.data_dir))
        disc = discordance_for(task.name, comparisons, matrix.report.assumed_discordance)
        rows.append(
            (
                task.name,
                None if not n else detectability(task.name, n, disc, matrix.report.target_difference),
                task_size(task, Path(loaded.data_dir)),
            )
        )
    return rows


def print_detectability(loaded: Any, results_dir: Path, out: TextIO | None = None) -> None:
    from harness.evaluation.power import sentence
    from harness.report.loader import task_label

    out = sys.stdout if out is None else out
    rows = detectability_rows(loaded, results_dir)
    if not rows:
        return
    print("\nsmallest detectable difference (paired McNemar test vs the base row):", file=out)
    for name, d, available in rows:
        if d is None:
            print(f"  {task_label(name)}: number of items unknown (no local file and no limit)", file=out)
        else:
            print(f"  {sentence(d, task_label(name), available)}", file=out)


def print_contamination(planned: list, loaded: Any, results_dir: Path, out: TextIO) -> None:
    """Evaluated items found in the training data, per training set of the planned cells (no model: cheap)."""
    import json

    from harness.evaluation.contamination import summary_line
    from harness.methods.base import trains
    from harness.report.loader import task_label

    groups: dict[str, list[Any]] = {}
    for p in planned:
        cfg = p.cell.config
        if trains(cfg.method.kind) and cfg.eval.tasks and cfg.train.datasets:
            t = cfg.train
            key = json.dumps(
                [
                    [d.model_dump(mode="json") for d in t.datasets],
                    t.cleaning.model_dump(mode="json"),
                    cfg.eval.model_dump(mode="json"),
                ],
                sort_keys=True,
            )
            groups.setdefault(key, []).append(cfg)
    for key, configs in groups.items():
        cfg = configs[0]
        n_examples, found = _contamination(cfg, Path(loaded.data_dir), key)
        files = ", ".join(d.path or d.hub_id or "?" for d in cfg.train.datasets)
        print(
            f"\ncontamination check, before training: evaluated items in the {n_examples} cleaned training "
            f"examples of {files} ({len(configs)} cell{'s' if len(configs) != 1 else ''}; eval.decontaminate: "
            f"{cfg.eval.decontaminate}):",
            file=out,
        )
        for task, record in found.items():
            print(f"  {summary_line(task_label(task), record)}", file=out)


def _contamination(cfg: Any, data_dir: Path, key: str) -> tuple[int, dict[str, Any]]:
    """(cleaned training examples, {task: contamination record}) of one training set, kept in the cache folder
    under a key of the configs and the files' sizes and times: loading and cleaning every example takes seconds,
    so a plan printed again (a second --dry-run) reads it back."""
    import hashlib
    import json

    from harness.evaluation.contamination import check_examples, cleaned_examples
    from harness.evaluation.registry import task_data_path
    from harness.paths import resolve_data_path

    files = [resolve_data_path(d.path, data_dir) for d in cfg.train.datasets if d.path]
    files += [p for t in cfg.eval.tasks if (p := task_data_path(t, data_dir)) is not None]
    stamps = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else [str(p)] for p in files]
    digest = hashlib.sha256(json.dumps([key, stamps], sort_keys=True).encode()).hexdigest()[:24]
    cache = Path(cfg.runtime.cache_dir or ".") / "contamination" / f"{digest}.json"
    try:
        kept = json.loads(cache.read_text())
        return int(kept["examples"]), dict(kept["found"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    examples = cleaned_examples(cfg.train, data_dir)
    found = check_examples(cfg.eval, data_dir, examples)
    if cfg.runtime.cache_dir:
        from harness.results import atomic_write_text

        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache, json.dumps({"examples": len(examples), "found": found}))
        except OSError:  # a plan is printed without its cache
            pass
    return len(examples), found


def print_plan_extras(
    planned: list, loaded: Any, results_dir: Path, out: TextIO | None = None, planner: Any = None
) -> None:
    """The dry-run's sections after the list of cells: contamination, detectable differences, predicted cost."""
    out = sys.stdout if out is None else out
    for section in (print_contamination, print_detectability, _print_cost):
        try:
            if section is print_detectability:
                section(loaded, results_dir, out)
            elif section is _print_cost:
                section(planned, loaded, planner, out)
            else:
                section(planned, loaded, results_dir, out)
        except Exception as exc:  # a plan section is advice; it must never stop the plan from printing
            print(
                f"  ({section.__name__.lstrip('_').replace('_', ' ')} unavailable: {type(exc).__name__}: {exc})",
                file=out,
            )


def _print_cost(planned: list, loaded: Any, planner: Any, out: TextIO) -> None:
    from harness.report.cost import plan_cost_lines

    lines = plan_cost_lines(planned, loaded.matrix.report, planner)
    if lines:
        print("", file=out)
        for line in lines:
            print(line, file=out)
