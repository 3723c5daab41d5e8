"""Optimizers: one component each in this package (or a `$MEDBENCH_PLUGINS` file), named in the matrix as
`train.optimizer: adamw_8bit` or `train.optimizer: {name: adamw, betas: [0.9, 0.95]}`; none named: the method's
default. An optimizer builds itself from the parameter groups the method declares (`Method.param_groups`: which
parameters decay, which learn at a multiple of the learning rate, e.g. LoRA+'s B matrices) and says what its states
cost in memory (the estimator's terms). torch and bitsandbytes are imported inside `build`.
"""

from __future__ import annotations

from typing import Any

from harness.plugins import Component, Registry


class Optimizer(Component):
    def build(self, groups: list[dict[str, Any]], lr: float, options: Any) -> Any:
        """A torch optimizer over `groups` (each may carry `lr_scale`: its learning rate is lr × lr_scale)."""
        raise NotImplementedError

    def memory(self, trainable: int, param_bytes: int, options: Any) -> tuple[float, float, str]:
        """(state bytes, the step's temporary bytes, a note) for `trainable` parameters of `param_bytes` each."""
        raise NotImplementedError


def scaled(groups: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """torch parameter groups: `lr_scale` turned into each group's own learning rate."""
    out = []
    for g in groups:
        g = dict(g)
        g["lr"] = lr * g.pop("lr_scale", 1.0)
        out.append(g)
    return out


REGISTRY: Registry[Optimizer] = Registry("optimizer", Optimizer, "harness.optimizers")
register = REGISTRY.register
