"""`unsloth`: Unsloth's FastLanguageModel (4-bit or 16-bit base, its own gradient checkpointing), LoRA on top.

Unsloth patches transformers and peft globally when imported, so it must be imported before them: the cell's own
process imports it first thing (`import_first`, harness/cell.py), and the record says whether that held. It needs a
CUDA GPU and the optional `unsloth` extra; without either the cell is recorded as `skipped` with the exact reason
(decided in the parent without importing torch, and checked again in the child).

Attention: Unsloth keeps packed examples apart only inside one flattened row (batch size 1 with
`packed_seq_lengths`); at batch size 4 it would attend across the examples of a packed row. So its packed batches
are flattened (harness/attention.py): the same tokens and matmul work, no attention across examples, and the record
names the backend Unsloth picked (flash varlen, xFormers block-diagonal, or SDPA with a packed mask).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from harness.methods.adapter import AdapterMethod, Quantization
from harness.methods.base import PreparedModel, SkipCell, TrainingCost, register
from harness.methods.lora import LoraOptions, lora_peft_config

if TYPE_CHECKING:  # pragma: no cover
    from harness.models.architectures import Architecture

NOT_INSTALLED = (
    "unsloth is not installed: it is an optional extra for CUDA machines "
    "(pip install 'medbench[unsloth]'; never on CPU-only machines, it replaces torch)"
)
NO_GPU = "no CUDA GPU visible: Unsloth needs an NVIDIA GPU (it raises NotImplementedError on CPU-only machines)"


class UnslothOptions(LoraOptions):
    load_in_4bit: bool = True
    dropout: float = 0.0  # Unsloth's fast path requires LoRA dropout 0
    gradient_checkpointing: bool | str = "unsloth"  # Unsloth's offloaded checkpointing; False to disable


@register
class Unsloth(AdapterMethod):
    kind = "unsloth"
    label = "Unsloth"
    display_order = 40
    Options = UnslothOptions
    presets = {"unsloth-16bit": {"load_in_4bit": False}}
    default_optimizer = "adamw_8bit"
    import_first = ("unsloth",)
    upcasts_quantized_base = False  # its 4-bit base keeps the other parameters in the compute dtype

    def peft_config(self, options: UnslothOptions) -> dict[str, Any]:
        return lora_peft_config(options)

    def quantization(self, options: UnslothOptions) -> Quantization | None:
        return Quantization("nf4", True) if options.load_in_4bit else None

    def training_cost(self, arch: Architecture, options: UnslothOptions, *, precision: str) -> TrainingCost:
        cost = super().training_cost(arch, options, precision=precision)
        gc = options.gradient_checkpointing
        cost.checkpointing = "offloaded" if gc == "unsloth" else "blocks" if gc else "none"
        cost.logits_bytes_per_element = 2.0  # its fused cross-entropy: bf16 logits, gradient written in place
        cost.notes.append("Unsloth's fused cross-entropy: ≈ bf16 logits, gradient in place")
        cost.startup_extra_s = 40.0  # patching transformers / peft and compiling its kernels
        cost.packed_layout = "flattened"
        return cost

    def preflight(self, options: Any) -> str | None:
        from harness.environment import cuda_visible_without_torch

        if not cuda_visible_without_torch():
            return NO_GPU
        if importlib.util.find_spec("unsloth") is None:
            return NOT_INSTALLED
        return None

    def prepare(self, cell: Any, options: UnslothOptions, device: str, dtype: Any) -> PreparedModel:
        import torch

        if not torch.cuda.is_available():
            raise SkipCell(NO_GPU)
        if importlib.util.find_spec("unsloth") is None:
            raise SkipCell(NOT_INSTALLED)
        from unsloth import FastLanguageModel

        from harness.models import load_kwargs, resolve_model_path

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(resolve_model_path(cell.model, cell.runtime.cache_dir)),
            max_seq_length=cell.train.max_seq_length,
            dtype=dtype,
            load_in_4bit=options.load_in_4bit,
            **load_kwargs(cell.model),
        )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = FastLanguageModel.get_peft_model(
            model,
            r=options.r,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.dropout,
            target_modules=options.modules,
            bias="none",
            use_rslora=options.use_rslora,
            use_gradient_checkpointing=options.gradient_checkpointing,
            random_state=cell.seed,
        )
        model.train()

        def for_eval() -> Any:
            FastLanguageModel.for_inference(model)
            return model

        return PreparedModel.of(
            model,
            tokenizer,
            save=lambda out: model.save_pretrained(out),
            for_eval=for_eval,
            notes={
                "load_in_4bit": options.load_in_4bit,
                "gradient_checkpointing": bool(options.gradient_checkpointing),
            },
            attention=unsloth_attention(cell),
        )


def unsloth_attention(cell: Any) -> Any:
    """The attention Unsloth trains with: its own backend (asked of its dispatcher), packed rows flattened."""
    from harness.attention import AttentionChoice, flattened

    requested = cell.train.attn_implementation
    base = AttentionChoice(requested, requested, "rows" if cell.train.packing else None, False, "")
    try:
        from unsloth.utils.attention_dispatch import SDPA, select_attention_backend

        backend = select_attention_backend(use_varlen=cell.train.packing)
        # a packed row under SDPA gets Unsloth's block-diagonal mask; a padded batch its padding mask
        dense = backend == SDPA or not cell.train.packing
    except Exception as exc:  # an Unsloth release without this dispatcher: say so rather than guess
        backend, dense = f"unknown ({type(exc).__name__}: {exc})"[:200], True
    return flattened(base, f"unsloth:{backend}", dense)
