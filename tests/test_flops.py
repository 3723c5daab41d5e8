"""FLOPs per token, peak FLOP/s and MFU (harness.flops): hand-computed cases, the counter of PyTorch itself, and the
rule that an MFU above 100 % is a bug."""

from __future__ import annotations

import math

import pytest

from harness import flops
from harness.models.architectures import ARCHITECTURES, Architecture

TINY = Architecture.named("tiny-llama")  # h 64, i 128, 2 layers, 4 heads (hd 16), 2 kv heads, vocab 49152, tied
LLAMA = Architecture.named("llama-3.2-1b")
ALL_LORA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def full(arch, seq=2048, gc=False, **kw):
    return flops.training_flops_per_token(
        arch, trainable_params=0, frozen_base=False, gradient_checkpointing=gc, seq_len=seq, **kw
    )


def lora(arch, nt, seq=2048, gc=False, **kw):
    return flops.training_flops_per_token(
        arch, trainable_params=nt, frozen_base=True, gradient_checkpointing=gc, seq_len=seq, **kw
    )


# ---------------------------------------------------------------------------------------------------- N


def test_linear_params_by_hand():
    # per block: q 64x64, k 64x32, v 64x32, o 64x64, gate/up/down 3x64x128; head: tied 49152x64
    per_block = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128
    assert per_block == 36864
    assert TINY.params.block_linear == 2 * per_block
    assert TINY.lm_head_matmul == 49152 * 64
    assert TINY.linear == 2 * per_block + 49152 * 64 == 3_219_456


def test_linear_params_llama_and_tinyllama():
    # Llama-3.2-1B: 16 x (2*2048*2048 + 2*2048*512 + 3*2048*8192) + 128256*2048 (tied head still multiplies)
    assert LLAMA.linear == 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192) + 128256 * 2048
    # TinyLlama: untied head, counted once like the tied one; the input embedding (a gather) is not counted
    tl = Architecture.named("tinyllama-1.1b")
    c = tl.params
    assert tl.linear == c.total - c.embedding - 22 * 2 * 2048 - 2048


def test_embedding_lookup_is_not_a_matmul():
    untied = Architecture.named("tiny-llama", {"tie_word_embeddings": False})
    assert untied.linear == TINY.linear  # same matmuls, one more stored matrix
    assert untied.params.total == TINY.params.total + 49152 * 64


# ---------------------------------------------------------------------------------------------------- per token


def test_full_finetuning_by_hand():
    n = 3_219_456
    # attention: 12 * L * T * d_attn, halved for causal masking (d_attn = 4 heads x 16 = 64)
    assert full(TINY, seq=256, causal=False) == 6 * n + 12 * 2 * 256 * 64
    assert full(TINY, seq=256) == 6 * n + 6 * 2 * 256 * 64
    assert full(TINY, seq=256) == 19_513_344


def test_lora_by_hand():
    n, nt = 3_219_456, 16_384
    qkv0 = 64 * 64 + 2 * 64 * 32  # first block's q, k, v: their input (the frozen embedding) needs no gradient
    assert lora(TINY, nt, seq=256) == 4 * n + 6 * nt + 6 * 2 * 256 * 64 - 2 * qkv0
    # with checkpointing the input gradients of block 0 are computed (enable_input_require_grads)
    blocks = 2 * 36864
    assert (
        lora(TINY, nt, seq=256, gc=True) == (4 * n + 6 * nt + 6 * 2 * 256 * 64) + 2 * blocks + 2 * nt + 2 * 2 * 256 * 64
    )


def test_checkpointing_adds_one_forward_of_the_blocks():
    for seq in (512, 2048):
        extra = full(LLAMA, seq, gc=True) - full(LLAMA, seq)
        attn_forward = flops.attention_flops_per_token(LLAMA, seq) / 3
        assert extra == pytest.approx(2 * LLAMA.params.block_linear + attn_forward)
        # the guide's "+ 2N", less the LM head that runs outside the checkpointed blocks
        assert extra < 2 * LLAMA.linear + attn_forward


def test_lora_costs_less_than_full():
    for name in ("llama-3.2-1b", "tinyllama-1.1b", "smollm2-135m"):
        arch = Architecture.named(name)
        for r in (8, 16, 64):
            nt = arch.lora_params(r, ALL_LORA)
            assert nt < arch.linear / 3  # the condition for 4N + 6Nt < 6N
            for gc in (False, True):
                assert lora(arch, nt, gc=gc) < full(arch, gc=gc)


def test_lora_trainable_params_of_llama_3_2_1b():
    # Llama-3.2-1B, r=16, all linear layers: 11,272,192 (what peft reports)
    assert LLAMA.lora_params(16, ALL_LORA) == 11_272_192
    with pytest.raises(ValueError, match="unknown target"):
        LLAMA.lora_params(8, ["qkv_proj"])


def test_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        full(TINY, seq=0)
    with pytest.raises(ValueError):
        lora(TINY, -1)


def test_every_count_is_at_least_the_matmul_floor():
    """Full fine-tuning counts >= 6N and a frozen base >= 4N (minus block 0's q/k/v): the floor that stops a
    claimed tokens/s above peak / 6N from passing as an MFU below 100 %."""
    for arch in map(Architecture.named, ARCHITECTURES):
        n = arch.linear
        for seq in (128, 2048):
            assert full(arch, seq) >= 6 * n
            assert lora(arch, 0, seq) >= 4 * n - 2 * arch.first_block_qkv


