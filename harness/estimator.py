"""Predicted peak memory and time of a cell, before it runs (`--dry-run`) and stored beside what it measured.

Pure Python: nothing here imports torch (GGUF headers are read with the `gguf` package, lazily). Every number is
a closed-form model of what PyTorch keeps alive; every guess is named in `Estimate.assumptions`, and `calibrate`
replaces the guessed throughput (and memory scale, start-up time) with medians of measured cells.

Memory model (bytes; N = all parameters, N_lin = matmul weights of the blocks, N_t = trainable parameters)

    weights     full fp32-master: 4·N (+ 2·N_lin bf16 copies that autocast keeps for the backward)
                full bf16:        2·N
                LoRA:             2·N frozen base (compute dtype) + 4·N_t fp32 adapters (peft autocast_adapter_dtype)
                QLoRA:            N_lin·(0.5 + 0.0159) NF4 with double quantisation (8-bit absmax per 64 weights +
                                  fp32 per 256 blocks: 0.127 bits/param; 0.0625 B without double quant) + every other
                                  parameter (embeddings, untied head, norms) in fp32: peft's
                                  prepare_model_for_kbit_training upcasts them (that is why QLoRA saves little at 1B)
                Unsloth:          as QLoRA (load_in_4bit, non-quantised parts stay 16-bit) or LoRA (16-bit)
    gradients   one per trainable parameter in its dtype (fp32 master / fp32 adapters: 4 B; bf16: 2 B)
    optimizer   AdamW 2 states in the parameter dtype (fp32: 8 B); 8-bit AdamW 2·1 B + blockwise absmax (≈ 2.03 B);
                SGD with momentum 1 state
    activations per token and layer, saved for the backward (a = 2 B bf16 / 4 B fp32 activations, r = residual
                stream bytes: 4 when fp32 weights or fp32-upcast norms/embeddings sit on it under autocast):
                  2 RMSNorms     2·(4h [fp32 upcast for the variance] + r·h if the norm weight trains)
                  matmul inputs  full FT: a·(h + q_dim + h + i), once per input tensor (once per consumer when
                                 autocast casts an fp32 residual, r > a); a frozen base layer (16-bit or 4-bit)
                                 saves no input
                  SDPA           a·(q + k + v + out) with K/V expanded to all heads (transformers repeats K/V when a
                                 mask is given: always here, packing builds a block-diagonal mask) + fp32 logsumexp
                  eager          + heads·T·(4 + a) (fp32 softmax and its cast), instead of a fused kernel
                  SwiGLU MLP     a·3·i (gate out, SiLU out, up out)
                  LoRA           per adapted module: its own copy of the input (peft casts to the fp32 adapter
                                 dtype, dropout, autocast casts back: a·in kept) + the dropout mask (1 B CUDA,
                                 4 B CPU) + the r-dim lora_A output
                with gradient checkpointing: r·h per layer (each block's input) + one block's full activations
                (Unsloth's checkpointing offloads the block inputs to host memory: one block kept)
    logits      batch·T·vocab·12 B for transformers' loss (fp32 upcast, fp32 log-softmax output kept for the backward,
                fp32 gradient of each at the start of the backward); Liger's fused linear-cross-entropy never holds
                them (chunks of ≈ hidden size); Unsloth's fused loss ≈ 2 B (bf16 logits, gradient written in place)
    peak        weights + optimizer + max(activations + logits + autocast copies [+ gradients when accumulating],
                gradients + one fp32 temporary per trainable parameter in the foreach AdamW step)
                + 64 MiB workspace; × memory_scale
                (1 until calibrated). The CUDA headline (meters: max_reserved) adds allocator slack (7 %); NVML adds
                the CUDA context (≈ 600 MiB). On CPU the headline is the process RSS: + ≈ 1 GiB of libraries.

Checked against the tensors autograd saves for a small Llama on CPU (tests/test_estimator.py): full fine-tuning in
fp32 within 1 %, LoRA under bf16 autocast within 8 % (over). The transient peak inside the backward is modelled by
the logits term only.

Time model: FLOPs per optimizer step (harness.flops, counted over every computed position, padding included, with
the unhalved attention term because masked SDPA kernels compute the whole square) ÷ (peak FLOP/s × achievable
fraction). The fraction is 0.4 until `calibrate` fits it (per method kind) from measured cells.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from harness import flops
from harness.models.architectures import ARCHITECTURES, architecture_config, count_parameters

GiB = 1024**3
MiB = 1024**2

# Guesses, named so they can be checked against measurements (and are, by `calibrate`).
DEFAULT_GPU_FRACTION = 0.4
DEFAULT_STARTUP_S = 20.0  # process start, imports, model materialise/load, data cache hit, first-step warm-up
STARTUP_EXTRA_S = {"unsloth": 40.0, "qlora": 5.0, "torch_compile": 60.0}
CUDA_CONTEXT_BYTES = 600 * MiB
CPU_PROCESS_BASELINE_BYTES = 1 * GiB  # python + torch + transformers resident before any tensor
WORKSPACE_BYTES = 64 * MiB  # cuBLAS workspace and small buffers
RESERVED_SLACK = 0.07  # caching-allocator fragmentation: max_reserved / max_allocated - 1
LOGITS_BYTES = 12.0  # per batch·T·vocab element, transformers' ForCausalLMLoss (see module doc)
UNSLOTH_LOGITS_BYTES = 2.0
PACKING_FILL_UNKNOWN = 0.95  # share of a packed row that holds real tokens when the example length is unknown
DYNAMIC_PAD_FACTOR = 1.5  # padded to the longest row of the batch: ≈ 1.5 × the mean example length

NF4_BYTES = 0.5
ABSMAX_DOUBLE_QUANT_BYTES = 1 / 64 + 4 / (64 * 256)  # 8-bit absmax per 64-block + fp32 per 256 blocks = 0.127 bit
ABSMAX_BYTES = 4 / 64  # fp32 absmax per 64-block without double quantisation

TARGET_SETS = {
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
DEFAULT_OPTIMIZER = {"full": "adamw", "lora": "adamw", "qlora": "paged_adamw_8bit", "unsloth": "adamw_8bit"}

# Hub ids whose architecture is one of ours (used when no config.json is in the local hub cache).
KNOWN_HUB_IDS = {
    "meta-llama/llama-3.2-1b": "llama-3.2-1b", "meta-llama/llama-3.2-1b-instruct": "llama-3.2-1b",
    "unsloth/llama-3.2-1b": "llama-3.2-1b", "unsloth/llama-3.2-1b-instruct": "llama-3.2-1b",
    "tinyllama/tinyllama-1.1b-chat-v1.0": "tinyllama-1.1b",
    "tinyllama/tinyllama-1.1b-intermediate-step-1431k-3t": "tinyllama-1.1b",
    "huggingfacetb/smollm2-135m": "smollm2-135m", "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-360m": "smollm2-360m", "huggingfacetb/smollm2-360m-instruct": "smollm2-360m",
    "huggingfacetb/smollm2-1.7b": "smollm2-1.7b", "huggingfacetb/smollm2-1.7b-instruct": "smollm2-1.7b",
}
# Known GGUF files by name fragment, when the header cannot be read.
KNOWN_GGUF = {"smollm2-135m": "smollm2-135m", "smollm2-360m": "smollm2-360m", "smollm2-1.7b": "smollm2-1.7b",
              "tinyllama-1.1b": "tinyllama-1.1b", "llama-3.2-1b": "llama-3.2-1b"}
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "olmo2", "granite"}

# Device memory as torch reports it (total_memory), for profiles built from a name alone.
KNOWN_MEMORY = [("h200 nvl", 141 * 10**9), ("h200", 150_754_820_096), ("gh200", 101_468_602_368),
                ("h100 nvl", 99_857_989_632), ("h100 pcie", 85_045_346_304), ("h100", 85_520_809_984),
                ("a100 80gb", 85_097_971_712), ("a100", 42_298_834_944), ("l40s", 47_697_362_944),
                ("a10g", 23_836_098_560), ("l4", 23_580_639_232), ("rtx 4090", 25_393_692_672)]


# ---------------------------------------------------------------------------------------------------- devices

@dataclass
class DeviceProfile:
    """What the estimator knows about a device: its memory, its peak and how much of it training reaches."""

    name: str
    memory_bytes: int | None = None
    peak_flops: float | None = None  # dense peak at the compute dtype; for a CPU, a measured FLOP/s
    achievable_fraction: float = DEFAULT_GPU_FRACTION  # of peak_flops that training reaches (median MFU)
    fraction_by_method: dict[str, float] = field(default_factory=dict)  # per method kind, when calibrated
    memory_scale: float = 1.0  # measured / predicted peak memory, when calibrated
    startup_s: float = DEFAULT_STARTUP_S  # per-cell time outside the training loop
    source: str = "defaults"  # "defaults" or what it was calibrated from

    @property
    def is_cpu(self) -> bool:
        return self.name.lower().startswith("cpu")

    @classmethod
    def for_device(cls, name: str, memory_bytes: int | None = None, dtype: str = "bf16",
                   **kwargs: Any) -> "DeviceProfile":
        """A GPU profile from its name (as torch / nvidia-smi print it): peak from harness.flops, memory if known."""
        if memory_bytes is None:
            low = " ".join(name.lower().replace("-", " ").split())
            memory_bytes = next((m for key, m in KNOWN_MEMORY if flops._matches(key, low)), None)
        return cls(name=name, memory_bytes=memory_bytes, peak_flops=flops.peak_flops(name, dtype), **kwargs)

    @classmethod
    def cpu(cls, flops_per_s: float | None, memory_bytes: int | None = None, **kwargs: Any) -> "DeviceProfile":
        """A CPU profile: `flops_per_s` is what training measurably reaches, so the achievable fraction is 1."""
        kwargs.setdefault("achievable_fraction", 1.0)
        kwargs.setdefault("startup_s", 10.0)
        return cls(name="cpu", memory_bytes=memory_bytes, peak_flops=flops_per_s, **kwargs)

    def fraction(self, method_kind: str | None = None) -> float:
        return self.fraction_by_method.get(method_kind or "", self.achievable_fraction)

    def throughput(self, method_kind: str | None = None) -> float | None:
        """FLOP/s that training of this method kind is expected to reach."""
        if not self.peak_flops:
            return None
        return self.peak_flops * self.fraction(method_kind)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceProfile":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def profile_from_environment(device: dict[str, Any] | None) -> DeviceProfile | None:
    """A profile from a result's `environment["device"]` (harness.environment.device_info): the GPU's name and
    memory, or a CPU profile (no peak FLOP/s: time is predicted only after `calibrate`)."""
    if not device:
        return None
    if device.get("type") == "cuda" and device.get("name"):
        return DeviceProfile.for_device(str(device["name"]), memory_bytes=device.get("memory_bytes"))
    if device.get("type") == "cpu":
        return DeviceProfile.cpu(None)
    return None


def detect_device_profile() -> DeviceProfile | None:
    """The first NVIDIA GPU's profile via NVML (no torch), or None where there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception:
        return None
    return DeviceProfile.for_device(name, memory_bytes=memory)


