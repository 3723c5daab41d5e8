"""Content-addressed cache of prepared (cleaned, tokenized, split) data.

The key is a sha256 over everything the prepared data depends on: the data files' contents, the dataset specs,
the cleaning options, the tokenizer's identity, the system prompt, max_seq_length, validation_fraction,
max_examples, the seed and `FORMAT_VERSION` (bump it whenever the preparation code changes its output).
Entries are `<cache_dir>/data/<key>.json.gz`, written atomically (temporary file + `os.replace`), so a reader
sees a complete entry or none. An unreadable entry counts as a miss and is rewritten.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import weakref
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2  # 2: the training examples themselves are kept (the contamination check reads them)


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


# tokenizer -> (its size, the hashes of its vocabulary and backend): these take ~0.5 s on a small CPU, and a cell
# or a test computes them for the same tokenizer object several times
_VOCAB_HASHES: "weakref.WeakKeyDictionary[Any, tuple[int, dict[str, str]]]" = weakref.WeakKeyDictionary()


def _vocab_hashes(tokenizer: Any) -> dict[str, str]:
    size = len(tokenizer)  # adding tokens changes it and so invalidates the memo
    try:
        memo = _VOCAB_HASHES.get(tokenizer)
    except TypeError:  # not weak-referenceable
        memo = None
    if memo is not None and memo[0] == size:
        return memo[1]
    hashes = {"vocab_sha256": sha256_json(sorted(tokenizer.get_vocab().items()))}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # merges, normalizer, pre-tokenizer and post-processor (which adds bos); not the mutable padding/truncation
        spec = json.loads(backend.to_str())
        hashes["backend_sha256"] = sha256_json(
            {k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer", "post_processor", "added_tokens")}
        )
    try:
        _VOCAB_HASHES[tokenizer] = (size, hashes)
    except TypeError:
        pass
    return hashes


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What decides how text becomes tokens; no text is tokenized to compute it."""
    return {
        "vocab_size": len(tokenizer),
        **_vocab_hashes(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "bos_token": tokenizer.bos_token,
    }


def cache_key(parts: dict[str, Any]) -> str:
    return sha256_json({"format_version": FORMAT_VERSION, **parts})


def entry_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "data" / f"{key}.json.gz"


def load_entry(cache_dir: Path, key: str) -> dict[str, Any] | None:
    path = entry_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            entry = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError):
        return None
    if entry.get("format_version") != FORMAT_VERSION or entry.get("key") != key:
        return None
    return entry


def save_entry(cache_dir: Path, key: str, entry: dict[str, Any]) -> Path:
    path = entry_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as f:
            f.write(
                json.dumps(
                    {"format_version": FORMAT_VERSION, "key": key, **entry}, ensure_ascii=False, separators=(",", ":")
                ).encode("utf-8")
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache folder should stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
