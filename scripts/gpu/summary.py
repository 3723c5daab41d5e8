#!/usr/bin/env python3
"""The short table scripts/gpu_bench.sh prints last: per cell the measured peak memory against the estimator's
prediction, tokens/s, MFU, time per epoch against the predicted time, and the device profile fitted to these
cells (`harness.estimator.calibrate`). Reads result JSON files only; imports no torch.

    python scripts/gpu/summary.py RESULTS_DIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.report.loader import attention_text, get  # noqa: E402  (the report's lookups)


def _gib(n: Any) -> str:
    return f"{n / 2**30:.1f}" if isinstance(n, (int, float)) and n else "-"


def _num(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def result_dirs(root: Path) -> list[Path]:
    """`root` itself if it holds result JSON files, else its sub-folders that do (results/<matrix>/)."""
    if any(root.glob("*.json")):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json"))) if root.is_dir() else []


def rows(results: list[Any], device: Any) -> list[dict[str, Any]]:
    from harness.config import CellConfig
    from harness.estimator import estimate_cell

    out = []
    for r in results:
        cfg = r.config
        train = get(r.metrics, "train", {})
        mem = get(r.metrics, "meters", {}).get("train", {}).get("memory", {})
        predicted_time = predicted_mem = None
        try:
            cell = CellConfig.model_validate(cfg)
            mean = None
            if not cell.train.packing and train.get("steps") and train.get("tokens"):
                per_micro = train["tokens"] / (train["steps"] * cell.train.gradient_accumulation_steps)
                mean = per_micro / cell.train.batch_size
            est = estimate_cell(cell, device, mean_tokens_per_example=mean)
            predicted_mem = est.peak_memory_bytes
            if est.time_per_step_s and train.get("steps_per_epoch"):
                predicted_time = est.time_per_step_s * train["steps_per_epoch"][0]
        except Exception:
            predicted_mem = get(r.estimate, "peak_memory_bytes")
        out.append(
            {
                "cell": r.cell_id,
                "model": get(cfg, "model.id"),
                "method": get(cfg, "method.name"),
                "variant": cfg.get("variant"),
                "status": r.status,
                "reason": r.reason,
                "peak_bytes": mem.get("headline_bytes"),
                "peak_kind": mem.get("headline"),
                "max_allocated_bytes": mem.get("max_allocated_bytes"),
                "nvml_bytes": mem.get("nvml_process_peak_bytes"),
                "predicted_bytes": predicted_mem,
                "tokens_per_s": train.get("tokens_per_s"),  # steady state (harness/measures.py)
                "mfu": train.get("mfu"),
                "steady_steps": get(train, "steady.steps"),
                "warmup_s": get(train, "warmup.seconds"),
                "compile_s": get(train, "warmup.compile_s"),
                "wall_tokens_per_s": train.get("wall_tokens_per_s"),
                "attention": attention_text(train.get("attention")),
                "time_per_epoch_s": train.get("time_per_epoch_s"),
                "predicted_time_s": predicted_time,
                "padding_fraction": train.get("padding_fraction"),
                "memory_error": (mem["headline_bytes"] / predicted_mem - 1)
                if mem.get("headline_bytes") and predicted_mem
                else None,
                "overhead_share": get(r.timings, "overhead_share"),
                "eval_items_per_s": {
                    task: ev["n"] / ev["wall_s"]
                    for task, ev in get(r.metrics, "eval", {}).items()
                    if isinstance(ev, dict) and ev.get("n") and ev.get("wall_s")
                },
            }
        )
    return out


def main(argv: list[str] | None = None, file: Any = None) -> int:
    from harness.estimator import calibrate
    from harness.results import load_results

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a results folder (or a folder of them)")
    p.add_argument("--json", help="also write the rows and the calibrated profile here")
    args = p.parse_args(argv)
    results: list[Any] = []
    for folder in result_dirs(Path(args.results)):
        good, bad = load_results(folder)
        results += good
        for b in bad:
            print(f"warning: not a result record: {b}", file=sys.stderr)
    say = functools.partial(print, file=file or sys.stdout)
    if not results:
        say(f"no results under {args.results}")
        return 1
    from harness.estimator import profile_from_environment

    device = next(
        (profile_from_environment(get(r.environment, "device")) for r in results if get(r.environment, "device")), None
    )
    name = device.name if device else None
    table = rows(results, device)
    head = (
        f"{'model':15} {'method':16} {'variant':15} {'status':8} {'peak GiB':>8} {'pred':>6} {'err':>5} "
        f"{'tok/s':>8} {'MFU':>6} {'steps':>5} {'warm s':>6} {'epoch s':>8} {'pred s':>7} {'ovh':>5}"
    )
    kinds = sorted({row["peak_kind"] for row in table if row["peak_kind"]}) or ["-"]
    say(
        f"\nsummary: {len(table)} cells on {name or 'unknown device'} (peak = {', '.join(kinds)}; pred = "
        "harness.estimator before calibration; err = measured / predicted - 1; tok/s and MFU (against the dense "
        "bf16 peak) are steady-state, over `steps` optimizer steps, the warm-up (`warm s`: first steps and "
        "compilation) left out; epoch s is the honest wall time; ovh = harness overhead share of the cell's wall time)"
    )
    say(head)
    say("-" * len(head))
    for row in sorted(table, key=lambda x: (x["model"] or "", x["method"] or "", x["variant"] or "")):
        say(
            f"{(row['model'] or '')[:15]:15} {(row['method'] or '')[:16]:16} {(row['variant'] or '')[:15]:15} "
            f"{row['status'][:8]:8} {_gib(row['peak_bytes']):>8} {_gib(row['predicted_bytes']):>6} "
            f"{_num(row['memory_error'], '+.0%'):>5} {_num(row['tokens_per_s'], '.0f'):>8} "
            f"{_num(row['mfu'], '.1%'):>6} {_num(row['steady_steps'], 'd'):>5} {_num(row['warmup_s'], '.1f'):>6} "
            f"{_num(row['time_per_epoch_s'], '.1f'):>8} {_num(row['predicted_time_s'], '.1f'):>7} "
            f"{_num(row['overhead_share'], '.0%'):>5}"
        )
        if row["attention"]:
            say(f"{'':15} attention: {row['attention']}")
        for task, rate in row["eval_items_per_s"].items():
            say(f"{'':15} eval {task}: {rate:.1f} items/s")
    for row in [r for r in table if r["status"] != "success"]:
        say(f"  {row['status']}: {row['cell']}: {row['reason']}")
    for cut in sorted(Path(args.results).rglob("*.json.cut")):
        say(
            f"  cut by the call's deadline: {cut.name.removesuffix('.json.cut')} "
            "(not done; the next call runs it first)"
        )
    profile = calibrate(results, device)
    say(f"\ncalibrated profile ({profile.source}):")
    say(
        f"  achievable fraction {profile.achievable_fraction:.3f}; by method "
        + ", ".join(f"{k} {v:.3f}" for k, v in profile.fraction_by_method.items())
        + f"; memory scale {profile.memory_scale:.3f}; start-up {profile.startup_s:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": table, "profile": profile.as_dict()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
