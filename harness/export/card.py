"""The model card (README.md of the exported folder), written from the cell's result record and the export scores.

Everything in it comes from recorded facts: base model and its source, method and its options, training data with
sha256, evaluation items and scores with standard errors, the report's caveats (noise level, winner's curse, chance
levels, synthetic weights), intended use, and the medical-use disclaimer the medical write-ups carry.
"""

from __future__ import annotations

from typing import Any

DISCLAIMER = (
    "**Medical-use disclaimer.** This model is a research artifact. It is not a medical device, has not been "
    "clinically validated, and must not be used to diagnose, treat or give medical advice to anyone. Its answers can "
    "be wrong, outdated or harmful while sounding confident. Always consult a qualified healthcare professional."
)

INTENDED_USE = (
    "Research on fine-tuning and quantizing small language models for medical question answering: reproducing and "
    "comparing the benchmark numbers below. Not for clinical decision support, patient-facing use or any setting where "
    "an answer affects a person's care."
)


def _pct(x: Any) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, (int, float)) else "–"


def _pts(x: Any) -> str:
    return f"{100 * x:+.1f}" if isinstance(x, (int, float)) else "–"


def base_model_text(model: dict[str, Any]) -> str:
    src = model.get("source")
    if src == "hub":
        return f"`{model.get('hub_id')}`" + (f" (revision {model['revision']})" if model.get("revision") else "")
    if src == "gguf":
        where = model.get("package") or model.get("path")
        return f"`{model.get('gguf_file') or model.get('path')}` (GGUF, from {where}), dequantized to a HF folder"
    if src == "synthetic":
        return f"SYNTHETIC random weights of the `{model.get('architecture')}` architecture"
    return f"`{model.get('path') or model.get('id')}` ({src})"


def model_card(
    record: Any, *, artifact: str = "hf", scores: dict[str, Any] | None = None, synthetic: bool = False
) -> str:
    """Markdown text of the card; `scores` is the export's {task: entry} of this artifact (optional)."""
    cfg = record.config
    model, method, train = cfg.get("model") or {}, cfg.get("method") or {}, cfg.get("train") or {}
    ev = record.metrics.get("eval") or {}
    data = record.metrics.get("data") or {}
    lines = [
        "---",
        "library_name: transformers",
        "tags: [medical, medbench, " + str(method.get("kind")) + "]",
        "license: other",
        "---",
        "",
        f"# {model.get('id')} · {method.get('name')} (medbench cell `{record.cell_id}`)",
        "",
    ]
    if synthetic:
        lines += [
            "> **SYNTHETIC WEIGHTS.** The base model has random weights; this export exists to test the "
            "export mechanics. Its accuracy means nothing.",
            "",
        ]
    lines += [
        DISCLAIMER,
        "",
        "## Model",
        "",
        f"- Base model: {base_model_text(model)}",
        f"- Method: {method.get('kind')} (`{method.get('name')}`), options "
        f"`{_compact(method.get('options'))}`; adapters merged into the base with peft `merge_and_unload` "
        "where the method trains adapters",
        f"- Training: {cfg.get('epochs')} epoch(s), learning rate {cfg.get('learning_rate')}, seed "
        f"{cfg.get('seed')}, max sequence length {train.get('max_seq_length')}, batch size "
        f"{train.get('batch_size')} × {train.get('gradient_accumulation_steps')} accumulation, precision "
        f"{train.get('precision')}",
        f"- Matrix `{record.matrix}`, config hash `{record.config_hash}`",
        "",
        "## Training data",
        "",
    ]
    for ds in train.get("datasets") or []:
        lines.append(
            f"- `{ds.get('path') or ds.get('hub_id')}` ({ds.get('format')}"
            + (f", first {ds['limit']} records" if ds.get("limit") else "")
            + ")"
        )
    for path, sha in sorted((record.data_files or {}).items()):
        lines.append(f"  - sha256 `{path}`: `{sha}`")
    if data.get("n_train") is not None or data.get("train_examples") is not None:
        lines.append(f"- Examples used: {data.get('n_train', data.get('train_examples'))}")
    lines += [
        "",
        "## Evaluation",
        "",
        "lm-evaluation-harness, 0-shot log-likelihood multiple choice, accuracy ± one standard error.",
        "",
        "| task | cell (as trained) | n | this artifact | n | Δ vs cell [95 % CI] | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, m in ev.items():
        s = (scores or {}).get(task) or {}
        comp = s.get("vs_cell") or {}
        ci = f"[{_pts(comp.get('ci_low'))}, {_pts(comp.get('ci_high'))}]" if comp.get("ci_low") is not None else ""
        lines.append(
            f"| {task} | {_pct(m.get('acc'))} ± {_pts(m.get('acc_stderr')).lstrip('+')} | {m.get('n')} | "
            f"{_pct(s.get('acc'))}"
            + (f" ± {_pts(s.get('acc_stderr')).lstrip('+')}" if s else "")
            + f" | {s.get('n', '–')} | {_pts(comp.get('diff'))} {ci} | "
            + (f"{comp['mcnemar_p']:.3g}" if comp.get("mcnemar_p") is not None else "–")
            + " |"
        )
    lines += [
        "",
        "## Caveats",
        "",
        "- One standard error is about 1.3 points on the full MedQA test set (1,273 items) and 2.1 on PubMedQA "
        "(500 items); on the subsets above it is larger (see ±). Differences smaller than about two standard "
        "errors are noise.",
        "- If this cell was chosen as the best of several after the fact, its score is optimistic (winner's curse).",
        '- Chance: MedQA 25 % (4 options); PubMedQA 33 % uniform, 55.2 % always answering "yes".',
        "- Benchmarks of exam-style questions do not measure safety, calibration or clinical usefulness.",
        f"- Artifact `{artifact}`: scores of quantized files loaded back through transformers measure the "
        "weights' quantization error, not llama.cpp's kernels (those are scored separately where labelled).",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "Generated by `medbench export`.",
        "",
    ]
    return "\n".join(lines)


def _compact(options: Any) -> str:
    if not isinstance(options, dict):
        return str(options)
    return ", ".join(f"{k}={v}" for k, v in options.items() if v not in (None, False, [], {}))
