"""FLOPs per trained token, peak FLOP/s per accelerator, and model FLOPs utilisation (MFU). Pure Python.

The counting follows PaLM (Chowdhery et al. 2022, appendix B) and Kaplan et al. (2020):

    N      = parameters that take part in a matrix multiply for every token: the q, k, v, o, gate, up and down
             projections of every block, plus the LM head (the tied embedding matrix when embeddings are tied).
             The embedding *lookup* is a gather, not a matmul, and norms are element-wise: neither is counted.
    forward                     2·N            (one multiply-add per weight per token)
    backward, activation grads  2·N            (needed whenever anything below a layer trains)
    backward, weight grads      2·N_trained    (only for weights that receive a gradient)

    full fine-tuning              6·N                      + A
    LoRA / QLoRA (frozen base)    4·N + 6·N_trainable      + A     (adapters: forward, act-grad and weight-grad)
                                  − 2·N_qkv(block 0) without checkpointing (their input, the frozen embedding
                                  output, needs no gradient; exact to < 0.01 % at 1B: the first block's lora_A
                                  input gradients are skipped too and not subtracted)
    + activation checkpointing    + 2·N_blocks + A/3               (one more forward of every decoder block; the
                                                                    LM head is outside the checkpointed blocks)

Attention score and value matmuls (not in N): per layer and token the forward does QKᵀ and P·V, each
2·T·d_attn FLOPs against a context of T positions, d_attn = heads · head_dim (grouped-query attention shares K/V
heads but every query head still computes its own scores). Forward + backward is 3× the forward, so PaLM's term is

    A_palm = 12 · L · T · d_attn        per token (T = sequence length)

PaLM does not halve it for causal masking. We do by default (`causal=True`): a causal kernel (SDPA flash /
memory-efficient, FlashAttention) only computes the lower triangle, so the useful work is half, A = 6·L·T·d_attn.
Halving can only lower the FLOPs we claim, so an MFU computed here is never above the PaLM-convention figure;
pass `causal=False` to reproduce PaLM. T is the attention context (`max_seq_length` for packed rows: we do not
shrink it for the block-diagonal per-example mask, which hardware still computes over the whole row).

Checkpointing: PaLM calls the figure with recomputation *hardware* FLOPs utilisation (HFU) and keeps MFU without it.
This harness follows its guide and counts the recomputed forward, because that work is really done and the time
it takes is in the measured tokens/s; pass `gradient_checkpointing=False` for PaLM's MFU. Either way the counted
FLOPs are work the GPU actually performs, so MFU ≤ 1 for any physically possible tokens/s; `check_mfu` enforces it.
torch.utils.flop_counter agrees exactly for full fine-tuning of a small Llama with eager attention
(tests/test_flops.py).
"""

from __future__ import annotations

from harness.models.architectures import Architecture

# ---------------------------------------------------------------------------------------------------- counting


def attention_flops_per_token(arch: Architecture, seq_len: int, *, causal: bool = True) -> float:
    """Forward + backward FLOPs of the score (QKᵀ) and value (P·V) matmuls per token: 12·L·T·d_attn, halved when
    `causal` (only the lower triangle is computed)."""
    full = 12.0 * arch.layers * seq_len * arch.q_dim
    return full / 2 if causal else full


