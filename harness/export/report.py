"""The report's Export section: one row per exported artifact and scoring engine, read from
`results/<matrix>/<cell-id>/export/<format>.json` (written by `medbench export`), led per cell by the reference row
(the cell as trained, unmerged: its re-scored items where the export re-scored it, else its own result record).

Each row shows the file's real tensor-type mix (a small model's "Q4_K_M" is mostly Q5_0 fallbacks), the check of the
file as written against base + adapter (max |logit difference| vs its tolerance, greedy tokens agreeing), and the
paired scores marked like the main table (`*`: exact McNemar p < 0.05 and the exact 95 % interval excludes 0).
Below the table: each file's greedy continuations of the fixed prompts beside the reference's. Light: no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.export import EXPORT_DIR, FORMATS

ALPHA = 0.05  # as harness/report/render.py and harness/evaluation/stats.py

FORMAT_LABELS = {
    "cell": "cell as trained (unmerged)",
    "hf": "HF folder (merged)",
    "f16": "GGUF F16",
    "q8_0": "GGUF Q8_0",
    "q5_k_m": "GGUF Q5_K_M",
    "q4_k_m": "GGUF Q4_K_M",
}
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def load_export_records(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(Path(results_dir).glob(f"*/{EXPORT_DIR}/*.json")):
        if path.name == "cell.json" and (path.parent / "as_trained.json").is_file():
            continue  # the same record under its old name
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("format"):
            out.append(rec)
    order = {f: i for i, f in enumerate(("cell", *FORMATS))}
    return sorted(out, key=lambda r: (r.get("cell_id", ""), order.get(r["format"], 99)))


def cell_reference_record(
    results_dir: Path, cell_id: str, artifacts: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The reference row of a cell whose export wrote no record of the cell itself: its scores from its result
    record, or, per task, the cell's side of the artifacts' paired comparisons (`acc_a` on the `n` paired items)
    where those were made on other items (an export with --limit re-scores the cell)."""
    import math

    from harness.results import read_result, result_path

    try:
        rec = read_result(result_path(Path(results_dir), cell_id))
    except Exception:
        return None
    if rec is None:
        return None
    ev = rec.metrics.get("eval") or {}
    scores = {t: {k: m.get(k) for k in ("acc", "acc_stderr", "n")} for t, m in ev.items()}
    paired = False
    for art in artifacts or []:
        for engine_scores in (art.get("scores") or {}).values():
            for task, s in (engine_scores or {}).items():
                vs = s.get("vs_cell") or {}
                n, acc = vs.get("n"), vs.get("acc_a")
                if acc is None or not n or (task in scores and scores[task].get("_paired")):
                    continue
                if (scores.get(task) or {}).get("n") != n or (scores.get(task) or {}).get("acc") != acc:
                    se = math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else None  # lm-eval's sample stderr
                    scores[task] = {"acc": acc, "acc_stderr": se, "n": n, "_paired": True}
                    paired = True
    for s in scores.values():
        s.pop("_paired", None)
    return {
        "format": "cell",
        "cell_id": cell_id,
        "model": rec.config.get("model", {}).get("id"),
        "method": (rec.config.get("method") or {}).get("name"),
        "synthetic": (rec.config.get("model") or {}).get("source") == "synthetic",
        "artifact": None,
        "what": "the cell as trained (adapter on its base, loaded by its method): "
        + (
            "its side of the artifacts' paired comparisons (re-scored on the export's items)"
            if paired
            else "its own result record"
        ),
        "scores": {"transformers": scores},
    }


def tensor_mix(rec: dict[str, Any]) -> str:
    """The file's real tensor types with counts, quantized types first by count ("Q5_0 166, Q4_K 16, ..., F32 61");
    the HF folder's dtype."""
    if rec["format"] == "hf":
        dt = (rec.get("integrity") or {}).get("dtype")
        return f"{dt} (every tensor)" if dt else "–"
    types = (rec.get("gguf") or {}).get("tensor_types") or {}
    if not types:
        return "–"
    quant = sorted(((k, v) for k, v in types.items() if k not in FLOAT_TYPES), key=lambda kv: (-kv[1], kv[0]))
    floats = sorted(((k, v) for k, v in types.items() if k in FLOAT_TYPES), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in quant + floats)


