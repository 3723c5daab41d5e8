"""`medbench export RESULTS_DIR [--cell ID ... | --best] [--formats hf,f16,q8_0,q5_k_m,q4_k_m] [--out DIR]`

For each chosen cell: the standalone HF folder (adapters merged, model card), then llama.cpp's F16 GGUF and its
quantizations; every artifact checked *as written* (reloaded from disk and compared with base + adapter unmerged in
fp32 on fixed prompts: logits and greedy continuations, harness/export/verify.py; tokenizer, GGUF metadata, sha256),
scored on the cell's tasks through the same lm-eval path and batch size, paired against the cell; one record per
artifact in `RESULTS_DIR/<cell-id>/export/<format>.json` (the report's Export section reads them). Artifacts go to
`--out` (default `exports/<matrix>/<cell-id>/`), never into the results folder: they are large and not committed.
Intermediates nobody asked for are deleted once used and recorded as such: the F16 GGUF made only as the quantizer's
input (f16 not requested) and the fp32 HF folder made only as the converter's input (hf not requested).

Exit codes: 0 every artifact made and scored; 1 some artifact failed; 2 invalid input or every cell refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.export import EXPORT_DIR, FORMATS, GGUF_FORMATS

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
RECORD_SCHEMA = 2  # 2: checks on the files as written, intermediates, base precision


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medbench export",
        description="Merge a trained cell's adapter into its base, write a standalone Hugging Face folder and "
        "llama.cpp GGUF files, and score every artifact on the cell's tasks, paired against the cell.",
    )
    p.add_argument("results", metavar="RESULTS_DIR", help="a matrix's results folder (results/<matrix>)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--cell", action="append", default=[], metavar="ID", help="a cell id (or a unique part of one); repeatable"
    )
    which.add_argument(
        "--best",
        action="store_true",
        help="the report headline's winner per model and task (highest accuracy, then lowest memory)",
    )
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help=f"comma-separated, from {','.join(FORMATS)} (default: all); GGUF formats need the 'gguf' extra",
    )
    p.add_argument("--out", metavar="DIR", help="where artifacts go (default: exports/<matrix>); one folder per cell")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="items per task (evenly spread, as eval.limit); default: as the cell was evaluated. The cell "
        "itself is then re-scored on the same items so the pairing holds",
    )
    p.add_argument(
        "--engines",
        default="transformers,llama.cpp",
        help="how GGUF files are scored: transformers (dequantized weights), llama.cpp (its kernels)",
    )
    p.add_argument(
        "--hf-dtype",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="dtype of the merged safetensors (default auto: the base's own dtype from its config); a dtype whose "
        "saved folder fails the check against base + adapter is replaced by fp32, and the record says so",
    )
    p.add_argument("--no-score", action="store_true", help="make and check the artifacts, do not score them")
    p.add_argument(
        "--data-dir",
        help="where the tasks' data files are (default: $MEDBENCH_DATA_DIR, else the data dir of the run that filled "
        "the folder, from its run.json)",
    )
    p.add_argument("--cache-dir", help="default: $MEDBENCH_CACHE_DIR or ~/.cache/medbench")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    p.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="export synthetic-weight cells anyway (to test the mechanics; labelled, scores meaningless)",
    )
    p.add_argument("--report", metavar="PATH", help="re-render this report afterwards (e.g. reports/<matrix>.html)")
    return p


def _formats(text: str) -> list[str]:
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise ValueError(f"--formats: unknown {bad}; allowed: {','.join(FORMATS)}")
    return [f for f in FORMATS if f in fmts]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _file_record(path: Path, root: Path | None = None) -> dict[str, Any]:
    from harness.hashing import folder_manifest, sha256_file
    from harness.paths import folder_size_bytes

    if path.is_dir():
        digest, files = folder_manifest(path)
        return {"path": str(path), "bytes": folder_size_bytes(path), "sha256": digest, "files": files}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


# the record of the cell re-scored on the export's items; not `cell.json`, which is the runner's per-cell spec name
# and ignored by git everywhere under results/ (the reference row would never be committed)
CELL_RECORD = "as_trained"


def _write_record(export_dir: Path, fmt: str, record: dict[str, Any]) -> Path:
    from harness.results import atomic_write_text

    path = export_dir / f"{CELL_RECORD if fmt == 'cell' else fmt}.json"
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


def _earlier_reference(export_dir: Path, limit: int | None, weights: Any, results_dir: Path) -> dict[str, Path] | None:
    """The cell's items re-scored by an earlier export with the same limit and the same kept weights, if any."""
    old = None
    for name in (f"{CELL_RECORD}.json", "cell.json"):  # cell.json: exports made before the rename
        try:
            old = json.loads((export_dir / name).read_text())
            break
        except (OSError, ValueError):
            continue
    if old is None:
        return None
    if old.get("limit") != limit or old.get("source_weights") != weights:
        return None
    items = {t: Path(results_dir) / e["items"] for t, e in (old.get("scores", {}).get("transformers") or {}).items()}
    return items if items and all(p.is_file() for p in items.values()) else None


