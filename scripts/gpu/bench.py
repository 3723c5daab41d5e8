#!/usr/bin/env python3
"""Run the GPU benchmark's cells in value order inside a time budget, streaming each finished cell to an output
folder (the device tool's $OUT): its result JSON, per-item files and log, plus a running summary table, so that a
call cut short still returns every finished cell. Cells with a complete result already (carried from an earlier
call) are skipped; a cell predicted not to fit the time left is passed over for a smaller one.

    python3 scripts/gpu/bench.py --out "$OUT" [--budget-s 450] [--started-at EPOCH] [--data-dir .gpu/data]
                                 [--results .gpu/results] [--order 1,3,4]

Called by scripts/gpu_bench.sh on the GPU machine after it installed the carried wheels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import ordered_cells  # noqa: E402

MARGIN_S = 20.0  # kept back at the end of the budget: the report and the last summary
DONE_STATUSES = ("success", "failed", "oom", "timeout", "skipped")


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception as exc:  # the plan still works with the default profile
        print(f"(torch unavailable for the device name: {exc})")
    return "NVIDIA H200"


def finished(results_dir: Path, cell_id: str) -> str | None:
    from harness.results import read_result, result_path

    path = result_path(results_dir, cell_id)
    if not path.is_file():
        return None
    try:
        record = read_result(path)
    except Exception:
        return None
    return record.status if record.status in DONE_STATUSES else None


def stream(results_dir: Path, out_results: Path, cell_id: str) -> None:
    """Copy one cell's result JSON and its folder (log, per-item files) into the output folder."""
    out_results.mkdir(parents=True, exist_ok=True)
    src = results_dir / f"{cell_id}.json"
    if src.is_file():
        shutil.copy2(src, out_results / src.name)
    folder = results_dir / cell_id
    if folder.is_dir():
        shutil.copytree(
            folder,
            out_results / cell_id,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "checkpoint*", ".*tmp*"),
        )


def write_summary(out: Path) -> None:
    import summary

    with open(out / "summary.txt", "w") as f:
        code = summary.main([str(out / "results"), "--json", str(out / "summary.json")], file=f)
    print((out / "summary.txt").read_text() if code == 0 else "(no results to summarise yet)", flush=True)


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where finished cells are copied (the device tool's $OUT)")
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds from --started-at to the end of the run")
    p.add_argument("--started-at", type=float, default=None, help="epoch seconds the call started (default: now)")
    p.add_argument("--data-dir", default=".gpu/data")
    p.add_argument("--results", default=".gpu/results", help="results root: <root>/<matrix name>/")
    p.add_argument("--cache-dir", default=os.environ.get("MEDBENCH_CACHE_DIR", "/tmp/medbench-cache"))
    p.add_argument("--order", default=None, help="only these ranks, comma-separated (default: all, in order)")
    p.add_argument("--device", default=None, help="device name for the plan (default: torch's, else H200)")
    args = p.parse_args(argv)
    deadline = (args.started_at or time.time()) + args.budget_s - MARGIN_S
    out = Path(args.out)
    plan = ordered_cells(args.device or device_name())
    if args.order:
        keep = {int(x) for x in args.order.split(",")}
        plan = [c for c in plan if c.rank in keep]
    ran = skipped_for_time = 0
    for item in plan:
        results_dir = Path(args.results) / item.matrix_name
        out_results = out / "results" / item.matrix_name
        status = finished(results_dir, item.cell_id)
        if status:
            print(f"== {item.rank:2d} {item.label}: already {status} (carried), skipped", flush=True)
            continue
        left = deadline - time.time()
        if item.wall_s > left:
            print(
                f"== {item.rank:2d} {item.label}: predicted {item.wall_s:.0f} s, {left:.0f} s left: passed over "
                "(next call)",
                flush=True,
            )
            skipped_for_time += 1
            continue
        print(
            f"== {item.rank:2d} {item.label}: {item.cell_id} (predicted {item.wall_s:.0f} s, {left:.0f} s left)",
            flush=True,
        )
        cmd = [
            sys.executable,
            str(ROOT / "run_matrix.py"),
            str(ROOT / item.matrix),
            "--data-dir",
            args.data_dir,
            "--results",
            str(results_dir),
            "--cache-dir",
            args.cache_dir,
            "--only",
            item.cell_id,
            "--no-report",
            "--no-progress",
            "--timeout-minutes",
            f"{max(left, 30.0) / 60:.2f}",
        ]
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=ROOT)
        ran += 1
        stream(results_dir, out_results, item.cell_id)
        print(
            f"== {item.rank:2d} done in {time.time() - t0:.0f} s (run_matrix exit {rc}): "
            f"{finished(results_dir, item.cell_id) or 'no result'}",
            flush=True,
        )
        write_summary(out)
    if time.time() < deadline + MARGIN_S - 10:
        for matrix in sorted({(c.matrix, c.matrix_name) for c in plan}):
            if (Path(args.results) / matrix[1]).is_dir():
                subprocess.call(
                    [
                        sys.executable,
                        str(ROOT / "run_matrix.py"),
                        str(ROOT / matrix[0]),
                        "--report-only",
                        "--results",
                        str(Path(args.results) / matrix[1]),
                        "--report",
                        str(out / f"report-{matrix[1]}.html"),
                    ],
                    cwd=ROOT,
                )
    left_over = sum(1 for c in plan if not finished(Path(args.results) / c.matrix_name, c.cell_id))
    print(
        f"== bench: ran {ran} cells; {left_over} without a result"
        + (
            f" ({skipped_for_time} passed over for time: run the same command again to continue)"
            if skipped_for_time
            else ""
        ),
        flush=True,
    )
    return 0 if left_over == 0 else 4


if __name__ == "__main__":
    sys.exit(run())
