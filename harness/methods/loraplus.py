"""`loraplus`: LoRA+ (Hayou, Ghosh & Yu 2024): LoRA whose B matrices learn `ratio` times faster than its A matrices.

The same adapters as `lora` (harness/methods/lora.py); only the optimizer's parameter groups differ: every `lora_B`
(and `lora_embedding_B`) parameter gets learning rate × `ratio`, as peft's `create_loraplus_optimizer` does. The paper
recommends a ratio of 2^4 = 16 for decoder fine-tuning.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.methods.base import register
from harness.methods.lora import Lora, LoraOptions


class LoraPlusOptions(LoraOptions):
    ratio: float = Field(16.0, gt=0)  # learning rate of B ÷ learning rate of A


@register
class LoraPlus(Lora):
    kind = "loraplus"
    label = "LoRA+"
    display_order = 22
    Options = LoraPlusOptions
    presets = {"loraplus-r16": {"r": 16, "alpha": 32}}

    def param_groups(self, model: Any, options: LoraPlusOptions, weight_decay: float) -> list[dict[str, Any]]:
        b_matrices = {id(p) for n, p in model.named_parameters() if ".lora_B." in n or "lora_embedding_B" in n}
        groups = []
        for group in super().param_groups(model, options, weight_decay):  # decay / no decay, each split in A and B
            slow = [p for p in group["params"] if id(p) not in b_matrices]
            fast = [p for p in group["params"] if id(p) in b_matrices]
            groups += [{**group, "params": ps, "lr_scale": s} for ps, s in ((slow, 1.0), (fast, options.ratio)) if ps]
        return groups