def _significant(vs: dict[str, Any]) -> bool:
    lo, hi, p = vs.get("ci_low"), vs.get("ci_high"), vs.get("mcnemar_p")
    return p is not None and p < ALPHA and lo is not None and hi is not None and (lo > 0 or hi < 0)


def _exact(vs: dict[str, Any], entry: dict[str, Any], ref_items: Path | None, results_dir: Path) -> dict[str, Any]:
    """The paired comparison as the report shows it everywhere: `compare_items` (exact McNemar p, the interval that
    inverts it). A record made with another interval is recomputed from its items where they are here."""
    from harness.evaluation.stats import CI_METHOD, ItemsMismatchError, compare_items, read_items

    if not vs or "error" in vs or vs.get("ci_method") in (None, CI_METHOD):  # None: a record that names none
        return vs
    items = Path(entry.get("items") or "")
    items = items if items.is_absolute() else Path(results_dir) / items
    try:
        if ref_items is None:
            raise OSError("no reference items")
        return compare_items(read_items(ref_items), read_items(items), task=vs.get("task", "")).to_dict()
    except (ItemsMismatchError, OSError, ValueError) as exc:
        return {"error": f"recorded with another interval ({vs.get('ci_method')!r}) and not recomputable: {exc}"}


def _reference_items(results_dir: Path, cell_rec: dict[str, Any] | None, cell_id: str) -> dict[str, Path]:
    """The items every pairing of a cell was made against: the export's re-scored cell, else the cell's own."""
    out: dict[str, Path] = {}
    scores = ((cell_rec or {}).get("scores") or {}).get("transformers") or {}
    for task, e in scores.items():
        if e.get("items"):
            p = Path(e["items"])
            out[task] = p if p.is_absolute() else Path(results_dir) / p
    if out:
        return out
    try:
        from harness.evaluation.stats import _items_path
        from harness.results import read_result, result_path

        rec = read_result(result_path(Path(results_dir), cell_id))
        return {t: _items_path(Path(results_dir), rec, t) for t in (rec.metrics.get("eval") or {})} if rec else {}
    except Exception:
        return {}


def _shipped_cell(integ: dict[str, Any]) -> dict[str, Any]:
    """The "as written vs base + adapter" cell of a row."""
    sh = integ.get("shipped")
    if not sh:
        return {"text": "–", "title": "not checked as written (an export made before these checks)", "cls": ""}
    tol = sh.get("tolerance")
    verdict = {True: "passed", False: "FAILED", None: "reported"}[sh.get("passed")]
    d = sh["logits_max_abs_diff"]
    text = f"{d:.2g}" + (f" {'≤' if sh.get('passed') else '>'} {tol:.2g}" if tol is not None else "")
    text += f" · greedy {sh['greedy_agree_min']}/{sh['greedy_tokens']}"
    title = f"{verdict}: {sh.get('tolerance_rule', '')}. Loaded as: {sh.get('loaded_as', '')}"
    attempts = integ.get("dtype_attempts") or []
    if len(attempts) > 1 or (attempts and not attempts[0].get("passed")):
        title += ". Tried: " + "; ".join(
            f"{a['dtype']} {a['logits_max_abs_diff']:.3g} vs {a['tolerance']:.2g} "
            + ("passed" if a["passed"] else "failed")
            for a in attempts
        )
    return {
        "text": text,
        "verdict": verdict,
        "title": title,
        "cls": "neg" if sh.get("passed") is False else "",
    }


