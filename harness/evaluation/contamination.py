"""Is an evaluation item in the cell's training data? 13-gram overlap and exact-question matches, before training.

The field's convention (GPT-3 appendix C; lm-eval's `decontamination/janitor.py`): text is normalised by lowering
ASCII letters and deleting ASCII punctuation, split on whitespace, and an evaluation item is contaminated when any
of its 13-word n-grams occurs in any training example. An item whose normalised text is shorter than 13 words is
matched as a whole. On top of that, an *exact-question* match: the item's question alone (without its options or
context) occurs in one training example (questions under 13 words as a contiguous word sequence; longer ones when
every 13-gram of the question occurs in the same training example).

What is compared: the evaluated items (the task's own prompt text, `BuiltinTask.doc_to_text`, after `limit`) against
every training example of the cell (all its messages' text, after cleaning). Hashing keeps it fast: every word is
hashed once, an n-gram's hash is a polynomial of its words' hashes (uint64, numpy), the evaluation side is a sorted
array looked up with `searchsorted`; memory is that of the training text in chunks plus the evaluation n-grams
(`benchmarks/bench_contamination.py` measures 100k training examples against the full MedQA and PubMedQA sets).

Modes (`eval.decontaminate`): `flag` (default) records and reports; `drop` scores the cell on the clean items only,
and its paired statistics use the same clean subset for both rows; `error` refuses the cell before training.
Only built-in tasks (whose items and prompts the harness reads) are checked; any other task says so.
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NGRAM = 13
CHUNK_WORDS = 2_000_000  # training words hashed at once (bounds memory: ~8 bytes × a few arrays of this size)
METHOD = (
    "13-gram overlap after lm-eval's normalisation (ASCII lower case, ASCII punctuation removed, whitespace split), "
    "items under 13 words matched whole; plus exact-question matches"
)
_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
_MULT = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of the polynomial n-gram hash


def normalize(text: str) -> list[str]:
    """lm-eval's Janitor normalisation: ASCII lower case, ASCII punctuation deleted, split on whitespace."""
    return text.translate(_TABLE).split()


@dataclass(frozen=True)
class EvalItem:
    id: Any
    text: str  # the task's own prompt for the item
    question: str  # the question alone


# ---------------------------------------------------------------------------------------------------- hashing


def _word_hashes(words: Sequence[str]) -> Any:
    import numpy as np

    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)


def _ngram_hashes(word_hashes: Any, n: int) -> Any:
    """Hash of every n-word window: Σ_j h[i+j]·M^(n-1-j) mod 2^64."""
    import numpy as np

    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    mult = np.uint64(_MULT)
    with np.errstate(over="ignore"):
        for j in range(n):
            out = out * mult + word_hashes[j : j + count]
    return out


def _chunks(texts: Iterable[str]) -> Iterable[tuple[list[int], list[list[str]]]]:
    """(example indices, their normalised words) in chunks of about CHUNK_WORDS words."""
    idx: list[int] = []
    words: list[list[str]] = []
    size = 0
    for i, text in enumerate(texts):
        w = normalize(text)
        idx.append(i)
        words.append(w)
        size += len(w)
        if size >= CHUNK_WORDS:
            yield idx, words
            idx, words, size = [], [], 0
    if idx:
        yield idx, words


def _windows(flat: Any, lengths: Any, n: int) -> tuple[Any, Any]:
    """(n-gram hashes, the chunk-local example each belongs to) of a chunk's word hashes, windows never crossing
    examples."""
    import numpy as np

    hashes = _ngram_hashes(flat, n)
    if len(hashes) == 0:
        return hashes, np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    owner = np.repeat(np.arange(len(lengths)), lengths)[: len(hashes)]
    valid = np.arange(len(hashes)) - starts[owner] <= lengths[owner] - n
    return hashes[valid], owner[valid]


# ---------------------------------------------------------------------------------------------------- the check


