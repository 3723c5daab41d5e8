"""Functions referenced by the task YAML next to this module (lm-eval resolves `!function utils.x` in this folder).

`pubmedqa_doc_to_text` is lm_eval/tasks/pubmedqa/preprocess_pubmedqa.py:doc_to_text unchanged.
"""

from __future__ import annotations

from typing import Any


def pubmedqa_doc_to_text(doc: dict[str, Any]) -> str:
    ctxs = "\n".join(doc["CONTEXTS"])
    return "Abstract: {}\nQuestion: {}\nAnswer:".format(
        ctxs,
        doc["QUESTION"],
    )
