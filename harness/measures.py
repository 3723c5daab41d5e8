"""Derived figures of a training run, computed in one place from the loop's raw counters.

The training loop counts (tokens, time per epoch) and the meters measure (memory, energy); this module turns them
into throughput, FLOPs per token and MFU. The MFU goes through `flops.check_mfu`: a utilisation above 100 % means
the FLOP count, the token count or the peak is wrong, and the cell fails loudly instead of recording it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import flops


@dataclass(frozen=True)
class TrainCounters:
    """What the training loop counted: plain numbers, no tensors."""

    real_tokens: int
    padded_tokens: int
    label_tokens: int
    epoch_times_s: list[float]


def throughput(
    counters: TrainCounters,
    *,
    arch: dict[str, Any],
    trainable_params: int,
    total_params: int,
    gradient_checkpointing: bool,
    seq_len: int,
    device_name: str | None,
    dtype: str,
) -> dict[str, Any]:
    """tokens/s (real, non-padding tokens), FLOPs per token, the device's peak FLOP/s and the checked MFU."""
    train_time = sum(counters.epoch_times_s)
    fpt = flops.training_flops_per_token(
        arch,
        trainable_params=trainable_params,
        frozen_base=trainable_params < total_params,
        gradient_checkpointing=gradient_checkpointing,
        seq_len=seq_len,
    )
    tokens_per_s = counters.real_tokens / train_time if train_time > 0 else None
    peak = flops.peak_flops(device_name, dtype)
    return {
        "tokens_per_s": tokens_per_s,
        "time_per_epoch_s": train_time / len(counters.epoch_times_s) if counters.epoch_times_s else None,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "mfu": flops.check_mfu(flops.mfu(tokens_per_s, fpt, peak)),
    }
