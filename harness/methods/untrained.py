"""The untrained row (kind `base`, `UNTRAINED`): each base model evaluated as it is, the reference row every model
gets and every trained cell is compared with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from harness.methods.base import UNTRAINED, Method, PreparedModel, register


@register
class UntrainedRow(Method):
    kind = UNTRAINED
    label = "untrained"
    display_order = 0
    trains = False
    saves = None

    def prepare(self, cell: Any, options: BaseModel, device: str, dtype: Any) -> PreparedModel:
        from harness.models import load_model

        model, tokenizer = load_model(cell.model, device=device, dtype=dtype, cache_dir=cell.runtime.cache_dir)
        model.eval()
        prepared = PreparedModel.of(model, tokenizer)
        prepared.trainable_params = 0  # evaluated, never trained
        return prepared