def build_export(results_dir: Path) -> dict[str, Any]:
    """{rows, tasks, what, cpus, notes, greedy} for the template; empty rows when nothing was exported."""
    from harness.formatting import fmt_bytes

    results_dir = Path(results_dir)
    records = load_export_records(results_dir)
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_cell.setdefault(rec.get("cell_id", ""), []).append(rec)
    ordered: list[dict[str, Any]] = []
    ref_items: dict[str, dict[str, Path]] = {}
    for cid, recs in by_cell.items():
        cell_rec = next((r for r in recs if r["format"] == "cell"), None)
        ref_items[cid] = _reference_items(results_dir, cell_rec, cid)
        if cell_rec is None:
            cell_rec = cell_reference_record(results_dir, cid, recs)
            if cell_rec is not None:
                ordered.append(cell_rec)
        ordered += recs

    bases: dict[str, Any] = {}
    tasks: list[str] = []
    rows = []
    what: dict[str, str] = {}
    notes: list[str] = []
    greedy: list[dict[str, Any]] = []
    for rec in ordered:
        speed = rec.get("speed") or {}
        cid = rec.get("cell_id", "")
        is_cell = rec["format"] == "cell"
        integ = rec.get("integrity") or {}
        note = rec.get("base_precision")
        if "base_precision" not in rec and not is_cell and rec.get("artifact"):  # a record older than the note
            note = _base_note(results_dir, cid, rec["artifact"].get("bytes"), bases)
        note_mark = ""
        if note:
            if note not in notes:
                notes.append(note)
            note_mark = "†" * (notes.index(note) + 1)
        for engine, scores in (rec.get("scores") or {"": {}}).items():
            if isinstance(rec.get("what"), dict):
                what.update(rec["what"])
            cells = {}
            for task, s in (scores or {}).items():
                if task not in tasks:
                    tasks.append(task)
                cells[task] = _task_cell(s, ref_items.get(cid, {}).get(task), results_dir)
            sp = speed.get("llama.cpp") if rec["format"] not in ("hf", "cell") else speed.get("transformers")
            checks = [k for k, v in integ.items() if isinstance(v, dict) and "passed" in v]
            # a check that is reported but not gated (passed: null) neither passes nor fails a file
            ok = all(integ[k]["passed"] is not False for k in checks) and integ.get("passed", True) is not False
            reported = [k for k in checks if integ[k]["passed"] is None]
            if is_cell:
                check_text = "reference"
            elif checks or "passed" in integ:
                check_text = ("passed" if ok else "FAILED") + (" (logits reported, not gated)" if reported else "")
            else:
                check_text = "–"
            rows.append(
                {
                    "cell_id": cid,
                    "model": rec.get("model"),
                    "method": rec.get("method"),
                    "format": FORMAT_LABELS.get(rec["format"], rec["format"]),
                    "is_cell": is_cell,
                    "engine": engine or "–",
                    "size": fmt_bytes((rec.get("artifact") or {}).get("bytes")),
                    "size_note": note_mark,
                    "sha256": ((rec.get("artifact") or {}).get("sha256") or "")[:12],
                    "tasks": cells,
                    "synthetic": rec.get("synthetic"),
                    "tok_s": f"{sp['tokens_per_s']:.1f}" if sp and sp.get("tokens_per_s") else "–",
                    "tok_s_engine": (sp or {}).get("engine", ""),
                    "threads": (sp or {}).get("threads"),
                    "cpu": (sp or {}).get("cpu", ""),
                    "checks": check_text,
                    "failed": not ok and not is_cell,
                    "merge_diff": integ.get("logits_max_abs_diff"),
                    "tensor_types": "–" if is_cell else tensor_mix(rec),
                    "shipped": {"text": "–", "title": "", "cls": ""} if is_cell else _shipped_cell(integ),
                    "source": rec.get("what") if isinstance(rec.get("what"), str) else "",
                }
            )
        sh = integ.get("shipped")
        if sh and sh.get("prompts"):
            greedy.append(
                {
                    "cell_id": cid,
                    "format": FORMAT_LABELS.get(rec["format"], rec["format"]),
                    "prompts": [
                        {
                            "agree": p["greedy_agree"],
                            "of": p["greedy_of"],
                            "text": _excerpt(p.get("text")),
                            "reference": _excerpt(p.get("reference_text")),
                            "prompt": p.get("prompt"),
                        }
                        for p in sh["prompts"]
                    ],
                }
            )
    return {
        "rows": rows,
        "tasks": tasks,
        "what": what,
        "cpus": sorted({r["cpu"] for r in rows if r["cpu"]}),
        "notes": [("†" * (i + 1), n) for i, n in enumerate(notes)],
        "greedy": _greedy_table(greedy),
    }


