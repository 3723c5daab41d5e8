"""The model card (README.md of the exported folder), written from the cell's result record and the export scores.

Everything in it comes from recorded facts: base model and its source, method and its options, training data with
sha256 (the cell's `train.datasets` only; the evaluation files are listed apart, as what it was evaluated on), the
dtype shipped and the check of the saved file against base + adapter, evaluation items and scores with standard
errors, the report's caveats (noise level, winner's curse, chance levels, synthetic weights, a quantized base),
intended use, and the medical-use disclaimer the medical write-ups carry.
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


def _matches(key: str, path: str | None) -> bool:
    if not path:
        return False
    key, path = key.replace("\\", "/"), str(path).replace("\\", "/")
    return key == path or key.endswith("/" + path) or path.endswith("/" + key)


def data_files_split(record: Any) -> dict[str, list[dict[str, Any]]]:
    """The record's `data_files` ({path: sha256}, training and evaluation files mixed) split into the training
    datasets (`config.train.datasets`), the evaluation files (`metrics.eval.<task>.data.path`) and any other."""
    files = dict(record.data_files or {})
    used: set[str] = set()
    train_out, eval_out = [], []
    for ds in (record.config.get("train") or {}).get("datasets") or []:
        path = ds.get("path")
        keys = [k for k in files if _matches(k, path)]
        used.update(keys)
        train_out.append({**ds, "name": path or ds.get("hub_id"), "sha256": files[keys[0]] if keys else None})
    for task, m in (record.metrics.get("eval") or {}).items():
        data = m.get("data") or {}
        path = data.get("path")
        keys = [k for k in files if _matches(k, path)]
        used.update(keys)
        eval_out.append(
            {
                "task": task,
                "path": path,
                "sha256": data.get("sha256") or (files[keys[0]] if keys else None),
                "subset": data.get("subset"),
            }
        )
    other = [{"path": k, "sha256": v} for k, v in sorted(files.items()) if k not in used]
    return {"train": train_out, "eval": eval_out, "other": other}


def model_card(
    record: Any,
    *,
    artifact: str = "hf",
    scores: dict[str, Any] | None = None,
    synthetic: bool = False,
    integrity: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> str:
    """Markdown text of the card; `scores` is the export's {task: entry} of this artifact (optional), `integrity`
    the HF folder's integrity record (dtype shipped, check of the saved folder), `base` the base's GGUF file
    (source.base_weights_file) where it came from one."""
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
    split = data_files_split(record)
    for ds in split["train"]:
        lines.append(
            f"- `{ds['name']}` ({ds.get('format')}"
            + (f", first {ds['limit']} records" if ds.get("limit") else "")
            + ")"
            + (f", sha256 `{ds['sha256']}`" if ds.get("sha256") else "")
        )
    if data.get("n_train") is not None or data.get("train_examples") is not None:
        lines.append(f"- Examples used: {data.get('n_train', data.get('train_examples'))}")
    lines += ["", "Evaluated on (test files, never trained on):", ""]
    for e in split["eval"]:
        lines.append(
            f"- {e['task']}: `{e['path']}`"
            + (f" ({e['subset']})" if e.get("subset") else "")
            + (f", sha256 `{e['sha256']}`" if e.get("sha256") else "")
        )
    if split["other"]:
        lines += ["", "Other data files the cell recorded (neither a training dataset nor a task's file):", ""]
        lines += [f"- `{o['path']}`, sha256 `{o['sha256']}`" for o in split["other"]]
    lines += _shipped_lines(integrity, base)
    lines += [
        "",
        "## Evaluation",
        "",
        "lm-evaluation-harness, 0-shot log-likelihood multiple choice, accuracy ± one standard error. The cell column "
        "is the cell as trained (adapter unmerged) on the same items as this artifact where they were paired.",
        "",
        "| task | cell (as trained) | n | this artifact | n | Δ vs cell [95 % CI] | McNemar p |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_score_row(task, m, (scores or {}).get(task) or {}) for task, m in ev.items()]
    lines += ["", "`*`: exact McNemar p < 0.05 and the 95 % interval excludes 0."]
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


def _score_row(task: str, m: dict[str, Any], s: dict[str, Any]) -> str:
    """One row of the card's evaluation table: the cell (as trained) and this artifact, paired."""
    comp = s.get("vs_cell") or {}
    ci = f"[{_pts(comp.get('ci_low'))}, {_pts(comp.get('ci_high'))}]" if comp.get("ci_low") is not None else ""
    if comp.get("acc_a") is not None:  # the cell on the paired items (re-scored where --limit changed them)
        cell = f"{_pct(comp['acc_a'])} | {comp.get('n')}"
    else:
        cell = f"{_pct(m.get('acc'))} ± {_pts(m.get('acc_stderr')).lstrip('+')} | {m.get('n')}"
    sig = (
        comp.get("mcnemar_p") is not None
        and comp["mcnemar_p"] < 0.05
        and comp.get("ci_low") is not None
        and (comp["ci_low"] > 0 or comp["ci_high"] < 0)
    )
    return (
        f"| {task} | {cell} | "
        f"{_pct(s.get('acc'))}"
        + (f" ± {_pts(s.get('acc_stderr')).lstrip('+')}" if s else "")
        + f" | {s.get('n', '–')} | {_pts(comp.get('diff'))}{'*' if sig else ''} {ci} | "
        + (f"{comp['mcnemar_p']:.3g}" if comp.get("mcnemar_p") is not None else "–")
        + " |"
    )


