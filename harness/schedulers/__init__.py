"""Learning-rate schedules: one component each in this package (or a `$MEDBENCH_PLUGINS` file), named in the matrix as
`train.scheduler: cosine` or `train.scheduler: {name: ..., <options>}`. Each builds a torch scheduler for the whole
run from the optimizer, its warm-up steps (`train.warmup_ratio` of the run) and the run's optimizer steps; the
multiplier applies to every parameter group's own learning rate. torch / transformers imported inside `build`.
"""

from __future__ import annotations

from typing import Any

from harness.plugins import Component, Registry


class Scheduler(Component):
    def build(self, optimizer: Any, warmup_steps: int, total_steps: int, options: Any) -> Any:
        raise NotImplementedError


REGISTRY: Registry[Scheduler] = Registry("scheduler", Scheduler, "harness.schedulers")
register = REGISTRY.register
