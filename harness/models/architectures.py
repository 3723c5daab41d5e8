"""Named real architectures for synthetic (random-initialised) models, as plain config dicts (no torch).

The shapes are copied from the public `config.json` of each model; speed and memory depend on these shapes,
not on the weights, so a random-initialised copy measures them offline. Accuracy of such a model means nothing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
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


# The seven linear projections of a Llama-style block.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    lm_head: int  # 0 when tied to the embedding
    per_layer: int
    layers: int
    linear_per_layer: int  # matmul weights of one block (biases included when the config has them)

    @property
    def block_linear(self) -> int:
        return self.layers * self.linear_per_layer


@dataclass(frozen=True)
class Architecture:
    """A decoder's shapes, typed, built once per cell from an HF-style config (`from_config`): what FLOPs, memory
    estimates and methods' costs are computed from. `config` keeps the full HF config (to build the model on the meta
    device, e.g. to count a PEFT adapter's parameters exactly)."""

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    attention_bias: bool = False
    max_positions: int | None = None
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], where: str) -> tuple[Architecture | None, str]:
        """(architecture, note) when an HF config has the fields a Llama-style cost model needs; (None, why)."""
        cfg = dict(cfg.get("text_config") or cfg)
        needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        missing = [k for k in needed if k not in cfg]
        if missing:
            return None, f"{where}: model type {cfg.get('model_type')!r} lacks {missing}: architecture not modelled"
        note = where
        if cfg.get("model_type") not in LLAMA_LIKE:
            note += f" (model type {cfg.get('model_type')!r} costed as a Llama-style block)"
        h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        arch = cls(
            model_type=str(cfg.get("model_type") or "llama"),
            hidden=h,
            intermediate=int(cfg["intermediate_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or h // heads),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings")),
            attention_bias=bool(cfg.get("attention_bias")),
            max_positions=int(cfg["max_position_embeddings"]) if cfg.get("max_position_embeddings") else None,
            config=cfg,
        )
        return arch, note

    @classmethod
    def named(cls, name: str, overrides: dict[str, Any] | None = None) -> Architecture:
        arch, _ = cls.from_config(architecture_config(name, overrides), name)
        assert arch is not None
        return arch

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of the seven projections of one block, by module name."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @cached_property
    def params(self) -> ParamCounts:
        """Closed-form parameter counts (match `model.num_parameters()`: tests/test_models.py)."""
        h, bias = self.hidden, 1 if self.attention_bias else 0
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + bias * (self.q_dim + 2 * self.kv_dim + h)
        mlp = 3 * h * self.intermediate
        embed = self.vocab * h
        head = 0 if self.tied else self.vocab * h
        per_layer = attn + mlp + 2 * h
        return ParamCounts(
            total=embed + self.layers * per_layer + h + head,
            embedding=embed,
            lm_head=head,
            per_layer=per_layer,
            layers=self.layers,
            linear_per_layer=attn + mlp,
        )

    @property
    def lm_head_matmul(self) -> int:
        """The LM head is a vocab × hidden matmul for every token, tied to the embedding or not."""
        return self.vocab * self.hidden

    @property
    def linear(self) -> int:
        """N: parameters that take part in matmuls per token (block projections + LM head); no embedding lookup."""
        return self.params.block_linear + self.lm_head_matmul

    @property
    def first_block_qkv(self) -> int:
        """Weights of the first block's q, k and v projections (their inputs come straight from the embedding)."""
        shapes = self.linear_shapes()
        return sum(shapes[m][0] * shapes[m][1] for m in ("q_proj", "k_proj", "v_proj"))

    def lora_params(self, r: int, targets: list[str], *, dora: bool = False) -> int:
        """LoRA adapter parameters: each adapted Linear(in, out) gains A (r×in) and B (out×r) per layer (+ out for
        DoRA's magnitude vector)."""
        shapes = self.linear_shapes()
        unknown = [m for m in targets if m not in shapes]
        if unknown:
            raise ValueError(f"unknown target module(s) {unknown}; known: {', '.join(shapes)}")
        return self.layers * sum(r * (shapes[m][0] + shapes[m][1]) + (shapes[m][1] if dora else 0) for m in targets)


@lru_cache(maxsize=64)
def read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def llama_like(cfg: dict[str, Any], where: str) -> tuple[Architecture | None, str]:
    """`Architecture.from_config` (the name sources use)."""
    return Architecture.from_config(cfg, where)
