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

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import flops
from harness.models.architectures import Architecture

GiB = 1024**3
MiB = 1024**2

# Guesses, named so they can be checked against measurements (and are, by `calibrate`).
DEFAULT_GPU_FRACTION = 0.4
DEFAULT_STARTUP_S = 20.0  # process start, imports, model materialise/load, data cache hit, first-step warm-up
TORCH_COMPILE_STARTUP_S = 60.0  # compiling the forward on the first steps
CUDA_CONTEXT_BYTES = 600 * MiB
CPU_PROCESS_BASELINE_BYTES = 1 * GiB  # python + torch + transformers resident before any tensor
WORKSPACE_BYTES = 64 * MiB  # cuBLAS workspace and small buffers
RESERVED_SLACK = 0.07  # caching-allocator fragmentation: max_reserved / max_allocated - 1
LOGITS_BYTES = 12.0  # per batch·T·vocab element, transformers' ForCausalLMLoss (see module doc)
PACKING_FILL_UNKNOWN = 0.95  # share of a packed row that holds real tokens when the example length is unknown
DYNAMIC_PAD_FACTOR = 1.5  # padded to the longest row of the batch: ≈ 1.5 × the mean example length

# Device memory as torch reports it (total_memory), for profiles built from a name alone.
KNOWN_MEMORY = [
    ("h200 nvl", 141 * 10**9),
    ("h200", 150_754_820_096),
    ("gh200", 101_468_602_368),
    ("h100 nvl", 99_857_989_632),
    ("h100 pcie", 85_045_346_304),
    ("h100", 85_520_809_984),
    ("a100 80gb", 85_097_971_712),
    ("a100", 42_298_834_944),
    ("l40s", 47_697_362_944),
    ("a10g", 23_836_098_560),
    ("l4", 23_580_639_232),
    ("rtx 4090", 25_393_692_672),
]


# ---------------------------------------------------------------------------------------------------- devices


@dataclass
class DeviceProfile:
    """What the estimator knows about a device: its memory, its peak and how much of it training reaches."""

    name: str
    memory_bytes: int | None = None
    peak_flops: float | None = None  # dense peak at the compute dtype; for a CPU, a measured FLOP/s
    achievable_fraction: float = DEFAULT_GPU_FRACTION  # of peak_flops that training reaches (median MFU)
    fraction_by_method: dict[str, float] = field(default_factory=dict)  # per method cost key, when calibrated
    memory_scale: float = 1.0  # measured / predicted peak memory, when calibrated
    startup_s: float = DEFAULT_STARTUP_S  # per-cell time outside the training loop
    source: str = "defaults"  # "defaults" or what it was calibrated from

    @property
    def is_cpu(self) -> bool:
        return self.name.lower().startswith("cpu")

    @classmethod
    def for_device(
        cls, name: str, memory_bytes: int | None = None, dtype: str = "bf16", **kwargs: Any
    ) -> "DeviceProfile":
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

    def fraction(self, cost_key: str | None = None) -> float:
        """The calibrated fraction of a method's cost key (`peft:VERA`), else of its kind (`peft`), else overall."""
        key = cost_key or ""
        return self.fraction_by_method.get(
            key, self.fraction_by_method.get(key.split(":")[0], self.achievable_fraction)
        )

    def throughput(self, cost_key: str | None = None) -> float | None:
        """FLOP/s that training of this method (its `Method.cost_key`) is expected to reach."""
        if not self.peak_flops:
            return None
        return self.peak_flops * self.fraction(cost_key)

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


def _partial(device: DeviceProfile | None, notes: list[str], **known: Any) -> Estimate:
    """An estimate of what can be predicted (`known`), every other field None."""
    fields = {f: None for f in Estimate.__dataclass_fields__ if f not in ("breakdown", "params", "assumptions")}
    return Estimate(
        **{
            **fields,
            "breakdown": {},
            "params": {},
            **known,
            "device": device.name if device else None,
            "assumptions": notes,
        }
    )


