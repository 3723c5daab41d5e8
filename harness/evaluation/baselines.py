"""What an accuracy has to beat before it means anything, on the same items, and what a cell actually answers.

From the per-item files (`items/<task>.jsonl`: target, chosen, correct):
- constant answers: "always X" for every answer X of the task; its accuracy is the share of items whose key is X.
  The best of them is the majority answer (always "yes" on PubMedQA's test split: 55.2 %);
- chance: uniform guessing, 1 / the number of answers (its expectation, not a run);
- the answer distribution of a cell: how often it chose each answer. A cell that gives one answer on at least
  DEGENERATE_SHARE of the items is degenerate: its accuracy is the share of that answer's keys, not skill
  (SmolLM2-135M answers "A" on every MedQA item: its 28 % is the share of A keys);
- a cell against the best constant answer: the exact McNemar test of its correctness against "always <majority>" on
  the same items (harness/evaluation/stats.py), so "beats the trivial baseline" carries a p-value too.
The base row (the untrained model) is the fourth baseline; its paired comparison is in comparisons.json already.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

DEGENERATE_SHARE = 0.95


def answers_of(task: str, items: Sequence[dict[str, Any]]) -> list[str]:
    """The answers of a task: a built-in task's declared choices, else every target and choice seen."""
    from harness.evaluation.registry import builtin_task

    builtin = builtin_task(task)
    if builtin is not None and builtin.choices:
        return list(builtin.choices)
    seen = {str(i.get("target")) for i in items} | {str(i.get("chosen")) for i in items if i.get("chosen") is not None}
    return sorted(seen)


def trivial_baselines(task: str, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Chance and every constant answer's accuracy on these items, and the majority (best constant) answer."""
    n = len(items)
    answers = answers_of(task, items)
    keys = Counter(str(i.get("target")) for i in items)
    constant = {a: keys.get(a, 0) / n for a in answers} if n else {}
    best = max(constant, key=lambda a: (constant[a], -answers.index(a))) if constant else None
    return {
        "n": n,
        "chance": 1 / len(answers) if answers else None,
        "constant": constant,
        "majority": {"answer": best, "acc": constant.get(best)} if best is not None else None,
    }


def answer_distribution(task: str, items: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How often a cell chose each answer; `degenerate` when one answer takes DEGENERATE_SHARE of the items or more.
    None for items without a chosen answer (not multiple choice)."""
    chosen = [str(i["chosen"]) for i in items if i.get("chosen") is not None]
    if not chosen:
        return None
    counts = Counter(chosen)
    answers = answers_of(task, items)
    top, top_n = max(counts.items(), key=lambda kv: (kv[1], -answers.index(kv[0]) if kv[0] in answers else 0))
    share = top_n / len(chosen)
    out = {
        "n": len(chosen),
        "counts": {a: counts.get(a, 0) for a in answers} | {a: c for a, c in counts.items() if a not in answers},
        "top": top,
        "top_share": share,
        "degenerate": share >= DEGENERATE_SHARE,
    }
    if out["degenerate"]:
        keys = sum(1 for i in items if str(i.get("target")) == top) / len(items)
        out["sentence"] = (
            f"answers {top} on {100 * share:.1f} % of items: its accuracy is about the share of {top} keys "
            f"({100 * keys:.1f} %), not skill"
        )
    return out
