"""`lora`: low-rank adapters (peft) on a frozen base; presets lora-r8, lora-r16, lora-r64."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness import flops
from harness.methods.base import AdapterShape, Method, PreparedModel, TrainingCost, load_for_training, register
from harness.models.architectures import count_parameters

# The seven linear projections of a Llama-style block, and the attention-only subset.
TARGET_SETS = {
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


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


def peft_config(options: LoraOptions) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=options.r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.dropout,
        target_modules=options.modules,
        use_rslora=options.use_rslora,
        use_dora=options.use_dora,
        bias="none",
    )


def adapter_prepared(model: Any, tokenizer: Any, attention: Any, **notes: Any) -> PreparedModel:
    return PreparedModel.of(
        model,
        tokenizer,
        save=lambda out: model.save_pretrained(out),
        for_eval=lambda: model.eval(),
        notes=notes,
        attention=attention,
    )


def adapter_cost(
    arch: dict[str, Any],
    options: LoraOptions,
    *,
    precision: str,
    frozen_weights_bytes: float,
    residual_bytes: int,
    quantized_params: int = 0,
) -> TrainingCost:
    """Adapters in fp32 on a frozen base (peft's autocast_adapter_dtype=True); the caller says how the base is held."""
    trainable = flops.lora_trainable_params(arch, options.r, options.modules, dora=options.use_dora)
    act = 4 if precision == "fp32" else 2
    return TrainingCost(
        trainable_params=trainable,
        weights_bytes=frozen_weights_bytes + 4 * trainable,
        state_bytes_per_param=4,
        residual_bytes=residual_bytes,
        autocast_copy_bytes=2 * trainable if act == 2 else 0,
        adapter=AdapterShape(tuple(options.modules), options.r, options.dropout),
        quantized_params=quantized_params,
        notes=[f"LoRA r={options.r} on {','.join(options.modules)}: {trainable:,} trainable fp32 parameters"],
    )


@register
class Lora(Method):
    kind = "lora"
    label = "LoRA"
    display_order = 20
    Options = LoraOptions
    presets = {
        "lora-r8": {"r": 8, "alpha": 16},
        "lora-r16": {"r": 16, "alpha": 32},
        "lora-r64": {"r": 64, "alpha": 128},
    }
    default_optimizer = "adamw"

    def training_cost(self, arch: dict[str, Any], options: LoraOptions, *, precision: str) -> TrainingCost:
        act = 4 if precision == "fp32" else 2  # the frozen base is kept in the compute dtype
        return adapter_cost(
            arch,
            options,
            precision=precision,
            frozen_weights_bytes=act * count_parameters(arch)["total"],
            residual_bytes=act,
        )

    def prepare(self, cell: Any, options: LoraOptions, device: str, dtype: Any) -> PreparedModel:
        from peft import get_peft_model

        # The frozen base is kept in the compute dtype (bf16 on a GPU); adapters are created in fp32.
        model, tokenizer, attention = load_for_training(cell, device, dtype, adapters=True)
        model = get_peft_model(model, peft_config(options), autocast_adapter_dtype=True)
        model.train()
        return adapter_prepared(model, tokenizer, attention, target_modules=options.modules)
