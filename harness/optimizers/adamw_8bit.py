"""bitsandbytes' 8-bit AdamW: `adamw_8bit`, and `paged_adamw_8bit` whose large states live in CUDA managed memory
(paged to the host under pressure; torch's max_allocated does not see them, NVML does; on CPU bitsandbytes falls
back to the plain optimizer)."""

from __future__ import annotations

from typing import Any

from harness.optimizers import Optimizer, register, scaled
from harness.optimizers.adamw import AdamWOptions  # the same options as torch's AdamW


@register
class AdamW8bit(Optimizer):
    name = "adamw_8bit"
    Options = AdamWOptions
    paged = False

    def build(self, groups: list[dict[str, Any]], lr: float, options: AdamWOptions) -> Any:
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if self.paged else bnb.optim.AdamW8bit
        return cls(scaled(groups, lr), lr=lr, betas=options.betas, eps=options.eps)

    def memory(self, trainable: int, param_bytes: int, options: Any) -> tuple[float, float, str]:
        note = "8-bit AdamW: two 8-bit states + blockwise absmax per trainable parameter"
        if self.paged:
            note += "; paged: large states in CUDA managed memory, which torch's max_allocated does not see (NVML does)"
        return (2 + 2 * 4 / 256) * trainable, 0.0, note


@register
class PagedAdamW8bit(AdamW8bit):
    name = "paged_adamw_8bit"
    paged = True
