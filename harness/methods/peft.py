"""`peft`: any PEFT adapter written as data in the matrix, as peft's `method_comparison` runs them.

    methods:
      - {name: dora-r16, peft: {peft_type: LORA, r: 16, lora_alpha: 32, use_dora: true, target_modules: all-linear}}
      - {name: vera, peft: {peft_type: VERA, r: 256, target_modules: [q_proj, v_proj]}}
      - {name: qdora-r16, peft: {peft_type: LORA, r: 16, use_dora: true}, quantize: nf4}

The `peft:` key selects this method. The config is checked by PEFT's own config class when the matrix loads (an
unknown field or a value PEFT rejects is an error naming it, before anything runs), and the cell keeps the resolved
config (every field, PEFT's defaults filled in), so the cell's id hashes what actually trains. `quantize` holds the
base in 4 bits (NF4 or FP4, bitsandbytes), as QLoRA does. Trainable parameters are counted exactly for any config
(harness/methods/adapter.py); memory and time use the adapter family's cost model, which `calibrate()` fits to
measured cells of each PEFT type.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from harness.methods.adapter import AdapterMethod, Quantization, resolve_peft_config
from harness.methods.base import register


class PeftOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    peft: dict[str, Any]  # {peft_type: ..., <fields of that PEFT config class>}
    quantize: Literal["none", "nf4", "fp4"] = "none"
    double_quant: bool = True  # with quantize: bitsandbytes' double quantisation of the block scales
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"

    @field_validator("peft")
    @classmethod
    def _resolved(cls, v: dict[str, Any]) -> dict[str, Any]:
        return resolve_peft_config(v)


@register
class Peft(AdapterMethod):
    kind = "peft"
    label = "PEFT"
    display_order = 25
    Options = PeftOptions
    entry_key = "peft"

    def peft_config(self, options: PeftOptions) -> dict[str, Any]:
        return options.peft

    def quantization(self, options: PeftOptions) -> Quantization | None:
        if options.quantize == "none":
            return None
        return Quantization(options.quantize, options.double_quant, options.compute_dtype)

    def cost_key(self, options: PeftOptions) -> str:
        return f"peft:{options.peft['peft_type']}" + ("+dora" if options.peft.get("use_dora") else "")
