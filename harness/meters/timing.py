"""Wall time with the device synchronised at both ends: of one region (`Stopwatch`) and of a cell's phases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Stopwatch:
    def __init__(self, device: str = "cpu"):
        self.device = device
        self.elapsed = 0.0

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        synchronize(self.device)
        self.elapsed += time.perf_counter() - self._t0


@dataclass
class PhaseTimer:
    """Wall time per named phase of a cell (load, data, train, eval, save); the rest is overhead."""

    device: str = "cpu"
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str) -> "_Phase":
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: PhaseTimer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        synchronize(self.timer.device)
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        synchronize(self.timer.device)
        self.timer.phases[self.name] = self.timer.phases.get(self.name, 0.0) + time.perf_counter() - self.t0


# torch.compile's own timers (torch._dynamo.utils.compilation_time_metrics): a frame's compilation (forward, and the
# backward when compiled eagerly), and the backward compiled lazily on its first call.
COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")


def compile_seconds() -> float:
    """Seconds torch.compile has spent compiling in this process so far (0 when it was never used)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:  # never imported: nothing was compiled
        return 0.0
    metrics = getattr(utils, "compilation_time_metrics", {}) or {}
    return float(sum(sum(metrics.get(name, ())) for name in COMPILE_TIMERS))


@dataclass(frozen=True)
class StepTiming:
    """One optimizer step: wall seconds (device synchronised at its end), real tokens, seconds of compilation in it."""

    seconds: float
    real_tokens: int
    compile_s: float = 0.0


class StepClock:
    """Times every optimizer step with the device synchronised at each step's end, so that steady-state throughput
    can leave out the warm-up (harness/measures.py). `start()` at the beginning of each epoch (what runs between
    epochs, validation, is not a step)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.steps: list[StepTiming] = []
        self._t = 0.0
        self._compiled = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._t = time.perf_counter()
        self._compiled = compile_seconds()

    def step(self, real_tokens: int) -> StepTiming:
        synchronize(self.device)
        now, compiled = time.perf_counter(), compile_seconds()
        timing = StepTiming(now - self._t, real_tokens, max(0.0, compiled - self._compiled))
        self.steps.append(timing)
        self._t, self._compiled = now, compiled
        return timing
