"""Functions referenced by the task YAML next to this module (lm-eval resolves `!function utils.x` in this folder).

`medqa_doc_to_text` is lm_eval/tasks/medqa/preprocess_medqa.py:doc_to_text applied to the original MedQA fields
(question / options / answer_idx) instead of the Hub copy's (sent1 / ending0..3 / label); tests compare them.
"""

from __future__ import annotations

from typing import Any

MEDQA_LETTERS = ("A", "B", "C", "D")


def medqa_doc_to_text(doc: dict[str, Any]) -> str:
    option_choices = {letter: doc["options"][letter] for letter in MEDQA_LETTERS}
    answers = "".join((f"{k}. {v}\n") for k, v in option_choices.items())
    return f"Question: {doc['question']}\n{answers}Answer:"


def medqa_doc_to_target(doc: dict[str, Any]) -> int:
    return MEDQA_LETTERS.index(doc["answer_idx"])
