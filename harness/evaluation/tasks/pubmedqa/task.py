"""PubMedQA (PQA-L): the built-in task `pubmedqa`. Everything about it is in this folder: the lm-eval YAML, the prompt
function (utils.py), and here the local-file loader, the Hub mapping, its label and chance levels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.evaluation.data import EvalDataError
from harness.evaluation.registry import BuiltinTask, folder_module

PUBMEDQA_LABELS = ("yes", "no", "maybe")
utils = folder_module(__file__, "utils")


def load_pubmedqa_json(path: Path) -> list[dict[str, Any]]:
    """Validated PubMedQA records in file order: id (the PMID), QUESTION, CONTEXTS, final_decision, LONG_ANSWER."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise EvalDataError(
            f"{path}: expected one JSON object keyed by PMID (the official PubMedQA format, e.g. "
            f"test_set.json), got a {type(raw).__name__}"
        )
    if not raw:
        raise EvalDataError(f"{path}: no records (the JSON object is empty)")
    return [_pubmedqa_record(pmid, rec, f"{path}, record {pmid!r}") for pmid, rec in raw.items()]


def _pubmedqa_record(pmid: str, rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise EvalDataError(
            f"{where}: expected an object with QUESTION / CONTEXTS / final_decision, got {type(rec).__name__}"
        )
    for key in ("QUESTION", "CONTEXTS", "final_decision"):
        if key not in rec:
            raise EvalDataError(
                f"{where}: field '{key}' is missing (PubMedQA records need QUESTION, CONTEXTS, final_decision)"
            )
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
    return {
        "id": str(pmid),
        "QUESTION": rec["QUESTION"],
        "CONTEXTS": contexts,
        "final_decision": decision,
        "LONG_ANSWER": long_answer,
    }


def record_from_hub(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """One bigbio/pubmed_qa (source schema) record in the local schema; the id is the PMID when the copy has it."""
    pmid = doc.get("pubid") or doc.get("PMID")
    return {
        "id": str(pmid) if pmid not in (None, "") else str(index),
        "QUESTION": doc["QUESTION"],
        "CONTEXTS": list(doc["CONTEXTS"]),
        "final_decision": doc["final_decision"],
        "LONG_ANSWER": doc.get("LONG_ANSWER") or "",
    }


TASK = BuiltinTask(
    name="pubmedqa",
    label="PubMedQA",
    display_order=20,
    yaml_file="medbench_pubmedqa.yaml",
    lm_eval_builtin="pubmedqa",
    default_data="pubmedqa/test_set.json",
    how_to_obtain="PubMedQA PQA-L official test split (PMID-keyed JSON, test_set.json) from "
    "https://github.com/pubmedqa/pubmedqa (data/ori_pqal.json split with preprocess/split_dataset.py)",
    load=load_pubmedqa_json,
    hub_dataset="bigbio/pubmed_qa",
    hub_name="pubmed_qa_labeled_fold0_source",
    record_from_hub=record_from_hub,
    fewshot_data="pubmedqa/pqal_fold0/train_set.json",  # lm-eval's pubmedqa: training_split = fold-0 train
    chance=1 / 3,
    majority=0.552,  # always answering "yes" on the official test split (GUIDE section 4)
    doc_to_text=utils.pubmedqa_doc_to_text,
    answer=lambda doc: doc["final_decision"],
    question=lambda doc: doc["QUESTION"],
    choices=PUBMEDQA_LABELS,
)