def _task_cell(s: dict[str, Any], reference: Path | None, results_dir: Path) -> dict[str, Any]:
    """One artifact's score on one task for the table: accuracy ± SE, and the paired difference to the cell."""
    from harness.formatting import fmt_p, fmt_pct, fmt_pts

    vs = _exact(s.get("vs_cell") or {}, s, reference, results_dir)
    ci = f"[{fmt_pts(vs.get('ci_low'))}, {fmt_pts(vs.get('ci_high'))}]" if vs.get("ci_low") is not None else ""
    sig = _significant(vs) if "diff" in vs else False
    return {
        "acc": fmt_pct(s.get("acc")),
        "se": fmt_pts(s.get("acc_stderr")).lstrip("+"),
        "n": s.get("n"),
        "delta": (fmt_pts(vs.get("diff")) + ("*" if sig else "")) if "diff" in vs else "–",
        "sig": sig,
        "cls": ("pos" if vs["diff"] > 0 else "neg") if sig else "",
        "ci": ci,
        "p": fmt_p(vs.get("mcnemar_p")) if "mcnemar_p" in vs else "–",
        "error": vs.get("error"),
    }


def _base_note(results_dir: Path, cell_id: str, size: int | None, cache: dict[str, Any]) -> str | None:
    from harness.export.source import base_precision_note, base_weights_file

    if cell_id not in cache:
        try:
            from harness.results import read_result, result_path

            rec = read_result(result_path(results_dir, cell_id))
            cache[cell_id] = base_weights_file(rec) if rec is not None else None
        except Exception:
            cache[cell_id] = None
    return base_precision_note(cache[cell_id], size)


def _excerpt(text: Any, n: int = 80) -> str:
    if not isinstance(text, str):
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _greedy_table(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: the fixed prompts, the reference's continuation of each, and every file's with its agreement."""
    out: list[dict[str, Any]] = []
    for e in entries:
        if not out or out[-1]["cell_id"] != e["cell_id"]:
            out.append(
                {
                    "cell_id": e["cell_id"],
                    "prompts": [p["prompt"] for p in e["prompts"]],
                    "rows": [
                        {
                            "format": "reference: base + adapter, unmerged, fp32",
                            "cells": [{"agree": "", "text": p["reference"]} for p in e["prompts"]],
                        }
                    ],
                }
            )
        out[-1]["rows"].append(
            {
                "format": e["format"],
                "cells": [{"agree": f"{p['agree']}/{p['of']}", "text": p["text"]} for p in e["prompts"]],
            }
        )
    return out


def markdown_table(results_dir: Path) -> str:
    """The Export section as a Markdown table (for READMEs): `python -m harness.export.report RESULTS_DIR`."""
    data = build_export(results_dir)
    tasks = data["tasks"]
    head = [
        "artifact",
        "scored with",
        "size",
        "tensor types",
        "as written vs base + adapter: max abs logit diff (vs tolerance) · greedy tokens agreeing",
        *[f"{t} acc ± SE (n)" for t in tasks],
        *[f"{t} Δ vs cell [95 % CI], p" for t in tasks],
        "tokens/s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in data["rows"]:
        accs = [f"{c['acc']} ± {c['se']} ({c['n']})" if (c := r["tasks"].get(t)) else "–" for t in tasks]
        deltas = [
            f"{c['delta']} {c['ci']}, p {c['p']}" if (c := r["tasks"].get(t)) and c["delta"] != "–" else "–"
            for t in tasks
        ]
        shipped = r["shipped"]["text"] + (f" {r['shipped']['verdict']}" if r["shipped"].get("verdict") else "")
        lines.append(
            "| "
            + " | ".join(
                [r["format"], r["engine"], r["size"] + r["size_note"], r["tensor_types"], shipped]
                + accs
                + deltas
                + [r["tok_s"]]
            )
            + " |"
        )
    lines.append("")
    lines.append("`*`: exact McNemar p < 0.05 and the exact 95 % interval excludes 0.")
    for mark, note in data["notes"]:
        lines.append(f"{mark} {note}.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown_table(Path(sys.argv[1])))