def _empty(reason: str, device: DeviceProfile | None) -> Estimate:
    return _partial(device, [reason])


def estimate_cell(
    cell: Any, device: DeviceProfile | None = None, *, mean_tokens_per_example: float | None = None
) -> Estimate:
    """Predict peak memory and time of one cell (a `CellConfig`). Never raises for an unknown architecture or a
    method without a cost model: the fields it cannot predict are None and `assumptions` says why.

    `device`: None predicts memory only (assuming a bf16-capable GPU when `precision` is auto) and no time.
    `mean_tokens_per_example`: the mean tokenized example length, if known; needed for times without packing and
    for epochs without a token budget.
    """
    from harness.methods.base import method_class
    from harness.models.sources import architecture_of

    arch, why = architecture_of(cell.model)
    if arch is None:
        return _empty(why, device)
    notes = [why]
    t = cell.train
    on_cpu = device is not None and device.is_cpu
    precision = t.precision
    if precision == "auto":
        precision = "fp32" if on_cpu else "bf16"
        notes.append(f"precision auto -> {precision} ({'CPU' if on_cpu else 'assuming a bf16-capable GPU'})")
    a = 4 if precision == "fp32" else 2  # bytes per activation element
    total = arch.params.total
    cls = method_class(cell.method.kind)
    if cls is None:
        return _empty(f"method kind {cell.method.kind!r} is not registered", device)
    method = cls()
    params = {"total": total, "linear": arch.linear, "trainable": 0, "quantized": 0}
    if not method.trains:
        w = a * total
        notes.append("untrained row: weights only (evaluation, no training); activations of evaluation not modelled")
        return _partial(
            device,
            notes,
            peak_memory_bytes=int(w),
            peak_allocated_bytes=int(w),
            peak_process_bytes=int(w + CUDA_CONTEXT_BYTES),
            breakdown={"weights": int(w)},
            params=params,
            fits=_fits(w, device),
        )
    options = method.Options.model_construct(**cell.method.options)  # validated when the matrix was loaded
    try:
        cost = method.training_cost(arch, options, precision=precision)
    except (ValueError, ImportError) as exc:
        return _empty(f"method {cell.method.kind!r}: {exc}", device)
    notes += cost.notes
    params.update(trainable=cost.trainable_params, quantized=cost.quantized_params)
    gc, keep_block_inputs = _checkpointing(cost, t.gradient_checkpointing)
    memory = _memory(
        arch,
        cost,
        t,
        a=a,
        gc=gc,
        keep_block_inputs=keep_block_inputs,
        device=device,
        optimizer=t.optimizer or method.default_optimizer,
        notes=notes,
    )
    flops_per_token = flops.training_flops_per_token(
        arch,
        trainable_params=cost.trainable_params if cost.frozen_base else 0,
        frozen_base=cost.frozen_base,
        gradient_checkpointing=gc,
        seq_len=t.max_seq_length,
    )
    timing = _timing(
        arch,
        cost,
        cell,
        method.cost_key(options),
        device,
        gc=gc,
        mean_tokens_per_example=mean_tokens_per_example,
        first_build_s=_first_build_s(cell, device),
        notes=notes,
    )
    return Estimate(
        peak_memory_bytes=int(memory["headline"]),
        peak_allocated_bytes=int(memory["allocated"]),
        peak_process_bytes=int(memory["process"]),
        breakdown=memory["breakdown"],
        params=params,
        flops_per_token=flops_per_token,
        fits=_fits(memory["process"], device),
        device=device.name if device else None,
        assumptions=notes,
        **timing,
    )


