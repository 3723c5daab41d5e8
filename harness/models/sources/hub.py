"""`hub`: a model id on the Hugging Face Hub (or a mirror through HF_ENDPOINT), loaded by `from_pretrained`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.models.architectures import ARCHITECTURES, llama_like, read_json
from harness.models.sources import ModelSource, register

# Hub ids whose architecture is one of ours (used when no config.json is in the local hub cache).
KNOWN_HUB_IDS = {
    "meta-llama/llama-3.2-1b": "llama-3.2-1b",
    "meta-llama/llama-3.2-1b-instruct": "llama-3.2-1b",
    "unsloth/llama-3.2-1b": "llama-3.2-1b",
    "unsloth/llama-3.2-1b-instruct": "llama-3.2-1b",
    "tinyllama/tinyllama-1.1b-chat-v1.0": "tinyllama-1.1b",
    "tinyllama/tinyllama-1.1b-intermediate-step-1431k-3t": "tinyllama-1.1b",
    "huggingfacetb/smollm2-135m": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-360m": "smollm2-360m",
    "huggingfacetb/smollm2-360m-instruct": "smollm2-360m",
    "huggingfacetb/smollm2-1.7b": "smollm2-1.7b",
    "huggingfacetb/smollm2-1.7b-instruct": "smollm2-1.7b",
}


def cached_config(spec: Any) -> str | None:
    """The path of the model's config.json in the local hub cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.hub_id, "config.json", revision=spec.revision)
    except Exception:
        return None
    return cached if isinstance(cached, str) and os.path.isfile(cached) else None


@register
class HubSource(ModelSource):
    name = "hub"
    required = ("hub_id",)

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        return spec.hub_id or ""

    def architecture(self, spec: Any) -> tuple[dict[str, Any] | None, str]:
        cached = cached_config(spec)
        if cached:
            return llama_like(read_json(cached), f"cached config.json of {spec.hub_id}")
        known = KNOWN_HUB_IDS.get((spec.hub_id or "").lower())
        if known:
            return ARCHITECTURES[known], f"architecture of {spec.hub_id} from the named architectures ({known})"
        return None, f"hub model {spec.hub_id} not in the local cache and not a named architecture"
