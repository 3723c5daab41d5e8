"""Derived training figures (harness/measures.py): steady-state tokens/s and MFU, the warm-up left out of them, the
whole-run figures, checked on the path the training loop uses, so an impossible utilisation fails the cell instead
of reaching a report."""

from __future__ import annotations

import pytest

from harness import flops
from harness.measures import WARMUP_STEPS, TrainCounters, steady_state, throughput
from harness.meters.timing import StepClock, StepTiming
from harness.models.architectures import Architecture

ARCH = Architecture.named("llama-3.2-1b")


def figures(steps: list[StepTiming], device: str = "NVIDIA H200") -> dict:
    tokens = sum(s.real_tokens for s in steps)
    counters = TrainCounters(
        real_tokens=tokens,
        padded_tokens=0,
        label_tokens=tokens,
        epoch_times_s=[sum(s.seconds for s in steps)],
        steps=steps,
    )
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


def run(first: float, steady: float, n: int = 10, tokens: int = 8192) -> list[StepTiming]:
    """n steps of `tokens` each: the first two slow (warm-up), the rest at `steady` seconds."""
    return [StepTiming(first if i < WARMUP_STEPS else steady, tokens) for i in range(n)]


def test_steady_tokens_per_second_and_mfu_leave_the_warmup_out() -> None:
    out = figures(run(first=5.0, steady=0.5))
    assert out["tokens_per_s"] == pytest.approx(8192 / 0.5)  # the 8 steady steps only
    assert out["wall_tokens_per_s"] == pytest.approx(10 * 8192 / (2 * 5.0 + 8 * 0.5))
    assert out["steady"] == {
        "steps": 8,
        "seconds": pytest.approx(4.0),
        "tokens": 8 * 8192,
        "first_step": 3,
        "reason": None,
    }
    assert out["warmup"]["steps"] == 2 and out["warmup"]["seconds"] == pytest.approx(10.0)
    assert out["warmup"]["compile_s"] == 0 and out["warmup"]["rule"].startswith("the first 2 optimizer steps")
    assert out["time_per_epoch_s"] == pytest.approx(14.0)  # the honest wall time, warm-up included
    assert out["peak_flops"] == 989e12
    assert out["mfu"] == pytest.approx(out["tokens_per_s"] * out["flops_per_token"] / 989e12)
    assert out["wall_mfu"] < out["mfu"]
    assert out["flops_per_token"] == flops.training_flops_per_token(
        ARCH, trainable_params=11_272_192, frozen_base=True, gradient_checkpointing=False, seq_len=2048
    )


def test_a_step_that_compiled_later_is_warmup_too() -> None:
    steps = run(first=5.0, steady=0.5)
    steps[6] = StepTiming(20.0, 8192, compile_s=19.0)  # a new row width: torch.compile recompiled
    steady, warm = steady_state(steps)
    assert warm["steps"] == 3 and warm["compiled_steps"] == [7] and warm["compile_s"] == 19.0
    assert steady["steps"] == 7 and steady["seconds"] == pytest.approx(3.5)


def test_too_few_steps_give_no_steady_figure_and_say_why() -> None:
    out = figures(run(first=1.0, steady=1.0, n=2))
    assert out["tokens_per_s"] is None and out["mfu"] is None
    assert "only 2 optimizer step(s), all warm-up" in out["steady"]["reason"]
    assert out["wall_tokens_per_s"] == pytest.approx(8192)


def test_an_impossible_mfu_raises_on_the_training_path() -> None:
    fpt = figures(run(1.0, 1.0, tokens=1))["flops_per_token"]
    too_fast = int(1.5 * 989e12 / fpt)  # 150 % of the H200's peak in one second
    with pytest.raises(flops.ImpossibleMFU, match="impossible"):
        figures(run(1.0, 1.0, tokens=too_fast))


def test_cpu_has_no_peak_so_no_mfu() -> None:
    out = figures(run(2.0, 2.0, tokens=1000), device="cpu")
    assert out["tokens_per_s"] == pytest.approx(500) and out["peak_flops"] is None and out["mfu"] is None


def test_step_clock_times_steps_and_sees_torch_compile() -> None:
    import torch

    clock = StepClock("cpu")
    f = torch.compile(lambda x: (x * 2).sin().sum(), backend="eager")
    clock.start()
    f(torch.randn(4))
    first = clock.step(4)
    f(torch.randn(4))  # same shape: no compilation
    second = clock.step(4)
    assert first.compile_s > 0 and second.compile_s == 0
    assert first.seconds >= first.compile_s and len(clock.steps) == 2