def _first_build_s(cell: Any, device: DeviceProfile | None) -> float:
    """Seconds of materialising the cell's model into its cache (a synthetic model's first build, a GGUF file's
    conversion) when the cache has no copy yet; 0 when it has one or the cell names no cache folder."""
    from pathlib import Path

    from harness.models.sources import source_for

    cache = getattr(getattr(cell, "runtime", None), "cache_dir", "")
    if not cache or cache == ".":
        return 0.0
    try:
        return source_for(cell.model.source).first_build_s(cell.model, Path(cache), not (device and device.is_cpu))
    except Exception:  # a prediction must never fail the plan
        return 0.0


def _checkpointing(cost: Any, train_flag: bool) -> tuple[bool, bool]:
    """(checkpointing on, block inputs kept on the device) as the method or train.gradient_checkpointing decides."""
    mode = cost.checkpointing if cost.checkpointing != "train" else ("blocks" if train_flag else "none")
    return mode != "none", mode != "offloaded"


def _optimizer_bytes(optimizer: Any, trainable: int, state_bytes: int, notes: list[str]) -> tuple[float, float]:
    """(optimizer state bytes, the step's temporary bytes) for `trainable` parameters, as the optimizer component
    (harness/optimizers/) costs itself."""
    from harness.optimizers import REGISTRY
    from harness.plugins import ref_parts

    name, given = ref_parts(optimizer)
    cls = REGISTRY.find(name)
    if cls is None:
        notes.append(f"optimizer {name!r} is not registered here: costed as AdamW")
        return 2 * state_bytes * trainable, 4.0 * trainable
    states, temporary, note = cls().memory(trainable, state_bytes, cls.Options.model_construct(**given))
    notes.append(note)
    return states, temporary


def _memory(
    arch: Architecture,
    cost: Any,
    t: Any,
    *,
    a: int,
    gc: bool,
    keep_block_inputs: bool,
    device: DeviceProfile | None,
    optimizer: Any,
    notes: list[str],
) -> dict[str, Any]:
    """Peak memory of training (see the module doc): headline, torch-allocated, process, and the breakdown."""
    on_cpu = device is not None and device.is_cpu
    trainable = cost.trainable_params
    grads = cost.state_bytes_per_param * trainable
    optim, step_temp = _optimizer_bytes(optimizer, trainable, cost.state_bytes_per_param, notes)
    b, T = t.batch_size, t.max_seq_length
    positions = b * T  # the longest possible batch (packed rows are full; padded rows are T long)
    adapter = cost.adapter
    from harness.attention import planned_attention

    attention = planned_attention(t.attn_implementation, packing=t.packing, gpu=not on_cpu)
    per_layer = _layer_activation_bytes(
        arch,
        a=a,
        residual=cost.residual_bytes,
        norms_train=cost.norms_train,
        full=not cost.frozen_base,
        targets=list(adapter.targets) if adapter else [],
        rank=adapter.rank if adapter else 0,
        dropout=adapter.dropout if adapter else 0.0,
        attn=attention.implementation,
        seq_len=T,
        mask_bytes=4 if on_cpu else 1,
    )
    if gc:
        kept = arch.layers * positions * cost.residual_bytes * arch.hidden if keep_block_inputs else 0
        activations = kept + per_layer * positions
        notes.append(
            "gradient checkpointing: block inputs kept"
            + ("" if keep_block_inputs else " (offloaded to host memory by Unsloth)")
            + " + one block recomputed"
        )
    else:
        activations = arch.layers * per_layer * positions
    if cost.packed_layout == "flattened" and t.packing:  # the method's own block-diagonal mask over B·T positions
        activations += positions * positions
        notes.append("packed rows flattened into one row (the method's own attention): a (B·T)² bool mask")
    elif attention.dense_mask:  # the bool 4-D mask (packing: block-diagonal; padding: causal & padding)
        activations += b * T * T
    notes.append(f"attention: {attention.implementation} ({attention.reason})")
    activations += positions * arch.hidden * cost.residual_bytes * 2  # embedding output and final norm input
    if t.attn_implementation == "eager":
        notes.append("eager attention: fp32 softmax probabilities kept for every layer")
    if t.liger_kernel:
        logits = 2 * 4 * positions * arch.hidden
        notes.append("Liger fused linear cross-entropy: logits never materialised")
    else:
        logits = (cost.logits_bytes_per_element or LOGITS_BYTES) * positions * arch.vocab
    accumulating = t.gradient_accumulation_steps > 1
    backward_peak = activations + logits + cost.autocast_copy_bytes + (grads if accumulating else 0)
    step_peak = grads + step_temp
    scale = device.memory_scale if device else 1.0
    allocated = (cost.weights_bytes + optim + max(backward_peak, step_peak) + WORKSPACE_BYTES) * scale
    headline = allocated + CPU_PROCESS_BASELINE_BYTES if on_cpu else allocated * (1 + RESERVED_SLACK)
    process = headline if on_cpu else headline + CUDA_CONTEXT_BYTES
    breakdown = {
        "weights": cost.weights_bytes,
        "autocast_weight_copies": cost.autocast_copy_bytes,
        "gradients": grads,
        "optimizer": optim,
        "optimizer_step_temporary": step_temp,
        "activations": activations,
        "logits": logits,
        "workspace": WORKSPACE_BYTES,
        "allocator_slack": 0 if on_cpu else headline - allocated,
        "cuda_context": 0 if on_cpu else CUDA_CONTEXT_BYTES,
        "process_baseline": CPU_PROCESS_BASELINE_BYTES if on_cpu else 0,
    }
    peak_form = "gradients + step temporary" if step_peak > backward_peak else "activations + logits"
    notes.append(f"peak = weights + optimizer + {peak_form}" + (f"; × memory_scale {scale:.3g}" if scale != 1 else ""))
    return {
        "headline": headline,
        "allocated": allocated,
        "process": process,
        "breakdown": {k: int(round(v)) for k, v in breakdown.items()},
    }