# ---------------------------------------------------------------------------------------------------- estimate

@dataclass
class Estimate:
    peak_memory_bytes: int | None  # predicted headline: CUDA max_reserved, or the process's peak RSS on CPU
    peak_allocated_bytes: int | None  # predicted torch max_allocated (the sum of `breakdown`'s torch terms)
    peak_process_bytes: int | None  # + CUDA context (what NVML reports for the process)
    breakdown: dict[str, int]  # bytes per component (see the module doc)
    params: dict[str, int]  # total, linear (matmul, incl. LM head), trainable, quantized
    flops_per_token: float | None  # model FLOPs per real token, as the cell's MFU counts them
    hardware_flops_per_position: float | None  # per computed position (padding included, unhalved attention)
    tokens_per_step: int | None  # positions computed per optimizer step: batch × T × accumulation
    real_tokens_per_step: float | None  # non-padding tokens per optimizer step
    steps_per_epoch: int | None
    time_per_step_s: float | None
    time_per_epoch_s: float | None
    cell_wall_s: float | None  # start-up + epochs × time per epoch (evaluation not included)
    fits: bool | None  # peak within the device's memory
    device: str | None
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _empty(reason: str, device: DeviceProfile | None) -> Estimate:
    return Estimate(None, None, None, {}, {}, None, None, None, None, None, None, None, None, None,
                    device.name if device else None, [reason])