def _keep_other_engines(path: Path, rec: dict[str, Any]) -> None:
    """Scores of engines not run this time are kept from an earlier record of the same file (same sha256), so
    `--engines llama.cpp` then `--engines transformers` add up."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if (old.get("artifact") or {}).get("sha256") != rec["artifact"]["sha256"]:
        return
    for key in ("scores", "what"):
        for engine, value in (old.get(key) or {}).items():
            rec[key].setdefault(engine, value)


def transformers_speed(model: Any, tokenizer: Any, n_tokens: int = 64) -> dict[str, Any]:
    """Greedy generation through transformers on the CPU (fp32), decode tokens/s, for the HF folder."""
    import torch

    from harness.export.gguf import GEN_PROMPT, cpu_name

    text = GEN_PROMPT
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": GEN_PROMPT}], tokenize=False, add_generation_prompt=True
        )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(**ids, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        t1 = time.perf_counter()
        out = model.generate(
            **ids,
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        t2 = time.perf_counter()
    n = out.shape[1] - ids["input_ids"].shape[1]
    decode = (t2 - t1) - (t1 - t0)
    return {
        "engine": "transformers (fp32, torch " + torch.__version__ + ")",
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "generated_tokens": int(n),
        "tokens_per_s": round((n - 1) / decode, 2) if decode > 0 and n > 1 else None,
        "what": f"greedy decoding of {n_tokens} tokens, CPU, fp32; tokens/s excludes the prompt",
    }


class Exporter:
    def __init__(self, args: argparse.Namespace, results_dir: Path, cache_dir: Path):
        self.args, self.results_dir, self.cache_dir = args, results_dir, cache_dir
        self.formats = _formats(args.formats)
        self.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
        self.failures: list[str] = []

    def log(self, msg: str) -> None:
        print(f"[export] {msg}", flush=True)

    def run_cell(self, source: Any) -> None:
        import torch

        from harness.export import score
        from harness.export.card import model_card
        from harness.export.merge import write_hf

        args = self.args
        cid = source.cell_id
        out_root = Path(args.out or Path("exports") / source.record.matrix) / cid
        export_dir = self.results_dir / cid / EXPORT_DIR
        export_dir.mkdir(parents=True, exist_ok=True)
        cfg = score.with_limit(
            source.cell_config(data_dir=args.data_dir or os.environ.get("MEDBENCH_DATA_DIR"), cache_dir=self.cache_dir),
            args.limit,
        )
        common = {
            "schema_version": RECORD_SCHEMA,
            "cell_id": cid,
            "matrix": source.record.matrix,
            "model": source.record.config["model"]["id"],
            "method": (source.record.config.get("method") or {}).get("name"),
            "method_kind": (source.record.config.get("method") or {}).get("kind"),
            "synthetic": source.synthetic,
            "source_weights": source.record.metrics.get("saved"),
            "eval_batch_size": cfg.model.eval_batch_size,
        }

        reference_items = self._reference_items(source, cfg, export_dir, common)

        ship_hf = "hf" in self.formats
        gguf_formats = [f for f in self.formats if f in GGUF_FORMATS]
        # the HF folder is shipped when asked for; otherwise it is only the converter's input (fp32, deleted after;
        # with the same name and card, so that the GGUF files are the same bytes as when converted from a shipped
        # fp32 folder and `--engines` runs add up)
        hf_dir = out_root / ("hf" if ship_hf else ".intermediate/hf")
        if not ship_hf and not gguf_formats:
            return
        from harness.export.source import base_precision_note, base_weights_file

        base = base_weights_file(source.record)
        common["base_model_file"] = base
        dtype = args.hf_dtype if ship_hf else "fp32"
        self.log(f"{cid}: merging into a Hugging Face folder ({dtype}) at {hf_dir}")
        t0 = time.perf_counter()

        def card(integrity: dict[str, Any], scores: dict[str, Any] | None = None) -> str:
            return model_card(source.record, scores=scores, synthetic=source.synthetic, integrity=integrity, base=base)

        integrity, reference = write_hf(source, hf_dir, self.cache_dir, dtype=dtype, check=ship_hf, card=card)
        seconds = time.perf_counter() - t0
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from harness.export.verify import summary

        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        try:
            if ship_hf:
                self.log(f"{cid}: hf saved as {integrity['dtype']}: {integrity['dtype_reason']}")
                self.log(f"{cid}: hf as written vs base + adapter: {summary(integrity.get('shipped'))}")
                if integrity["shipped"]["passed"] is False:
                    self.failures.append(
                        f"{cid} hf: the saved folder fails its check against base + adapter: "
                        f"{summary(integrity['shipped'])}"
                    )
                rec = {
                    **common,
                    "format": "hf",
                    "created_at": _now(),
                    "integrity": integrity,
                    "seconds": round(seconds, 1),
                    "scores": {},
                    "speed": {},
                }
                model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
                if not args.no_score:
                    s = score.score_model(model, tokenizer, cfg, export_dir / "hf")
                    rec["scores"]["transformers"] = score.pair(s, reference_items, self.results_dir, cid, "hf")
                    (hf_dir / "README.md").write_text(card(integrity, rec["scores"]["transformers"]))
                rec["speed"]["transformers"] = transformers_speed(model, tokenizer)
                del model
                rec["artifact"] = _file_record(hf_dir)
                rec["base_precision"] = base_precision_note(base, rec["artifact"]["bytes"])
                rec["what"] = {"transformers": score.ENGINES["transformers"]}
                _write_record(export_dir, "hf", rec)
                self._summary("hf", rec)

            if gguf_formats:
                converted_from = {
                    "path": str(hf_dir),
                    "dtype": integrity["dtype"],
                    "kept": ship_hf,
                    "what": "the shipped HF folder"
                    if ship_hf
                    else "an fp32 HF folder made only as the converter's input (hf not requested), deleted after "
                    "converting",
                }
                self._gguf(
                    source,
                    cfg,
                    gguf_formats,
                    hf_dir,
                    out_root,
                    export_dir,
                    tokenizer,
                    reference_items,
                    common,
                    reference=reference,
                    converted_from=converted_from,
                )
        finally:
            if not ship_hf:
                shutil.rmtree(hf_dir.parent, ignore_errors=True)

    def _reference_items(self, source: Any, cfg: Any, export_dir: Path, common: dict[str, Any]) -> dict[str, Path]:
        """The reference of every pairing: the cell's own per-item records, or, when the export scores other items
        (`--limit`), the cell itself re-scored on them (kept as the `cell` record, reused by a later export of the
        same weights and limit)."""
        from harness.export import score

        args, cid = self.args, source.cell_id
        reference_items = score.cell_items(source.record, self.results_dir)
        earlier = _earlier_reference(export_dir, args.limit, common["source_weights"], self.results_dir)
        if earlier is not None and not score.same_items_as_cell(source.record, cfg):
            self.log(f"{cid}: reusing the cell's re-scored items of an earlier export (same weights, same limit)")
            return earlier
        if args.no_score or score.same_items_as_cell(source.record, cfg):
            return reference_items
        self.log(f"{cid}: scoring the cell itself (unmerged) on the requested items")
        from harness.export.source import load_reference

        t0 = time.perf_counter()
        model, tok = load_reference(source, cfg)
        scores = score.score_model(model, tok, cfg, export_dir / "cell")
        del model
        rec = {
            **common,
            "format": "cell",
            "artifact": None,
            "created_at": _now(),
            "limit": args.limit,
            "what": "the cell as trained (adapter on its base, loaded by its method), re-scored on the "
            "export's items: the reference of every pairing",
            "scores": {"transformers": score.pair(scores, {}, self.results_dir, cid, "cell")},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        for entry in rec["scores"]["transformers"].values():
            entry.pop("vs_cell", None)
        _write_record(export_dir, "cell", rec)
        return {t: Path(e["items"]) for t, e in scores.items()}

    def _gguf(
        self,
        source: Any,
        cfg: Any,
        formats: list[str],
        hf_dir: Path,
        out_root: Path,
        export_dir: Path,
        tokenizer: Any,
        reference_items: dict[str, Path],
        common: dict[str, Any],
        *,
        reference: Any,
        converted_from: dict[str, Any],
    ) -> None:
        from harness.export import gguf, score
        from harness.export.source import base_precision_note
        from harness.export.verify import check_gguf_file, summary

        cid = source.cell_id
        stem = f"{source.record.config['model']['id']}-{(source.record.config.get('method') or {}).get('name')}"
        ship_f16 = "f16" in formats
        # an F16 made only as the quantizer's input gets its own name, so it never replaces a shipped F16 file
        f16 = out_root / (f"{stem}-F16.gguf" if ship_f16 else f".{stem}-F16.intermediate.gguf")
        self.log(f"{cid}: converting with llama.cpp's convert_hf_to_gguf.py -> {f16.name}")
        made: dict[str, dict[str, Any]] = {}
        files = {"f16": f16}
        intermediate: dict[str, Any] | None = None
        try:
            made["f16"] = {
                **gguf.convert_to_f16(hf_dir, f16, self.cache_dir, model_name=stem),
                "converted_from": converted_from,
            }
            for fmt in formats:
                if fmt == "f16":
                    continue
                files[fmt] = out_root / f"{stem}-{fmt.upper()}.gguf"
                self.log(f"{cid}: quantizing to {fmt} with llama_model_quantize")
                made[fmt] = gguf.quantize(f16, files[fmt], fmt, threads=self.args.threads)
        finally:
            if not ship_f16 and f16.exists():
                intermediate = {
                    **_file_record(f16),
                    "format": "f16",
                    "kept": False,
                    "what": "F16 GGUF written only as the quantizer's input (f16 was not requested): deleted after "
                    "quantizing",
                }
                f16.unlink()
                self.log(f"{cid}: deleted the intermediate {f16.name} (f16 not requested)")
        for fmt in formats:
            path = files[fmt]
            if fmt != "f16":
                made[fmt]["quantized_from"] = intermediate or {
                    "path": str(f16),
                    "format": "f16",
                    "kept": True,
                    "what": "the shipped F16 GGUF",
                }
                made[fmt]["converted_from"] = converted_from
            try:
                header = gguf.read_header(path)
                rec: dict[str, Any] = {
                    **common,
                    "format": fmt,
                    "created_at": _now(),
                    "made_by": made[fmt],
                    "artifact": _file_record(path),
                    "integrity": {
                        "metadata": gguf.check_metadata(header, hf_dir, tokenizer),
                        "tokenizer": gguf.check_tokenizer(path, tokenizer),
                    },
                    "gguf": {k: header[k] for k in ("file_type", "tensor_types", "n_tensors")},
                    "scores": {},
                    "speed": {},
                    "what": {},
                }
                rec["base_precision"] = base_precision_note(common.get("base_model_file"), rec["artifact"]["bytes"])
                self.log(f"{cid}: checking {fmt} as written through llama.cpp against base + adapter")
                rec["integrity"]["shipped"] = check_gguf_file(reference, path, fmt, tokenizer)
                self.log(f"{cid}: {fmt} as written vs base + adapter: {summary(rec['integrity']['shipped'])}")
                rec["speed"]["llama.cpp"] = gguf.generation_speed(path, tokenizer, threads=self.args.threads)
                if not self.args.no_score:
                    if "transformers" in self.engines:
                        import torch
                        from transformers import AutoModelForCausalLM

                        self.log(f"{cid}: scoring {fmt} through transformers (dequantized weights)")
                        model = AutoModelForCausalLM.from_pretrained(
                            path.parent, gguf_file=path.name, dtype=torch.float32
                        ).eval()
                        s = score.score_model(model, tokenizer, cfg, export_dir / fmt)
                        del model
                        rec["scores"]["transformers"] = score.pair(s, reference_items, self.results_dir, cid, fmt)
                        rec["what"]["transformers"] = score.ENGINES["transformers"]
                    if "llama.cpp" in self.engines:
                        from harness.export.llamacpp_lm import LlamaCppLM

                        self.log(f"{cid}: scoring {fmt} with llama.cpp's kernels")
                        lm = LlamaCppLM(path, tokenizer, threads=self.args.threads)
                        s = score.score_lm(lm, cfg, export_dir / f"{fmt}.llama.cpp")
                        del lm
                        rec["scores"]["llama.cpp"] = score.pair(
                            s, reference_items, self.results_dir, cid, f"{fmt} (llama.cpp)"
                        )
                        rec["what"]["llama.cpp"] = score.ENGINES["llama.cpp"]
                _keep_other_engines(export_dir / f"{fmt}.json", rec)
                _write_record(export_dir, fmt, rec)
                self._summary(fmt, rec)
                failed = [k for k, v in rec["integrity"].items() if v.get("passed") is False]
                if failed:
                    self.failures.append(f"{cid} {fmt}: checks failed: {', '.join(failed)}")
            except Exception as exc:  # one format failing must not lose the others
                self.failures.append(f"{cid} {fmt}: {type(exc).__name__}: {exc}")
                self.log(f"{cid}: {fmt} FAILED: {type(exc).__name__}: {exc}")

    def _summary(self, fmt: str, rec: dict[str, Any]) -> None:
        from harness.formatting import fmt_bytes

        parts = [f"{fmt}: {fmt_bytes(rec['artifact']['bytes'])}"]
        for engine, tasks in rec.get("scores", {}).items():
            for task, e in tasks.items():
                vs = e.get("vs_cell") or {}
                d = f", Δ {100 * vs['diff']:+.1f} p={vs['mcnemar_p']:.3g}" if "diff" in vs else ""
                parts.append(f"{task}[{engine}] {100 * (e.get('acc') or 0):.1f}%{d}")
        for engine, sp in rec.get("speed", {}).items():
            if sp.get("tokens_per_s"):
                parts.append(f"{sp['tokens_per_s']} tok/s ({engine})")
        self.log("  " + "; ".join(parts))


def run_export(args: argparse.Namespace) -> int:
    from harness.export.gguf import GgufUnavailable
    from harness.export.source import ExportRefused, best_cells, check_exportable, load_record

    results_dir = Path(args.results)
    if not results_dir.is_dir():
        print(f"error: results folder not found: {results_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        formats = _formats(args.formats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cache_dir = Path(args.cache_dir or os.environ.get("MEDBENCH_CACHE_DIR") or Path.home() / ".cache" / "medbench")
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not args.data_dir and not os.environ.get("MEDBENCH_DATA_DIR"):
        from harness.results import run_data_dir

        found = run_data_dir(results_dir)  # the data dir of the run that filled the folder (its run.json)
        if found is not None:
            args.data_dir = str(found)
            print(f"[export] data dir: {found} (from {results_dir / 'run.json'}; --data-dir overrides)")
    if any(f in GGUF_FORMATS for f in formats):
        try:
            from harness.export.gguf import converter_dir, require_llama_cpp

            require_llama_cpp()
            converter_dir(cache_dir)
        except GgufUnavailable as exc:
            print(
                f"error: GGUF formats requested ({','.join(f for f in formats if f in GGUF_FORMATS)}): {exc}",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
    if args.best:
        chosen = best_cells(results_dir)
        if not chosen:
            print(f"error: --best: no successful trained cell of a real-weight model in {results_dir}", file=sys.stderr)
            return EXIT_BAD_INPUT
        for cid, why in chosen.items():
            print(f"[export] --best: {cid} (winner of {', '.join(why)})")
        ids = list(chosen)
    else:
        ids = args.cell
    sources, refused = [], []
    for cid in ids:
        try:
            sources.append(
                check_exportable(load_record(results_dir, cid), results_dir, allow_synthetic=args.allow_synthetic)
            )
        except ExportRefused as exc:
            refused.append(str(exc))
            print(f"refused: {exc}", file=sys.stderr)
    if not sources:
        return EXIT_BAD_INPUT
    if args.best:  # --best exports the winners that can be; the others were named with their reason above
        refused = []
    exporter = Exporter(args, results_dir, cache_dir)
    for source in sources:
        try:
            exporter.run_cell(source)
        except (ExportRefused, GgufUnavailable) as exc:
            exporter.failures.append(str(exc))
            print(f"error: {exc}", file=sys.stderr)
    if args.report:
        from harness.report import render_report

        print(f"report: {render_report(results_dir, Path(args.report))}")
    for f in exporter.failures:
        print(f"failed: {f}", file=sys.stderr)
    return EXIT_FAILED if exporter.failures or refused else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_export(args)


if __name__ == "__main__":
    sys.exit(main())


def run_matrix_export(export_cfg: Any, results_dir: Path, cache_dir: str | None, data_dir: Path | None = None) -> int:
    """The matrix's `export:` block (harness.config.ExportConfig), run after the matrix by `run_matrix.py`."""
    argv = [
        str(results_dir),
        *(["--data-dir", str(data_dir)] if data_dir else []),
        "--formats",
        ",".join(export_cfg.formats),
        "--engines",
        ",".join(export_cfg.engines),
    ]
    argv += ["--best"] if export_cfg.cells == "best" else [a for c in export_cfg.cells for a in ("--cell", c)]
    if export_cfg.limit:
        argv += ["--limit", str(export_cfg.limit)]
    if export_cfg.out:
        argv += ["--out", export_cfg.out]
    if cache_dir:
        argv += ["--cache-dir", str(cache_dir)]
    return main(argv)
