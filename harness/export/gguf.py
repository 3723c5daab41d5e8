"""GGUF files made by llama.cpp's own tools: its converter and its quantizer; checks and CPU speed.

- Converter: `convert_hf_to_gguf.py` (with its `conversion/` package and the `gguf-py` it was written against) is
  not installed with the llama-cpp-python wheel; it ships in the llama-cpp-python *source distribution*
  (`vendor/llama.cpp/`). `converter_dir()` keeps one copy per llama-cpp-python version in the medbench cache,
  `<cache>/llama.cpp-<version>/`, extracted from the sdist (`$MEDBENCH_LLAMA_CPP_SDIST`, else downloaded once with
  `pip download --no-binary :all: --no-deps llama-cpp-python==<installed version>`; `scripts/setup.sh` does it at
  setup). The converter runs as a subprocess of this Python, with the vendored `gguf-py` first on its path (the
  converter puts it there itself), so the pinned `gguf` package of the harness is never replaced. It needs
  `sentencepiece` (in the `gguf` extra).
- F16 comes from the converter (`--outtype f16`); Q8_0 / Q5_K_M / Q4_K_M from `llama_cpp.llama_model_quantize` on the
  F16 file. Where a tensor's rows are not a multiple of the K-quant block (256), llama.cpp falls back to another
  type for that tensor (it logs it); the per-type tensor counts of every file are recorded, so a "Q4_K_M" that is
  mostly fallback types says so.
- Checks: the GGUF header (architecture, context length, layers, width, vocabulary, chat template) against the
  source folder; llama.cpp's tokenizer on the fixture texts against the source tokenizer.
- Speed: greedy generation of `GEN_TOKENS` tokens with llama.cpp on the CPU, decode tokens/s (prompt excluded).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

SDIST_ENV = "MEDBENCH_LLAMA_CPP_SDIST"
GEN_TOKENS = 64
GEN_PROMPT = "What are the first-line treatments for community-acquired pneumonia in adults?"
NOT_INSTALLED = (
    "llama-cpp-python is not installed; add it with `bash scripts/setup.sh --with-gguf` (it compiles llama.cpp: "
    "minutes, with cmake and a C/C++ compiler), or ask for the hf format only (--formats hf needs nothing more)"
)

# format -> name of the llama_ftype constant in llama_cpp
QUANT_TYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}


class GgufUnavailable(RuntimeError):
    """llama.cpp's tools are not available here; the message says exactly what is missing."""


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_llama_cpp() -> Any:
    if llama_cpp_version() is None:
        raise GgufUnavailable(NOT_INSTALLED)
    try:
        import llama_cpp
    except Exception as exc:  # a broken build (missing shared library) is a clear reason too
        raise GgufUnavailable(
            f"llama-cpp-python is installed but does not import: {type(exc).__name__}: {exc}"
        ) from exc
    return llama_cpp


# ---------------------------------------------------------------------------------------------------- converter


def _extract_converter(sdist: Path, out: Path) -> None:
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/vendor/llama.cpp/", 1)
            if len(parts) == 2 and parts[1].startswith(wanted) and (m.isfile() or m.isdir()):
                m.name = parts[1]
                members.append(m)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise GgufUnavailable(f"{sdist} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        tar.extractall(out, members=members, filter="data")


def converter_dir(cache_dir: str | Path) -> Path:
    """The folder holding llama.cpp's `convert_hf_to_gguf.py` for the installed llama-cpp-python (fetched once)."""
    version = llama_cpp_version()
    if version is None:
        raise GgufUnavailable(NOT_INSTALLED)
    target = Path(cache_dir) / f"llama.cpp-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        sdist = Path(os.environ[SDIST_ENV]) if os.environ.get(SDIST_ENV) else None
        if sdist is None:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    "-q",
                    "-d",
                    tmp,
                    f"llama-cpp-python=={version}",
                ],
                capture_output=True,
                text=True,
            )
            found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if proc.returncode != 0 or not found:
                raise GgufUnavailable(
                    f"llama.cpp's converter ships in the llama-cpp-python {version} source distribution, which could "
                    f"not be downloaded (pip download exit {proc.returncode}: {proc.stderr.strip()[-300:]}); set "
                    f"{SDIST_ENV} to a local llama_cpp_python-{version}.tar.gz"
                )
            sdist = found[0]
        build = Path(tmp) / "converter"
        _extract_converter(sdist, build)
        (build / "medbench_source.json").write_text(json.dumps({"sdist": sdist.name, "version": version}))
        try:
            os.replace(build, target)
        except OSError:  # another process extracted it first
            pass
    return target


def convert_to_f16(
    hf_dir: Path, out_file: Path, cache_dir: str | Path, model_name: str | None = None
) -> dict[str, Any]:
    """Run llama.cpp's converter on a HF folder; returns {seconds, converter}. `model_name` (general.name) is
    given so that the file does not depend on the folder's name (the shipped HF folder or an intermediate one)."""
    require_llama_cpp()
    conv = converter_dir(cache_dir)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    proc = subprocess.run(
        [
            sys.executable,
            str(conv / "convert_hf_to_gguf.py"),
            str(hf_dir),
            "--outtype",
            "f16",
            "--outfile",
            str(tmp),
            *(["--model-name", model_name] if model_name else []),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError("llama.cpp's convert_hf_to_gguf.py failed:\n" + "\n".join(tail))
    os.replace(tmp, out_file)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "converter": f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {llama_cpp_version()} sdist)",
    }


