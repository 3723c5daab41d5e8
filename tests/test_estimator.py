"""Predicted memory and time of a cell (harness.estimator): exact small cases, monotonicity, the tensors PyTorch
really saves for the backward, unknown architectures, GGUF headers, and calibration from measured results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness import flops
from harness.config import CellConfig, CellRuntime, EvalConfig, MethodConfig, ModelSpec, TrainConfig
from harness.estimator import (
    LOGITS_BYTES,
    WORKSPACE_BYTES,
    DeviceProfile,
    Estimate,
    calibrate,
    estimate_cell,
    profile_from_environment,
)
from harness.methods.adapter import ABSMAX_DOUBLE_QUANT_BYTES, NF4_BYTES
from harness.models.architectures import ARCHITECTURES, Architecture
from harness.models.sources.gguf import gguf_architecture
from harness.results import CellResult

ROOT = Path(__file__).resolve().parent.parent
H100 = DeviceProfile.for_device("NVIDIA H100 80GB HBM3")
LORA16 = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def make_cell(
    kind: str = "lora",
    options: dict | None = None,
    model: ModelSpec | None = None,
    arch: str = "llama-3.2-1b",
    overrides: dict | None = None,
    **train,
) -> CellConfig:
    if options is None:
        options = dict(LORA16) if kind != "full" else {"weights_dtype": "fp32"}
    model = model or ModelSpec(id="m", source="synthetic", architecture=arch, config_overrides=overrides or {})
    train.setdefault("precision", "bf16")
    return CellConfig(
        matrix="t",
        model=model,
        method=MethodConfig(name=kind, kind=kind, options=options),
        variant="v",
        epochs=1,
        learning_rate=1e-4,
        seed=0,
        train=TrainConfig(**train),
        eval=EvalConfig(),
        runtime=CellRuntime(data_dir=".", results_dir=".", cache_dir="."),
    )


def est(*args, device=H100, mean=None, **kw) -> Estimate:
    return estimate_cell(make_cell(*args, **kw), device, mean_tokens_per_example=mean)


# ---------------------------------------------------------------------------------------------------- exact


def test_full_finetuning_fp32_exact_small_case():
    """Tiny Llama, fp32 (no autocast), batch 2 x 32, every term by hand."""
    e = est(
        "full",
        arch="tiny-llama",
        precision="fp32",
        batch_size=2,
        max_seq_length=32,
        device=None,
        attn_implementation="sdpa",
    )
    total = Architecture.named("tiny-llama").params.total
    h, i, q, layers, vocab, pos = 64, 128, 64, 2, 49152, 64
    assert e.breakdown["weights"] == 4 * total
    assert e.breakdown["gradients"] == 4 * total
    assert e.breakdown["optimizer"] == 8 * total  # AdamW: two fp32 states
    assert e.breakdown["autocast_weight_copies"] == 0
    per_token_layer = (
        2 * (4 * h + 4 * h)  # two RMSNorms: fp32 input + normalised output (norm weight trains)
        + 4 * (h + q + h + i)  # inputs of q/k/v, o, gate/up, down
        + 4 * (4 * q)
        + 4 * 4  # SDPA: q, k, v (expanded), out; fp32 logsumexp per head
        + 4 * 3 * i
    )  # SwiGLU: gate out, SiLU out, up out
    assert per_token_layer == 4880
    assert e.breakdown["activations"] == layers * pos * per_token_layer + 2 * 32 * 32 + pos * h * 4 * 2
    assert e.breakdown["logits"] == LOGITS_BYTES * pos * vocab
    peak = (4 + 8) * total + max(e.breakdown["activations"] + e.breakdown["logits"], 4 * total + 4 * total)
    assert e.peak_allocated_bytes == peak + WORKSPACE_BYTES
    assert e.params == {
        "total": total,
        "linear": Architecture.named("tiny-llama").linear,
        "trainable": total,
        "quantized": 0,
    }


def test_qlora_weights_exact():
    arch = Architecture.named("llama-3.2-1b")
    c = arch.params
    nt = arch.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    blocks = c.block_linear
    norms = c.total - blocks - c.embedding - c.lm_head
    e = est("qlora", {**LORA16, "double_quant": True})
    # NF4 0.5 B + 0.127 bit of double-quantised absmax; embedding (tied head) and norms upcast to fp32 by peft;
    # fp32 adapters
    expected = blocks * (NF4_BYTES + ABSMAX_DOUBLE_QUANT_BYTES) + (c.embedding + norms) * 4 + 4 * nt
    assert e.breakdown["weights"] == round(expected)
    assert ABSMAX_DOUBLE_QUANT_BYTES * 8 == pytest.approx(0.127, abs=5e-4)
    single = est("qlora", {**LORA16, "double_quant": False}).breakdown["weights"]
    assert single - e.breakdown["weights"] == pytest.approx(blocks * (4 / 64 - ABSMAX_DOUBLE_QUANT_BYTES), rel=1e-6)
    assert e.params["quantized"] == blocks and e.params["trainable"] == nt


def test_time_exact_with_a_given_throughput():
    dev = DeviceProfile(name="NVIDIA H100 80GB HBM3", peak_flops=1e15, achievable_fraction=0.5, startup_s=10.0)
    e = est("full", token_budget=100_000, batch_size=4, max_seq_length=2048, device=dev, mean=512)
    fill = 1 - 512 / (2 * 2048)
    assert e.tokens_per_step == 4 * 2048
    assert e.real_tokens_per_step == pytest.approx(4 * 2048 * fill)
    assert e.steps_per_epoch == math.ceil(100_000 / (4 * 2048 * fill))
    assert e.time_per_step_s == pytest.approx(4 * 2048 * e.hardware_flops_per_position / 5e14)
    assert e.time_per_epoch_s == pytest.approx(e.steps_per_epoch * e.time_per_step_s)
    assert e.cell_wall_s == pytest.approx(10.0 + e.time_per_epoch_s)
    # MFU counts model FLOPs (causal attention halved); time uses the hardware count (masked kernels: full square)
    assert e.hardware_flops_per_position > e.flops_per_token


def test_flops_per_token_agree_with_the_training_loop():
    """The estimate's flops_per_token is what harness.training puts in the MFU for the same cell."""
    arch = Architecture.named("llama-3.2-1b")
    e = est("lora", max_seq_length=1024)
    assert e.flops_per_token == flops.training_flops_per_token(
        arch, trainable_params=e.params["trainable"], frozen_base=True, gradient_checkpointing=False, seq_len=1024
    )


