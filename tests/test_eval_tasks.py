"""Built-in task definitions: prompts identical to lm-eval's, label mapping, data validation and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config import EvalConfig
from harness.evaluation.data import EvalDataError, prepare_local_data
from harness.evaluation.lm_eval_runner import EvalTaskError, resolve_tasks
from harness.evaluation.registry import BUILTIN_TASKS, builtin_task
from harness.evaluation.tasks.medqa import utils as medqa_utils
from harness.evaluation.tasks.pubmedqa import utils as pubmedqa_utils

load_medqa_jsonl = builtin_task("medqa").load
load_pubmedqa_json = builtin_task("pubmedqa").load

FIX = Path(__file__).parent / "fixtures" / "eval"
MEDQA = FIX / "medqa_tiny.jsonl"
PUBMEDQA = FIX / "pubmedqa_tiny.json"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def builtin_config(rel: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(lm_eval_tasks_dir() / rel, resolve_func=True)


def medqa_hub_schema(rec: dict) -> dict:
    """A local MedQA record in the schema of the Hub copy lm-eval's built-in reads."""
    return {
        "sent1": rec["question"],
        **{f"ending{i}": rec["options"][k] for i, k in enumerate("ABCD")},
        "label": "ABCD".index(rec["answer_idx"]),
    }


def raw_medqa() -> list[dict]:
    return [json.loads(line) for line in MEDQA.read_text().splitlines() if line.strip()]


def resolve(tmp_path: Path, **eval_kwargs) -> list:
    return resolve_tasks(EvalConfig(**eval_kwargs), data_dir=FIX, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_keeps_its_interface():
    assert builtin_task("medqa") is BUILTIN_TASKS["medqa"]
    assert builtin_task("nope") is None
    for t in BUILTIN_TASKS.values():
        assert t.yaml_path.is_file()
        assert t.how_to_obtain and t.default_data and t.lm_eval_task


# ---------------------------------------------------------------------------------------------------- prompts


def test_medqa_prompt_is_byte_identical_to_lm_eval():
    theirs = builtin_config("medqa/medqa.yaml")["doc_to_text"]
    for raw, rec in zip(raw_medqa(), load_medqa_jsonl(MEDQA), strict=True):
        ours = medqa_utils.medqa_doc_to_text(rec)
        assert ours == theirs(medqa_hub_schema(raw))
        assert ours.startswith("Question: ") and ours.endswith("\nAnswer:")


def test_pubmedqa_prompt_is_byte_identical_to_lm_eval():
    theirs = builtin_config("pubmedqa/pubmedqa.yaml")["doc_to_text"]
    raw = json.loads(PUBMEDQA.read_text())
    for rec in load_pubmedqa_json(PUBMEDQA):
        assert pubmedqa_utils.pubmedqa_doc_to_text(rec) == theirs(raw[rec["id"]])


@pytest.mark.parametrize(
    "ours_name, builtin_rel", [("medqa", "medqa/medqa.yaml"), ("pubmedqa", "pubmedqa/pubmedqa.yaml")]
)
def test_choices_target_and_metrics_copy_the_builtin(ours_name, builtin_rel):
    from lm_eval.tasks._yaml_loader import load_yaml

    ours = load_yaml(BUILTIN_TASKS[ours_name].yaml_path, resolve_func=False)
    theirs = load_yaml(lm_eval_tasks_dir() / builtin_rel, resolve_func=False)
    for key in ("output_type", "doc_to_choice", "metric_list", "metadata"):
        assert ours.get(key) == theirs.get(key), key
    if ours_name == "pubmedqa":
        assert ours["doc_to_target"] == theirs["doc_to_target"] == "final_decision"
    assert ours["dataset_path"] == "json"


def _tasks_from(tmp_path, ours_spec, builtin_rel, data_file, name):
    """lm-eval Task objects of our resolved spec and of lm-eval's built-in pointed at the same items."""
    from lm_eval.tasks import TaskManager

    cfg = builtin_config(builtin_rel)
    cfg.update(
        task=name,
        dataset_path="json",
        dataset_name=None,
        training_split=None,
        validation_split=None,
        dataset_kwargs={"data_files": {"test": str(data_file)}},
    )
    loaded = TaskManager(include_defaults=False).load([ours_spec, cfg])["tasks"]
    return loaded[ours_spec["task"]], loaded[name]


def _assert_same_requests(ours, theirs):
    docs_o, docs_t = list(ours.test_docs()), list(theirs.test_docs())
    assert len(docs_o) == len(docs_t) > 0
    for do, dt in zip(docs_o, docs_t):
        assert ours.fewshot_context(doc=do, num_fewshot=0) == theirs.fewshot_context(doc=dt, num_fewshot=0)
        assert ours.doc_to_choice(do) == theirs.doc_to_choice(dt)
        assert ours.doc_to_target(do) == theirs.doc_to_target(dt)
    assert ours.config.target_delimiter == theirs.config.target_delimiter


def test_medqa_task_renders_like_the_builtin_through_lm_eval(tmp_path):
    (task,) = resolve(tmp_path, tasks=[{"name": "medqa", "data": str(MEDQA)}])
    hub = tmp_path / "hub.jsonl"
    hub.write_text("".join(json.dumps(medqa_hub_schema(r)) + "\n" for r in raw_medqa()))
    ours, theirs = _tasks_from(tmp_path, task.spec, "medqa/medqa.yaml", hub, "builtin_medqa_copy")
    _assert_same_requests(ours, theirs)


def test_pubmedqa_task_renders_like_the_builtin_through_lm_eval(tmp_path):
    (task,) = resolve(tmp_path, tasks=[{"name": "pubmedqa", "data": str(PUBMEDQA)}])
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"pubid": k, **v}) + "\n" for k, v in json.loads(PUBMEDQA.read_text()).items())
    )
    ours, theirs = _tasks_from(tmp_path, task.spec, "pubmedqa/pubmedqa.yaml", records, "builtin_pubmedqa_copy")
    _assert_same_requests(ours, theirs)


