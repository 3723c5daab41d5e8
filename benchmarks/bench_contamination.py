"""Benchmark of the contamination check: 100k synthetic training examples against every MedQA and PubMedQA test item.

.venv/bin/python -m pytest benchmarks/bench_contamination.py --benchmark-only

The evaluation items are the real test sets (MedQA 1,273, PubMedQA 500) from the data dir (`$MEDBENCH_DATA_DIR`, else
`../shared/data`); without them the benchmark is skipped with that reason. The training side is 100,000 examples of
~150 words drawn from a fixed vocabulary (seeded), with the prompts of 25 MedQA and 25 PubMedQA items planted in
them: the check must find exactly what it finds in the planted texts alone, so a fast but blind check fails here.
Reported per task: examples / s (in `extra_info`, with the peak memory the check allocates, from tracemalloc, which
numpy reports to).
"""

from __future__ import annotations

import os
import random
import tracemalloc
from pathlib import Path

import pytest

from harness.config import EvalConfig
from harness.evaluation.contamination import check_task, evaluated_items

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = 100_000
WORDS_PER_EXAMPLE = 150
PLANTED = 25


def _data_dir() -> Path:
    return Path(os.environ.get("MEDBENCH_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="module")
def items() -> dict[str, list]:
    eval_cfg = EvalConfig.model_validate({"tasks": ["medqa", "pubmedqa"]})
    found = {spec.name: evaluated_items(spec, eval_cfg, _data_dir()) for spec in eval_cfg.tasks}
    missing = {name: why for name, why in found.items() if isinstance(why, str)}
    if missing:
        pytest.skip(f"the real test sets are needed (data dir {_data_dir()}): {missing}")
    return found


@pytest.fixture(scope="module")
def training(items: dict[str, list]) -> tuple[list[str], dict[str, set]]:
    """100k synthetic examples; PLANTED items of each task copied into some of them (their ids returned)."""
    rng = random.Random(0)
    vocabulary = [f"w{rng.getrandbits(40):x}" for _ in range(50_000)]
    texts = [" ".join(rng.choices(vocabulary, k=WORDS_PER_EXAMPLE)) for _ in range(EXAMPLES)]
    planted: dict[str, set] = {}
    for task, task_items in items.items():
        chosen = rng.sample(range(len(task_items)), PLANTED)
        planted[task] = {task_items[k].id for k in chosen}
        for k in chosen:
            at = rng.randrange(EXAMPLES)
            texts[at] = texts[at] + " " + task_items[k].text  # an item inside a longer training example
    return texts, planted


@pytest.mark.parametrize("task", ["medqa", "pubmedqa"])
def test_bench_contamination_100k_examples(benchmark, items, training, task: str) -> None:
    texts, planted = training
    result = benchmark.pedantic(check_task, args=(task, items[task], texts), rounds=1, iterations=1)
    # exactly what the planted texts alone give (items that share a 13-gram with a planted one count too: MedQA
    # stems repeat), and every planted item
    alone = check_task(task, items[task], [item.text for item in items[task] if item.id in planted[task]])
    assert set(result.ngram_ids) == set(alone.ngram_ids) >= planted[task] and result.examples == EXAMPLES

    tracemalloc.start()
    check_task(task, items[task], texts)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        {
            "eval_items": len(items[task]),
            "training_examples": EXAMPLES,
            "training_words": EXAMPLES * WORDS_PER_EXAMPLE,
            "examples_per_s": round(EXAMPLES / seconds),
            "peak_alloc_mib": round(peak / 2**20, 1),
        }
    )
    print(
        f"\n{task}: {len(items[task])} items vs {EXAMPLES:,} examples: {seconds:.1f} s "
        f"({EXAMPLES / seconds:,.0f} examples/s), peak allocation {peak / 2**20:.0f} MiB"
    )
