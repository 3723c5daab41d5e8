"""`qlora`: base weights in 4-bit NF4 with double quantisation (bitsandbytes), LoRA on top, paged 8-bit AdamW.

Runs on CPU too (bitsandbytes supports 4-bit there). Pitfall (see the guide): a forward pass in eval / no-grad mode
repacks the 4-bit weights in place, after which training gets silently wrong gradients. So the model is trained as
freshly loaded, and the training loop computes validation loss only after the last epoch for this method.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness import flops
from harness.methods.base import Method, PreparedModel, TrainingCost, load_for_training, register
from harness.methods.lora import LoraOptions, adapter_cost, adapter_prepared, peft_config
from harness.models.architectures import count_parameters

NF4_BYTES = 0.5
ABSMAX_DOUBLE_QUANT_BYTES = 1 / 64 + 4 / (64 * 256)  # 8-bit absmax per 64-block + fp32 per 256 blocks = 0.127 bit
ABSMAX_BYTES = 4 / 64  # fp32 absmax per 64-block without double quantisation


def four_bit_cost(
    arch: dict[str, Any],
    options: LoraOptions,
    *,
    precision: str,
    double_quant: bool,
    other_bytes: int,
    residual_bytes: int,
    note: str,
) -> TrainingCost:
    """Adapters on a base whose block projections are NF4 (bitsandbytes); every other parameter (embeddings, untied
    head, norms) is held in `other_bytes` per parameter."""
    counts = count_parameters(arch)
    blocks = flops.block_linear_params(arch)
    per = NF4_BYTES + (ABSMAX_DOUBLE_QUANT_BYTES if double_quant else ABSMAX_BYTES)
    frozen = blocks * per + (counts["total"] - blocks) * other_bytes
    cost = adapter_cost(
        arch,
        options,
        precision=precision,
        frozen_weights_bytes=frozen,
        residual_bytes=residual_bytes,
        quantized_params=blocks,
    )
    cost.notes.insert(
        0,
        f"4-bit NF4 blocks ({per:.4f} B/param{' with double quantisation' if double_quant else ''}); "
        f"embeddings/head/norms {other_bytes} B/param{note}",
    )
    return cost


class QloraOptions(LoraOptions):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where training runs in bf16
    r: int = Field(16, ge=1)


@register
class Qlora(Method):
    kind = "qlora"
    label = "QLoRA"
    display_order = 30
    Options = QloraOptions
    presets = {"qlora-r8": {"r": 8, "alpha": 16}, "qlora-r64": {"r": 64, "alpha": 128}}
    default_optimizer = "paged_adamw_8bit"
    eval_between_epochs = False

    def quantizes_base(self, options: Any) -> bool:
        return True

    def training_cost(self, arch: dict[str, Any], options: QloraOptions, *, precision: str) -> TrainingCost:
        # peft's prepare_model_for_kbit_training upcasts every non-4-bit parameter to fp32 (that is why QLoRA saves
        # little at 1B), and the fp32 residual stream follows
        cost = four_bit_cost(
            arch,
            options,
            precision=precision,
            double_quant=options.double_quant,
            other_bytes=4,
            residual_bytes=4,
            note=" (peft prepare_model_for_kbit_training upcasts them to fp32)",
        )
        if precision != "fp32":
            cost.autocast_copy_bytes += 2 * count_parameters(arch)["embedding"]  # the fp32 LM head, cast to bf16
        cost.startup_extra_s = 5.0  # quantising the weights at load
        return cost

    def preflight(self, options: QloraOptions) -> str | None:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes)"
        return None

    def prepare(self, cell: Any, options: QloraOptions, device: str, dtype: Any) -> PreparedModel:
        import torch
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        compute = {"auto": dtype, "bf16": torch.bfloat16, "fp32": torch.float32}[options.compute_dtype]
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=torch.uint8,
        )
        model, tokenizer, attention = load_for_training(cell, device, compute, adapters=True, quantization_config=bnb)
        if not device.startswith("cuda"):
            model.to(device)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cell.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        model = get_peft_model(model, peft_config(options), autocast_adapter_dtype=True)
        model.train()
        return adapter_prepared(
            model,
            tokenizer,
            attention,
            target_modules=options.modules,
            quant_type=options.quant_type,
            double_quant=options.double_quant,
            compute_dtype=str(compute),
        )