def _shipped_lines(integrity: dict[str, Any] | None, base: dict[str, Any] | None) -> list[str]:
    """The "This file" section: dtype shipped and why, the check of the saved file, a quantized base."""
    if not integrity and not (base and base.get("quantized")):
        return []
    lines = ["", "## This file", ""]
    if integrity:
        lines.append(f"- Weights saved as **{integrity.get('dtype')}**: {integrity.get('dtype_reason')}.")
        for a in integrity.get("dtype_attempts") or []:
            lines.append(
                f"  - {a['dtype']}: max |logit difference| {a['logits_max_abs_diff']:.3g} (tolerance "
                f"{a['tolerance']:.2g}), greedy agreement {a.get('greedy_agree_min')} tokens: "
                + ("passed" if a["passed"] else "failed")
            )
        shipped = integrity.get("shipped")
        if shipped:
            verdict = {True: "passed", False: "FAILED", None: "reported"}[shipped.get("passed")]
            lines.append(
                f"- Checked on the saved folder ({shipped.get('loaded_as')}) against "
                f"the cell's base + adapter unmerged in fp32, on {len(shipped.get('prompts') or [])} fixed prompts: "
                f"max |logit difference| {shipped['logits_max_abs_diff']:.3g}, tolerance "
                f"{shipped['tolerance']:.2g} ({shipped.get('tolerance_rule')}); the greedy continuation agrees for "
                f"{shipped['greedy_agree_min']} of {shipped['greedy_tokens']} tokens on the worst prompt: "
                f"**{verdict}**."
            )
    if base and base.get("quantized"):
        from harness.formatting import fmt_bytes

        lines.append(
            f"- The base model came from a {base.get('type')} GGUF (`{base.get('file')}`"
            + (f", {fmt_bytes(base['bytes'])}" if base.get("bytes") else "")
            + "). A larger file (bf16, fp32, F16, Q8_0) is not more precise than that base: the base weights are "
            f"its {base.get('type')} values dequantized; the extra bits carry only what training changed."
        )
    return lines


def _compact(options: Any) -> str:
    if not isinstance(options, dict):
        return str(options)
    return ", ".join(f"{k}={v}" for k, v in options.items() if v not in (None, False, [], {}))
