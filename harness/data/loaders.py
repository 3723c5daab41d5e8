"""Read data files (or, when no path is given, a hub dataset) and turn their records into `Example`s.

File type by extension: `.json` (a list of records, or an object of records keyed by id as PubMedQA ships),
`.jsonl` / `.ndjson`, `.csv`, `.parquet`. The format decides which fields a record needs; `DatasetSpec.fields`
maps a canonical field name to the name used in the file (e.g. `{"question": "Question"}`).

Formats and what the conversation becomes:
    instruction      instruction (+ "\\n\\n" + input when non-empty)  ->  output
    messages         a list of {"role", "content"} (ShareGPT {"from", "value"} is accepted); the last is the answer
    qa               question  ->  answer
    multiple_choice  question + "A. ..\\nB. .." (options: {letter: text}, a list, or JSON text)  ->  "C. <answer text>"
    pubmedqa         "Context: <contexts>\\n\\nQuestion: <question>"  ->  "<final_decision>. <long answer>"
    eval_task        a built-in evaluation task's file (`task:` names it), read by that task's loader, as the task's
                     own lm-eval prompt -> " <answer>" in plain text, no chat template: exactly what the task scores
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.data.examples import DataError, Example

# canonical field -> (default name in the file, required)
FORMAT_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "instruction": {"instruction": ("instruction", True), "input": ("input", False), "output": ("output", True)},
    "messages": {"messages": ("messages", True)},
    "qa": {"question": ("question", True), "answer": ("answer", True)},
    # at least one of answer_idx / answer is required (checked per record)
    "multiple_choice": {
        "question": ("question", True),
        "options": ("options", True),
        "answer_idx": ("answer_idx", False),
        "answer": ("answer", False),
    },
    "pubmedqa": {
        "question": ("QUESTION", True),
        "contexts": ("CONTEXTS", True),
        "final_decision": ("final_decision", True),
        "long_answer": ("LONG_ANSWER", False),
    },
}
ID_FIELD = "id"  # every format may carry an id field; its value becomes Example.record_id
FILE_TYPES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
LETTERS = "ABCDEFGHIJ"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def field_names(fmt: str, fields: dict[str, str]) -> dict[str, str]:
    """The file's name for every canonical field of `fmt`, after the user's renames."""
    if fmt not in FORMAT_FIELDS:
        raise DataError(f"unknown data format {fmt!r}; allowed: {', '.join(FORMAT_FIELDS)}")
    known = set(FORMAT_FIELDS[fmt]) | {ID_FIELD}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise DataError(f"fields: unknown canonical name(s) {unknown} for format '{fmt}'; allowed: {sorted(known)}")
    names = {canon: default for canon, (default, _) in FORMAT_FIELDS[fmt].items()}
    names[ID_FIELD] = ID_FIELD
    names.update(fields)
    return names


# ---------------------------------------------------------------------------------------------------- reading


def _utf8_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text; a byte that is not UTF-8 is an error naming the file, line and column."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}: not UTF-8 text (byte {data[exc.start]:#04x} at column {column}); "
            f"re-save the file as UTF-8"
        ) from None


def read_records(path: Path) -> list[tuple[str | None, Any]]:
    """(key, record) pairs of a data file; key is the object key for JSON keyed by id, else None."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'; allowed: {', '.join(FILE_TYPES)}")
    if kind == "json":
        try:
            data = json.loads(_utf8_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if isinstance(data, list):
            return [(None, r) for r in data]
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            return [(str(k), v) for k, v in data.items()]
        raise DataError(
            f"{path}: a JSON data file must hold a list of records or an object of records keyed by id "
            f"(got {type(data).__name__})"
        )
    if kind == "jsonl":
        records: list[tuple[str | None, Any]] = []
        with path.open("rb") as f:
            for line_no, raw_line in enumerate(f, start=1):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}: line {line_no}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                        f"column {exc.start + 1}); re-save the file as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    records.append((None, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}: line {line_no} (record {len(records)}): not valid JSON: {exc.msg}"
                    ) from None
        return records
    if kind == "csv":
        import io

        try:
            return [(None, row) for row in csv.DictReader(io.StringIO(_utf8_text(path, "utf-8-sig"), newline=""))]
        except csv.Error as exc:
            raise DataError(f"{path}: not valid CSV: {exc}") from None
    import pyarrow.parquet as pq  # only for parquet files

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    return [(None, r) for r in table.to_pylist()]


