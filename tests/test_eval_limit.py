"""`eval.limit` on a label-sorted file: `spread` keeps every label, `first` is lm-eval's first N (parity)."""

from __future__ import annotations

import collections
import json

from harness.config import EvalConfig
from harness.evaluation.data import spread_indices
from harness.evaluation.lm_eval_runner import resolve_tasks


def _sorted_pubmedqa(path, counts):
    """A PubMedQA-format file sorted by label, as the official test split is."""
    records, pmid = {}, 1000
    for label, n in counts.items():
        for _ in range(n):
            pmid += 1
            records[str(pmid)] = {
                "QUESTION": f"Question {pmid}?",
                "CONTEXTS": [f"Context {pmid}."],
                "final_decision": label,
                "LONG_ANSWER": f"Answer {pmid}.",
            }
    path.write_text(json.dumps(records))
    return records


def _labels(task, records):
    return collections.Counter(records[str(i)]["final_decision"] for i in task.expected_ids)


def test_spread_indices():
    assert spread_indices(10, 5) == [0, 2, 4, 6, 8]
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    assert spread_indices(500, 100)[:3] == [0, 5, 10] and len(set(spread_indices(500, 100))) == 100


def test_limit_spread_keeps_label_proportions_first_does_not(tmp_path):
    records = _sorted_pubmedqa(tmp_path / "pq.json", {"yes": 12, "no": 6, "maybe": 2})
    spec = [{"name": "pubmedqa", "data": "pq.json"}]
    spread = resolve_tasks(EvalConfig(tasks=spec, limit=10), tmp_path, tmp_path / "cache")[0]
    first = resolve_tasks(EvalConfig(tasks=spec, limit=10, limit_strategy="first"), tmp_path, tmp_path / "cache")[0]
    assert _labels(spread, records) == {"yes": 6, "no": 3, "maybe": 1}
    assert spread.limit is None and spread.samples == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert sum(1 for _ in open(spread.spec["dataset_kwargs"]["data_files"]["test"])) == 20  # the file stays whole
    # `first` leaves the cut to lm-eval (its first 10 items): on this file, all "yes".
    assert first.limit == 10
    assert {records[str(i)]["final_decision"] for i in first.expected_ids[:10]} == {"yes"}
    assert "spread: 10 of 20 items" in spread.data["subset"]
