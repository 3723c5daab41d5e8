"""The plain records that cross the data package's boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DataError(ValueError):
    """A data file is missing or malformed. The message names the file, and the record and field where known."""


@dataclass
class Example:
    """One training conversation after loading (and cleaning), before tokenization."""

    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]; last: the response
    source: str  # file name (or hub id) it came from
    record_id: str  # id within the source: the record's id field, its key (PubMedQA) or its index
    # A task's own prompt -> answer as plain text, no chat template (format eval_task): the user turn is the prompt,
    # the assistant turn the continuation lm-eval scores (delimiter included, e.g. " yes")
    raw: bool = False

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]

    @property
    def text(self) -> str:
        """Every message's text, in order: what the contamination check reads."""
        return "\n".join(m["content"] for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        out = {"messages": self.messages, "source": self.source, "record_id": self.record_id}
        return {**out, "raw": True} if self.raw else out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        return cls(messages=d["messages"], source=d["source"], record_id=d["record_id"], raw=bool(d.get("raw")))
