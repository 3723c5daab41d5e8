"""Every artifact scored like the cell: the matrix's tasks, the same lm-eval path (`run_task` of
harness/evaluation/lm_eval_runner.py) and the same eval batch size, then paired against the cell on the same items
(exact McNemar p and the paired 95 % interval of harness/evaluation/stats.py; A = the cell, B = the artifact).

What each score measures is recorded with it (`ENGINES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENGINES = {
    "transformers": "weights as stored, loaded back through transformers and computed in fp32 (for GGUF: "
    "from_pretrained(dir, gguf_file=...) dequantizes, so this measures the weights' quantization "
    "error, not llama.cpp's kernels)",
    "llama.cpp": "llama.cpp's own kernels on the GGUF file (llama-cpp-python log-likelihoods, CPU): what a llama.cpp "
    "or Ollama user gets",
}


def with_limit(cfg: Any, limit: int | None) -> Any:
    """The cell's config with every task's item limit replaced by `limit` (None: as the cell ran)."""
    if limit is None:
        return cfg
    tasks = [t.model_copy(update={"limit": None}) for t in cfg.eval.tasks]
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"limit": limit, "tasks": tasks})})


def same_items_as_cell(record: Any, cfg: Any) -> bool:
    """Whether the requested evaluation is the cell's own (so the cell's item files are the reference)."""
    ev = record.metrics.get("eval") or {}
    for t in cfg.eval.tasks:
        m = ev.get(t.name)
        limit = t.limit if t.limit is not None else cfg.eval.limit
        if (
            not m
            or m.get("limit") != limit
            or m.get("limit_strategy", "first")
            != (cfg.eval.limit_strategy if limit is not None else m.get("limit_strategy", "first"))
        ):
            return False
    return True


def score_model(model: Any, tokenizer: Any, cfg: Any, out_dir: Path) -> dict[str, dict[str, Any]]:
    """A transformers model through the cell's own evaluation function (HFLM, the model's eval batch size)."""
    from harness.evaluation import evaluate_model

    return evaluate_model(model, tokenizer, cfg, Path(out_dir))


def score_lm(lm: Any, cfg: Any, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Any lm-eval model object (e.g. LlamaCppLM) through the same task resolution and `run_task`."""
    from harness.evaluation.lm_eval_runner import make_task_manager, resolve_tasks, run_task

    data_dir, cache_dir = Path(cfg.runtime.data_dir), Path(cfg.runtime.cache_dir)
    tm = make_task_manager(cfg.eval, data_dir)
    results: dict[str, dict[str, Any]] = {}
    for task in resolve_tasks(cfg.eval, data_dir, cache_dir, tm):
        results.update(run_task(lm, task, tm, Path(out_dir) / "items"))
    for entry in results.values():
        entry["items"] = str(Path(entry["items"]).resolve())
    return results


def pair(
    scores: dict[str, dict[str, Any]], reference_items: dict[str, Path], results_dir: Path, cell_id: str, artifact: str
) -> dict[str, dict[str, Any]]:
    """Add `vs_cell` (paired comparison, A = the cell, B = this artifact) to each task; items paths made relative
    to the results folder. A task that cannot be paired says why."""
    from harness.evaluation.stats import ItemsMismatchError, compare_items, read_items

    out = {}
    for task, entry in scores.items():
        entry = dict(entry)
        items = Path(entry["items"])
        try:
            entry["items"] = str(items.resolve().relative_to(Path(results_dir).resolve()))
        except ValueError:
            entry["items"] = str(items)
        ref = reference_items.get(task)
        if ref is None:
            entry["vs_cell"] = {"error": "no reference items of the cell for this task"}
        else:
            try:
                entry["vs_cell"] = compare_items(
                    read_items(ref), read_items(items), task=task, cell_a=cell_id, cell_b=artifact
                ).to_dict()
            except (ItemsMismatchError, OSError) as exc:
                entry["vs_cell"] = {"error": str(exc)}
        out[task] = entry
    return out


def cell_items(record: Any, results_dir: Path) -> dict[str, Path]:
    from harness.evaluation.stats import _items_path

    return {task: _items_path(results_dir, record, task) for task in (record.metrics.get("eval") or {})}
