"""The report's Export section: one row per exported artifact and scoring engine, read from
`results/<matrix>/<cell-id>/export/<format>.json` (written by `medbench export`). Light: no torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.export import EXPORT_DIR, FORMATS

FORMAT_LABELS = {
    "cell": "cell as trained (unmerged)",
    "hf": "HF folder (merged)",
    "f16": "GGUF F16",
    "q8_0": "GGUF Q8_0",
    "q5_k_m": "GGUF Q5_K_M",
    "q4_k_m": "GGUF Q4_K_M",
}


def load_export_records(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(Path(results_dir).glob(f"*/{EXPORT_DIR}/*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("format"):
            out.append(rec)
    order = {f: i for i, f in enumerate(("cell", *FORMATS))}
    return sorted(out, key=lambda r: (r.get("cell_id", ""), order.get(r["format"], 99)))


def build_export(results_dir: Path) -> dict[str, Any]:
    """{rows, tasks, engines, notes} for the template; empty rows when nothing was exported."""
    from harness.formatting import fmt_bytes, fmt_p, fmt_pct, fmt_pts

    records = load_export_records(results_dir)
    tasks: list[str] = []
    rows = []
    what: dict[str, str] = {}
    for rec in records:
        speed = rec.get("speed") or {}
        for engine, scores in (rec.get("scores") or {"": {}}).items():
            if isinstance(rec.get("what"), dict):
                what.update(rec["what"])
            cells = {}
            for task, s in (scores or {}).items():
                if task not in tasks:
                    tasks.append(task)
                vs = s.get("vs_cell") or {}
                ci = (
                    f"[{fmt_pts(vs.get('ci_low'))}, {fmt_pts(vs.get('ci_high'))}]"
                    if vs.get("ci_low") is not None
                    else ""
                )
                cells[task] = {
                    "acc": fmt_pct(s.get("acc")),
                    "se": fmt_pts(s.get("acc_stderr")).lstrip("+"),
                    "n": s.get("n"),
                    "delta": fmt_pts(vs.get("diff")) if "diff" in vs else "–",
                    "ci": ci,
                    "p": fmt_p(vs.get("mcnemar_p")) if "mcnemar_p" in vs else "–",
                    "error": vs.get("error"),
                }
            sp = speed.get("llama.cpp") if rec["format"] not in ("hf", "cell") else speed.get("transformers")
            integ = rec.get("integrity") or {}
            checks = [k for k, v in integ.items() if isinstance(v, dict) and "passed" in v]
            ok = all(integ[k]["passed"] for k in checks) and integ.get("passed", True)
            gguf = rec.get("gguf") or {}
            rows.append(
                {
                    "cell_id": rec.get("cell_id"),
                    "model": rec.get("model"),
                    "method": rec.get("method"),
                    "format": FORMAT_LABELS.get(rec["format"], rec["format"]),
                    "engine": engine or "–",
                    "size": fmt_bytes((rec.get("artifact") or {}).get("bytes")),
                    "sha256": ((rec.get("artifact") or {}).get("sha256") or "")[:12],
                    "tasks": cells,
                    "synthetic": rec.get("synthetic"),
                    "tok_s": f"{sp['tokens_per_s']:.1f}" if sp and sp.get("tokens_per_s") else "–",
                    "tok_s_engine": (sp or {}).get("engine", ""),
                    "threads": (sp or {}).get("threads"),
                    "cpu": (sp or {}).get("cpu", ""),
                    "checks": ("passed" if ok else "FAILED") if checks or "passed" in integ else "–",
                    "merge_diff": integ.get("logits_max_abs_diff"),
                    "tensor_types": ", ".join(f"{k} {v}" for k, v in (gguf.get("tensor_types") or {}).items()),
                }
            )
    return {"rows": rows, "tasks": tasks, "what": what, "cpus": sorted({r["cpu"] for r in rows if r["cpu"]})}


def markdown_table(results_dir: Path) -> str:
    """The Export section as a Markdown table (for READMEs): `python -m harness.export.report RESULTS_DIR`."""
    data = build_export(results_dir)
    tasks = data["tasks"]
    head = [
        "artifact",
        "scored with",
        "size",
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
        lines.append("| " + " | ".join([r["format"], r["engine"], r["size"], *accs, *deltas, r["tok_s"]]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown_table(Path(sys.argv[1])))