# ---------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("letter, index", [("A", 0), ("B", 1), ("C", 2), ("D", 3)])
def test_medqa_label_mapping(letter, index):
    doc = {"question": "q", "options": dict(zip("ABCD", "wxyz")), "answer_idx": letter}
    assert medqa_utils.medqa_doc_to_target(doc) == index
    assert ["A", "B", "C", "D"][index] == letter
    builtin_target = builtin_config("medqa/medqa.yaml")["doc_to_target"]
    assert builtin_target(medqa_hub_schema(doc)) == index


def test_fixture_covers_every_label():
    assert {r["answer_idx"] for r in load_medqa_jsonl(MEDQA)} == {"A", "B", "C", "D"}
    assert {r["final_decision"] for r in load_pubmedqa_json(PUBMEDQA)} == {"yes", "no", "maybe"}


@pytest.mark.parametrize("task_name", ["medqa", "pubmedqa"])
def test_scoring_maps_every_label_to_its_choice(tmp_path, task_name):
    """lm-eval scores an item right exactly when the highest log-likelihood is on the labelled choice."""
    from lm_eval.tasks import TaskManager

    data = MEDQA if task_name == "medqa" else PUBMEDQA
    (resolved,) = resolve(tmp_path, tasks=[{"name": task_name, "data": str(data)}])
    task = TaskManager(include_defaults=False).load([resolved.spec])["tasks"][resolved.lm_eval_name]
    expected = {"medqa": {"A": 0, "B": 1, "C": 2, "D": 3}, "pubmedqa": {"yes": 0, "no": 1, "maybe": 2}}[task_name]
    field = "answer_idx" if task_name == "medqa" else "final_decision"
    seen = set()
    for doc in task.test_docs():
        choices = task.doc_to_choice(doc)
        gold = expected[doc[field]]
        seen.add(doc[field])
        for pick in range(len(choices)):
            lls = [(-5.0 if i == pick else -9.0, False) for i in range(len(choices))]
            assert task.process_results(doc, lls)["acc"] == float(pick == gold)
    assert seen == set(expected)


# ---------------------------------------------------------------------------------------------------- data errors


def test_missing_explicit_file_says_which_and_how_to_obtain(tmp_path):
    with pytest.raises(EvalDataError) as err:
        resolve(tmp_path, tasks=[{"name": "medqa", "data": "nowhere/medqa.jsonl"}])
    msg = str(err.value)
    assert str(FIX / "nowhere" / "medqa.jsonl") in msg
    assert "looked for" in msg and "eval.tasks[].data is 'nowhere/medqa.jsonl'" in msg
    assert BUILTIN_TASKS["medqa"].how_to_obtain in msg


