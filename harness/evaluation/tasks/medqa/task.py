"""MedQA (USMLE, 4 options): the built-in task `medqa`. Everything about it is in this folder: the lm-eval YAML, the
prompt functions (utils.py), and here the local-file loader, the Hub mapping, its label and chance level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.evaluation.data import EvalDataError
from harness.evaluation.registry import BuiltinTask, folder_module

utils = folder_module(__file__, "utils")


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
                raise EvalDataError(
                    f"{where}: expected a JSON object with question / options / answer_idx, got {type(raw).__name__}"
                )
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
    if sorted(options) != list(utils.MEDQA_LETTERS):
        raise EvalDataError(
            f"{where}: field 'options' must have exactly the keys A, B, C, D (4-option MedQA), "
            f"got {', '.join(map(str, options)) or 'none'}"
        )
    for letter in utils.MEDQA_LETTERS:
        if not isinstance(options[letter], str):
            raise EvalDataError(
                f"{where}: field 'options.{letter}' must be a string, got {type(options[letter]).__name__}"
            )
    answer_idx = raw["answer_idx"]
    if answer_idx not in utils.MEDQA_LETTERS:
        raise EvalDataError(f"{where}: field 'answer_idx' is {answer_idx!r}; expected one of A, B, C, D")
    if "answer" in raw and raw["answer"] != options[answer_idx]:
        raise EvalDataError(
            f"{where}: field 'answer' ({raw['answer']!r:.60}) is not options.{answer_idx} ({options[answer_idx]!r:.60})"
        )
    return {
        "id": index,
        "question": question,
        "options": {k: options[k] for k in utils.MEDQA_LETTERS},
        "answer_idx": answer_idx,
        "answer": options[answer_idx],
    }


def record_from_hub(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """One GBaker/MedQA-USMLE-4-options-hf record (sent1, ending0..3, label) in the local schema."""
    options = {letter: doc[f"ending{i}"] for i, letter in enumerate(utils.MEDQA_LETTERS)}
    letter = utils.MEDQA_LETTERS[int(doc["label"])]
    return {"id": index, "question": doc["sent1"], "options": options, "answer_idx": letter, "answer": options[letter]}


TASK = BuiltinTask(
    name="medqa",
    label="MedQA",
    display_order=10,
    yaml_file="medbench_medqa_4options.yaml",
    lm_eval_builtin="medqa_4options",
    default_data="medqa_usmle_4opt/test.jsonl",
    how_to_obtain="MedQA (USMLE, 4 options) test split as JSONL with question / options / answer_idx, "
    "from https://github.com/jind11/MedQA (data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl)",
    load=load_medqa_jsonl,
    hub_dataset="GBaker/MedQA-USMLE-4-options-hf",
    record_from_hub=record_from_hub,
    fewshot_data=None,  # no MedQA train split ships with the data dir
    chance=0.25,
    doc_to_text=utils.medqa_doc_to_text,
    answer=lambda doc: doc["answer_idx"],
    question=lambda doc: doc["question"],
    choices=utils.MEDQA_LETTERS,
)
