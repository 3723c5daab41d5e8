"""`adamw` (torch's, foreach) and `sgd` with momentum."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.optimizers import Optimizer, register, scaled


class AdamWOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


@register
class AdamW(Optimizer):
    name = "adamw"
    Options = AdamWOptions

    def build(self, groups: list[dict[str, Any]], lr: float, options: AdamWOptions) -> Any:
        import torch

        return torch.optim.AdamW(scaled(groups, lr), lr=lr, betas=options.betas, eps=options.eps)

    def memory(self, trainable: int, param_bytes: int, options: Any) -> tuple[float, float, str]:
        # two states in the parameter dtype; the foreach step keeps one fp32 temporary per parameter
        return 2 * param_bytes * trainable, 4.0 * trainable, "AdamW: two states per trainable parameter"


class SGDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0)


@register
class SGD(Optimizer):
    name = "sgd"
    Options = SGDOptions

    def build(self, groups: list[dict[str, Any]], lr: float, options: SGDOptions) -> Any:
        import torch

        return torch.optim.SGD(scaled(groups, lr), lr=lr, momentum=options.momentum)

    def memory(self, trainable: int, param_bytes: int, options: Any) -> tuple[float, float, str]:
        return param_bytes * trainable, 0.0, "SGD: one momentum state per trainable parameter"