def quantize(f16_file: Path, out_file: Path, fmt: str, threads: int | None = None) -> dict[str, Any]:
    """llama.cpp's quantizer (llama_model_quantize) from the F16 file."""
    llama_cpp = require_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[fmt])
    params.nthread = threads or os.cpu_count() or 1
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(tmp).encode(), params)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({fmt}) returned {rc}")
    os.replace(tmp, out_file)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "quantizer": f"llama_cpp.llama_model_quantize ({QUANT_TYPES[fmt]})",
    }


# ---------------------------------------------------------------------------------------------------- checks


def read_header(path: Path) -> dict[str, Any]:
    """The GGUF fields the checks compare, and the count of tensors per type."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = value("general.architecture")
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {
        "architecture": arch,
        "context_length": value(f"{arch}.context_length"),
        "block_count": value(f"{arch}.block_count"),
        "embedding_length": value(f"{arch}.embedding_length"),
        "vocab_size": len(tokens.data) if tokens is not None else None,
        "chat_template": value("tokenizer.chat_template"),
        "file_type": value("general.file_type"),
        "tensor_types": dict(sorted(types.items())),
        "n_tensors": len(reader.tensors),
    }


def check_metadata(header: dict[str, Any], hf_dir: Path, tokenizer: Any) -> dict[str, Any]:
    """GGUF header vs the source folder's config and tokenizer."""
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    expected = {
        "architecture": cfg.get("model_type"),
        "context_length": cfg.get("max_position_embeddings"),
        "block_count": cfg.get("num_hidden_layers"),
        "embedding_length": cfg.get("hidden_size"),
        "vocab_size": cfg.get("vocab_size"),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    checks = {
        k: {
            "gguf": header.get(k) if k != "chat_template" else _short(header.get(k)),
            "source": v if k != "chat_template" else _short(v),
            "equal": header.get(k) == v,
        }
        for k, v in expected.items()
    }
    return {"checks": checks, "passed": all(c["equal"] for c in checks.values())}


def _short(text: Any) -> Any:
    return text if not isinstance(text, str) or len(text) < 60 else f"{text[:40]}… ({len(text)} chars)"


def check_tokenizer(gguf_file: Path, tokenizer: Any) -> dict[str, Any]:
    """llama.cpp's tokenizer (from the GGUF) against the source tokenizer on the fixture texts and a chat turn."""
    from harness.export import FIXTURE_TEXTS

    llama_cpp = require_llama_cpp()
    llm = llama_cpp.Llama(model_path=str(gguf_file), vocab_only=True, verbose=False)
    texts = list(FIXTURE_TEXTS)
    if getattr(tokenizer, "chat_template", None):
        texts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": FIXTURE_TEXTS[0]}], tokenize=False, add_generation_prompt=True
            )
        )
    mismatches = []
    for text in texts:
        want = tokenizer(text, add_special_tokens=False)["input_ids"]
        got = llm.tokenize(text.encode(), add_bos=False, special=True)
        if list(got) != list(want):
            mismatches.append({"text": text[:40], "source": want[:12], "llama.cpp": list(got)[:12]})
    del llm
    return {
        "texts": len(texts),
        "mismatches": mismatches,
        "passed": not mismatches,
        "what": "llama.cpp tokenizer from the GGUF vs the source tokenizer (special tokens parsed)",
    }


# ---------------------------------------------------------------------------------------------------- speed


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def generation_speed(
    gguf_file: Path, tokenizer: Any, *, n_tokens: int = GEN_TOKENS, threads: int | None = None
) -> dict[str, Any]:
    """Greedy generation with llama.cpp on the CPU: decode tokens/s (after the prompt), prompt tokens/s."""
    llama_cpp = require_llama_cpp()
    threads = threads or os.cpu_count() or 1
    llm = llama_cpp.Llama(
        model_path=str(gguf_file), n_ctx=512, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, verbose=False
    )
    prompt = GEN_PROMPT
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": GEN_PROMPT}], tokenize=False, add_generation_prompt=True
        )
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    t0 = time.perf_counter()
    first = None
    n = 0
    for _tok in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
        n += 1
        if first is None:
            first = time.perf_counter()  # the prompt is evaluated before the first token comes
        if n >= n_tokens:
            break
    end = time.perf_counter()
    del llm
    decode_s = end - first if first is not None else None
    return {
        "engine": "llama.cpp (llama-cpp-python " + str(llama_cpp_version()) + ")",
        "threads": threads,
        "cpu": cpu_name(),
        "prompt_tokens": len(tokens),
        "generated_tokens": n,
        "prompt_s": round((first or end) - t0, 4),
        "decode_s": round(decode_s, 4) if decode_s else None,
        "tokens_per_s": round((n - 1) / decode_s, 2) if decode_s and n > 1 else None,
        "what": f"greedy decoding of {n_tokens} tokens after a {len(tokens)}-token chat prompt, CPU only, "
        f"{threads} threads; tokens/s excludes the prompt",
    }
