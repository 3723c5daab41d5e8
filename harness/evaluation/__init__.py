"""Evaluation: lm-eval glue and shipped task YAML, paired statistics, generation metrics.

Importing this package is light (no torch, lm_eval or transformers); the names below load their module on
first use.

    evaluate_model(model, tokenizer, cell, out_dir) -> {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n,
                                                        wall_s, num_fewshot, limit, items, ...}}
    generation_metrics(model, tokenizer, examples, max_new_tokens) -> {rouge_l, bleu, n, max_new_tokens}
    compare_items(items_a, items_b, task) -> Comparison
    compare_cells(results_dir, cell_a, cell_b) -> {task: Comparison}
    compute_comparisons(results_dir) -> dict   (also writes results_dir/comparisons.json)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from harness.evaluation.registry import BuiltinTask, builtin_task, builtin_tasks, task_data_path

_LAZY = {
    "evaluate_model": "lm_eval_runner",
    "resolve_tasks": "lm_eval_runner",
    "EvalTaskError": "lm_eval_runner",
    "EvalDataError": "data",
    "prepare_local_data": "data",
    "generation_metrics": "generation",
    "Comparison": "stats",
    "ItemsMismatchError": "stats",
    "compare_items": "stats",
    "compare_cells": "stats",
    "compute_comparisons": "stats",
    "mcnemar_exact_p": "stats",
    "paired_interval": "stats",
    "read_items": "stats",
}

__all__ = ["BuiltinTask", "builtin_task", "builtin_tasks", "task_data_path", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"harness.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'harness.evaluation' has no attribute {name!r}")
