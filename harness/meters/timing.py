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