def _timing(
    arch: Architecture,
    cost: Any,
    cell: Any,
    cost_key: str,
    device: DeviceProfile | None,
    *,
    gc: bool,
    mean_tokens_per_example: float | None,
    first_build_s: float,
    notes: list[str],
) -> dict[str, Any]:
    """Positions and FLOPs per step, steps per epoch, and the predicted times (see the module doc)."""
    t = cell.train
    b, T, ga = t.batch_size, t.max_seq_length, t.gradient_accumulation_steps
    mean = mean_tokens_per_example
    computed_T = T
    real_per_micro: float | None
    if t.packing:
        real_per_micro = b * T * (max(0.5, 1 - mean / (2 * T)) if mean else PACKING_FILL_UNKNOWN)
        if not mean:
            notes.append(f"packed rows assumed {PACKING_FILL_UNKNOWN:.0%} full")
    elif mean:
        real_per_micro = b * min(mean, T)
        if not t.pad_to_max_length:
            computed_T = int(min(T, math.ceil(DYNAMIC_PAD_FACTOR * mean)))
            notes.append(f"dynamic padding: rows ≈ {DYNAMIC_PAD_FACTOR} × the mean example length")
    else:
        real_per_micro = None
        notes.append("padding without a known mean example length: real tokens per step unknown")
    frozen = cost.frozen_base
    hw_flops = flops.training_flops_per_token(
        arch,
        trainable_params=cost.trainable_params if frozen else 0,
        frozen_base=frozen,
        gradient_checkpointing=gc,
        seq_len=computed_T,
        causal=False,
    )
    tokens_per_step = b * computed_T * ga
    real_per_step = real_per_micro * ga if real_per_micro is not None else None
    data_tokens = t.max_examples * mean if t.max_examples and mean else None
    epoch_tokens: float | None = None
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
    throughput = device.throughput(cost_key) if device else None
    time_step = time_epoch = wall = None
    if throughput:
        time_step = tokens_per_step * hw_flops / throughput
        if steps is not None:
            time_epoch = steps * time_step
            extra = cost.startup_extra_s + (TORCH_COMPILE_STARTUP_S if t.torch_compile else 0.0) + first_build_s
            wall = device.startup_s + extra + max(cell.epochs, 1) * time_epoch
            if first_build_s:
                notes.append(f"first build of the model into the cache: ≈ {first_build_s:.0f} s (once per machine)")
        notes.append(
            f"throughput {throughput / 1e12:.3g} TFLOP/s = {device.fraction(cost_key):.2f} of "
            f"{device.peak_flops / 1e12:.4g} ({device.source})"
        )
    elif device is None:
        notes.append("no device profile: time not predicted")
    else:
        notes.append(f"device {device.name!r} has no known peak FLOP/s: time not predicted")
    return {
        "hardware_flops_per_position": hw_flops,
        "tokens_per_step": tokens_per_step,
        "real_tokens_per_step": real_per_step,
        "steps_per_epoch": steps,
        "time_per_step_s": time_step,
        "time_per_epoch_s": time_epoch,
        "cell_wall_s": wall,
    }


