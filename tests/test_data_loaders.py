"""Loaders: every format and file type, field renames, limits, and errors that name file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import DatasetSpec
from harness.data import DataError
from harness.data.loaders import load_examples, read_records, records_to_examples

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def load(tmp_or_fixtures: Path, **spec):
    examples, _ = load_examples(DatasetSpec(**spec), tmp_or_fixtures)
    return examples


def roles(ex):
    return [m["role"] for m in ex.messages]


# ---------------------------------------------------------------------------------------------------- formats


def test_instruction_json_list():
    exs = load(FIXTURES, path="instruction.json", format="instruction")
    assert len(exs) == 3
    assert roles(exs[0]) == ["user", "assistant"]
    assert exs[0].messages[0]["content"] == (
        "Answer the patient's question as a careful clinician.\n\n"
        "I have had a dry cough for two weeks after a cold. Should I worry?"
    )
    assert exs[0].response.startswith("A cough that lingers")
    # an empty input adds nothing to the prompt
    assert exs[1].messages[0]["content"] == "Explain what a normal resting heart rate is for an adult."
    assert [e.record_id for e in exs] == ["0", "1", "2"]
    assert {e.source for e in exs} == {"instruction.json"}


def test_qa_jsonl_uses_id_field_and_skips_blank_lines():
    exs = load(FIXTURES, path="qa.jsonl", format="qa")
    assert [e.record_id for e in exs] == ["q-001", "q-002", "q-003"]
    assert exs[1].messages == [
        {"role": "user", "content": "How is type 2 diabetes usually first treated?"},
        {
            "role": "assistant",
            "content": "Usually with changes to diet and activity, often together with metformin, "
            "and regular checks of blood sugar.",
        },
    ]


def test_qa_csv_with_renamed_fields():
    exs = load(FIXTURES, path="qa.csv", format="qa", fields={"question": "Question", "answer": "Answer"})
    assert len(exs) == 2
    assert exs[0].messages[0]["content"] == "What is a fever?"
    assert exs[1].response == "Yes, taking it with food can reduce stomach upset."


def test_qa_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "q": ["What is a sprain?", "What is a fracture?"],
            "a": ["A stretched or torn ligament.", "A broken bone."],
            "id": ["s1", "f1"],
        }
    )
    pq.write_table(table, tmp_path / "qa.parquet")
    exs = load(tmp_path, path="qa.parquet", format="qa", fields={"question": "q", "answer": "a"})
    assert [(e.record_id, e.messages[0]["content"], e.response) for e in exs] == [
        ("s1", "What is a sprain?", "A stretched or torn ligament."),
        ("f1", "What is a fracture?", "A broken bone."),
    ]


def test_pubmedqa_keyed_json():
    exs = load(FIXTURES, path="pubmedqa.json", format="pubmedqa")
    assert [e.record_id for e in exs] == ["90000001", "90000002"]
    prompt = exs[0].messages[0]["content"]
    assert prompt == (
        "Context: Twenty adults wore glucose monitors for two weeks.\n"
        "Walking for ten minutes after meals was compared with sitting.\n\n"
        "Question: Does a short walk after meals lower blood glucose peaks?"
    )
    assert exs[0].response == "yes. Short walks after meals reduced glucose peaks compared with sitting."
    assert exs[1].response.startswith("maybe. ")


def test_multiple_choice_letters_lists_and_answer_text():
    exs = load(FIXTURES, path="multiple_choice.jsonl", format="multiple_choice")
    assert exs[0].messages[0]["content"] == (
        "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin B12\nC. Vitamin C\nD. Vitamin D"
    )
    assert exs[0].response == "C. Vitamin C"
    assert exs[1].response == "B. Pancreas"  # options as a list, 0-based answer index
    assert exs[2].response == "C. Four"  # no answer_idx: found from the answer text


def test_multiple_choice_options_from_csv_columns(tmp_path):
    (tmp_path / "mc.csv").write_text("q,opa,opb,opc,opd,cop\nWhich bone is in the thigh?,Femur,Radius,Ulna,Tibia,A\n")
    exs = load(
        tmp_path,
        path="mc.csv",
        format="multiple_choice",
        fields={"question": "q", "options": "opa,opb,opc,opd", "answer_idx": "cop"},
    )
    assert exs[0].response == "A. Femur"
    assert exs[0].messages[0]["content"].endswith("A. Femur\nB. Radius\nC. Ulna\nD. Tibia")


def test_messages_format_role_content_and_sharegpt():
    exs = load(FIXTURES, path="messages.jsonl", format="messages")
    assert roles(exs[0]) == ["system", "user", "assistant"]
    assert roles(exs[1]) == ["user", "assistant"]
    assert exs[1].response.startswith("Rest, ice")


def test_limit_keeps_the_first_records():
    exs = load(FIXTURES, path="qa.jsonl", format="qa", limit=2)
    assert [e.record_id for e in exs] == ["q-001", "q-002"]


def test_absolute_path_and_data_dir_resolution(tmp_path):
    absolute = str((FIXTURES / "qa.jsonl").resolve())
    exs, path = load_examples(DatasetSpec(path=absolute, format="qa"), tmp_path)  # data_dir is ignored
    assert len(exs) == 3 and path == Path(absolute)


# ---------------------------------------------------------------------------------------------------- errors


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: data file not found"):
        load(tmp_path, path="nope.jsonl", format="qa")


def test_malformed_json_names_file_and_position(tmp_path):
    (tmp_path / "bad.json").write_text('[{"question": "a", "answer": "b"},\n {"question": ]')
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON: line 2 column"):
        load(tmp_path, path="bad.json", format="qa")


def test_malformed_jsonl_names_line_and_record(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 \(record 1\): not valid JSON"):
        load(tmp_path, path="bad.jsonl", format="qa")


def test_json_that_is_not_records(tmp_path):
    (tmp_path / "scalar.json").write_text("42")
    with pytest.raises(DataError, match=r"scalar\.json: a JSON data file must hold a list of records"):
        load(tmp_path, path="scalar.json", format="qa")


def test_record_that_is_not_an_object(tmp_path):
    (tmp_path / "list.jsonl").write_text('{"question": "a", "answer": "b"}\n["not", "a", "record"]\n')
    with pytest.raises(DataError, match=r"list\.jsonl: record 1: is a list, expected an object"):
        load(tmp_path, path="list.jsonl", format="qa")


def test_missing_field_names_file_record_and_field(tmp_path):
    rows = [{"question": "q0", "answer": "a0"}, {"question": "q1", "answer": "a1"}, {"question": "q2"}]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError) as info:
        load(tmp_path, path="qa.jsonl", format="qa")
    message = str(info.value)
    assert "qa.jsonl" in message and "record 2" in message and "missing field 'answer'" in message
    assert "the record has: question" in message


def test_missing_renamed_field_says_both_names(tmp_path):
    (tmp_path / "qa.csv").write_text("Q,A\nwhat?,this\n")
    with pytest.raises(DataError, match=r"record 0: missing field 'Question' \(canonical field 'question'\)"):
        load(tmp_path, path="qa.csv", format="qa", fields={"question": "Question", "answer": "A"})


def test_null_required_field_is_missing(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"instruction": "x", "input": null, "output": null}\n')
    with pytest.raises(DataError, match=r"record 0: missing field 'output'"):
        load(tmp_path, path="n.jsonl", format="instruction")


def test_pubmedqa_missing_field_names_the_pmid(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"123": {"QUESTION": "q", "CONTEXTS": ["c"]}}))
    with pytest.raises(DataError, match=r"record 0 \(id 123\): missing field 'final_decision'"):
        load(tmp_path, path="p.json", format="pubmedqa")


def test_unknown_canonical_field_name():
    with pytest.raises(DataError, match=r"unknown canonical name\(s\) \['questoin'\] for format 'qa'"):
        load(FIXTURES, path="qa.jsonl", format="qa", fields={"questoin": "question"})


def test_unknown_file_type(tmp_path):
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(DataError, match=r"data\.txt: unknown file type '\.txt'"):
        load(tmp_path, path="data.txt", format="qa")


def test_multiple_choice_answer_not_an_option(tmp_path):
    (tmp_path / "mc.jsonl").write_text(
        json.dumps({"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}) + "\n"
    )
    with pytest.raises(DataError, match=r"record 0: answer 'E' is not one of the options"):
        load(tmp_path, path="mc.jsonl", format="multiple_choice")


def test_messages_must_end_with_the_assistant():
    records = [(None, {"messages": [{"role": "user", "content": "hi"}]})]
    with pytest.raises(DataError, match=r"x\.jsonl: record 0: the last message must be the assistant's response"):
        records_to_examples(records, fmt="messages", fields={}, where="x.jsonl", source="x.jsonl")


def test_non_text_field(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"question": {"nested": 1}, "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"record 0: field 'question' must be text"):
        load(tmp_path, path="t.jsonl", format="qa")


def test_read_records_of_every_file_type_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "one?", "answer": "1"}, {"question": "two?", "answer": "2"}]
    (tmp_path / "r.json").write_text(json.dumps(rows))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "r.csv").write_text("question,answer\none?,1\ntwo?,2\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    for ext in ("json", "jsonl", "csv", "parquet"):
        assert [r for _, r in read_records(tmp_path / f"r.{ext}")] == rows, ext


def test_hub_dataset_offline_error_mentions_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"(?s)hub dataset 'medbench-test/does-not-exist'.*[Oo]ffline.*'path'"):
        load_examples(DatasetSpec(hub_id="medbench-test/does-not-exist", format="qa"), Path("."))


# ------------------------------------------------------------------------------------ encodings (issue 11)


@pytest.mark.parametrize(
    "name, body, line",
    [
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "caf\xe9", "answer": "b"}\n', 2),
        ("bad.json", b'[\n {"question": "a", "answer": "b"},\n {"question": "caf\xe9", "answer": "b"}\n]\n', 3),
        ("bad.csv", b"question,answer\na,b\ncaf\xe9,b\n", 3),
    ],
)
def test_non_utf8_bytes_name_the_file_and_line(tmp_path, name, body, line):
    (tmp_path / name).write_bytes(body)
    with pytest.raises(DataError) as info:
        read_records(tmp_path / name)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / name}: line {line}: not UTF-8 text (byte 0xe9 at column ")
    assert "re-save the file as UTF-8" in msg


def test_utf8_with_bom_csv_still_reads(tmp_path):
    (tmp_path / "ok.csv").write_bytes("question,answer\ncafé,b\n".encode("utf-8-sig"))
    assert read_records(tmp_path / "ok.csv") == [(None, {"question": "café", "answer": "b"})]
