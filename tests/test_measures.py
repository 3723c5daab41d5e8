"""Derived training figures (harness/measures.py): tokens/s, FLOPs per token and the MFU, checked on the path the
training loop uses, so an impossible utilisation fails the cell instead of reaching a report."""

from __future__ import annotations

import pytest

from harness import flops
from harness.measures import TrainCounters, throughput
from harness.models.architectures import ARCHITECTURES

ARCH = dict(ARCHITECTURES["llama-3.2-1b"])


def figures(tokens: int, seconds: float, device: str = "NVIDIA H200") -> dict:
    counters = TrainCounters(real_tokens=tokens, padded_tokens=0, label_tokens=tokens, epoch_times_s=[seconds])
    return throughput(
        counters,
        arch=ARCH,
        trainable_params=11_272_192,
        total_params=1_247_086_592,
        gradient_checkpointing=False,
        seq_len=2048,
        device_name=device,
        dtype="bf16",
    )


def test_tokens_per_second_and_mfu_follow_the_formula() -> None:
    out = figures(200_000, 10.0)
    assert out["tokens_per_s"] == pytest.approx(20_000)
    assert out["time_per_epoch_s"] == pytest.approx(10.0)
    assert out["peak_flops"] == 989e12
    assert out["mfu"] == pytest.approx(20_000 * out["flops_per_token"] / 989e12)
    assert out["flops_per_token"] == flops.training_flops_per_token(
        ARCH, trainable_params=11_272_192, frozen_base=True, gradient_checkpointing=False, seq_len=2048
    )


def test_an_impossible_mfu_raises_on_the_training_path() -> None:
    fpt = figures(1, 1.0)["flops_per_token"]
    too_fast = int(1.5 * 989e12 / fpt)  # 150 % of the H200's peak in one second
    with pytest.raises(flops.ImpossibleMFU, match="impossible"):
        figures(too_fast, 1.0)


def test_cpu_has_no_peak_so_no_mfu() -> None:
    out = figures(1000, 2.0, device="cpu")
    assert out["tokens_per_s"] == pytest.approx(500) and out["peak_flops"] is None and out["mfu"] is None
