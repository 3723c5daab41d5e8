"""`qlora`: base weights in 4-bit NF4 with double quantisation (bitsandbytes), LoRA on top, paged 8-bit AdamW.

Runs on CPU too (bitsandbytes supports 4-bit there). The 4-bit base, its cost and its pitfall (no eval-mode forward
between epochs) are the adapter family's (harness/methods/adapter.py).
"""

from __future__ import annotations

from typing import Any, Literal

from harness.methods.adapter import AdapterMethod, Quantization
from harness.methods.base import register
from harness.methods.lora import LoraOptions, lora_peft_config


class QloraOptions(LoraOptions):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where training runs in bf16


@register
class Qlora(AdapterMethod):
    kind = "qlora"
    label = "QLoRA"
    display_order = 30
    Options = QloraOptions
    presets = {"qlora-r8": {"r": 8, "alpha": 16}, "qlora-r64": {"r": 64, "alpha": 128}}
    default_optimizer = "paged_adamw_8bit"

    def peft_config(self, options: QloraOptions) -> dict[str, Any]:
        return lora_peft_config(options)

    def quantization(self, options: QloraOptions) -> Quantization:
        return Quantization(options.quant_type, options.double_quant, options.compute_dtype)