def read_hub_records(hub_id: str, hub_config: str | None, split: str, limit: int | None) -> list[tuple[None, Any]]:
    import datasets  # heavy; only for hub datasets

    split_expr = f"{split}[:{limit}]" if limit else split
    try:
        ds = datasets.load_dataset(hub_id, hub_config, split=split_expr)
    except Exception as exc:
        raise DataError(
            f"hub dataset {hub_id!r} (config {hub_config!r}, split {split!r}) could not be loaded: "
            f"{type(exc).__name__}: {exc}. Offline (HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1, or no network) only "
            f"datasets already in the local cache load; give a local file with 'path' instead."
        ) from None
    return [(None, r) for r in ds]


# ---------------------------------------------------------------------------------------------------- records


class _Record:
    """One raw record with error messages that name the file, the record and the field."""

    def __init__(self, where: str, index: int, key: str | None, raw: Any, fmt: str, names: dict[str, str]):
        self.where, self.index, self.key, self.raw, self.fmt, self.names = where, index, key, raw, fmt, names
        if not isinstance(raw, dict):
            raise self.error(f"is a {type(raw).__name__}, expected an object with named fields")

    def error(self, what: str) -> DataError:
        key = f" (id {self.key})" if self.key is not None else ""
        return DataError(f"{self.where}: record {self.index}{key}: {what}")

    def _missing(self, canon: str) -> DataError:
        name = self.names[canon]
        renamed = f" (canonical field '{canon}')" if name != canon else ""
        have = ", ".join(sorted(map(str, self.raw))) or "no fields"
        return self.error(
            f"missing field '{name}'{renamed} needed by format '{self.fmt}'; the record has: {have}. "
            f"Map field names with the dataset's `fields` option."
        )

    def value(self, canon: str, required: bool = True) -> Any:
        name = self.names[canon]
        if "," in name and canon == "options":  # options spread over several columns, e.g. "opa,opb,opc,opd"
            cols = [c.strip() for c in name.split(",")]
            absent = [c for c in cols if self.raw.get(c) is None]
            if absent:
                raise self._missing_cols(absent)
            return [self.raw[c] for c in cols]
        v = self.raw.get(name)
        if v is None and required:
            raise self._missing(canon)
        return v

    def _missing_cols(self, cols: list[str]) -> DataError:
        return self.error(f"missing option column(s) {cols} named in fields.options")

    def text(self, canon: str, required: bool = True) -> str:
        v = self.value(canon, required)
        if v is None:
            return ""
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise self.error(f"field '{self.names[canon]}' must be text (got {type(v).__name__})")
        return str(v)

    def record_id(self) -> str:
        if self.key is not None:
            return self.key
        v = self.raw.get(self.names[ID_FIELD])
        return str(v) if v is not None and v != "" else str(self.index)


def _instruction(r: _Record) -> list[dict[str, str]]:
    instruction, extra = r.text("instruction").strip(), r.text("input", required=False).strip()
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else (instruction or extra)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": r.text("output")}]


def _messages(r: _Record) -> list[dict[str, str]]:
    raw = r.value("messages")
    if isinstance(raw, str):  # CSV cells hold JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise r.error(f"field '{r.names['messages']}' is text that is not a JSON list of messages") from None
    if not isinstance(raw, list) or not raw:
        raise r.error(f"field '{r.names['messages']}' must be a non-empty list of messages")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise r.error(f"message {i} is a {type(m).__name__}, expected an object with 'role' and 'content'")
        role, content = (m.get("role"), m.get("content")) if "role" in m else (m.get("from"), m.get("value"))
        if role not in SHAREGPT_ROLES:
            raise r.error(f"message {i}: missing or unknown role {role!r}; allowed: system, user, assistant")
        if not isinstance(content, str):
            raise r.error(f"message {i}: missing field 'content' (text)")
        messages.append({"role": SHAREGPT_ROLES[role], "content": content})
    if messages[-1]["role"] != "assistant":
        raise r.error("the last message must be the assistant's response")
    if not any(m["role"] == "user" for m in messages):
        raise r.error("the conversation has no user message")
    return messages


def _qa(r: _Record) -> list[dict[str, str]]:
    return [{"role": "user", "content": r.text("question")}, {"role": "assistant", "content": r.text("answer")}]


def _options(r: _Record) -> dict[str, str]:
    raw = r.value("options")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise r.error(
                f"field '{r.names['options']}' is text that is not a JSON object or list of options"
            ) from None
    if isinstance(raw, list):
        raw = dict(zip(LETTERS, raw))
    if not isinstance(raw, dict) or len(raw) < 2:
        raise r.error(f"field '{r.names['options']}' must hold at least two options ({{letter: text}} or a list)")
    return {str(k).strip().upper(): str(v) for k, v in raw.items()}


