"""The contamination check (harness/evaluation/contamination.py) and training on a task's own format (format
eval_task): contamination planted into project-written fixtures is found, clean data is not flagged, and the three
modes (flag / drop / error) do what they say, in the record, the statistics and `--dry-run`."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from conftest import CI_DATA, matrix_yaml

from harness.config import EvalConfig
from harness.evaluation.contamination import EvalItem, check_task, evaluated_items, normalize

EVAL = EvalConfig(
    tasks=[{"name": "medqa", "data": "medqa_fixture.jsonl"}, {"name": "pubmedqa", "data": "pubmedqa_fixture.json"}]
)


def items(task: int) -> list[EvalItem]:
    found = evaluated_items(EVAL.tasks[task], EVAL, CI_DATA)
    assert isinstance(found, list)
    return found


def test_normalisation_is_lm_evals_janitor():
    """ASCII lower case, ASCII punctuation deleted, whitespace split (lm_eval/decontamination/janitor.py)."""
    table = str.maketrans(
        string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2, string.punctuation
    )
    text = "A 45-year-old (M) presents; Dx?  Ünïcode stays, TABS\tand\nnewlines split."
    assert normalize(text) == text.translate(table).split()
    assert normalize("Hello, World!") == ["hello", "world"]


def test_planted_items_are_found_and_nothing_else():
    medqa = items(0)
    training = [
        "Some preamble. " + medqa[0].text + " and a trailing remark",  # the whole item inside an example
        medqa[5].question,  # the question alone: an exact-question match (and 13-grams of it)
        "unrelated text about something else entirely " * 10,
    ]
    found = check_task("medqa", medqa, training, ["a.json", "b.json", "c.json"])
    assert found.ids == [0, 5] and found.ngram_ids == [0, 5] and found.question_ids == [0, 5]
    assert found.sources == {"a.json": 1, "b.json": 1}
    assert check_task("medqa", medqa, ["unrelated " * 40]).ids == []


def test_twelve_shared_words_are_not_an_overlap_thirteen_are():
    words = [f"w{i}" for i in range(40)]
    item = EvalItem(id="x", text=" ".join(words), question="not in the training data at all here")
    assert check_task("t", [item], ["zz " + " ".join(words[10:22]) + " zz"]).ids == []
    assert check_task("t", [item], ["zz " + " ".join(words[10:23]) + " zz"]).ids == ["x"]


def test_a_short_question_matches_only_whole():
    item = EvalItem(id=1, text="Is aspirin useful?", question="Is aspirin useful?")
    assert check_task("t", [item], ["we asked: is aspirin useful? yes"]).ids == [1]
    assert check_task("t", [item], ["is aspirin a drug"]).ids == []


def test_eval_task_format_is_the_tasks_own_prompt_and_label():
    from harness.data.loaders import task_examples
    from harness.evaluation.registry import builtin_task
    from harness.evaluation.tasks.pubmedqa.utils import pubmedqa_doc_to_text

    examples = task_examples("pubmedqa", CI_DATA / "pubmedqa_fixture.json", None)
    docs = builtin_task("pubmedqa").load(CI_DATA / "pubmedqa_fixture.json")
    assert len(examples) == len(docs) and all(ex.raw for ex in examples)
    for ex, doc in zip(examples, docs, strict=True):
        assert ex.messages[0]["content"] == pubmedqa_doc_to_text(doc)  # the YAML's own doc_to_text
        assert ex.response == " " + doc["final_decision"] and ex.record_id == doc["id"]


def test_eval_task_examples_train_on_the_answer_only(smol_tokenizer):
    from harness.data.format import IGNORE_INDEX, encode_examples
    from harness.data.loaders import task_examples

    examples = task_examples("medqa", CI_DATA / "medqa_fixture.jsonl", 3)
    encoded, report = encode_examples(examples, smol_tokenizer)
    assert report.template == "raw"
    for ex, enc in zip(examples, encoded, strict=True):
        trained = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]
        assert smol_tokenizer.decode(trained[:-1]) == ex.response  # " C": what lm-eval scores
        assert trained[-1] == smol_tokenizer.eos_token_id
        prompt = smol_tokenizer.decode(enc["input_ids"][: len(enc["input_ids"]) - len(trained)])
        assert prompt == ex.messages[0]["content"] and "<|im_start|>" not in prompt  # no chat template


def test_eval_task_needs_a_builtin_task():
    from pydantic import ValidationError

    from harness.config import DatasetSpec

    with pytest.raises(ValidationError, match="format 'eval_task' needs 'task'"):
        DatasetSpec(path="x.json", format="eval_task", task="nope")
    with pytest.raises(ValidationError, match="'task' is only for format 'eval_task'"):
        DatasetSpec(path="x.json", format="qa", task="medqa")


# ---------------------------------------------------------------------------------------------------- cells


def planted(tmp_path: Path) -> Path:
    """Instruction-format training data with MedQA fixture items 0 and 5 planted in the middle of it."""
    medqa = items(0)
    records = [
        {"instruction": f"Explain topic {i} briefly.", "output": f"Topic {i} is explained here."} for i in range(12)
    ]
    records.insert(3, {"instruction": "Study this: " + medqa[0].text, "output": "noted, the answer is C."})
    records.insert(8, {"instruction": "Revise.", "output": medqa[5].text})
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(records))
    for name in ("medqa_fixture.jsonl", "pubmedqa_fixture.json"):
        (data / name).write_text((CI_DATA / name).read_text())
    return data


def cell_for(tmp_path: Path, cache_dir: Path, mode: str):
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix

    data = planted(tmp_path)
    matrix = tmp_path / "m.yaml"
    yaml = matrix_yaml("[lora-r8]", train="max_steps: 2\nvalidation_fraction: 0\n")
    yaml = yaml.replace("train_instructions.json", "train.json")
    matrix.write_text(
        yaml
        + "eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl}, {name: pubmedqa, data: pubmedqa_fixture.json}]"
        f"\n  decontaminate: {mode}\n"
    )
    loaded = load_matrix(matrix, data_dir=data)
    runtime = CellRuntime(data_dir=str(data), results_dir=str(tmp_path / "r"), cache_dir=str(cache_dir))
    return expand(loaded, runtime)


@pytest.mark.slow
def test_flag_records_the_contaminated_items_before_training(tmp_path, cache_dir):
    from harness.cell import run_cell

    base, trained = cell_for(tmp_path, cache_dir, "flag")
    result = run_cell(trained.config, trained.id, trained.config_hash)
    assert result.status == "success", result.reason
    c = result.metrics["contamination"]
    assert c["medqa"]["contaminated"] == 2 and c["medqa"]["ids"] == [0, 5] and c["medqa"]["items"] == 20
    assert c["pubmedqa"]["contaminated"] == 0 and c["medqa"]["training_examples"] == 14
    assert result.metrics["eval"]["medqa"]["n"] == 20  # flag: scored on every item


@pytest.mark.slow
def test_drop_scores_the_clean_items_and_pairs_both_rows_on_them(tmp_path, cache_dir):
    from harness.cell import run_cell
    from harness.evaluation.stats import compute_comparisons
    from harness.results import write_result

    cells = cell_for(tmp_path, cache_dir, "drop")
    for cell in cells:
        write_result(tmp_path / "r", run_cell(cell.config, cell.id, cell.config_hash))
    out = compute_comparisons(tmp_path / "r")
    medqa = next(c for c in out["comparisons"] if c["task"] == "medqa")
    assert medqa["n"] == 18 and medqa["dropped"] == 2  # the base row is paired on the same 18 clean items
    trained = json.loads(next((tmp_path / "r").glob("*lora*.json")).read_text())
    assert trained["metrics"]["eval"]["medqa"]["n"] == 18 and trained["metrics"]["eval"]["medqa"]["dropped_ids"] == [
        0,
        5,
    ]
    assert trained["metrics"]["eval"]["pubmedqa"]["n"] == 15


@pytest.mark.slow
def test_error_refuses_the_cell_before_training(tmp_path, cache_dir):
    from harness.cell import run_cell

    _, trained = cell_for(tmp_path, cache_dir, "error")
    result = run_cell(trained.config, trained.id, trained.config_hash)
    assert result.status == "failed" and "eval.decontaminate is 'error'" in result.reason
    assert "medqa: 2 of 20 items" in result.reason and "train" not in result.metrics


def test_dry_run_counts_contaminated_items_before_anything_runs(tmp_path, capsys):
    from harness.cli import main

    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        matrix_yaml("[lora-r8]").replace(
            "[{path: train_instructions.json, format: instruction}]",
            "[{path: pubmedqa_fixture.json, format: eval_task, task: pubmedqa}]",  # trains on the test items
        )
        + "eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl}, {name: pubmedqa, data: pubmedqa_fixture.json}]\n"
    )
    assert main([str(matrix), "--dry-run", "--data-dir", str(CI_DATA), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "contamination check, before training" in out
    assert "PubMedQA: 15 of 15 evaluated items in the training data (pubmedqa_fixture.json: 15)" in out
    assert "MedQA: 0 of 20 evaluated items in the training data" in out


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa" / "ori_pqal.json").is_file(),
    reason="the real PubMedQA files (../shared/data) are not beside this checkout",
)
def test_the_leaked_control_is_flagged_and_the_clean_one_is_not(capsys):
    """The committed negative control: training on ori_pqal.json (all 1000 labelled items, the 500 test items
    included) is flagged in --dry-run before any training; the positive control's fold-0 train set is clean."""
    from harness.cli import main

    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data"
    for name, expected in (
        ("pubmedqa_control_leaked", "PubMedQA: 500 of 500"),
        ("pubmedqa_control", "PubMedQA: 0 of 500"),
    ):
        assert (
            main(
                [
                    str(root / "matrices" / f"{name}.yaml"),
                    "--dry-run",
                    "--data-dir",
                    str(data),
                    "--results",
                    "/nonexistent/none",
                ]
            )
            == 0
        )
        assert expected in capsys.readouterr().out, name