def estimate_cell(cell: Any, device: DeviceProfile | None = None, *,
                  mean_tokens_per_example: float | None = None) -> Estimate:
    """Predict peak memory and time of one cell (a `CellConfig`). Never raises for an unknown architecture: the
    fields it cannot predict are None and `assumptions` says why.

    `device`: None predicts memory only (assuming a bf16-capable GPU when `precision` is auto) and no time.
    `mean_tokens_per_example`: the mean tokenized example length, if known; needed for times without packing and
    for epochs without a token budget.
    """
    notes: list[str] = []
    arch, why = architecture_of(cell.model)
    if arch is None:
        return _empty(why, device)
    notes.append(why)
    t = cell.train
    kind = cell.method.kind
    options = dict(cell.method.options or {})

    # precision: bytes per activation element
    on_cpu = device is not None and device.is_cpu
    precision = t.precision
    if precision == "auto":
        precision = "fp32" if on_cpu else "bf16"
        notes.append(f"precision auto -> {precision} ({'CPU' if on_cpu else 'assuming a bf16-capable GPU'})")
    a = 4 if precision == "fp32" else 2

    counts = count_parameters(arch)
    total = counts["total"]
    n_blocks = flops.block_linear_params(arch)
    n_lin = flops.linear_params(arch)
    dims = flops.arch_dims(arch)
    h, layers, vocab = dims["h"], dims["layers"], dims["vocab"]
    norms = total - n_blocks - counts["embedding"] - counts["lm_head"]  # RMSNorm weights (and any biases)
    embed_head = counts["embedding"] + counts["lm_head"]

    if kind == "base":
        w = (4 if precision == "fp32" else 2) * total
        notes.append("base row: weights only (evaluation, no training); activations of evaluation not modelled")
        return Estimate(int(w), int(w), int(w + CUDA_CONTEXT_BYTES), {"weights": int(w)},
                        {"total": total, "linear": n_lin, "trainable": 0, "quantized": 0}, None, None, None, None,
                        None, None, None, None, _fits(w, device), device.name if device else None, notes)

    lora_like = kind in ("lora", "qlora", "unsloth") or (kind not in ("full",) and "r" in options)
    if kind not in ("full", "lora", "qlora", "unsloth"):
        if not lora_like:
            return _empty(f"method kind {kind!r} is not modelled by the estimator", device)
        notes.append(f"method kind {kind!r} estimated as LoRA (it has an 'r' option)")

    # ---- which parameters train, in which dtype, and what sits on the residual stream
    quantized = 0
    targets: list[str] = []
    rank = 0
    dropout = 0.0
    if not lora_like:
        master = 4 if (precision == "fp32" or options.get("weights_dtype", "fp32") == "fp32") else 2
        trainable = total
        weights = master * total
        autocast_copies = 2 * n_lin if (master == 4 and a == 2) else 0
        grad_bytes = master
        residual = master if a == 2 else 4
        norms_train = True
        what = ("fp32 master weights with bf16 autocast" if master == 4 and a == 2
                else "bf16 weights" if master == 2 else "fp32 weights")
        notes.append(f"full fine-tuning: {what} ({master} B/param weights and gradients)")
    else:
        rank = int(options.get("r", 16))
        tm = options.get("target_modules", "all-linear")
        targets = TARGET_SETS[tm] if isinstance(tm, str) else list(tm)
        dora = bool(options.get("use_dora", False))
        try:
            trainable = flops.lora_trainable_params(arch, rank, targets, dora=dora)
        except ValueError as exc:
            return _empty(f"cannot count adapter parameters: {exc}", device)
        dropout = float(options.get("dropout", 0.05 if kind != "unsloth" else 0.0))
        four_bit = kind == "qlora" or (kind == "unsloth" and options.get("load_in_4bit", True))
        frozen_bytes = 4 if precision == "fp32" else 2
        if four_bit:
            dq = options.get("double_quant", True)
            per = NF4_BYTES + (ABSMAX_DOUBLE_QUANT_BYTES if dq else ABSMAX_BYTES)
            quantized = n_blocks
            # peft's prepare_model_for_kbit_training (the qlora method) upcasts every non-4-bit parameter to fp32;
            # Unsloth keeps them in the compute dtype.
            other = 4 if kind == "qlora" else frozen_bytes
            weights = n_blocks * per + (embed_head + norms) * other
            residual = 4 if kind == "qlora" else a
            notes.append(f"4-bit NF4 blocks ({per:.4f} B/param{' with double quantisation' if dq else ''}); "
                         f"embeddings/head/norms {other} B/param"
                         + (" (peft prepare_model_for_kbit_training upcasts them to fp32)" if kind == "qlora" else ""))
        else:
            weights = frozen_bytes * total
            residual = a
        weights += 4 * trainable  # adapters in fp32 (peft autocast_adapter_dtype=True)
        autocast_copies = 2 * trainable if a == 2 else 0
        if kind == "qlora" and a == 2:
            autocast_copies += 2 * counts["embedding"]  # the fp32 LM head is cast to bf16 under autocast
        grad_bytes = 4
        norms_train = False
        notes.append(f"LoRA r={rank} on {','.join(targets)}: {trainable:,} trainable fp32 parameters")

    optimizer = t.optimizer or _default_optimizer(kind)
    grads = grad_bytes * trainable
    opt_state_bytes = grad_bytes  # AdamW states live in the parameter dtype
    if optimizer == "adamw":
        optim = 2 * opt_state_bytes * trainable
    elif optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        optim = (2 + 2 * 4 / 256) * trainable
        if optimizer == "paged_adamw_8bit":
            notes.append("paged 8-bit AdamW: large state tensors live in CUDA managed memory, which torch's "
                         "max_allocated does not see (NVML does)")
    elif optimizer == "sgd":
        optim = opt_state_bytes * trainable
    else:
        optim = 2 * opt_state_bytes * trainable
        notes.append(f"optimizer {optimizer!r} costed as AdamW")
    step_temp = 4 * trainable if optimizer == "adamw" else 0  # foreach AdamW: one fp32 temporary per parameter

    # ---- activations
    b, T = t.batch_size, t.max_seq_length
    positions = b * T  # memory: the longest possible batch (packed rows are full; padded rows are T long)
    gc = bool(t.gradient_checkpointing)
    unsloth_gc = kind == "unsloth" and options.get("gradient_checkpointing", "unsloth") not in (False, None)
    if kind == "unsloth":
        gc = unsloth_gc
    per_layer = _layer_activation_bytes(dims, a=a, residual=residual, norms_train=norms_train,
                                        full=not lora_like, targets=targets, rank=rank, dropout=dropout,
                                        attn=t.attn_implementation, seq_len=T,
                                        mask_bytes=4 if on_cpu else 1)
    one_layer = per_layer * positions
    if gc:
        kept = 0 if (kind == "unsloth" and options.get("gradient_checkpointing", "unsloth") == "unsloth") else 1
        activations = layers * positions * residual * h * kept + one_layer
        notes.append("gradient checkpointing: block inputs kept"
                     + (" (offloaded to host memory by Unsloth)" if not kept else "") + " + one block recomputed")
    else:
        activations = layers * one_layer
    activations += b * T * T  # the bool 4-D mask (packing: block-diagonal; padding: causal & padding)
    activations += positions * h * residual * 2  # embedding output and final norm input
    if t.attn_implementation == "eager":
        notes.append("eager attention: fp32 softmax probabilities kept for every layer")
    if t.liger_kernel:
        logits = 2 * 4 * positions * h
        notes.append("Liger fused linear cross-entropy: logits never materialised")
    elif kind == "unsloth":
        logits = UNSLOTH_LOGITS_BYTES * positions * vocab
        notes.append("Unsloth's fused cross-entropy: ≈ bf16 logits, gradient in place")
    else:
        logits = LOGITS_BYTES * positions * vocab
    accumulating = t.gradient_accumulation_steps > 1
    backward_peak = activations + logits + autocast_copies + (grads if accumulating else 0)
    step_peak = grads + step_temp
    allocated = weights + optim + max(backward_peak, step_peak) + WORKSPACE_BYTES
    scale = device.memory_scale if device else 1.0
    allocated *= scale
    if on_cpu:
        headline = allocated + CPU_PROCESS_BASELINE_BYTES
        process = headline
    else:
        headline = allocated * (1 + RESERVED_SLACK)
        process = headline + CUDA_CONTEXT_BYTES
    breakdown = {"weights": weights, "autocast_weight_copies": autocast_copies, "gradients": grads,
                 "optimizer": optim, "optimizer_step_temporary": step_temp, "activations": activations,
                 "logits": logits, "workspace": WORKSPACE_BYTES,
                 "allocator_slack": 0 if on_cpu else headline - allocated,
                 "cuda_context": 0 if on_cpu else CUDA_CONTEXT_BYTES,
                 "process_baseline": CPU_PROCESS_BASELINE_BYTES if on_cpu else 0}
    breakdown = {k: int(round(v)) for k, v in breakdown.items()}
    peak_form = "gradients + step temporary" if step_peak > backward_peak else "activations + logits"
    notes.append(f"peak = weights + optimizer + {peak_form}" + (f"; × memory_scale {scale:.3g}" if scale != 1 else ""))

    # ---- FLOPs and time
    seq_flops = T
    mfu_flops = flops.training_flops_per_token(arch, trainable_params=0 if not lora_like else trainable,
                                               frozen_base=lora_like, gradient_checkpointing=gc, seq_len=seq_flops)
    ga = t.gradient_accumulation_steps
    computed_T = T
    if t.packing:
        fill = (max(0.5, 1 - mean_tokens_per_example / (2 * T)) if mean_tokens_per_example
                else PACKING_FILL_UNKNOWN)
        real_per_micro: float | None = b * T * fill
        if not mean_tokens_per_example:
            notes.append(f"packed rows assumed {PACKING_FILL_UNKNOWN:.0%} full")
    else:
        if mean_tokens_per_example:
            real_per_micro = b * min(mean_tokens_per_example, T)
            if not t.pad_to_max_length:
                computed_T = int(min(T, math.ceil(DYNAMIC_PAD_FACTOR * mean_tokens_per_example)))
                notes.append(f"dynamic padding: rows ≈ {DYNAMIC_PAD_FACTOR} × the mean example length")
        else:
            real_per_micro = None
            notes.append("padding without a known mean example length: real tokens per step unknown")
    hw_flops = flops.training_flops_per_token(arch, trainable_params=0 if not lora_like else trainable,
                                              frozen_base=lora_like, gradient_checkpointing=gc, seq_len=computed_T,
                                              causal=False)
    tokens_per_step = b * computed_T * ga
    real_per_step = real_per_micro * ga if real_per_micro is not None else None

    epoch_tokens: float | None = None
    data_tokens = (t.max_examples * mean_tokens_per_example
                   if t.max_examples and mean_tokens_per_example else None)
    if t.token_budget:
        epoch_tokens = float(t.token_budget) if data_tokens is None else min(float(t.token_budget), data_tokens)
    elif data_tokens is not None:
        epoch_tokens = data_tokens
    else:
        notes.append("tokens per epoch unknown (no train.token_budget, or max_examples without a mean length)")
    steps = None
    if epoch_tokens is not None and real_per_step:
        steps = max(1, math.ceil(epoch_tokens / real_per_step))
        if t.max_steps:
            steps = min(steps, t.max_steps)
    elif t.max_steps and real_per_step is None and epoch_tokens is None:
        steps = t.max_steps

    throughput = device.throughput(kind) if device else None
    time_step = time_epoch = wall = None
    if throughput:
        time_step = tokens_per_step * hw_flops / throughput
        if steps is not None:
            time_epoch = steps * time_step
            extra = STARTUP_EXTRA_S.get(kind, 0.0) + (STARTUP_EXTRA_S["torch_compile"] if t.torch_compile else 0.0)
            wall = device.startup_s + extra + max(cell.epochs, 1) * time_epoch
        src = device.source
        notes.append(f"throughput {throughput / 1e12:.3g} TFLOP/s = {device.fraction(kind):.2f} of "
                     f"{device.peak_flops / 1e12:.4g} ({src})")
    elif device is None:
        notes.append("no device profile: time not predicted")
    else:
        notes.append(f"device {device.name!r} has no known peak FLOP/s: time not predicted")

    return Estimate(
        peak_memory_bytes=int(headline), peak_allocated_bytes=int(allocated), peak_process_bytes=int(process),
        breakdown=breakdown,
        params={"total": total, "linear": n_lin, "trainable": trainable, "quantized": quantized},
        flops_per_token=mfu_flops, hardware_flops_per_position=hw_flops, tokens_per_step=tokens_per_step,
        real_tokens_per_step=real_per_step, steps_per_epoch=steps, time_per_step_s=time_step,
        time_per_epoch_s=time_epoch, cell_wall_s=wall, fits=_fits(process, device),
        device=device.name if device else None, assumptions=notes)