def test_missing_default_file_offline_names_data_dir_and_hub(tmp_path):
    with pytest.raises(EvalDataError) as err:
        resolve_tasks(EvalConfig(tasks=["pubmedqa"]), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(tmp_path / "data" / "pubmedqa" / "test_set.json") in msg
    assert "the default 'pubmedqa/test_set.json' under the data dir" in msg
    assert "bigbio/pubmed_qa is not used: offline" in msg
    assert BUILTIN_TASKS["pubmedqa"].how_to_obtain in msg


def test_no_file_and_online_uses_the_hub_copy(tmp_path, monkeypatch):
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    medqa, pubmedqa = resolve_tasks(
        EvalConfig(tasks=["medqa", "pubmedqa"]), data_dir=tmp_path, cache_dir=tmp_path / "cache"
    )
    assert medqa.data["kind"] == "hub" and medqa.spec["dataset_path"] == "GBaker/MedQA-USMLE-4-options-hf"
    assert "dataset_kwargs" not in medqa.spec and medqa.spec["process_docs"] == builtin_task("medqa").from_hub
    assert pubmedqa.spec["dataset_path"] == "bigbio/pubmed_qa"
    assert pubmedqa.spec["dataset_name"] == "pubmed_qa_labeled_fold0_source"
    # an explicitly given file that is missing is an error even online
    with pytest.raises(EvalDataError):
        resolve_tasks(
            EvalConfig(tasks=[{"name": "medqa", "data": "x.jsonl"}]), data_dir=tmp_path, cache_dir=tmp_path / "cache"
        )


def test_hub_records_map_onto_the_local_schema():
    for i, (raw, rec) in enumerate(zip(raw_medqa(), load_medqa_jsonl(MEDQA))):
        mapped = builtin_task("medqa").record_from_hub(medqa_hub_schema(raw), i)
        assert mapped == rec
    raw = json.loads(PUBMEDQA.read_text())
    for i, rec in enumerate(load_pubmedqa_json(PUBMEDQA)):
        assert builtin_task("pubmedqa").record_from_hub({"pubid": rec["id"], **raw[rec["id"]]}, i) == rec


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD_MEDQA = json.dumps(
    {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B", "answer": "b"}
)


@pytest.mark.parametrize(
    "line, fragments",
    [
        ('{"question": "Q?", "options": {', ["line 2", "not valid JSON"]),
        ('["a list"]', ["line 2", "expected a JSON object"]),
        (
            '{"options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "A"}',
            ["line 2", "'question'", "missing"],
        ),
        (
            '{"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "E"}',
            ["line 2", "'answer_idx'", "'E'", "A, B, C, D"],
        ),
        (
            '{"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}, "answer_idx": "A"}',
            ["line 2", "'options'", "exactly the keys A, B, C, D"],
        ),
        (
            '{"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "A", "answer": "b"}',
            ["line 2", "'answer'", "options.A"],
        ),
    ],
)
def test_malformed_medqa_names_file_line_and_field(tmp_path, line, fragments):
    path = _write(tmp_path, "bad.jsonl", GOOD_MEDQA + "\n" + line + "\n")
    with pytest.raises(EvalDataError) as err:
        prepare_local_data(builtin_task("medqa"), path, tmp_path / "cache")
    msg = str(err.value)
    assert msg.startswith(str(path))
    for f in fragments:
        assert f in msg


GOOD_PUB = {"QUESTION": "Q?", "CONTEXTS": ["c1", "c2"], "final_decision": "yes", "LONG_ANSWER": "la"}


@pytest.mark.parametrize(
    "text, fragments",
    [
        ('{"1": {"QUESTION": "Q?",\n "CONTEXTS": [}', ["not valid JSON", "line 2"]),
        (json.dumps([GOOD_PUB]), ["one JSON object keyed by PMID", "list"]),
        (
            json.dumps({"11": GOOD_PUB, "12": {**GOOD_PUB, "final_decision": "Yes"}}),
            ["record '12'", "'final_decision'", "'Yes'", "yes, no, maybe"],
        ),
        (
            json.dumps({"11": {k: v for k, v in GOOD_PUB.items() if k != "CONTEXTS"}}),
            ["record '11'", "'CONTEXTS'", "missing"],
        ),
        (json.dumps({"11": {**GOOD_PUB, "CONTEXTS": ["ok", 3]}}), ["record '11'", "'CONTEXTS[1]'"]),
        ("{}", ["no records"]),
    ],
)
def test_malformed_pubmedqa_names_file_record_and_field(tmp_path, text, fragments):
    path = _write(tmp_path, "bad.json", text)
    with pytest.raises(EvalDataError) as err:
        prepare_local_data(builtin_task("pubmedqa"), path, tmp_path / "cache")
    msg = str(err.value)
    assert msg.startswith(str(path))
    for f in fragments:
        assert f in msg


def test_malformed_file_fails_in_resolve_before_any_model_work(tmp_path):
    bad = _write(tmp_path, "bad.jsonl", '{"question": "Q"}\n')
    with pytest.raises(EvalDataError, match="bad.jsonl, line 1"):
        resolve_tasks(
            EvalConfig(tasks=[{"name": "medqa", "data": str(bad)}]), data_dir=tmp_path, cache_dir=tmp_path / "cache"
        )


# ---------------------------------------------------------------------------------------------------- normalised copies


def test_normalised_copy_keeps_order_ids_and_is_keyed_by_content(tmp_path):
    prep = prepare_local_data(builtin_task("pubmedqa"), PUBMEDQA, tmp_path / "cache")
    assert prep.ids == tuple(json.loads(PUBMEDQA.read_text()).keys())
    rows = [json.loads(line) for line in prep.path.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(prep.ids)
    assert set(rows[0]) == {"id", "QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER"}
    assert prep.sha256[:20] in prep.path.name
    # medqa: blank lines are skipped, ids are the record index
    m = prepare_local_data(builtin_task("medqa"), MEDQA, tmp_path / "cache")
    assert m.ids == tuple(range(6)) and "\n\n" in MEDQA.read_text()
    # a changed file gets a new copy
    copy = tmp_path / "m.jsonl"
    shutil.copy(MEDQA, copy)
    with open(copy, "a") as f:
        f.write(GOOD_MEDQA + "\n")
    m2 = prepare_local_data(builtin_task("medqa"), copy, tmp_path / "cache")
    assert m2.path != m.path and m2.n == 7


# ------------------------------------------------------------------------------------- few-shot, limits, custom tasks


def test_task_level_values_override_eval_level(tmp_path):
    med, pub = resolve(
        tmp_path,
        tasks=[
            {"name": "medqa", "data": str(MEDQA), "limit": 2},
            {"name": "pubmedqa", "data": str(PUBMEDQA), "num_fewshot": 0},
        ],
        limit=5,
        num_fewshot=0,
    )
    assert (med.extra["limit"], med.num_fewshot) == (2, 0) and len(med.expected_ids) == 2  # spread subset
    assert (pub.extra["limit"], pub.num_fewshot) == (5, 0)


def test_fewshot_sources(tmp_path):
    data = tmp_path / "data"
    (data / "pubmedqa" / "pqal_fold0").mkdir(parents=True)
    shutil.copy(PUBMEDQA, data / "pubmedqa" / "test_set.json")
    (data / "medqa_usmle_4opt").mkdir()
    shutil.copy(MEDQA, data / "medqa_usmle_4opt" / "test.jsonl")
    med, pub = resolve_tasks(EvalConfig(tasks=["medqa", "pubmedqa"], num_fewshot=2), data, tmp_path / "cache")
    assert med.spec["fewshot_split"] == "test" and "train" not in med.spec["dataset_kwargs"]["data_files"]
    assert "never the item under evaluation" in med.fewshot_source
    assert pub.spec.get("fewshot_split") == "test"  # no fold-0 train file yet
    shutil.copy(PUBMEDQA, data / "pubmedqa" / "pqal_fold0" / "train_set.json")
    _, pub = resolve_tasks(EvalConfig(tasks=["medqa", "pubmedqa"], num_fewshot=2), data, tmp_path / "cache")
    assert pub.spec["training_split"] == "train" and "fewshot_split" not in pub.spec
    assert pub.spec["dataset_kwargs"]["data_files"]["train"].endswith(".jsonl")
    zero = resolve_tasks(EvalConfig(tasks=["pubmedqa"]), data, tmp_path / "cache")[0]
    assert zero.fewshot_source is None and set(zero.spec["dataset_kwargs"]["data_files"]) == {"test"}


def test_custom_task_folder_is_picked_up(tmp_path):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_defaults=False, include_path=str(FIX / "custom_tasks"))
    (t,) = resolve_tasks(
        EvalConfig(tasks=["medbench_fixture_yesno"], include_path=str(FIX / "custom_tasks")),
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        task_manager=tm,
    )
    assert t.spec["task"] == "medbench_fixture_yesno" and not t.builtin  # the YAML as a config, paths resolved
    assert t.data["yaml"] == "medbench_fixture_task.yaml" and len(t.data["yaml_sha256"]) == 64
    # relative include paths resolve against the data dir, like every path of a matrix
    (t,) = resolve_tasks(
        EvalConfig(tasks=["medbench_fixture_yesno"], include_path="custom_tasks"),
        data_dir=FIX,
        cache_dir=tmp_path / "cache",
        task_manager=tm,
    )
    assert t.data["include_path"] == "custom_tasks"  # shown relative to the data dir: no absolute paths


def test_unknown_task_and_missing_folder_are_clear_errors(tmp_path):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_defaults=False, include_path=str(FIX / "custom_tasks"))
    with pytest.raises(
        EvalTaskError, match="unknown task 'medbench_fixture_yesn'.*did you mean medbench_fixture_yesno"
    ):
        resolve_tasks(
            EvalConfig(tasks=["medbench_fixture_yesn"], include_path=str(FIX / "custom_tasks")),
            data_dir=tmp_path,
            cache_dir=tmp_path / "cache",
            task_manager=tm,
        )
    with pytest.raises(EvalTaskError, match="task folder not found"):
        resolve_tasks(
            EvalConfig(tasks=["x"], include_path="no_such_dir"),
            data_dir=tmp_path,
            cache_dir=tmp_path / "cache",
            task_manager=tm,
        )
    with pytest.raises(EvalTaskError, match="'data' cannot be set"):
        resolve_tasks(
            EvalConfig(tasks=[{"name": "hellaswag", "data": "x.jsonl"}]),
            data_dir=tmp_path,
            cache_dir=tmp_path / "cache",
            task_manager=tm,
        )


def test_package_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, harness.evaluation as e; e.compare_items; e.mcnemar_exact_p;"
        "print(sorted(m for m in ('torch', 'lm_eval', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == "[]"


def test_item_records_from_logged_samples():
    from harness.evaluation.lm_eval_runner import item_records

    mc = [  # lm-eval's logged samples, out of order; target as index (medqa) or as text (pubmedqa)
        {
            "doc_id": 1,
            "doc": {"id": "p2"},
            "target": "no",
            "arguments": [("ctx", " yes"), ("ctx", " no")],
            "filtered_resps": [(-2.0, False), (-1.0, True)],
            "acc": 1.0,
            "metrics": ["acc"],
        },
        {
            "doc_id": 0,
            "doc": {"id": "p1"},
            "target": 0,
            "arguments": [("ctx", " yes"), ("ctx", " no")],
            "filtered_resps": [(-3.0, False), (-1.5, True)],
            "acc": 0.0,
            "acc_norm": 1.0,
            "metrics": ["acc", "acc_norm"],
        },
    ]
    recs = item_records(mc, "multiple_choice", " ", "id")
    assert recs == [
        {"id": "p1", "target": "yes", "chosen": "no", "correct": False, "acc_norm_correct": True, "ll": [-3.0, -1.5]},
        {"id": "p2", "target": "no", "chosen": "no", "correct": True, "ll": [-2.0, -1.0]},
    ]
    assert [r["id"] for r in item_records(mc, "multiple_choice", " ", None)] == [0, 1]  # no id field: doc index
    gen = [
        {
            "doc_id": 0,
            "doc": {},
            "target": "42",
            "filtered_resps": ["42"],
            "exact_match": 1.0,
            "metrics": ["exact_match"],
        }
    ]
    assert item_records(gen, "generate_until", " ", None) == [
        {"id": 0, "target": "42", "response": "42", "exact_match": 1.0, "correct": True}
    ]
