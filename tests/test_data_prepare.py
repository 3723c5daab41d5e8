"""prepare_data end to end (clean -> tokenize -> length filter -> split -> cap) and its content-addressed cache."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness.config import CleaningConfig, TrainConfig
from harness.data import IGNORE_INDEX, DataError, prepare_data
from harness.data.cache import entry_path
from harness.data.format import encode_examples

FIXTURES = Path(__file__).parent / "fixtures" / "data"


class CountingTokenizer:
    """Delegates to a tokenizer and counts every call that tokenizes or renders text."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer.apply_chat_template(*args, **kwargs)

    def encode(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer.encode(*args, **kwargs)

    def __len__(self):
        return len(self._tokenizer)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


# Records written for these tests: duplicates, PII, an empty answer, and one long answer.
EXTRA_QA = [
    {
        "id": "x1",
        "question": "How much paracetamol can an adult take?",
        "answer": "Up to 4 g a day, in doses of 0.5 to 1 g at least four hours apart; less with liver disease.",
    },
    {
        "id": "x2",
        "question": "How much paracetamol can an adult take?",
        "answer": "Up to 4 g a day, in doses of 0.5 to 1 g at least four hours apart; less with liver disease.",
    },
    {
        "id": "x3",
        "question": "how much PARACETAMOL can an adult take",
        "answer": "up to 4 g a day in doses of 0.5 to 1 g at least four hours apart less with liver disease",
    },
    {
        "id": "x4",
        "question": "Please call me back on 555-010-3344 about my results.",
        "answer": "We will call you back today; my e-mail is nurse.k@example.org if that is easier.",
    },
    {"id": "x5", "question": "Is there an answer?", "answer": ""},
    {
        "id": "x6",
        "question": "Describe the stages of wound healing in detail.",
        "answer": " ".join(
            ["Haemostasis, then inflammation, then proliferation with new tissue, then remodelling of the scar."] * 12
        ),
    },
]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(FIXTURES / "qa.jsonl", d / "qa.jsonl")
    shutil.copy(FIXTURES / "instruction.json", d / "instruction.json")
    shutil.copy(FIXTURES / "messages.jsonl", d / "messages.jsonl")
    (d / "extra.jsonl").write_text("\n".join(json.dumps(r) for r in EXTRA_QA) + "\n")
    return d


def config(**overrides) -> TrainConfig:
    base = dict(
        datasets=[
            {"path": "qa.jsonl", "format": "qa"},
            {"path": "instruction.json", "format": "instruction"},
            {"path": "messages.jsonl", "format": "messages"},
            {"path": "extra.jsonl", "format": "qa"},
        ],
        max_seq_length=256,
        validation_fraction=0.25,
    )
    base.update(overrides)
    return TrainConfig(**base)


def prep(tok, data_dir, cache_dir, seed=0, **overrides):
    return prepare_data(config(**overrides), tok, data_dir, cache_dir, seed)


# ---------------------------------------------------------------------------------------------------- pipeline


def test_prepare_counts_every_step_and_token_stats(smol_tokenizer, data_dir, tmp_path):
    p = prep(smol_tokenizer, data_dir, tmp_path / "cache")
    c = p.stats["cleaning"]
    assert c["input"] == 3 + 3 + 2 + 6
    assert (c["dedup_exact"], c["dedup_normalized"], c["empty_response"]) == (1, 1, 1)
    assert c["overlength"] == 1  # the long wound-healing answer does not fit 256 tokens
    assert c["pii"]["phone"] == 1 and c["pii"]["email"] == 1 and c["pii_examples"] == 1
    assert c["kept"] == 14 - 4 == len(p.train) + len(p.validation)
    assert c["by_source"]["extra.jsonl"] == {"input": 6, "kept": 2}
    assert p.stats["split"] == {"train_available": 8, "train": 8, "validation": 2}
    t = p.stats["tokens"]
    assert t["train_examples"] == len(p.train) and t["validation_examples"] == len(p.validation)
    assert t["train_tokens"] == sum(len(e["input_ids"]) for e in p.train)
    assert t["train_label_tokens"] == sum(sum(x != IGNORE_INDEX for x in e["labels"]) for e in p.train)
    assert t["validation_tokens"] == sum(len(e["input_ids"]) for e in p.validation)
    assert t["max_length"] == max(len(e["input_ids"]) for e in p.train) <= 256
    assert t["mean_length"] == pytest.approx(t["train_tokens"] / t["train_examples"])
    assert p.stats["cache_hit"] is False and len(p.stats["cache_key"]) == 64
    assert p.stats["format"] == {"template": "chat", "boundary_retokenized": 0, "eos_appended": 0}
    # the scrubbed text is what gets trained on
    texts = [smol_tokenizer.decode(e["input_ids"]) for e in p.train + p.validation]
    assert any("[PHONE]" in t and "[EMAIL]" in t for t in texts)
    assert not any("555-010-3344" in t for t in texts)


def test_data_files_are_relative_to_the_data_dir_with_sha256(smol_tokenizer, data_dir, tmp_path):
    p = prep(smol_tokenizer, data_dir, tmp_path / "cache")
    # relative to the data dir so that committed results never carry this machine's paths
    assert set(p.data_files) == {"qa.jsonl", "instruction.json", "messages.jsonl", "extra.jsonl"}
    for name, sha in p.data_files.items():
        assert sha == hashlib.sha256((data_dir / name).read_bytes()).hexdigest()


def test_heldout_is_the_validation_set_untokenized(smol_tokenizer, data_dir, tmp_path):
    p = prep(smol_tokenizer, data_dir, tmp_path / "cache")
    assert len(p.heldout) == len(p.validation) == 2
    again, _ = encode_examples(p.heldout, smol_tokenizer)
    assert again == p.validation
    train_keys = {smol_tokenizer.decode(e["input_ids"]) for e in p.train}
    assert not any(smol_tokenizer.decode(e["input_ids"]) in train_keys for e in p.validation)


def test_system_prompt_is_added_unless_the_record_has_one(smol_tokenizer, data_dir, tmp_path):
    p = prep(
        smol_tokenizer,
        data_dir,
        tmp_path / "cache",
        system_prompt="You answer medical questions briefly.",
        validation_fraction=0.0,
    )
    texts = [smol_tokenizer.decode(e["input_ids"]) for e in p.train]
    with_ours = [t for t in texts if "<|im_start|>system\nYou answer medical questions briefly.<|im_end|>" in t]
    with_own = [t for t in texts if "You are a cautious medical assistant." in t]  # messages.jsonl's own system
    assert len(with_own) == 1 and len(with_ours) == len(texts) - 1
    assert not any("named SmolLM" in t for t in with_ours)  # the template's default system prompt is replaced


def test_drop_overlength_false_truncates(smol_tokenizer, data_dir, tmp_path):
    cleaning = CleaningConfig(drop_overlength=False)
    p = prep(smol_tokenizer, data_dir, tmp_path / "cache", cleaning=cleaning, validation_fraction=0.0)
    c = p.stats["cleaning"]
    assert c["truncated"] == 1 and c["overlength"] == 0 and len(p.train) == c["kept"] == 11
    assert max(len(e["input_ids"]) for e in p.train) == 256


def test_truncation_that_leaves_no_response_drops(smol_tokenizer, data_dir, tmp_path):
    long_question = {"question": "Why? " * 200, "answer": "Because the question is long."}
    (data_dir / "extra.jsonl").write_text(json.dumps(long_question) + "\n")
    p = prep(smol_tokenizer, data_dir, tmp_path / "cache", cleaning=CleaningConfig(drop_overlength=False))
    assert p.stats["cleaning"]["overlength"] == 1 and p.stats["cleaning"]["truncated"] == 0


def test_split_is_seeded_and_max_examples_caps_only_train(smol_tokenizer, data_dir, tmp_path):
    cache = tmp_path / "cache"

    def val(p):
        return [smol_tokenizer.decode(e["input_ids"]) for e in p.validation]

    a = prep(smol_tokenizer, data_dir, cache, seed=0)
    b = prep(smol_tokenizer, data_dir, cache / "other", seed=0)  # same seed, computed afresh
    c = prep(smol_tokenizer, data_dir, cache, seed=1)
    capped = prep(smol_tokenizer, data_dir, cache, seed=0, max_examples=3)
    assert val(a) == val(b) and a.train == b.train
    assert val(a) != val(c)
    assert val(capped) == val(a) and len(capped.train) == 3
    assert all(e in a.train for e in capped.train)
    assert capped.stats["split"] == {"train_available": 8, "train": 3, "validation": 2}


def test_no_training_examples_left_is_an_error(smol_tokenizer, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "empty.jsonl").write_text(json.dumps({"question": "q", "answer": ""}) + "\n")
    with pytest.raises(DataError, match="no training examples left"):
        prepare_data(
            TrainConfig(datasets=[{"path": "empty.jsonl", "format": "qa"}]), smol_tokenizer, d, tmp_path / "cache", 0
        )


def test_missing_data_file_and_no_datasets(smol_tokenizer, tmp_path):
    with pytest.raises(DataError, match=r"missing\.jsonl: data file not found \(train\.datasets\[0\]\.path\)"):
        prepare_data(
            TrainConfig(datasets=[{"path": "missing.jsonl", "format": "qa"}]),
            smol_tokenizer,
            tmp_path,
            tmp_path / "cache",
            0,
        )
    with pytest.raises(DataError, match="train.datasets is empty"):
        prepare_data(TrainConfig(), smol_tokenizer, tmp_path, tmp_path / "cache", 0)


# ---------------------------------------------------------------------------------------------------- cache


def test_second_call_is_a_cache_hit_without_tokenizing(smol_tokenizer, data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = prep(smol_tokenizer, data_dir, cache)
    path = entry_path(cache, first.stats["cache_key"])
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    counting = CountingTokenizer(smol_tokenizer)
    second = prep(counting, data_dir, cache)
    assert counting.calls == 0
    assert second.stats["cache_hit"] is True and second.stats["cache_key"] == first.stats["cache_key"]
    assert second.train == first.train and second.validation == first.validation
    assert second.heldout == first.heldout and second.data_files == first.data_files
    assert {k: v for k, v in second.stats.items() if k != "cache_hit"} == {
        k: v for k, v in first.stats.items() if k != "cache_hit"
    }

    # the counting wrapper does tokenize on a miss (so the zero above means something)
    prep(counting, data_dir, cache, seed=5)
    assert counting.calls > 0


def test_cache_is_content_addressed_not_path_addressed(smol_tokenizer, data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = prep(smol_tokenizer, data_dir, cache)
    moved = tmp_path / "elsewhere"
    shutil.copytree(data_dir, moved)
    second = prep(smol_tokenizer, moved, cache)
    assert second.stats["cache_hit"] is True and second.stats["cache_key"] == first.stats["cache_key"]
    # the files and hashes of this call, not of the cached one (same content, so same hashes)
    assert second.data_files == first.data_files and not any(str(tmp_path) in p for p in second.data_files)


@pytest.fixture(scope="module")
def primed(smol_tokenizer, tmp_path_factory):
    """A data folder and a cache holding its prepared data with the default config (shared: read, not changed)."""
    root = tmp_path_factory.mktemp("primed")
    data_dir = root / "data"
    data_dir.mkdir()
    for name in ("qa.jsonl", "instruction.json", "messages.jsonl"):
        shutil.copy(FIXTURES / name, data_dir / name)
    (data_dir / "extra.jsonl").write_text("\n".join(json.dumps(r) for r in EXTRA_QA) + "\n")
    base = prep(smol_tokenizer, data_dir, root / "cache")
    assert prep(smol_tokenizer, data_dir, root / "cache").stats["cache_hit"] is True
    return data_dir, root / "cache", base.stats["cache_key"]


@pytest.mark.parametrize(
    "change",
    [
        "data file content",
        "cleaning flag",
        "max_seq_length",
        "system prompt",
        "seed",
        "validation_fraction",
        "max_examples",
        "dataset limit",
        "dataset format fields",
        "tokenizer chat template",
        "tokenizer eos token",
    ],
)
def test_any_input_change_misses_the_cache(smol_tokenizer, primed, tmp_path, change):
    data_dir, cache, base_key = primed
    tok, seed, overrides = smol_tokenizer, 0, {}
    if change == "data file content":
        data_dir = tmp_path / "data"
        shutil.copytree(primed[0], data_dir)
        path = data_dir / "qa.jsonl"
        path.write_text(path.read_text().replace("Tiredness and pale skin", "Tiredness, breathlessness and pale skin"))
    elif change == "cleaning flag":
        overrides["cleaning"] = CleaningConfig(scrub_pii=False)
    elif change == "max_seq_length":
        overrides["max_seq_length"] = 300
    elif change == "system prompt":
        overrides["system_prompt"] = "Be brief."
    elif change == "seed":
        seed = 1
    elif change == "validation_fraction":
        overrides["validation_fraction"] = 0.1
    elif change == "max_examples":
        overrides["max_examples"] = 5
    elif change in ("dataset limit", "dataset format fields"):
        datasets = config().model_dump()["datasets"]
        if change == "dataset limit":
            datasets[0]["limit"] = 2
        else:
            datasets[0]["fields"] = {"question": "question", "answer": "answer"}  # same data, a different spec
        overrides["datasets"] = datasets
    elif change == "tokenizer chat template":
        tok = copy.deepcopy(smol_tokenizer)
        tok.chat_template = tok.chat_template.replace("You are a helpful AI assistant", "You are an AI assistant")
    elif change == "tokenizer eos token":
        tok = copy.deepcopy(smol_tokenizer)
        tok.eos_token = "<|endoftext|>"
    changed = prep(tok, data_dir, cache, seed=seed, **overrides)
    assert changed.stats["cache_hit"] is False
    assert changed.stats["cache_key"] != base_key
    if change == "data file content":
        texts = [smol_tokenizer.decode(e["input_ids"]) for e in changed.train + changed.validation]
        assert any("breathlessness" in t for t in texts)


def test_unreadable_cache_entry_is_a_miss_and_is_rewritten(smol_tokenizer, data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = prep(smol_tokenizer, data_dir, cache)
    path = entry_path(cache, first.stats["cache_key"])
    path.write_bytes(b"not gzip at all")
    again = prep(smol_tokenizer, data_dir, cache)
    assert again.stats["cache_hit"] is False and again.train == first.train
    with gzip.open(path, "rt") as f:
        assert json.load(f)["key"] == first.stats["cache_key"]
    assert prep(smol_tokenizer, data_dir, cache).stats["cache_hit"] is True