def training_flops_per_token(
    arch: Architecture,
    *,
    trainable_params: int,
    frozen_base: bool,
    gradient_checkpointing: bool,
    seq_len: int,
    causal: bool = True,
) -> float:
    """FLOPs one trained token costs (forward + backward, + recomputation with checkpointing); see the module doc.

    full fine-tuning (`frozen_base=False`): 6·N + A  (`trainable_params` is not needed: every matmul weight trains)
    frozen base (LoRA, QLoRA, Unsloth):     4·N + 6·N_trainable + A  (− 2·N_qkv of block 0 without checkpointing)
    gradient checkpointing:                 + 2·N_blocks (+ 2·N_trainable when frozen) + A/3

    Checked against torch.utils.flop_counter on a tiny Llama (tests/test_flops.py): exact for full fine-tuning.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 (got {seq_len})")
    if trainable_params < 0:
        raise ValueError(f"trainable_params must be >= 0 (got {trainable_params})")
    n = arch.linear
    attn = attention_flops_per_token(arch, seq_len, causal=causal)
    if frozen_base:
        total = 4.0 * n + 6.0 * trainable_params + attn
        if not gradient_checkpointing:
            # The first block's q/k/v read the (frozen) embedding output, which needs no gradient: autograd skips
            # their input gradients. With checkpointing the harness (like peft) calls enable_input_require_grads,
            # so they are computed.
            total -= 2.0 * arch.first_block_qkv
    else:
        total = 6.0 * n + attn
    if gradient_checkpointing:
        recompute = 2.0 * arch.params.block_linear + attn / 3.0
        if frozen_base:
            recompute += 2.0 * trainable_params  # adapters inside the blocks are recomputed too
        total += recompute
    return total


# ---------------------------------------------------------------------------------------------------- peaks

# Dense (no structured sparsity) tensor-core peaks from NVIDIA's data sheets, FLOP/s. bf16/fp16 with fp32
# accumulation; "tf32" for fp32 matmuls on tensor cores; "fp32" for plain CUDA-core fp32.
# Matched by substring of the lower-cased device name, most specific first ("a100" before "a10", "l40s" before
# "l40" before "l4", "nvl"/"pcie" variants before the plain name).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("gh200", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("h200 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    ("h200", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("h100 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    ("h100 pcie", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    ("h100", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),  # SXM: "NVIDIA H100 80GB HBM3"
    ("h800", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("b200", {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 75e12}),
    ("a100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("a800", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("a10g", {"bf16": 70e12, "fp16": 70e12, "tf32": 35e12, "fp32": 31.2e12}),
    ("a10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("l40s", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("l40", {"bf16": 181e12, "fp16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    ("l4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    ("rtx 4090", {"bf16": 165e12, "fp16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    ("rtx a6000", {"bf16": 155e12, "fp16": 155e12, "tf32": 77e12, "fp32": 38.7e12}),
    ("rtx 3090", {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    ("v100", {"fp16": 125e12, "fp32": 15.7e12}),  # no bf16 tensor cores
    ("t4", {"fp16": 65e12, "fp32": 8.1e12}),  # no bf16 tensor cores
]

_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "torch.float16": "fp16",
    "tf32": "tf32",
    "fp32": "fp32",
    "float32": "fp32",
    "torch.float32": "fp32",
}


def peak_flops(device_name: str | None, dtype: str = "bf16") -> float | None:
    """Dense peak FLOP/s of a device for a compute dtype, or None when the device or dtype is unknown (CPU: None)."""
    if not device_name:
        return None
    key = _DTYPE_ALIASES.get(str(dtype).lower())
    if key is None:
        return None
    name = " ".join(str(device_name).lower().replace("-", " ").split())
    for pattern, peaks in PEAK_FLOPS:
        if _matches(pattern, name):
            return peaks.get(key)
    return None


def _matches(pattern: str, name: str) -> bool:
    """Substring match on whole tokens, so "l4" does not match "l40s", "a10" not "a100" and "h200" not "gh200"."""
    start = name.find(pattern)
    while start >= 0:
        end = start + len(pattern)
        if (end == len(name) or not name[end].isalnum()) and (start == 0 or not name[start - 1].isalnum()):
            return True
        start = name.find(pattern, start + 1)
    return False


# ---------------------------------------------------------------------------------------------------- MFU


class ImpossibleMFU(ValueError):
    """An MFU above 1 (or below 0): the FLOP count, the token count or the peak is wrong."""


def mfu(tokens_per_s: float | None, flops_per_token: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilisation = tokens/s × FLOPs per token ÷ peak FLOP/s; None when any input is unknown."""
    if tokens_per_s is None or flops_per_token is None or peak is None or peak <= 0:
        return None
    return float(tokens_per_s) * float(flops_per_token) / float(peak)


def check_mfu(value: float | None, *, tolerance: float = 0.0) -> float | None:
    """Return `value` if it is a possible utilisation (0 ≤ MFU ≤ 1); raise ImpossibleMFU otherwise. None passes."""
    if value is None:
        return None
    if value != value or value < 0 or value > 1.0 + tolerance:  # NaN, negative or above the peak
        raise ImpossibleMFU(
            f"MFU {value:.3g} is impossible (must be within 0..1): check the FLOPs per token, the "
            "token count (real tokens only) and the device's peak FLOP/s"
        )
    return value


def max_tokens_per_s(flops_per_token: float, peak: float) -> float:
    """The physical ceiling on tokens/s at this FLOP count: anything faster means the FLOPs are under-counted."""
    return peak / flops_per_token
