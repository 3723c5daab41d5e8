"""Named real architectures for synthetic (random-initialised) models, as plain config dicts (no torch).

The shapes are copied from the public `config.json` of each model; speed and memory depend on these shapes,
not on the weights, so a random-initialised copy measures them offline. Accuracy of such a model means nothing.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

# model types costed exactly as a Llama-style block (others are costed as one, and the estimate says so)
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "olmo2", "granite"}

_LLAMA_COMMON = {
    "model_type": "llama",
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "attention_bias": False,
    "mlp_bias": False,
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.2-1B(-Instruct)
    "llama-3.2-1b": {
        **_LLAMA_COMMON,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
        },
    },
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    "tinyllama-1.1b": {
        **_LLAMA_COMMON,
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    },
    # HuggingFaceTB/SmolLM2-135M(-Instruct)
    "smollm2-135m": {
        **_LLAMA_COMMON,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    # HuggingFaceTB/SmolLM2-360M(-Instruct)
    "smollm2-360m": {
        **_LLAMA_COMMON,
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    # HuggingFaceTB/SmolLM2-1.7B(-Instruct)
    "smollm2-1.7b": {
        **_LLAMA_COMMON,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 130000.0,
        "tie_word_embeddings": True,
    },
    # A 3M-parameter Llama for CI and unit tests (SmolLM2 vocabulary, so the SmolLM2 tokenizer fits).
    "tiny-llama": {
        **_LLAMA_COMMON,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 49152,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
}


def architecture_config(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of a named architecture with overrides: transformers writes into the dicts a config is given
    (`rope_theta` into `rope_scaling`), which must never reach ARCHITECTURES or a cache key computed from it."""
    cfg = copy.deepcopy(ARCHITECTURES[name])
    cfg.update(copy.deepcopy(overrides or {}))
    return cfg


def count_parameters(cfg: dict[str, Any]) -> dict[str, int]:
    """Closed-form parameter count of a Llama-style decoder config (matches `model.num_parameters()`)."""
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or h // heads
    bias = 1 if cfg.get("attention_bias") else 0
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h + bias * (heads * hd + 2 * kv * hd + h)
    mlp = 3 * h * i
    per_layer = attn + mlp + 2 * h
    embed = cfg["vocab_size"] * h
    head = 0 if cfg.get("tie_word_embeddings") else cfg["vocab_size"] * h
    total = embed + n * per_layer + h + head
    return {
        "total": total,
        "embedding": embed,
        "lm_head": head,
        "per_layer": per_layer,
        "layers": n,
        "linear_per_layer": attn + mlp,
    }


@lru_cache(maxsize=64)
def read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def llama_like(cfg: dict[str, Any], where: str) -> tuple[dict[str, Any] | None, str]:
    """(config, note) when an HF config has the fields a Llama-style cost model needs; (None, why) otherwise."""
    cfg = cfg.get("text_config") or cfg
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in needed if k not in cfg]
    if missing:
        return None, f"{where}: model type {cfg.get('model_type')!r} lacks {missing}: architecture not modelled"
    note = where
    if cfg.get("model_type") not in LLAMA_LIKE:
        note += f" (model type {cfg.get('model_type')!r} costed as a Llama-style block)"
    return dict(cfg), note
