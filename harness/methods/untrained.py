"""`base`: the untrained model, evaluated as it is (the reference row of every model)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from harness.methods.base import Method, PreparedModel, register


@register
class Untrained(Method):
    kind = "base"
    trains = False

    def prepare(self, cell: Any, options: BaseModel, device: str, dtype: Any) -> PreparedModel:
        from harness.models import load_model

        model, tokenizer = load_model(cell.model, device=device, dtype=dtype, cache_dir=cell.runtime.cache_dir)
        model.eval()
        n = sum(p.numel() for p in model.parameters())
        return PreparedModel(model=model, tokenizer=tokenizer, trainable_params=0, total_params=n)