@dataclass
class TaskContamination:
    task: str
    items: int  # evaluated items checked
    ngram_ids: list[Any]  # items with a 13-gram (or, under 13 words, their whole text) in the training data
    question_ids: list[Any]  # items whose question occurs in one training example
    sources: dict[str, int]  # training source -> contaminated items found in it
    examples: int  # training examples compared
    checked: bool = True
    reason: str | None = None  # why a task was not checked

    @property
    def ids(self) -> list[Any]:
        seen = dict.fromkeys([*self.ngram_ids, *self.question_ids])
        return list(seen)

    def as_dict(self) -> dict[str, Any]:
        if not self.checked:
            return {"checked": False, "reason": self.reason}
        return {
            "checked": True,
            "items": self.items,
            "contaminated": len(self.ids),
            "ids": self.ids,
            "ngram_matches": len(self.ngram_ids),
            "question_matches": len(self.question_ids),
            "sources": self.sources,
            "training_examples": self.examples,
            "ngram": NGRAM,
            "method": METHOD,
        }


def check_task(
    task: str, items: Sequence[EvalItem], training: Sequence[str], sources: Sequence[str] | None = None
) -> TaskContamination:
    """Which of `items` occur in `training` (the texts of the training examples; `sources` names each one's file)."""
    import numpy as np

    # the evaluation side: every item's 13-gram hashes (or its whole text under 13 words), sorted, with owners
    by_length: dict[int, list[tuple[int, int]]] = defaultdict(list)  # n -> (hash, item)
    question_sets: dict[int, set[int]] = {}
    short_questions: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for k, item in enumerate(items):
        words = normalize(item.text)
        n = NGRAM if len(words) >= NGRAM else len(words)
        if n:
            by_length[n] += [(int(h), k) for h in _ngram_hashes(_word_hashes(words), n)]
        q = normalize(item.question)
        if len(q) >= NGRAM:
            question_sets[k] = {int(h) for h in _ngram_hashes(_word_hashes(q), NGRAM)}
        elif q:
            short_questions[len(q)].append((int(_ngram_hashes(_word_hashes(q), len(q))[0]), k))
    lookups = {n: _lookup(pairs) for n, pairs in {**by_length, **_prefixed(short_questions)}.items()}

    ngram_hit: set[int] = set()
    question_hit: set[int] = set()
    hit_sources: dict[int, set[str]] = defaultdict(set)
    per_example: dict[int, set[int]] = defaultdict(set)  # training example -> matched 13-gram hashes (questions)
    wanted_13 = set().union(*question_sets.values()) if question_sets else set()
    for idx, words in _chunks(training):
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        flat = _word_hashes([x for w in words for x in w])
        for key, (hashes_sorted, owners) in lookups.items():
            n = key if isinstance(key, int) else key[1]
            hashes, owner = _windows(flat, lengths, n)
            if not len(hashes) or not len(hashes_sorted):
                continue
            pos = np.searchsorted(hashes_sorted, hashes)
            pos[pos >= len(hashes_sorted)] = 0
            found = hashes_sorted[pos] == hashes
            for h, ex in zip(hashes[found].tolist(), owner[found].tolist()):
                for k in owners[h]:
                    if isinstance(key, tuple):  # a whole short question
                        question_hit.add(k)
                    else:
                        ngram_hit.add(k)
                    hit_sources[k].add(sources[idx[ex]] if sources else "training data")
                if n == NGRAM and h in wanted_13:
                    per_example[idx[ex]].add(h)
    for k, qset in question_sets.items():
        if any(qset <= got for got in per_example.values()):
            question_hit.add(k)
    counts: dict[str, int] = defaultdict(int)
    for k in ngram_hit | question_hit:
        for s in hit_sources.get(k, ()):
            counts[s] += 1
    return TaskContamination(
        task=task,
        items=len(items),
        ngram_ids=[items[k].id for k in sorted(ngram_hit)],
        question_ids=[items[k].id for k in sorted(question_hit)],
        sources=dict(sorted(counts.items())),
        examples=len(training),
    )


def _prefixed(short: dict[int, list[tuple[int, int]]]) -> dict[tuple[str, int], list[tuple[int, int]]]:
    return {("question", n): pairs for n, pairs in short.items()}


