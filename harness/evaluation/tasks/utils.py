"""Functions referenced by the task YAML files next to this module.

The prompt functions reproduce lm-eval's built-in ones character for character (tests compare them on the
same items): `medqa_doc_to_text` is lm_eval/tasks/medqa/preprocess_medqa.py:doc_to_text applied to the
original MedQA fields (question / options / answer_idx) instead of the Hub copy's (sent1 / ending0..3 / label);
`pubmedqa_doc_to_text` is lm_eval/tasks/pubmedqa/preprocess_pubmedqa.py:doc_to_text unchanged.

The `*_from_hub` functions are `process_docs` for the Hub copies (used only when online and no local file is
given): they map the Hub schema onto the local one and add the item id.
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


def pubmedqa_doc_to_text(doc: dict[str, Any]) -> str:
    ctxs = "\n".join(doc["CONTEXTS"])
    return "Abstract: {}\nQuestion: {}\nAnswer:".format(
        ctxs,
        doc["QUESTION"],
    )


def medqa_record_from_hub(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """One GBaker/MedQA-USMLE-4-options-hf record (sent1, ending0..3, label) in the local schema."""
    options = {letter: doc[f"ending{i}"] for i, letter in enumerate(MEDQA_LETTERS)}
    letter = MEDQA_LETTERS[int(doc["label"])]
    return {"id": index, "question": doc["sent1"], "options": options, "answer_idx": letter,
            "answer": options[letter]}


def medqa_from_hub(dataset: Any) -> Any:
    return dataset.map(medqa_record_from_hub, with_indices=True, remove_columns=dataset.column_names)


def pubmedqa_record_from_hub(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """One bigbio/pubmed_qa (source schema) record in the local schema; the id is the PMID when the copy has it."""
    pmid = doc.get("pubid") or doc.get("PMID")
    return {"id": str(pmid) if pmid not in (None, "") else str(index), "QUESTION": doc["QUESTION"],
            "CONTEXTS": list(doc["CONTEXTS"]), "final_decision": doc["final_decision"],
            "LONG_ANSWER": doc.get("LONG_ANSWER") or ""}


def pubmedqa_from_hub(dataset: Any) -> Any:
    return dataset.map(pubmedqa_record_from_hub, with_indices=True, remove_columns=dataset.column_names)
