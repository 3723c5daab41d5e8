"""`full`: every weight trained (fp32 master weights with bf16 autocast where the device supports it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.methods.base import Method, PreparedModel, register


class FullOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # fp32 master weights are standard mixed precision (numerically safe); bf16 halves weight, gradient and
    # optimizer memory, as many write-ups do, at some cost in update precision.
    weights_dtype: Literal["fp32", "bf16"] = "fp32"


@register
class Full(Method):
    kind = "full"
    Options = FullOptions
    presets = {"full-bf16": {"weights_dtype": "bf16"}}
    default_optimizer = "adamw"

    def prepare(self, cell: Any, options: FullOptions, device: str, dtype: Any) -> PreparedModel:
        import torch

        from harness.models import load_model

        weights = torch.float32 if options.weights_dtype == "fp32" else torch.bfloat16
        model, tokenizer = load_model(cell.model, device=device, dtype=weights, cache_dir=cell.runtime.cache_dir,
                                      attn_implementation=cell.train.attn_implementation)
        if cell.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        model.train()
        n = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return PreparedModel(model=model, tokenizer=tokenizer, trainable_params=trainable, total_params=n,
                             save=lambda out: (model.save_pretrained(out), tokenizer.save_pretrained(out)),
                             for_eval=lambda: model.eval())