# ---------------------------------------------------------------------------------------------------- shape


@pytest.mark.parametrize("kind", ["full", "lora", "qlora", "unsloth"])
def test_more_batch_or_sequence_means_more_memory(kind):
    base = est(kind, batch_size=2, max_seq_length=1024).peak_memory_bytes
    assert est(kind, batch_size=4, max_seq_length=1024).peak_memory_bytes > base
    assert est(kind, batch_size=2, max_seq_length=2048).peak_memory_bytes > base


def test_weight_memory_orders_qlora_lora_full():
    full = est("full").breakdown
    lora = est("lora").breakdown
    qlora = est("qlora").breakdown
    assert qlora["weights"] < lora["weights"] < full["weights"] + full["gradients"] + full["optimizer"]
    assert lora["gradients"] + lora["optimizer"] < 0.05 * (full["gradients"] + full["optimizer"])


def test_gradient_checkpointing_lowers_activations():
    for kind in ("full", "lora", "qlora"):
        plain, gc = est(kind), est(kind, gradient_checkpointing=True)
        assert gc.breakdown["activations"] < 0.5 * plain.breakdown["activations"]
        assert gc.peak_memory_bytes < plain.peak_memory_bytes
        assert gc.flops_per_token > plain.flops_per_token  # the recomputed forward


def test_logits_dominate_llama_at_1b_and_liger_removes_them():
    e = est("lora", batch_size=4, max_seq_length=2048)
    assert e.breakdown["logits"] == LOGITS_BYTES * 4 * 2048 * 128256  # 12.6 GB: more than all weights
    assert e.breakdown["logits"] > e.breakdown["weights"]
    liger = est("lora", batch_size=4, max_seq_length=2048, liger_kernel=True)
    assert liger.breakdown["logits"] < 0.02 * e.breakdown["logits"]


def test_packing_and_padding_use_the_same_memory_but_padding_costs_time():
    shape = {"batch_size": 4, "max_seq_length": 2048, "token_budget": 300_000, "mean": 236}
    packed = est("full", **shape)
    padded = est("full", packing=False, pad_to_max_length=True, **shape)
    # batch x seq positions either way; padded rows under SDPA also hold the 4-D mask (packed: flex, block-sparse)
    assert padded.breakdown["activations"] - packed.breakdown["activations"] == 4 * 2048 * 2048
    assert padded.tokens_per_step == packed.tokens_per_step
    assert padded.real_tokens_per_step < 0.15 * packed.real_tokens_per_step
    assert padded.time_per_epoch_s > 5 * packed.time_per_epoch_s


