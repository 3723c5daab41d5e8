"""`full`: every weight trained (fp32 master weights with bf16 autocast where the device supports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.methods.base import Method, PreparedModel, TrainingCost, load_for_training, register

if TYPE_CHECKING:  # pragma: no cover
    from harness.models.architectures import Architecture


class FullOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # fp32 master weights are standard mixed precision (numerically safe); bf16 halves weight, gradient and
    # optimizer memory, as many write-ups do, at some cost in update precision.
    weights_dtype: Literal["fp32", "bf16"] = "fp32"


@register
class Full(Method):
    kind = "full"
    label = "full fine-tuning"
    display_order = 10
    Options = FullOptions
    presets = {"full-bf16": {"weights_dtype": "bf16"}}

    def training_cost(self, arch: Architecture, options: FullOptions, *, precision: str) -> TrainingCost:
        total = arch.params.total
        act = 4 if precision == "fp32" else 2
        master = 4 if (precision == "fp32" or options.weights_dtype == "fp32") else 2
        mixed = master == 4 and act == 2
        what = "fp32 master weights with bf16 autocast" if mixed else "bf16 weights" if master == 2 else "fp32 weights"
        return TrainingCost(
            trainable_params=total,
            weights_bytes=master * total,
            state_bytes_per_param=master,
            residual_bytes=master if act == 2 else 4,
            # autocast keeps a bf16 copy of every matmul weight for the backward
            autocast_copy_bytes=2 * arch.linear if mixed else 0,
            norms_train=True,
            notes=[f"full fine-tuning: {what} ({master} B/param weights and gradients)"],
        )

    def prepare(self, cell: Any, options: FullOptions, device: str, dtype: Any) -> PreparedModel:
        import torch

        weights = torch.float32 if options.weights_dtype == "fp32" else torch.bfloat16
        model, tokenizer, attention = load_for_training(cell, device, weights, adapters=False)
        model.train()
        return PreparedModel.of(
            model,
            tokenizer,
            save=lambda out: (model.save_pretrained(out), tokenizer.save_pretrained(out)),
            for_eval=lambda: model.eval(),
            attention=attention,
        )
