#!/usr/bin/env python3
"""Run the GPU benchmark's cells of one device call in value order inside a time budget, returning everything that
finished in at most 6 files (scripts/gpu/outbox.py): one archive of every finished cell, rewritten after each cell,
the summary table (text and JSON), the log and the reports. Cells with a result already (carried from an earlier
call) are skipped; a cell whose prediction does not fit the time left is passed over for a smaller one.

    python3 scripts/gpu/bench.py --out "$OUT" [--call 1|2|all] [--budget-s 330] [--started-at EPOCH]
                                 [--data-dir .gpu/data] [--results .gpu/results] [--order 1,3,4] [--rehearse]

Each cell runs under its own limit: a few times its prediction (scripts/gpu/plan.py), or the time left in the call if
that is shorter. A cell killed by its own limit is `timeout` (done: it is slow or hung); a cell killed because the
call's deadline came first is not done: its record is set aside (`<id>.json.cut`) and the next call runs it first.
The parent never touches CUDA (the device's name comes from NVML): every byte of GPU memory belongs to the cells.

`--rehearse` runs the very same driver and cells on tiny shapes on this CPU (plan.rehearsal_matrices), as
`gpu_bench.sh --rehearse OUTDIR` does to prove it before a GPU is lent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import outbox  # noqa: E402
import plan as plan_module  # noqa: E402

MARGIN_S = 20.0  # kept back at the end of the budget: the archive, the summary, the reports
DONE_STATUSES = ("success", "failed", "oom", "timeout", "skipped")
DEADLINE_CUT = "cut by the call's deadline"


def device_name() -> str:
    """The GPU's name from NVML, which creates no CUDA context (the parent must not hold GPU memory)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # the plan still works with the default profile
        print(f"(no NVML device name: {type(exc).__name__}: {exc}; planning for {plan_module.DEFAULT_DEVICE})")
        return plan_module.DEFAULT_DEVICE


def finished(results_dir: Path, cell_id: str) -> str | None:
    from harness.results import read_result, result_path

    record = read_result(result_path(results_dir, cell_id))
    return record.status if record is not None and record.status in DONE_STATUSES else None


