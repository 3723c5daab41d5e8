"""Local data files of the built-in evaluation tasks: find, validate, normalise (light: no lm_eval import).

lm-eval reads every built-in task from a normalised JSONL copy (one record per line, with an `id`) that this
module writes into the cache, keyed by the sha256 of the original file and FORMAT_VERSION: a file changes, its
copy changes. Validation happens first and every error names the file, the line or record, and the field.

Formats:
- `medqa_jsonl`: the original MedQA JSONL (one object per line: `question`, `options` {A, B, C, D}, `answer_idx`,
  optionally `answer` = the text of the right option). Item id: the 0-based index of the record in the file
  (blank lines are skipped and do not count).
- `pubmedqa_json`: the official PubMedQA files (ori_pqal.json, test_set.json, pqal_fold0/*_set.json): one JSON
  object keyed by PMID, each value with `QUESTION`, `CONTEXTS` (list of str), `final_decision` (yes / no /
  maybe), optionally `LONG_ANSWER`. Item id: the PMID (a string). Other fields (LABELS, MESHES, YEAR, ...) are
  not carried into the copy: no prompt uses them, and YEAR mixes strings and nulls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.evaluation.registry import BuiltinTask
from harness.hashing import sha256_file

FORMAT_VERSION = 1
MEDQA_LETTERS = ("A", "B", "C", "D")
PUBMEDQA_LABELS = ("yes", "no", "maybe")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class EvalDataError(ValueError):
    """An evaluation data file is missing or malformed; the message says which file, where, and what to do."""


@dataclass(frozen=True)
class PreparedData:
    source: Path  # the original file
    sha256: str  # of the original file
    path: Path  # the normalised JSONL copy lm-eval reads
    ids: tuple[Any, ...]  # item ids, in file order

    @property
    def n(self) -> int:
        return len(self.ids)


def is_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)



def missing_file_error(task: BuiltinTask, path: Path, data_dir: Path, given: str | None,
                       what: str = "data file") -> EvalDataError:
    if given:
        origin = f"eval.tasks[].data is {given!r}" + ("" if Path(given).is_absolute() else f", under the data dir {data_dir}")
    else:
        origin = f"the default {task.default_data!r} under the data dir {data_dir}"
    hub = ""
    if task.hub_dataset and not given:
        hub = (f"\n  the Hub copy {task.hub_dataset} is not used: "
               + ("offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if is_offline() else "a local file was asked for"))
    return EvalDataError(
        f"{what} for task '{task.name}' not found: {path}\n"
        f"  looked for: {path} ({origin})\n"
        f"  how to obtain: {task.how_to_obtain}\n"
        f"  then put it at {path}, or point eval.tasks[].data at it (absolute, or relative to the data dir; "
        f"the data dir is --data-dir or $MEDBENCH_DATA_DIR){hub}"
    )


# ---------------------------------------------------------------------------------------------------- MedQA

def load_medqa_jsonl(path: Path) -> list[dict[str, Any]]:
    """Validated, normalised MedQA records: id, question, options {A..D}, answer_idx, answer."""
    path = Path(path)
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(raw, dict):
                raise EvalDataError(f"{where}: expected a JSON object with question / options / answer_idx, "
                                    f"got {type(raw).__name__}")
            records.append(_medqa_record(raw, where, index=len(records)))
    if not records:
        raise EvalDataError(f"{path}: no records (expected one JSON object per line)")
    return records


def _medqa_record(raw: dict[str, Any], where: str, index: int) -> dict[str, Any]:
    for key in ("question", "options", "answer_idx"):
        if key not in raw:
            raise EvalDataError(f"{where}: field '{key}' is missing (MedQA records need question, options, answer_idx)")
    question = raw["question"]
    if not isinstance(question, str) or not question.strip():
        raise EvalDataError(f"{where}: field 'question' must be a non-empty string, got {question!r:.60}")
    options = raw["options"]
    if not isinstance(options, dict):
        raise EvalDataError(f"{where}: field 'options' must be an object {{A, B, C, D}}, got {type(options).__name__}")
    if sorted(options) != list(MEDQA_LETTERS):
        raise EvalDataError(f"{where}: field 'options' must have exactly the keys A, B, C, D (4-option MedQA), "
                            f"got {', '.join(map(str, options)) or 'none'}")
    for letter in MEDQA_LETTERS:
        if not isinstance(options[letter], str):
            raise EvalDataError(f"{where}: field 'options.{letter}' must be a string, got {type(options[letter]).__name__}")
    answer_idx = raw["answer_idx"]
    if answer_idx not in MEDQA_LETTERS:
        raise EvalDataError(f"{where}: field 'answer_idx' is {answer_idx!r}; expected one of A, B, C, D")
    if "answer" in raw and raw["answer"] != options[answer_idx]:
        raise EvalDataError(f"{where}: field 'answer' ({raw['answer']!r:.60}) is not options.{answer_idx} "
                            f"({options[answer_idx]!r:.60})")
    return {"id": index, "question": question, "options": {k: options[k] for k in MEDQA_LETTERS},
            "answer_idx": answer_idx, "answer": options[answer_idx]}


# ---------------------------------------------------------------------------------------------------- PubMedQA

def load_pubmedqa_json(path: Path) -> list[dict[str, Any]]:
    """Validated PubMedQA records in file order: id (the PMID), QUESTION, CONTEXTS, final_decision, LONG_ANSWER."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise EvalDataError(f"{path}: expected one JSON object keyed by PMID (the official PubMedQA format, e.g. "
                            f"test_set.json), got a {type(raw).__name__}")
    if not raw:
        raise EvalDataError(f"{path}: no records (the JSON object is empty)")
    return [_pubmedqa_record(pmid, rec, f"{path}, record {pmid!r}") for pmid, rec in raw.items()]


