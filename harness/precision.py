"""Which dtypes a cell computes and keeps weights in, decided once from `train.precision` and the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    autocast_dtype: Any  # torch dtype for torch.autocast, or None (plain fp32)
    frozen_dtype: Any  # dtype of frozen base weights (LoRA / QLoRA compute dtype)

    @property
    def uses_autocast(self) -> bool:
        return self.autocast_dtype is not None


def resolve_precision(requested: str, device: str) -> Precision:
    import torch

    name = requested
    if requested == "auto":
        name = "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and not device.startswith("cuda"):
        raise ValueError("train.precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(name=name, autocast_dtype=dtype, frozen_dtype=dtype or torch.float32)


def pick_device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
