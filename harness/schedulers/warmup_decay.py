"""`cosine`, `linear` and `constant`: a linear warm-up, then transformers' cosine / linear decay, or a constant rate."""

from __future__ import annotations

from typing import Any

from harness.schedulers import Scheduler, register


class _Transformers(Scheduler):
    schedule: str

    def build(self, optimizer: Any, warmup_steps: int, total_steps: int, options: Any) -> Any:
        from transformers import get_scheduler

        return get_scheduler(self.schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


@register
class Cosine(_Transformers):
    name = "cosine"
    schedule = "cosine"


@register
class Linear(_Transformers):
    name = "linear"
    schedule = "linear"


@register
class Constant(_Transformers):
    name = "constant"
    schedule = "constant_with_warmup"