def _pubmedqa_record(pmid: str, rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise EvalDataError(f"{where}: expected an object with QUESTION / CONTEXTS / final_decision, "
                            f"got {type(rec).__name__}")
    for key in ("QUESTION", "CONTEXTS", "final_decision"):
        if key not in rec:
            raise EvalDataError(f"{where}: field '{key}' is missing (PubMedQA records need QUESTION, CONTEXTS, "
                                f"final_decision)")
    if not isinstance(rec["QUESTION"], str) or not rec["QUESTION"].strip():
        raise EvalDataError(f"{where}: field 'QUESTION' must be a non-empty string, got {rec['QUESTION']!r:.60}")
    contexts = rec["CONTEXTS"]
    if not isinstance(contexts, list) or not contexts:
        raise EvalDataError(f"{where}: field 'CONTEXTS' must be a non-empty list of strings")
    for i, c in enumerate(contexts):
        if not isinstance(c, str):
            raise EvalDataError(f"{where}: field 'CONTEXTS[{i}]' must be a string, got {type(c).__name__}")
    decision = rec["final_decision"]
    if decision not in PUBMEDQA_LABELS:
        raise EvalDataError(f"{where}: field 'final_decision' is {decision!r}; expected one of yes, no, maybe")
    long_answer = rec.get("LONG_ANSWER", "")
    if long_answer is None:
        long_answer = ""
    if not isinstance(long_answer, str):
        raise EvalDataError(f"{where}: field 'LONG_ANSWER' must be a string, got {type(long_answer).__name__}")
    return {"id": str(pmid), "QUESTION": rec["QUESTION"], "CONTEXTS": contexts, "final_decision": decision,
            "LONG_ANSWER": long_answer}


LOADERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "medqa_jsonl": load_medqa_jsonl,
    "pubmedqa_json": load_pubmedqa_json,
}


# ---------------------------------------------------------------------------------------------------- prepare

def prepare_local_data(data_format: str, path: Path, cache_dir: Path) -> PreparedData:
    """Validate `path` and write (once) its normalised JSONL copy under `cache_dir/eval-data/`."""
    from harness.results import atomic_write_text

    path = Path(path)
    if data_format not in LOADERS:
        raise ValueError(f"unknown data format {data_format!r}; known: {', '.join(LOADERS)}")
    if not path.is_file():
        raise EvalDataError(f"data file not found: {path}")
    digest = sha256_file(path)
    records = LOADERS[data_format](path)
    ids = tuple(r["id"] for r in records)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)[:5]
        raise EvalDataError(f"{path}: item ids are not unique (e.g. {dup})")
    out = Path(cache_dir) / "eval-data" / f"{data_format}-{digest[:20]}-v{FORMAT_VERSION}.jsonl"
    if not out.is_file():
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return PreparedData(source=path, sha256=digest, path=out, ids=ids)


def spread_indices(n: int, k: int) -> list[int]:
    """k indices evenly spaced over range(n), first item included: a deterministic subset that keeps the
    proportions of a file sorted by label or by source."""
    if k >= n:
        return list(range(n))
    return [(i * n) // k for i in range(k)]