def test_formula_matches_pytorchs_flop_counter():
    """torch.utils.flop_counter on a small Llama (eager attention: the CPU SDPA kernel has no FLOP formula there).
    Full fine-tuning: exact. LoRA: within the first block's lora_A input gradients, which autograd skips."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from torch.utils.flop_counter import FlopCounterMode

    raw = {**ARCHITECTURES["tiny-llama"], "vocab_size": 1000}
    arch, _ = Architecture.from_config(raw, "tiny-llama, vocab 1000")
    cfg = transformers.LlamaConfig(**{k: v for k, v in raw.items() if k != "model_type"})
    cfg._attn_implementation = "eager"
    b, seq = 2, 32

    def measured(model):
        ids = torch.randint(0, 1000, (b, seq))
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        return counter.get_total_flops() / (b * seq)

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).train()
    assert measured(model) == full(arch, seq, causal=False)

    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(cfg),
        peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALL_LORA),
    ).train()
    nt = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert nt == arch.lora_params(8, ALL_LORA)
    got, formula = measured(model), lora(arch, nt, seq, causal=False)
    lora_a_block0 = 2 * 8 * (3 * 64)  # lora_A of q, k, v in block 0: input gradient skipped, not subtracted
    assert got == formula - lora_a_block0


# ---------------------------------------------------------------------------------------------------- peaks


@pytest.mark.parametrize(
    "name,dtype,expected",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H100 NVL", "bf16", 835e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA H200", "torch.bfloat16", 989e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100-PCIE-40GB", "fp16", 312e12),
        ("NVIDIA L40S", "bf16", 362e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA A10G", "bf16", 70e12),
        ("NVIDIA A10", "bf16", 125e12),
        ("NVIDIA GeForce RTX 4090", "bf16", 165e12),
        ("NVIDIA H100 80GB HBM3", "fp32", 67e12),
    ],
)
def test_peak_flops_by_name(name, dtype, expected):
    assert flops.peak_flops(name, dtype) == expected


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("cpu", "bf16"),
        ("cpu", "fp32"),
        (None, "bf16"),
        ("", "bf16"),
        ("AMD EPYC 9654", "bf16"),
        ("NVIDIA H100 80GB HBM3", "int8"),
        ("Tesla V100-SXM2-16GB", "bf16"),
        ("NVIDIA GH100 prototype", "bf16"),
    ],
)
def test_unknown_device_or_dtype_gives_none(name, dtype):
    assert flops.peak_flops(name, dtype) is None


def test_names_match_whole_tokens_only():
    assert flops.peak_flops("NVIDIA L40", "bf16") == 181e12  # not L4
    assert flops.peak_flops("NVIDIA GH200 480GB", "bf16") == 989e12
    assert flops.peak_flops("NVIDIA H200 NVL", "bf16") == 835e12


# ---------------------------------------------------------------------------------------------------- MFU


def test_mfu_by_hand_and_unknowns():
    assert flops.mfu(10_000, 6e9, 989e12) == pytest.approx(6e13 / 989e12)
    assert flops.mfu(None, 6e9, 989e12) is None
    assert flops.mfu(10_000, None, 989e12) is None
    assert flops.mfu(10_000, 6e9, None) is None  # CPU: no peak, no MFU
    assert flops.mfu(10_000, 6e9, 0) is None


def test_check_mfu_flags_impossible_values():
    assert flops.check_mfu(0.42) == 0.42
    assert flops.check_mfu(None) is None
    assert flops.check_mfu(1.0) == 1.0
    for bad in (1.0001, 1.7, -0.1, math.nan):
        with pytest.raises(flops.ImpossibleMFU):
            flops.check_mfu(bad)


def test_tokens_per_s_above_the_ceiling_are_flagged():
    """Llama-3.2-1B full fine-tuning on an H100: the ceiling is peak / FLOPs per token (~126k tokens/s at seq 2048);
    a claim above it must come out as MFU > 1 and be refused, one below it must pass."""
    peak = flops.peak_flops("NVIDIA H100 80GB HBM3")
    fpt = full(LLAMA, 2048)
    ceiling = flops.max_tokens_per_s(fpt, peak)
    assert ceiling < peak / (6 * LLAMA.linear)  # never looser than the 6N floor
    flops.check_mfu(flops.mfu(0.45 * ceiling, fpt, peak))
    with pytest.raises(flops.ImpossibleMFU):
        flops.check_mfu(flops.mfu(1.05 * ceiling, fpt, peak))
    # the same holds for every method and sequence length: MFU is linear in tokens/s with slope fpt / peak
    for arch in (LLAMA, Architecture.named("tinyllama-1.1b")):
        for seq in (1024, 2048):
            for fpt in (
                full(arch, seq),
                lora(arch, arch.lora_params(16, ALL_LORA), seq),
                full(arch, seq, gc=True),
            ):
                assert flops.mfu(flops.max_tokens_per_s(fpt, peak), fpt, peak) == pytest.approx(1.0)
