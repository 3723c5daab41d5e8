"""The standalone Hugging Face folder: the cell's adapter merged into its base, safetensors, tokenizer and chat
template, a model card.

The merge is done in fp32 on the base reloaded unquantized from its source (for a QLoRA cell too: merging into
4-bit weights is wrong, peft #2321), with `merge_and_unload()` whose return value is the merged model. Integrity,
in two steps:

1. in memory: the merged model's logits must equal those of the base-plus-adapter model on fixture texts within
   `MERGE_ATOL` (both fp32, same inputs), else nothing is written;
2. on disk, the file as shipped: the folder is saved in the requested dtype (`auto`: the base's own dtype from its
   config), reloaded by transformers in that dtype and run in it, and compared with the reference (base + adapter
   unmerged, fp32) by `verify.check_hf_folder` (logits and greedy continuations on fixed prompts, tolerance stated
   in harness/export/verify.py). A dtype that fails is recorded with its figures and the folder is saved again in
   fp32 (the merged model is kept in fp32 throughout: each save casts a copy); the record says which dtype was
   shipped and why.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.export import DTYPES, FIXTURE_TEXTS, MERGE_ATOL
from harness.export.source import ExportRefused, Source

DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def fixture_batch(tokenizer: Any) -> Any:
    """Token ids of the fixture texts (and one chat-templated turn), padded to one batch."""
    texts = list(FIXTURE_TEXTS)
    if getattr(tokenizer, "chat_template", None):
        texts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": FIXTURE_TEXTS[0]}], tokenize=False, add_generation_prompt=True
            )
        )
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def logits_of(model: Any, batch: Any) -> Any:
    import torch

    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return out * batch["attention_mask"].unsqueeze(-1)  # padding positions compare as 0


def natural_dtype(source: Source, cache_dir: str | Path) -> tuple[str, str]:
    """(dtype, why) of `--hf-dtype auto`: the dtype the base's (or the checkpoint's) config records."""
    from harness.models import resolve_model_path

    folder = source.weights if source.kind == "checkpoint" else resolve_model_path(source.model_spec, cache_dir)
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return "fp32", "the base's config could not be read: fp32"
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    if name in DTYPE_NAMES:
        return DTYPE_NAMES[name], f"the base's own dtype ({name} in its config.json)"
    return "fp32", f"the base's config records no known dtype ({name!r}): fp32"


def merged_model(source: Source, cache_dir: str | Path) -> tuple[Any, Any, dict[str, Any], Any]:
    """(merged fp32 model, tokenizer, integrity record, reference) of a cell: its adapter merged into its base, or
    its full checkpoint as saved. The reference (verify.Reference) is base + adapter unmerged, fp32, on the fixed
    prompts, taken before the merge."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.export.verify import make_reference
    from harness.models import load_tokenizer, resolve_model_path

    spec = source.model_spec
    if source.kind == "checkpoint":
        from transformers import AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(source.weights)
        reference = make_reference(model, tokenizer)
        reference.what = "the full checkpoint as saved, fp32 (transformers)"
        return (
            model,
            tokenizer,
            {"merge": "none (full checkpoint)", "logits_max_abs_diff": 0.0, "atol": MERGE_ATOL, "passed": True},
            reference,
        )
    from peft import PeftModel

    base_path = resolve_model_path(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(base, str(source.weights)).eval()
    reference = make_reference(with_adapter, tokenizer)  # before the merge, which changes the base in place
    batch = fixture_batch(tokenizer)
    ref = logits_of(with_adapter, batch)
    merged = with_adapter.merge_and_unload()  # the return value is the merged model
    got = logits_of(merged, batch)
    diff = float((ref - got).abs().max())
    from harness.methods.base import quantizes_base

    quantized = quantizes_base(source.record.config.get("method") or {})
    integrity = {
        "merge": "peft merge_and_unload, fp32, onto the base reloaded unquantized"
        + (" (never onto the 4-bit weights it trained against)" if quantized else ""),
        "logits_max_abs_diff": diff,
        "atol": MERGE_ATOL,
        "passed": diff <= MERGE_ATOL,
        "fixture_tokens": int(batch["attention_mask"].sum()),
    }
    if not integrity["passed"]:
        raise ExportRefused(
            f"cell {source.cell_id}: merged logits differ from base+adapter logits by {diff:.3g} "
            f"(> {MERGE_ATOL}): the merge is wrong, nothing was written"
        )
    return merged.eval(), tokenizer, integrity, reference


def tokenizer_round_trip(original: Any, exported_dir: Path) -> dict[str, Any]:
    """The exported tokenizer encodes the fixture texts (and a chat turn) exactly as the original."""
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(exported_dir)
    texts = list(FIXTURE_TEXTS)
    mismatches = [
        t[:40]
        for t in texts
        if original(t, add_special_tokens=False)["input_ids"] != exported(t, add_special_tokens=False)["input_ids"]
    ]
    same_template = getattr(original, "chat_template", None) == getattr(exported, "chat_template", None)
    return {
        "texts": len(texts),
        "mismatches": mismatches,
        "chat_template_equal": same_template,
        "passed": not mismatches and same_template,
    }


def save_folder(model: Any, tokenizer: Any, folder: Path, dtype: str) -> None:
    """Safetensors of a copy of `model` cast to `dtype` (the fp32 model itself is left as it is), and the
    tokenizer."""
    import torch

    shipped = model if dtype == "fp32" else copy.deepcopy(model).to(getattr(torch, DTYPES[dtype]))
    if hasattr(shipped.config, "quantization_config"):
        delattr(shipped.config, "quantization_config")
    shipped.config.use_cache = True
    shipped.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del shipped


def write_hf(
    source: Source,
    out: Path,
    cache_dir: str | Path,
    *,
    dtype: str = "auto",
    check: bool = True,
    card: Callable[[dict[str, Any]], str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Merge and save the standalone folder at `out` (replaced atomically); returns (integrity record, reference).

    `check`: reload the folder as saved and compare it with the reference (module doc), falling back to fp32 when
    the requested dtype fails; False for a folder that is only the GGUF converter's input (saved in fp32, the most
    faithful source, and not shipped). `card(integrity)` gives the README.md text, written once the dtype is known.
    """
    from harness.export.verify import check_hf_folder, summary

    model, tokenizer, integrity, reference = merged_model(source, cache_dir)
    out = Path(out)
    if dtype == "auto":
        dtype, why = natural_dtype(source, cache_dir)
    else:
        why = "requested (--hf-dtype)"
    candidates = [dtype] + (["fp32"] if check and dtype != "fp32" else [])
    attempts: list[dict[str, Any]] = []
    tmp = out.with_name(f".{out.name}.tmp")
    for i, dt in enumerate(candidates):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_folder(model, tokenizer, tmp, dt)
        integrity["tokenizer"] = tokenizer_round_trip(tokenizer, tmp)
        if not integrity["tokenizer"]["passed"]:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportRefused(
                f"cell {source.cell_id}: the exported tokenizer does not round-trip: {integrity['tokenizer']}"
            )
        if not check:
            break
        shipped = check_hf_folder(reference, tmp, dt, tokenizer)
        attempts.append({"dtype": dt, **{k: shipped[k] for k in ("logits_max_abs_diff", "tolerance", "passed")}})
        attempts[-1]["greedy_agree_min"] = shipped["greedy_agree_min"]
        integrity["shipped"] = shipped
        if shipped["passed"] or i == len(candidates) - 1:
            break
        why = (
            f"{dt} failed the check on the saved folder ({summary(shipped)}): saved again in fp32, which keeps the "
            "merged weights as computed"
        )
    dt = candidates[len(attempts) - 1] if check else candidates[0]
    integrity["dtype"] = dt
    integrity["dtype_reason"] = why if check else f"{dt}: the GGUF converter's input only (not shipped, not checked)"
    integrity["dtype_attempts"] = attempts
    if check and not integrity["shipped"]["passed"]:
        integrity["dtype_reason"] = f"no dtype passed the check on the saved folder ({summary(integrity['shipped'])})"
    (tmp / "medbench_export.json").write_text(
        json.dumps(
            {
                "cell_id": source.cell_id,
                "matrix": source.record.matrix,
                "config_hash": source.record.config_hash,
                "weights_sha256": (source.record.metrics.get("saved") or {}).get("sha256"),
                "dtype": dt,
                "dtype_reason": integrity["dtype_reason"],
                "check": None
                if not check
                else {
                    k: integrity["shipped"][k]
                    for k in ("logits_max_abs_diff", "tolerance", "greedy_agree_min", "greedy_tokens", "passed")
                },
            },
            indent=1,
        )
    )
    if card is not None:
        (tmp / "README.md").write_text(card(integrity))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return integrity, reference