def _lookup(pairs: list[tuple[int, int]]) -> tuple[Any, dict[int, list[int]]]:
    """(sorted unique hashes as uint64, hash -> the items that hold it)."""
    import numpy as np

    owners: dict[int, list[int]] = defaultdict(list)
    for h, k in pairs:
        if not owners[h] or owners[h][-1] != k:
            owners[h].append(k)
    return np.array(sorted(owners), dtype=np.uint64), owners


# ---------------------------------------------------------------------------------------------------- cells


def evaluated_items(task_spec: Any, eval_cfg: Any, data_dir: Path) -> list[EvalItem] | str:
    """The items a cell scores on a built-in task (its local file, after `limit` the way the runner applies it),
    or why they cannot be known here."""
    from harness.evaluation.data import spread_indices
    from harness.evaluation.registry import builtin_task, task_data_path

    task = builtin_task(task_spec.name)
    if task is None or task.doc_to_text is None or task.question is None:
        return f"not checked: '{task_spec.name}' is not a built-in task (its items are known to lm-eval only)"
    path = task_data_path(task_spec, data_dir)
    if path is None or not path.is_file():
        return f"not checked: no local file for '{task_spec.name}' ({path})"
    docs = task.load(path)
    limit = task_spec.limit if task_spec.limit is not None else eval_cfg.limit
    if limit is not None and limit < len(docs):
        keep = spread_indices(len(docs), limit) if eval_cfg.limit_strategy == "spread" else range(limit)
        docs = [docs[i] for i in keep]
    return [EvalItem(id=d["id"], text=task.doc_to_text(d), question=task.question(d)) for d in docs]


def check_examples(eval_cfg: Any, data_dir: Path, examples: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """{task: contamination record} of every evaluation task against training `examples` (harness Examples)."""
    texts = [ex.text for ex in examples]
    sources = [ex.source for ex in examples]
    out: dict[str, dict[str, Any]] = {}
    for spec in eval_cfg.tasks:
        items = evaluated_items(spec, eval_cfg, Path(data_dir))
        if isinstance(items, str):
            out[spec.name] = TaskContamination(spec.name, 0, [], [], {}, len(texts), False, items).as_dict()
        else:
            out[spec.name] = check_task(spec.name, items, texts, sources).as_dict()
    return out


def cleaned_examples(train: Any, data_dir: Path) -> list[Any]:
    """A training config's examples after loading and cleaning, without a tokenizer (what `--dry-run` checks; the
    cell checks the examples it really trains on, after the length filter, the split and `max_examples`)."""
    from harness.data.clean import clean_examples
    from harness.data.loaders import load_examples

    examples = []
    for spec in train.datasets:
        loaded, _ = load_examples(spec, Path(data_dir))
        examples.extend(loaded)
    return clean_examples(examples, train.cleaning)[0]


class ContaminatedEvaluation(RuntimeError):
    """`eval.decontaminate: error` and an evaluated item is in the training data."""


def enforce(mode: str, found: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Apply `eval.decontaminate`: raise for `error` when any item is contaminated; for `drop`, {task: the ids to
    leave out}; for `flag`, nothing to leave out."""
    bad = {t: r for t, r in found.items() if r.get("checked") and r["contaminated"]}
    if mode == "error" and bad:
        parts = [f"{t}: {r['contaminated']} of {r['items']} items (e.g. ids {r['ids'][:5]})" for t, r in bad.items()]
        raise ContaminatedEvaluation(
            "evaluation items are in the training data (" + "; ".join(parts) + "); eval.decontaminate is 'error'"
        )
    return {t: list(r["ids"]) for t, r in bad.items()} if mode == "drop" else {}


def summary_line(task_label: str, record: dict[str, Any]) -> str:
    """e.g. "PubMedQA: 500 of 500 items contaminated (ori_pqal.json: 500)" or "MedQA: 0 of 100 items"."""
    if not record.get("checked"):
        return f"{task_label}: {record.get('reason')}"
    text = f"{task_label}: {record['contaminated']} of {record['items']} evaluated items in the training data"
    if record["contaminated"]:
        text += " (" + ", ".join(f"{s}: {n}" for s, n in record["sources"].items()) + ")"
    return text
