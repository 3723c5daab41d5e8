"""`lora`: low-rank adapters (peft) on a frozen base; presets lora-r8, lora-r16, lora-r64.

A preset is a PEFT LoRA config under a short name: `peft_config` writes these options as one, and the shared adapter
path (harness/methods/adapter.py) applies it exactly as it applies a `peft:` entry of the matrix. The options keep
their own small shape so that the ids of cells run before `peft:` entries existed stay the same.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.methods.adapter import AdapterMethod
from harness.methods.base import register
from harness.models.architectures import PROJECTIONS

# The seven linear projections of a Llama-style block, and the attention-only subset.
TARGET_SETS = {"all-linear": list(PROJECTIONS), "attention": list(PROJECTIONS[:4])}


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: float | None = Field(None, gt=0)  # None: 2 * r
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear", "attention"] | list[str] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules must name at least one module, or be 'all-linear' or 'attention'")
        return v

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.r

    @property
    def modules(self) -> list[str]:
        return TARGET_SETS[self.target_modules] if isinstance(self.target_modules, str) else list(self.target_modules)


def lora_peft_config(options: LoraOptions) -> dict[str, Any]:
    """These options as a PEFT LoRA config (data)."""
    return {
        "peft_type": "LORA",
        "r": options.r,
        "lora_alpha": options.lora_alpha,
        "lora_dropout": options.dropout,
        "target_modules": options.modules,
        "use_rslora": options.use_rslora,
        "use_dora": options.use_dora,
        "bias": "none",
    }


@register
class Lora(AdapterMethod):
    kind = "lora"
    label = "LoRA"
    display_order = 20
    Options = LoraOptions
    presets = {
        "lora-r8": {"r": 8, "alpha": 16},
        "lora-r16": {"r": 16, "alpha": 32},
        "lora-r64": {"r": 64, "alpha": 128},
    }

    def peft_config(self, options: LoraOptions) -> dict[str, Any]:
        return lora_peft_config(options)
