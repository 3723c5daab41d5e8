"""The standalone Hugging Face folder: the cell's adapter merged into its base, safetensors, tokenizer and chat
template, a model card.

The merge is done in fp32 on the base reloaded unquantized from its source (for a QLoRA cell too: merging into
4-bit weights is wrong, peft #2321), with `merge_and_unload()` whose return value is the merged model. Integrity:
the merged model's logits must equal those of the base-plus-adapter model on fixture texts within
`MERGE_ATOL` (both fp32, same inputs); only then is the model cast to the shipping dtype and saved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.export.source import ExportRefused, Source

# max |logit difference| allowed between the base+adapter model and the merged model, both in fp32. A merge adds
# B·A·scale into W once instead of computing it per forward; the only difference is fp32 rounding (~1e-6 relative),
# so 1e-3 absolute on logits of magnitude ~10 is loose enough for rounding and tight enough to catch a wrong merge.
MERGE_ATOL = 1e-3

FIXTURE_TEXTS = (
    "A 45-year-old man presents with chest pain radiating to the left arm. What is the most likely diagnosis?",
    "Question: Does aspirin reduce the risk of myocardial infarction? Answer: yes",
    "Hämoglobin 13,5 g/dl — paracétamol 500 mg, 2× täglich; 血压 120/80 mmHg.",
)

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


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


def merged_model(source: Source, cache_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(merged fp32 model, tokenizer, integrity record) of a cell: its adapter merged into its base, or its full
    checkpoint as saved."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import load_tokenizer, resolve_model_path

    spec = source.model_spec
    if source.kind == "checkpoint":
        from transformers import AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(source.weights)
        return (
            model,
            tokenizer,
            {"merge": "none (full checkpoint)", "logits_max_abs_diff": 0.0, "atol": MERGE_ATOL, "passed": True},
        )
    from peft import PeftModel

    base_path = resolve_model_path(spec, cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(base, str(source.weights)).eval()
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
    return merged.eval(), tokenizer, integrity


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


def write_hf(
    source: Source, out: Path, cache_dir: str | Path, *, dtype: str = "bf16", card_text: str | None = None
) -> dict[str, Any]:
    """Merge and save the standalone folder at `out` (replaced atomically); returns its integrity record."""
    import torch

    model, tokenizer, integrity = merged_model(source, cache_dir)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = model.to(getattr(torch, DTYPES[dtype]))
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if card_text is not None:
        (tmp / "README.md").write_text(card_text)
    (tmp / "medbench_export.json").write_text(
        json.dumps(
            {
                "cell_id": source.cell_id,
                "matrix": source.record.matrix,
                "config_hash": source.record.config_hash,
                "weights_sha256": (source.record.metrics.get("saved") or {}).get("sha256"),
                "dtype": dtype,
            },
            indent=1,
        )
    )
    integrity["tokenizer"] = tokenizer_round_trip(tokenizer, tmp)
    if not integrity["tokenizer"]["passed"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportRefused(
            f"cell {source.cell_id}: the exported tokenizer does not round-trip: {integrity['tokenizer']}"
        )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    integrity["dtype"] = dtype
    return integrity