def _multiple_choice(r: _Record) -> list[dict[str, str]]:
    options = _options(r)
    idx = r.value("answer_idx", required=False)
    answer_text = r.text("answer", required=False)
    if idx is None or idx == "":
        if not answer_text:
            raise r.error(f"missing field '{r.names['answer_idx']}' (or '{r.names['answer']}'): the correct option")
        letters = [k for k, v in options.items() if v.strip() == answer_text.strip()]
        if len(letters) != 1:
            raise r.error(f"answer {answer_text!r} matches {len(letters)} options; give '{r.names['answer_idx']}'")
        letter = letters[0]
    elif isinstance(idx, int) or (isinstance(idx, str) and idx.strip().isdigit()):  # 0-based position
        pos = int(idx)
        if not 0 <= pos < len(options):
            raise r.error(f"answer index {idx!r} is out of range for {len(options)} options")
        letter = list(options)[pos]
    else:
        letter = str(idx).strip().upper()
        if letter not in options:
            raise r.error(f"answer {idx!r} is not one of the options {list(options)}")
    question = r.text("question").strip()
    listed = "\n".join(f"{k}. {v}" for k, v in options.items())
    return [
        {"role": "user", "content": f"{question}\n{listed}"},
        {"role": "assistant", "content": f"{letter}. {options[letter]}"},
    ]


def _pubmedqa(r: _Record) -> list[dict[str, str]]:
    contexts = r.value("contexts")
    if isinstance(contexts, list):
        if not all(isinstance(c, str) for c in contexts):
            raise r.error(f"field '{r.names['contexts']}' must be text or a list of texts")
        contexts = "\n".join(contexts)
    elif not isinstance(contexts, str):
        raise r.error(f"field '{r.names['contexts']}' must be text or a list of texts")
    decision = r.text("final_decision").strip()
    long_answer = r.text("long_answer", required=False).strip()
    response = f"{decision}. {long_answer}" if long_answer else f"{decision}."
    prompt = f"Context: {contexts.strip()}\n\nQuestion: {r.text('question').strip()}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


BUILDERS = {
    "instruction": _instruction,
    "messages": _messages,
    "qa": _qa,
    "multiple_choice": _multiple_choice,
    "pubmedqa": _pubmedqa,
}


def records_to_examples(
    records: Iterable[tuple[str | None, Any]], *, fmt: str, fields: dict[str, str], where: str, source: str
) -> list[Example]:
    names = field_names(fmt, fields)
    build = BUILDERS[fmt]
    out = []
    for index, (key, raw) in enumerate(records):
        record = _Record(where, index, key, raw, fmt, names)
        out.append(Example(messages=build(record), source=source, record_id=record.record_id()))
    return out


def load_examples(spec: Any, data_dir: Path) -> tuple[list[Example], Path | None]:
    """The examples of one `DatasetSpec` (first `limit` records) and the file they came from (None for hub)."""
    from harness.paths import resolve_data_path

    if spec.path and spec.format == "eval_task":
        path = resolve_data_path(spec.path, Path(data_dir)).resolve()
        return task_examples(spec.task, path, spec.limit), path
    if spec.path:
        path = resolve_data_path(spec.path, Path(data_dir)).resolve()
        records = read_records(path)
        where, source = str(path), path.name
    else:
        records = read_hub_records(spec.hub_id, spec.hub_config, spec.split, spec.limit)
        path, where, source = None, f"hub dataset {spec.hub_id}", spec.hub_id
    if spec.limit is not None:
        records = records[: spec.limit]
    return records_to_examples(records, fmt=spec.format, fields=dict(spec.fields), where=where, source=source), path


def task_examples(task_name: str, path: Path, limit: int | None) -> list[Example]:
    """Format eval_task: the records of a built-in evaluation task's file, read and validated by the task's own
    loader, as its own prompt -> answer (the functions its lm-eval YAML uses), in plain text."""
    from harness.evaluation.data import EvalDataError
    from harness.evaluation.registry import builtin_task

    task = builtin_task(task_name)
    if task is None or task.doc_to_text is None or task.answer is None:
        raise DataError(f"format eval_task: task {task_name!r} does not declare its prompt and answer (task.py)")
    try:
        docs = task.load(path)
    except EvalDataError as exc:
        raise DataError(str(exc)) from None
    if limit is not None:
        docs = docs[:limit]
    return [
        Example(
            messages=[
                {"role": "user", "content": task.doc_to_text(doc)},
                {"role": "assistant", "content": task.target_delimiter + task.answer(doc)},
            ],
            source=path.name,
            record_id=str(doc["id"]),
            raw=True,
        )
        for doc in docs
    ]