def _fits(process_bytes: float, device: DeviceProfile | None) -> bool | None:
    if device is None or not device.memory_bytes:
        return None
    return process_bytes <= device.memory_bytes


def _layer_activation_bytes(
    arch: Architecture,
    *,
    a: int,
    residual: int,
    norms_train: bool,
    full: bool,
    targets: list[str],
    rank: int,
    dropout: float,
    attn: str,
    seq_len: int,
    mask_bytes: int = 1,
) -> float:
    """Bytes saved for the backward per token by one decoder block (see the module doc)."""
    h, i, q, heads = arch.hidden, arch.intermediate, arch.q_dim, arch.heads
    copies = residual > a  # under autocast an fp32 input is cast separately by every consumer
    norm = 2 * (4 * h + (residual * h if norms_train else 0))
    # inputs of the projections, saved for weight (or adapter) gradients; a frozen base layer (plain or 4-bit)
    # saves none, its adapter's lora_A does
    shapes = arch.linear_shapes()
    consumers = {
        "attn_in": (["q_proj", "k_proj", "v_proj"], h),
        "o_in": (["o_proj"], q),
        "mlp_in": (["gate_proj", "up_proj"], h),
        "down_in": (["down_proj"], i),
    }
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


# ---------------------------------------------------------------------------------------------------- calibration


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def achieved_flops(result: Any) -> tuple[str, float, float | None] | None:
    """(cost key, achieved FLOP/s, device peak or None) of one successful packed cell, or None.

    Achieved FLOP/s = computed positions per second (real tokens/s ÷ (1 − padding share)) × hardware FLOPs per
    position, the same count the time prediction divides by, so a fitted fraction predicts times consistently."""
    from harness.config import CellConfig

    if getattr(result, "status", None) != "success":
        return None
    train = _get(result.metrics, "train") or {}
    # steady-state tokens/s; records from before steady-state timing have the whole-run figure only
    tps = train.get("tokens_per_s") or train.get("wall_tokens_per_s")
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
    return cost_key(cfg), positions_per_s * est.hardware_flops_per_position, train.get("peak_flops")


def cost_key(cfg: Any) -> str:
    """The key a cell's throughput is calibrated under (`Method.cost_key`: the kind, or finer)."""
    from harness.methods.base import method_class

    cls = method_class(cfg.method.kind)
    return cls().cost_key(cls.Options.model_construct(**cfg.method.options)) if cls else cfg.method.kind


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
        measured = _get(r.metrics, "meters", "train", "memory", "headline_bytes")
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
    profile.source = (
        f"calibrated on {name or 'unknown device'}: throughput from {len(all_achieved)} packed cells, "
        f"memory from {len(scales)}, start-up from {len(startups)}"
    )
    return profile