def _fits(process_bytes: float, device: DeviceProfile | None) -> bool | None:
    if device is None or not device.memory_bytes:
        return None
    return process_bytes <= device.memory_bytes


def _default_optimizer(kind: str) -> str:
    try:
        from harness.methods.base import methods

        return methods()[kind].default_optimizer
    except Exception:
        return DEFAULT_OPTIMIZER.get(kind, "adamw")


def _layer_activation_bytes(d: dict[str, int], *, a: int, residual: int, norms_train: bool, full: bool,
                            targets: list[str], rank: int, dropout: float, attn: str, seq_len: int,
                            mask_bytes: int = 1) -> float:
    """Bytes saved for the backward per token by one decoder block (see the module doc)."""
    h, i, q, heads = d["h"], d["i"], d["q_dim"], d["heads"]
    copies = residual > a  # under autocast an fp32 input is cast separately by every consumer
    norm = 2 * (4 * h + (residual * h if norms_train else 0))
    # inputs of the projections, saved for weight (or adapter) gradients; a frozen base layer (plain or 4-bit)
    # saves none, its adapter's lora_A does
    shapes = {"q_proj": (h, q), "k_proj": (h, d["kv_dim"]), "v_proj": (h, d["kv_dim"]), "o_proj": (q, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    consumers = {"attn_in": (["q_proj", "k_proj", "v_proj"], h), "o_in": (["o_proj"], q),
                 "mlp_in": (["gate_proj", "up_proj"], h), "down_in": (["down_proj"], i)}
    inputs = 0.0
    lora = 0.0
    if full or (dropout == 0 and a == 4):  # inputs shared by the consumers of one tensor (cast per consumer)
        for mods, dim in consumers.values():
            users = len(mods) if full else sum(1 for m in mods if m in targets)
            if users:
                inputs += a * dim * (users if copies else 1)
    else:  # peft casts x to the fp32 adapter dtype per adapter, dropout (mask) and autocast's bf16 copy for lora_A
        lora += sum((a + (mask_bytes if dropout > 0 else 0)) * shapes[m][0] for m in targets)
    if not full:
        lora += a * rank * len(targets)  # lora_A output, input of lora_B
    sdpa = a * (q + 2 * q + q) + 4 * heads  # q, k and v expanded to every head, output; fp32 logsumexp
    if attn == "eager":
        sdpa += heads * seq_len * (4 + (a if a != 4 else 0))
    mlp = a * 3 * i
    return norm + inputs + sdpa + mlp + lora


# ---------------------------------------------------------------------------------------------------- architecture

def architecture_of(model: Any) -> tuple[dict[str, Any] | None, str]:
    """(HF-style config dict, how it was found) for a ModelSpec; (None, why) when it cannot be known offline."""
    src = model.source
    if src == "synthetic":
        return architecture_config(model.architecture, model.config_overrides), \
            f"architecture {model.architecture} (synthetic){' with overrides' if model.config_overrides else ''}"
    if src == "local":
        cfg_path = Path(os.path.expanduser(model.path or "")) / "config.json"
        if cfg_path.is_file():
            return _llama_like(_read_json(str(cfg_path)), f"config.json of {model.path}")
        return None, f"no config.json in {model.path}: architecture unknown"
    if src == "hub":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model.hub_id, "config.json", revision=model.revision)
            if isinstance(cached, str) and os.path.isfile(cached):
                return _llama_like(_read_json(cached), f"cached config.json of {model.hub_id}")
        except Exception:
            pass
        known = KNOWN_HUB_IDS.get((model.hub_id or "").lower())
        if known:
            return ARCHITECTURES[known], f"architecture of {model.hub_id} from the named architectures ({known})"
        return None, f"hub model {model.hub_id} not in the local cache and not a named architecture"
    if src == "gguf":
        try:
            from harness.models import gguf_location

            folder, name = gguf_location(model)
            return gguf_architecture(str(folder / name)), f"GGUF header of {name}"
        except Exception as exc:
            low = (model.gguf_file or model.path or "").lower()
            for frag, known in KNOWN_GGUF.items():
                if frag in low:
                    return ARCHITECTURES[known], \
                        f"GGUF header unreadable ({type(exc).__name__}); known sizes of {known}"
            return None, f"GGUF header unreadable: {exc}"
    return None, f"model source {src!r} not modelled"


@lru_cache(maxsize=64)
def _read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _llama_like(cfg: dict[str, Any], where: str) -> tuple[dict[str, Any] | None, str]:
    cfg = cfg.get("text_config") or cfg
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in needed if k not in cfg]
    if missing:
        return None, f"{where}: model type {cfg.get('model_type')!r} lacks {missing}: architecture not modelled"
    note = where
    if cfg.get("model_type") not in LLAMA_LIKE:
        note += f" (model type {cfg.get('model_type')!r} costed as a Llama-style block)"
    return dict(cfg), note


