"""Load -> clean -> template and tokenize -> length filter -> split -> cap, cached by content hash.

The order matters and is the same for every cell: the validation split is drawn from the cleaned examples with
the seed, then `max_examples` caps the training part, so every method of a model row trains on the same examples
and is validated on the same held-out ones.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.cache import cache_key, load_entry, save_entry, sha256_json, tokenizer_identity
from harness.data.clean import clean_examples
from harness.data.examples import DataError, Example
from harness.data.format import IGNORE_INDEX, encode_examples
from harness.data.loaders import load_examples, read_hub_records
from harness.hashing import sha256_file


@dataclass
class PreparedData:
    train: list[dict[str, list[int]]]  # {"input_ids", "labels"}; labels -100 except response tokens + end-of-turn
    validation: list[dict[str, list[int]]]
    heldout: list[Example]  # the validation examples untokenized, same order (for generated-answer metrics)
    stats: dict[str, Any] = field(default_factory=dict)
    # the training examples untokenized, same order as `train`: what the contamination check compares
    train_examples: list[Example] = field(default_factory=list)
    data_files: dict[str, str] = field(default_factory=dict)  # absolute path (or hub:<id>) -> sha256


def _with_system_prompt(ex: Example, system_prompt: str | None) -> Example:
    # a record's own system message wins: it is part of the data
    if not system_prompt or ex.messages[0]["role"] == "system":
        return ex
    if ex.raw:  # a task's own prompt is scored without any system prompt: train it the same way
        return ex
    return dataclasses.replace(ex, messages=[{"role": "system", "content": system_prompt}, *ex.messages])


def _data_files(train, data_dir: Path) -> dict[str, str]:
    from harness.paths import display_data_path, resolve_data_path

    files: dict[str, str] = {}
    for i, spec in enumerate(train.datasets):
        if spec.path:
            path = resolve_data_path(spec.path, Path(data_dir)).resolve()
            if not path.is_file():
                raise DataError(f"{path}: data file not found (train.datasets[{i}].path)")
            files[display_data_path(path, data_dir)] = sha256_file(path)
        else:
            # a hub dataset has no file to hash here: hash its records (read from the local datasets cache)
            records = read_hub_records(spec.hub_id, spec.hub_config, spec.split, spec.limit)
            files[f"hub:{spec.hub_id}/{spec.hub_config or ''}/{spec.split}"] = sha256_json([r for _, r in records])
    return files


def _split(n: int, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices: a seeded shuffle, the first part validation; train in shuffled order."""
    order = list(range(n))
    random.Random(f"split-{seed}").shuffle(order)
    n_val = round(n * validation_fraction)
    if validation_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return order[n_val:], order[:n_val]


def prepare_data(train, tokenizer, data_dir: Path, cache_dir: Path, seed: int) -> PreparedData:
    """Prepared data for a `TrainConfig`, from the cache when nothing it depends on has changed."""
    if not train.datasets:
        raise DataError("train.datasets is empty: name at least one data file")
    data_files = _data_files(train, data_dir)
    key_parts = {
        "data_files": sorted(data_files.values()),
        "datasets": [spec.model_dump(mode="json") for spec in train.datasets],
        "cleaning": train.cleaning.model_dump(mode="json"),
        "tokenizer": tokenizer_identity(tokenizer),
        "system_prompt": train.system_prompt,
        "max_seq_length": train.max_seq_length,
        "validation_fraction": train.validation_fraction,
        "max_examples": train.max_examples,
        "seed": seed,
    }
    key = cache_key(key_parts)
    entry = load_entry(cache_dir, key)
    if entry is not None:
        return PreparedData(
            train=entry["train"],
            validation=entry["validation"],
            heldout=[Example.from_dict(d) for d in entry["heldout"]],
            stats={**entry["stats"], "cache_hit": True, "cache_key": key},
            data_files=data_files,
            train_examples=[Example.from_dict(d) for d in entry["train_examples"]],
        )

    examples: list[Example] = []
    for spec in train.datasets:
        loaded, _ = load_examples(spec, data_dir)
        examples.extend(loaded)
    examples, report = clean_examples(examples, train.cleaning)
    examples = [_with_system_prompt(ex, train.system_prompt) for ex in examples]

    encoded, encode_report = encode_examples(examples, tokenizer)
    kept_examples, kept_encoded = [], []
    max_len = train.max_seq_length
    for ex, enc in zip(examples, encoded):
        if len(enc["input_ids"]) > max_len:
            if train.cleaning.drop_overlength or all(x == IGNORE_INDEX for x in enc["labels"][:max_len]):
                report.overlength += 1  # dropped (also when truncation would leave no response token)
                continue
            enc = {"input_ids": enc["input_ids"][:max_len], "labels": enc["labels"][:max_len]}
            report.truncated += 1
        kept_examples.append(ex)
        kept_encoded.append(enc)
    report.kept = len(kept_examples)
    for ex in kept_examples:
        report.by_source[ex.source]["kept"] += 1

    train_idx, val_idx = _split(len(kept_examples), train.validation_fraction, seed)
    available = len(train_idx)
    if train.max_examples is not None:
        train_idx = train_idx[: train.max_examples]
    train_idx, val_idx = sorted(train_idx), sorted(val_idx)  # file order: easier to audit; batches shuffle anyway
    if not train_idx:
        raise DataError(f"no training examples left after cleaning ({report.as_dict()})")

    train_enc = [kept_encoded[i] for i in train_idx]
    val_enc = [kept_encoded[i] for i in val_idx]
    lengths = [len(e["input_ids"]) for e in train_enc]
    stats = {
        "cleaning": report.as_dict(),
        "format": {
            "template": encode_report.template,
            "boundary_retokenized": encode_report.boundary_retokenized,
            "eos_appended": encode_report.eos_appended,
        },
        "split": {"train_available": available, "train": len(train_idx), "validation": len(val_idx)},
        "tokens": {
            "train_examples": len(train_enc),
            "train_tokens": sum(lengths),
            "train_label_tokens": sum(sum(x != IGNORE_INDEX for x in e["labels"]) for e in train_enc),
            "validation_examples": len(val_enc),
            "validation_tokens": sum(len(e["input_ids"]) for e in val_enc),
            "mean_length": sum(lengths) / len(lengths),
            "max_length": max(lengths),
        },
    }
    heldout = [kept_examples[i] for i in val_idx]
    save_entry(
        cache_dir,
        key,
        {
            "key_parts": {**key_parts, "data_files": data_files},
            "stats": stats,
            "train": train_enc,
            "validation": val_enc,
            "heldout": [ex.to_dict() for ex in heldout],
            "train_examples": [kept_examples[i].to_dict() for i in train_idx],
        },
    )
    return PreparedData(
        train=train_enc,
        validation=val_enc,
        heldout=heldout,
        stats={**stats, "cache_hit": False, "cache_key": key},
        data_files=data_files,
        train_examples=[kept_examples[i] for i in train_idx],
    )