def test_eager_attention_keeps_the_probabilities():
    sdpa, eager = (
        est("lora", max_seq_length=1024, batch_size=8, attn_implementation="sdpa"),
        est("lora", max_seq_length=1024, batch_size=8, attn_implementation="eager"),
    )
    extra = eager.breakdown["activations"] - sdpa.breakdown["activations"]
    assert extra == 16 * 8 * 1024 * 32 * 1024 * (4 + 2)  # layers x positions x heads x T x (fp32 + bf16 copy)


def test_gradient_accumulation_keeps_gradients_alive():
    one = est("full", gradient_accumulation_steps=1)
    four = est("full", gradient_accumulation_steps=4)
    assert (
        four.peak_allocated_bytes - one.peak_allocated_bytes
        > 0.9 * one.breakdown["gradients"] - one.breakdown["optimizer_step_temporary"]
    )


def test_bf16_weights_and_8bit_optimizer_shrink_full_finetuning():
    fp32 = est("full")
    bf16 = est("full", {"weights_dtype": "bf16"})
    adam8 = est("full", optimizer="adamw_8bit")
    assert bf16.breakdown["weights"] == fp32.breakdown["weights"] // 2
    assert bf16.breakdown["optimizer"] == fp32.breakdown["optimizer"] // 2
    assert adam8.breakdown["optimizer"] < 0.3 * fp32.breakdown["optimizer"]


def test_llama_1b_full_finetuning_fits_an_h100_and_a_huge_batch_does_not():
    assert est("full", batch_size=4, max_seq_length=2048).fits is True
    assert est("full", batch_size=32, max_seq_length=2048).fits is False
    assert est("full", device=None).fits is None


def test_tiny_cpu_model_predictions_are_finite_and_positive():
    cpu = DeviceProfile.cpu(5e9)
    for kind in ("full", "lora", "qlora"):
        e = est(
            kind, arch="tiny-llama", precision="auto", batch_size=4, max_seq_length=128, token_budget=4000, device=cpu
        )
        for value in (
            e.peak_memory_bytes,
            e.peak_allocated_bytes,
            e.flops_per_token,
            e.time_per_step_s,
            e.time_per_epoch_s,
            e.cell_wall_s,
        ):
            assert value is not None and math.isfinite(value) and value > 0
        assert all(v >= 0 for v in e.breakdown.values())
        assert any("fp32" in a for a in e.assumptions)  # precision auto on a CPU
        json.dumps(e.as_dict())


def test_time_needs_a_token_count():
    assert est("lora").time_per_epoch_s is None  # no budget, no max_examples
    assert any("tokens per epoch unknown" in a for a in est("lora").assumptions)
    assert est("lora", max_examples=1000, mean=300).time_per_epoch_s > 0
    assert est("lora", token_budget=10_000).time_per_epoch_s > 0
    padded = est("lora", token_budget=10_000, packing=False)
    assert padded.time_per_epoch_s is None and any("mean example length" in a for a in padded.assumptions)
    assert est("lora", token_budget=10_000, device=None).time_per_epoch_s is None


def test_the_dense_mask_is_counted_only_where_the_kernel_gets_one():
    """Packed rows: SDPA gets a batch × T × T bool mask (CPU's auto), flex attention a block-sparse one (a GPU's
    auto), Unsloth its own mask over the flattened row ((B·T)² with SDPA)."""
    kw = {"arch": "tiny-llama", "precision": "fp32", "batch_size": 2, "max_seq_length": 32}
    sdpa = est("full", device=None, attn_implementation="sdpa", **kw).breakdown["activations"]
    gpu_auto = est("full", device=None, **kw)
    cpu_auto = est("full", device=DeviceProfile.cpu(1e10), **kw)
    assert sdpa - gpu_auto.breakdown["activations"] == 2 * 32 * 32
    assert any("attention: flex_attention" in a for a in gpu_auto.assumptions)
    assert any("attention: sdpa" in a and "dense block-diagonal" in a for a in cpu_auto.assumptions)
    unsloth = est("unsloth", {"r": 16, "alpha": 32, "load_in_4bit": False}, device=None, **kw)
    assert any("flattened into one row" in a for a in unsloth.assumptions)
    padded = est("unsloth", {"r": 16, "alpha": 32, "load_in_4bit": False}, device=None, packing=False, **kw)
    assert unsloth.breakdown["activations"] - padded.breakdown["activations"] == (2 * 32) ** 2 - 2 * 32 * 32