@lru_cache(maxsize=16)
def gguf_architecture(path: str) -> dict[str, Any]:
    """An HF-style config dict from a GGUF file's header (gguf package; no weights are read)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = value("general.architecture")
    if arch is None:
        raise ValueError(f"{path}: no general.architecture in the GGUF header")
    heads = int(value(f"{arch}.attention.head_count"))
    h = int(value(f"{arch}.embedding_length"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    names = {t.name for t in reader.tensors}
    if vocab is None:
        raise ValueError(f"{path}: vocabulary size not in the header")
    cfg = {"model_type": arch, "hidden_size": h, "intermediate_size": int(value(f"{arch}.feed_forward_length")),
           "num_hidden_layers": int(value(f"{arch}.block_count")), "num_attention_heads": heads,
           "num_key_value_heads": int(value(f"{arch}.attention.head_count_kv", heads)),
           "head_dim": int(value(f"{arch}.attention.key_length", h // heads)), "vocab_size": int(vocab),
           "tie_word_embeddings": "output.weight" not in names}
    return cfg


def flops_for_cell(cell: Any) -> float | None:
    """Model FLOPs per real token of a cell (what its MFU counts), from the configuration alone."""
    return estimate_cell(cell).flops_per_token


# ---------------------------------------------------------------------------------------------------- calibration

def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def achieved_flops(result: Any) -> tuple[str, float, float | None] | None:
    """(method kind, achieved FLOP/s, device peak or None) of one successful packed cell, or None.

    Achieved FLOP/s = computed positions per second (real tokens/s ÷ (1 − padding share)) × hardware FLOPs per
    position, the same count the time prediction divides by, so a fitted fraction predicts times consistently."""
    from harness.config import CellConfig

    if getattr(result, "status", None) != "success":
        return None
    train = _get(result.metrics, "train") or {}
    tps = train.get("tokens_per_s")
    if not tps:
        return None
    try:
        cfg = CellConfig.model_validate(result.config)
    except Exception:
        return None
    if not cfg.train.packing:
        return None  # padding waste is modelled separately; fit the throughput on packed rows only
    est = estimate_cell(cfg)
    if est.hardware_flops_per_position is None:
        return None
    padding = train.get("padding_fraction") or 0.0
    positions_per_s = tps / max(1e-9, 1 - padding)
    return cfg.method.kind, positions_per_s * est.hardware_flops_per_position, train.get("peak_flops")


def _device_name(result: Any) -> str | None:
    dev = _get(result.environment, "device") or {}
    if dev.get("name"):
        return str(dev["name"])
    return "cpu" if dev.get("type") == "cpu" else None


def calibrate(results: Iterable[Any], device: DeviceProfile | None = None) -> DeviceProfile:
    """A device profile fitted to measured cells (`CellResult`s from one device).

    - achievable fraction: median of achieved ÷ peak FLOP/s over successful packed cells, overall and per method
      kind (on a CPU, which has no data-sheet peak, `peak_flops` becomes the median achieved FLOP/s, fraction 1);
    - memory scale: median of measured headline memory ÷ predicted (unscaled) headline;
    - start-up: median of the cell's wall time outside training and evaluation.
    Failed cells and cells without the numbers are ignored; with nothing usable the defaults stay."""
    from harness.config import CellConfig

    results = list(results)
    name = device.name if device else next((n for n in map(_device_name, results) if n), None)
    if device is not None:
        base = DeviceProfile.from_dict(device.as_dict())
    elif name and name.lower() != "cpu":
        base = DeviceProfile.for_device(name)
    else:
        base = DeviceProfile.cpu(None)
    unscaled = DeviceProfile.from_dict({**base.as_dict(), "memory_scale": 1.0})
    achieved: dict[str, list[float]] = {}
    peaks: list[float] = []
    scales: list[float] = []
    startups: list[float] = []
    for r in results:
        got = achieved_flops(r)
        if got:
            achieved.setdefault(got[0], []).append(got[1])
            if got[2]:
                peaks.append(got[2])
        if getattr(r, "status", None) != "success":
            continue
        measured = _get(r.metrics, "memory", "headline_bytes")
        try:
            predicted = estimate_cell(CellConfig.model_validate(r.config), unscaled).peak_memory_bytes
        except Exception:
            predicted = None
        if measured and predicted:
            scales.append(measured / predicted)
        wall, train_s = _get(r.timings, "wall_s"), _get(r.timings, "train_s")
        if wall and train_s is not None:
            startups.append(max(0.0, wall - train_s - (_get(r.timings, "eval_s") or 0.0)))
    profile = base
    all_achieved = [x for xs in achieved.values() for x in xs]
    if all_achieved:
        peak = profile.peak_flops or (statistics.median(peaks) if peaks else None)
        if peak is None:  # CPU: the measured throughput is the peak
            peak = statistics.median(all_achieved)
        profile.peak_flops = peak
        profile.achievable_fraction = min(1.0, statistics.median(all_achieved) / peak)
        profile.fraction_by_method = {k: min(1.0, statistics.median(v) / peak) for k, v in sorted(achieved.items())}
    if scales:
        profile.memory_scale = statistics.median(scales)
    if startups:
        profile.startup_s = statistics.median(startups)
    profile.source = (f"calibrated on {name or 'unknown device'}: throughput from {len(all_achieved)} packed cells, "
                      f"memory from {len(scales)}, start-up from {len(startups)}")
    return profile
