"""Loading a base model: every source (`harness.models.sources`) resolves to something `from_pretrained` accepts (a
hub id or a local folder), so that each method (full, LoRA, QLoRA in 4-bit, Unsloth) loads the same base model its
own way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.models.sources import ModelSourceError, source_for
from harness.models.sources.gguf import gguf_location, package_dir
from harness.models.sources.synthetic import SMOLLM2_GGUF, SMOLLM2_PACKAGE

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import ModelSpec

__all__ = [
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "ModelSourceError",
    "gguf_location",
    "load_kwargs",
    "load_model",
    "load_tokenizer",
    "package_dir",
    "resolve_model_path",
]


def resolve_model_path(spec: "ModelSpec", cache_dir: str | Path) -> Path | str:
    """A hub id or a local folder that `from_pretrained` loads, materialising GGUF / synthetic models once."""
    return source_for(spec.source).resolve(spec, Path(cache_dir))


def load_kwargs(spec: "ModelSpec") -> dict[str, Any]:
    """What `from_pretrained` needs besides the path, as the model's source says (a hub revision)."""
    return source_for(spec.source).load_kwargs(spec)


def load_tokenizer(spec: "ModelSpec", cache_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(spec, cache_dir), **load_kwargs(spec))
    if spec.chat_template:
        tok.chat_template = spec.chat_template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: "ModelSpec",
    *,
    device: str,
    dtype: Any,
    cache_dir: str | Path,
    attn_implementation: str = "sdpa",
    **from_pretrained_kwargs: Any,
) -> tuple[Any, Any]:
    """(model, tokenizer) of a model spec, on `device` in `dtype`; extra kwargs go to from_pretrained."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    if attn_implementation == "auto":  # a caller that did not choose (harness.attention chooses for training): SDPA
        attn_implementation = "sdpa"
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation, **load_kwargs(spec)}
    kwargs.update(from_pretrained_kwargs)
    if "quantization_config" in kwargs and device.startswith("cuda"):
        kwargs.setdefault("device_map", {"": device})
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(device)
    return model, tokenizer