def test_base_rows_and_unknown_kinds():
    base = est("base", {})
    assert base.peak_memory_bytes > 0 and base.time_per_epoch_s is None
    odd = est("mystery", {"foo": 1})
    assert odd.peak_memory_bytes is None and "not registered" in odd.assumptions[0]


# ---------------------------------------------------------------------------------------------------- truth


@pytest.mark.parametrize("mode", ["full-fp32", "lora-bf16"])
def test_activations_match_the_tensors_pytorch_saves(mode):
    """Sum the tensors autograd keeps for the backward of a small Llama on CPU (saved-tensor hooks) and compare with
    the estimate's activations (+ the fp32 log-softmax the loss keeps, 4 of the 12 logits bytes, + autocast weight
    copies). The transient peak of the backward is not seen by the hooks; the saved set is what the formula models."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    overrides = {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 256}
    arch = {**ARCHITECTURES["tiny-llama"], **overrides}
    cfg = transformers.LlamaConfig(**{k: v for k, v in arch.items() if k != "model_type"})
    cfg._attn_implementation = "sdpa"
    b, seq = 2, 64
    torch.manual_seed(0)
    if mode == "full-fp32":
        model, precision, kind, options = transformers.LlamaForCausalLM(cfg).float(), "fp32", "full", None
    else:
        model = peft.get_peft_model(
            transformers.LlamaForCausalLM(cfg).to(torch.bfloat16),
            peft.LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.05,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
            autocast_adapter_dtype=True,
        )
        precision, kind, options = "bf16", "lora", {**LORA16, "r": 8}
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    ids = torch.randint(0, 1000, (b, seq))
    positions = torch.arange(seq).repeat(b, 1)
    positions[:, seq // 2 :] -= seq // 2  # two packed examples per row, as the harness packs
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(input_ids=ids, labels=ids, position_ids=positions, use_cache=False)
    measured = sum(saved.values())
    e = estimate_cell(
        make_cell(
            kind, options, arch="tiny-llama", overrides=overrides, precision=precision, batch_size=b, max_seq_length=seq
        ),
        DeviceProfile.cpu(1e10),
    )
    predicted = (
        e.breakdown["activations"] + e.breakdown["logits"] * 4 / LOGITS_BYTES + e.breakdown["autocast_weight_copies"]
    )
    # seen: full-fp32 0.99, lora-bf16 1.08 (CPU dropout keeps an fp32 noise tensor where CUDA keeps a bool mask)
    assert predicted == pytest.approx(measured, rel=0.10), (predicted, measured)


# ---------------------------------------------------------------------------------------------------- sources


def test_local_config_json_is_read(tmp_path):
    cfg = {**ARCHITECTURES["smollm2-135m"], "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    e = est("lora", model=ModelSpec(id="x", source="local", path=str(tmp_path)))
    assert e.params["total"] == Architecture.named("smollm2-135m").params.total
    assert "config.json" in e.assumptions[0]


def test_unknown_architecture_gives_none_with_a_reason(tmp_path):
    e = est("lora", model=ModelSpec(id="x", source="local", path=str(tmp_path)))
    assert e.peak_memory_bytes is None and e.time_per_epoch_s is None and e.flops_per_token is None
    assert "no config.json" in e.assumptions[0]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768, "n_layer": 12}))
    e = est("lora", model=ModelSpec(id="x", source="local", path=str(tmp_path)))
    assert e.peak_memory_bytes is None and "gpt2" in e.assumptions[0]
    hub = est("lora", model=ModelSpec(id="x", source="hub", hub_id="nobody/unknown-model-xyz"))
    assert hub.peak_memory_bytes is None and "nobody/unknown-model-xyz" in hub.assumptions[0]


def test_known_hub_ids_use_the_named_architecture(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = est("lora", model=ModelSpec(id="x", source="hub", hub_id="meta-llama/Llama-3.2-1B-Instruct"))
    assert e.params["total"] == Architecture.named("llama-3.2-1b").params.total


def test_gguf_header_is_parsed(tmp_path):
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    path = tmp_path / "toy.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_embedding_length(96)
    w.add_feed_forward_length(256)
    w.add_head_count(6)
    w.add_head_count_kv(2)
    w.add_vocab_size(500)
    w.add_tensor("token_embd.weight", np.zeros((500, 96), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    arch = gguf_architecture(str(path))
    cfg = arch.config
    assert cfg == {
        "model_type": "llama",
        "hidden_size": 96,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 500,
        "tie_word_embeddings": True,
    }
    e = est("lora", model=ModelSpec(id="g", source="gguf", path=str(path)))
    assert (
        e.params["total"] == Architecture.from_config(cfg, "cfg")[0].params.total and "GGUF header" in e.assumptions[0]
    )


def test_no_torch_import():
    code = "import sys, harness.estimator, harness.flops; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------------------------------------------- calibration


def _result(
    cell: CellConfig,
    *,
    status="success",
    tokens_per_s=None,
    headline=None,
    peak=989e12,
    wall=60.0,
    train_s=40.0,
    device="NVIDIA H100 80GB HBM3",
) -> CellResult:
    return CellResult(
        cell_id=f"c{id(cell)}",
        config_hash="0" * 64,
        matrix="t",
        status=status,
        config=cell.model_dump(mode="json"),
        metrics={
            "train": {"tokens_per_s": tokens_per_s, "peak_flops": peak, "padding_fraction": 0.0},
            "meters": {"train": {"memory": {"headline": "max_reserved_bytes", "headline_bytes": headline}}},
        },
        timings={"wall_s": wall, "train_s": train_s},
        environment={"device": {"type": "cuda", "name": device, "memory_bytes": 85_520_809_984}},
    )


def test_calibrate_fits_fraction_memory_and_startup():
    results = []
    for kind, frac in (("full", 0.45), ("lora", 0.30), ("qlora", 0.20)):
        cell = make_cell(kind, max_seq_length=2048, batch_size=4)
        e = estimate_cell(cell, H100)
        tps = frac * 989e12 / e.hardware_flops_per_position  # packed: positions/s = real tokens/s
        results.append(_result(cell, tokens_per_s=tps, headline=1.1 * e.peak_memory_bytes))
    results.append(_result(make_cell("full"), status="oom"))  # ignored
    results.append(_result(make_cell("lora", packing=False, pad_to_max_length=True), tokens_per_s=10.0))  # padded
    profile = calibrate(results)
    assert profile.name == "NVIDIA H100 80GB HBM3" and profile.peak_flops == 989e12
    assert profile.fraction_by_method == pytest.approx({"full": 0.45, "lora": 0.30, "qlora": 0.20})
    assert profile.achievable_fraction == pytest.approx(0.30)
    assert profile.memory_scale == pytest.approx(1.1, rel=1e-3)
    assert profile.startup_s == pytest.approx(20.0)
    assert "calibrated" in profile.source
    # a calibrated profile predicts the measured speed back
    e = estimate_cell(make_cell("qlora", max_seq_length=2048, batch_size=4, token_budget=100_000), profile)
    assert e.time_per_step_s == pytest.approx(4 * 2048 * e.hardware_flops_per_position / (0.20 * 989e12))
    assert e.peak_memory_bytes == pytest.approx(
        1.1 * est("qlora", max_seq_length=2048, batch_size=4).peak_memory_bytes, rel=1e-6
    )
    assert DeviceProfile.from_dict(json.loads(json.dumps(profile.as_dict()))) == profile


def test_calibrate_on_cpu_uses_measured_throughput_as_peak():
    cell = make_cell("lora", arch="tiny-llama", precision="fp32", max_seq_length=128, batch_size=4)
    e = estimate_cell(cell)
    r = _result(cell, tokens_per_s=2e9 / e.hardware_flops_per_position, peak=None, headline=None)
    r.environment = {"device": {"type": "cpu", "name": None}}
    profile = calibrate([r])
    assert profile.is_cpu and profile.peak_flops == pytest.approx(2e9) and profile.achievable_fraction == 1.0


def test_calibrate_with_nothing_usable_keeps_defaults():
    profile = calibrate([_result(make_cell("full"), status="failed")])
    assert profile.achievable_fraction == 0.4 and profile.memory_scale == 1.0


def test_profile_from_environment():
    gpu = profile_from_environment({"type": "cuda", "name": "NVIDIA H200", "memory_bytes": 150_000_000_000})
    assert gpu.peak_flops == 989e12 and gpu.memory_bytes == 150_000_000_000
    assert profile_from_environment({"type": "cpu", "name": None}).is_cpu
    assert profile_from_environment(None) is None
