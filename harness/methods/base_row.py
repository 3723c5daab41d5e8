"""`base`: the untrained model, evaluated as it is (the reference row every model gets)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from harness.methods.base import Method, PreparedModel, register


@register
class BaseRow(Method):
    kind = "base"
    label = "untrained"
    display_order = 0
    trains = False

    def prepare(self, cell: Any, options: BaseModel, device: str, dtype: Any) -> PreparedModel:
        from harness.models import load_model

        model, tokenizer = load_model(cell.model, device=device, dtype=dtype, cache_dir=cell.runtime.cache_dir)
        model.eval()
        prepared = PreparedModel.of(model, tokenizer)
        prepared.trainable_params = 0  # evaluated, never trained
        return prepared