def read_cut(results_root: Path) -> list[str]:
    try:
        return [line.strip() for line in (results_root / outbox.CUT_LIST).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def write_cut(results_root: Path, ids: list[str]) -> None:
    from harness.results import atomic_write_text

    atomic_write_text(results_root / outbox.CUT_LIST, "".join(f"{i}\n" for i in sorted(set(ids))))


def set_aside(results_dir: Path, cell_id: str) -> None:
    """A deadline-cut cell's record is kept for the log, as `<id>.json.cut`: it is not a result, so not done."""
    from harness.results import result_path

    path = result_path(results_dir, cell_id)
    if path.is_file():
        os.replace(path, path.with_name(path.name + ".cut"))


def write_summary(out: Path, results_root: Path) -> None:
    import summary

    with open(out / "summary.txt", "w") as f:
        code = summary.main([str(results_root), "--json", str(out / "summary.json")], file=f)
    print((out / "summary.txt").read_text() if code == 0 else "(no results to summarise yet)", flush=True)


def call_order(cells: list, call: str, cut: list[str], ranks: set[int] | None) -> list:
    """This call's cells: the ones a deadline cut before first, then the call's own cells in value order."""
    chosen = [c for c in cells if (call == "all" or c.call == int(call)) and (ranks is None or c.rank in ranks)]
    first = [c for c in cells if c.cell_id in cut and c not in chosen]
    return sorted(first + chosen, key=lambda c: (c.cell_id not in cut, c.rank))


def run_cell(item, args, results_dir: Path, timeout_s: float) -> int:
    cmd = [sys.executable, str(ROOT / "run_matrix.py"), item.matrix, "--data-dir", args.data_dir]
    cmd += ["--results", str(results_dir), "--cache-dir", args.cache_dir, "--only", item.cell_id]
    cmd += ["--no-report", "--no-progress", "--timeout-minutes", f"{timeout_s / 60:.4f}"]
    return subprocess.call(cmd, cwd=ROOT)


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="what comes back (the device tool's $OUT)")
    p.add_argument("--call", default="all", choices=["1", "2", "all"], help="which device call's cells")
    p.add_argument("--budget-s", type=float, default=None, help="seconds from --started-at to the end of the run")
    p.add_argument("--started-at", type=float, default=None, help="epoch seconds the call started (default: now)")
    p.add_argument("--data-dir", default=".gpu/data")
    p.add_argument("--results", default=".gpu/results", help="results root: <root>/<matrix name>/")
    p.add_argument("--cache-dir", default=os.environ.get("MEDBENCH_CACHE_DIR", "/tmp/medbench-cache"))
    p.add_argument("--order", default=None, help="only these ranks, comma-separated (default: the call's cells)")
    p.add_argument("--device", default=None, help="device name for the plan (default: NVML's, else H200)")
    p.add_argument("--rehearse", action="store_true", help="the same cells on tiny shapes, on this CPU")
    args = p.parse_args(argv)
    budget = args.budget_s or (plan_module.CALL_BUDGET_S.get(int(args.call)) if args.call != "all" else 900.0)
    deadline = (args.started_at or time.time()) + budget - MARGIN_S
    out, results_root = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    matrices = None
    if args.rehearse:
        matrices = plan_module.rehearsal_matrices(Path(tempfile.mkdtemp(prefix="gpu-rehearsal-")))
        args.data_dir, args.device = str(plan_module.REHEARSAL_DATA), args.device or "cpu"
    cells = plan_module.ordered_cells(args.device or device_name(), cache_dir=args.cache_dir, matrices=matrices)
    ranks = {int(x) for x in args.order.split(",")} if args.order else None
    cut = read_cut(results_root)
    ran = passed_over = 0
    for item in call_order(cells, args.call, cut, ranks):
        results_dir = results_root / item.matrix_name
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
            passed_over += 1
            continue
        timeout_s = min(item.limit_s, left)
        print(
            f"== {item.rank:2d} {item.label}: {item.cell_id} (predicted {item.wall_s:.0f} s, limit "
            f"{timeout_s:.0f} s, {left:.0f} s left{', cut earlier: first' if item.cell_id in cut else ''})",
            flush=True,
        )
        t0 = time.time()
        rc = run_cell(item, args, results_dir, timeout_s)
        ran += 1
        status = finished(results_dir, item.cell_id)
        if status == "timeout" and timeout_s < item.limit_s:  # the call's deadline, not the cell's own limit
            set_aside(results_dir, item.cell_id)
            cut.append(item.cell_id)
            status = f"{DEADLINE_CUT} after {timeout_s:.0f} s: not done, the next call runs it first"
        elif item.cell_id in cut:
            cut.remove(item.cell_id)
        write_cut(results_root, cut)
        print(
            f"== {item.rank:2d} done in {time.time() - t0:.0f} s (run_matrix exit {rc}): {status or 'no result'}",
            flush=True,
        )
        outbox.pack(results_root, out)
        write_summary(out, results_root)
    if time.time() < deadline + MARGIN_S - 10:
        for matrix_file, name in sorted({(c.matrix, c.matrix_name) for c in cells}):
            if (results_root / name).is_dir():
                subprocess.call(
                    [
                        sys.executable,
                        str(ROOT / "run_matrix.py"),
                        matrix_file,
                        "--report-only",
                        "--results",
                        str(results_root / name),
                        "--report",
                        str(out / f"report-{name}.html"),
                    ],
                    cwd=ROOT,
                )
    outbox.pack(results_root, out)
    mine = call_order(cells, args.call, read_cut(results_root), ranks)
    left_over = sum(1 for c in mine if not finished(results_root / c.matrix_name, c.cell_id))
    print(
        f"== bench: ran {ran} cells; {left_over} of this call's without a result"
        + (
            f" ({passed_over} passed over for time, {len(cut)} cut by the deadline: run the next call)"
            if passed_over or cut
            else ""
        ),
        flush=True,
    )
    return 0 if left_over == 0 else 4


if __name__ == "__main__":
    sys.exit(run())
