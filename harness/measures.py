"""Derived figures of a training run, computed in one place from the loop's raw counters.

The training loop counts (tokens, time per epoch, the time of every optimizer step) and the meters measure (memory,
energy); this module turns them into throughput, FLOPs per token and MFU. The MFU goes through `flops.check_mfu`: a
utilisation above 100 % means the FLOP count, the token count or the peak is wrong, and the cell fails loudly
instead of recording it.

Throughput and MFU are steady-state figures, as optimum-benchmark (warm-up runs before timing) and torchtitan (first
steps out of its throughput and MFU) measure them: the first WARMUP_STEPS optimizer steps of the run (lazy CUDA /
cuBLAS / attention-kernel set-up, allocator growth, optimizer-state creation) and any later step during which
torch.compile compiled (a new row width) are left out; what was left out is recorded beside them (`warmup`: steps,
seconds, tokens, compile seconds), and so is the whole-run figure (`wall_tokens_per_s`, `wall_mfu`). Time per epoch
stays the honest wall time of the epoch, warm-up included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness import flops
from harness.meters.timing import StepTiming
from harness.models.architectures import Architecture

WARMUP_STEPS = 2
WARMUP_RULE = (
    f"the first {WARMUP_STEPS} optimizer steps of the run, and any later step during which torch.compile compiled"
)


@dataclass(frozen=True)
class TrainCounters:
    """What the training loop counted: plain numbers, no tensors."""

    real_tokens: int
    padded_tokens: int
    label_tokens: int
    epoch_times_s: list[float]
    steps: list[StepTiming] = field(default_factory=list)


def steady_split(steps: list[StepTiming], warmup: int = WARMUP_STEPS) -> tuple[list[int], list[int]]:
    """(warm-up step indices, steady step indices) by WARMUP_RULE."""
    warm = [i for i, s in enumerate(steps) if i < warmup or s.compile_s > 0]
    return warm, [i for i in range(len(steps)) if i not in set(warm)]


def steady_state(steps: list[StepTiming], warmup: int = WARMUP_STEPS) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`steady`, `warmup`) records of a run's steps: steps, tokens and seconds of each part (see the module doc)."""
    warm, steady = steady_split(steps, warmup)
    warm_rec = {
        "steps": len(warm),
        "seconds": sum(steps[i].seconds for i in warm),
        "tokens": sum(steps[i].real_tokens for i in warm),
        "compile_s": sum(s.compile_s for s in steps),
        "compiled_steps": [i + 1 for i, s in enumerate(steps) if s.compile_s > 0],
        "rule": WARMUP_RULE,
    }
    steady_rec: dict[str, Any] = {
        "steps": len(steady),
        "seconds": sum(steps[i].seconds for i in steady),
        "tokens": sum(steps[i].real_tokens for i in steady),
        "first_step": steady[0] + 1 if steady else None,
        "reason": None,
    }
    if not steady:
        steady_rec["reason"] = (
            f"only {len(steps)} optimizer step(s), all warm-up ({WARMUP_RULE}): no steady-state figure"
            if steps
            else "no optimizer step was timed"
        )
    return steady_rec, warm_rec


def throughput(
    counters: TrainCounters,
    *,
    arch: Architecture | None,
    trainable_params: int,
    total_params: int,
    gradient_checkpointing: bool,
    seq_len: int,
    device_name: str | None,
    dtype: str,
) -> dict[str, Any]:
    """Steady-state tokens/s (real, non-padding tokens) and MFU, the whole-run figures, FLOPs per token and the
    device's peak FLOP/s."""
    train_time = sum(counters.epoch_times_s)
    fpt = (
        flops.training_flops_per_token(
            arch,
            trainable_params=trainable_params,
            frozen_base=trainable_params < total_params,
            gradient_checkpointing=gradient_checkpointing,
            seq_len=seq_len,
        )
        if arch is not None
        else None
    )
    peak = flops.peak_flops(device_name, dtype)
    steady, warmup = steady_state(counters.steps)
    steady_tps = steady["tokens"] / steady["seconds"] if steady["steps"] and steady["seconds"] > 0 else None
    wall_tps = counters.real_tokens / train_time if train_time > 0 else None
    return {
        "tokens_per_s": steady_tps,
        "mfu": flops.check_mfu(flops.mfu(steady_tps, fpt, peak)),
        "steady": steady,
        "warmup": warmup,
        "wall_tokens_per_s": wall_tps,
        "wall_mfu": flops.check_mfu(flops.mfu(wall_tps, fpt, peak)),
        "time_per_epoch_s": train_time / len(counters.epoch_times_s) if counters.epoch_times_s else None,
        "flops_per_token": fpt,
        "peak_flops": peak,
    }
