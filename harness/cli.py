"""Command line: `python run_matrix.py MATRIX [options]`.

Exit codes: 0 every cell succeeded or was skipped with a reason; 1 some cell failed, ran out of memory or timed out
(the others still ran); 2 invalid input (matrix file, flags, busy results folder); 3 the regression gate
(`--baseline`) was crossed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from harness.faults import EXIT_INTERRUPTED, finished_cells, guarded, interrupted_message, positive_minutes
from harness.formatting import fmt_bytes, fmt_seconds

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT, EXIT_REGRESSION = 0, 1, 2, 3
CACHE_DIR_ENV = "MEDBENCH_CACHE_DIR"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_matrix.py",
        description="Train and score every cell of a fine-tuning matrix (model x method x variant x epochs x lr x "
        "seed), one child process per cell, one result JSON per cell, one HTML report.",
        epilog="Exit codes: 0 ok, 1 some cells failed/oom/timeout, 2 invalid input, 3 regression gate crossed.",
    )
    p.add_argument("matrix", help="the matrix YAML file (see README: matrix schema)")
    p.add_argument("--data-dir", help="where relative data paths resolve (default: $MEDBENCH_DATA_DIR or ./data)")
    p.add_argument("--results", metavar="DIR", help="results folder (default: results/<matrix name>)")
    p.add_argument("--report", metavar="PATH", help="report file (default: reports/<matrix name>.html)")
    p.add_argument(
        "--cache-dir", help=f"converted models and tokenized data (default: ${CACHE_DIR_ENV} or ~/.cache/medbench)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit; imports no torch")
    p.add_argument(
        "--rerun-failed", action="store_true", help="run again cells that failed, ran out of memory or timed out"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cells whose id matches (glob, or substring without wildcards); repeatable",
    )
    p.add_argument("--report-only", action="store_true", help="render the report from the results folder only")
    p.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    p.add_argument(
        "--baseline",
        metavar="FILE",
        help="compare with a stored baseline; exit 3 if a threshold (report.thresholds in the matrix) is crossed",
    )
    p.add_argument("--write-baseline", metavar="FILE", help="write a baseline JSON from the results folder")
    p.add_argument("--timeout-minutes", type=positive_minutes, help="per-cell timeout (overrides the matrix)")
    p.add_argument(
        "--executor",
        help="how cells run: local (one after the other, the default) or ray (over every "
        "GPU of this machine or of a Ray cluster); overrides the matrix's execution",
    )
    ray = p.add_argument_group("Ray executor (--executor ray; pip install -e '.[ray]')")
    ray.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="an existing Ray cluster (e.g. 10.0.0.1:6379 or auto); default: start Ray on this machine",
    )
    ray.add_argument(
        "--gpus-per-cell", type=float, metavar="N", help="GPUs per cell (default 1 where the cluster has GPUs, else 0)"
    )
    ray.add_argument("--cpus-per-cell", type=float, metavar="N", help="CPU cores per cell (default 1)")
    ray.add_argument("--max-concurrent", type=int, metavar="N", help="cells running at once at most")
    ray.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="runs again a cell whose worker or node was lost up to N times (default 2)",
    )
    ray.add_argument(
        "--share-gpu",
        action="store_true",
        default=None,
        help="let cells share a GPU (fractional --gpus-per-cell): accuracy-only, the report marks their "
        "speed and memory as not comparable",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-unreachable",
        action="store_true",
        help="stop (exit 2) when a hub model cannot be reached, instead of recording its cells as skipped",
    )
    return p


def print_plan(planned: list, loaded: object, results_dir: Path, planner: object, out=None) -> None:
    """The plan: every cell, done / run / skip and why, its predicted memory, time on this machine and limit."""
    from collections import Counter

    out = sys.stdout if out is None else out  # looked up now: a default bound at import misses a redirected stdout

    from harness.estimator import estimate_cell

    counts = Counter(p.action for p in planned)
    print(
        f"matrix {loaded.matrix.name}: {len(planned)} cells  (run {counts['run']}, done {counts['done']}, "
        f"skip {counts['skip']})",
        file=out,
    )
    print(f"data dir: {loaded.data_dir}   results: {results_dir}", file=out)
    calibrated = "; ".join(planner.sources) or "nothing measured on this kind of device yet"
    print(f"predicted time: training + evaluation on this machine (calibrated on {calibrated})", file=out)
    header = f"{'action':6} {'cell':64} {'kind':8} {'est. mem':>10} {'est. time':>10} {'limit':>8}  why"
    print(header, file=out)
    print("-" * len(header), file=out)
    for p in planned:
        try:
            mem = fmt_bytes(estimate_cell(p.cell.config).peak_memory_bytes)
        except Exception:  # an estimate is a hint; the plan must print regardless
            mem = "?"
        pred = planner.predict(p.cell)
        tim = fmt_seconds(pred.wall_s)  # "–" where nothing measured on this device calibrates a prediction
        limit = fmt_seconds(p.cell.config.runtime.timeout_s) if p.action == "run" else ""
        print(
            f"{p.action:6} {p.cell.id:64} {p.cell.config.method.kind:8} {mem:>10} {tim:>10} {limit:>8}  {p.why}",
            file=out,
        )
    from harness.evaluation.plan import print_plan_extras

    print_plan_extras(planned, loaded, results_dir, out, planner)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":  # `medbench export RESULTS_DIR ...` (harness/export/cli.py)
        from harness.export.cli import main as export_main

        return guarded(export_main, argv[1:])
    if argv[:1] == ["data"]:  # `medbench data list|fetch|verify`
        from harness.data_catalog import main as data_main

        return guarded(data_main, argv[1:])
    return guarded(_main, argv)  # Ctrl-C and a full / read-only disk: one line, exit 130 / 2


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from harness.config import CellRuntime
    from harness.matrix import MatrixError, expand, load_matrix

    try:
        loaded = load_matrix(args.matrix, data_dir=args.data_dir, check_files=not args.report_only)
    except MatrixError as exc:
        print(f"error: invalid matrix\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    name = loaded.matrix.name
    results_dir = Path(args.results or Path("results") / name)
    report_path = Path(args.report or Path("reports") / f"{name}.html")
    cache_dir = Path(args.cache_dir or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "medbench")
    timeout_s = args.timeout_minutes * 60 if args.timeout_minutes else None
    runtime = CellRuntime(
        data_dir=str(loaded.data_dir.resolve()),
        results_dir=str(results_dir.resolve()),
        cache_dir=str(cache_dir.resolve()),
        timeout_s=timeout_s,
    )
    cells = expand(loaded, runtime)

    from harness.runner import plan

    planned = plan(cells, results_dir, rerun_failed=args.rerun_failed, only=args.only)
    if args.only and not planned:
        print(f"error: --only {' '.join(args.only)} matches none of the {len(cells)} cells", file=sys.stderr)
        return EXIT_BAD_INPUT
    planned, planner = _with_limits(planned, loaded, timeout_s)
    executor = None if args.report_only else _executor(args, loaded)
    if isinstance(executor, int):
        return executor
    try:
        return _plan_and_run(args, loaded, planned, planner, executor, results_dir, report_path, cache_dir)
    finally:
        if executor is not None:
            executor.close()


def _with_limits(planned: list, loaded: object, timeout_s: float | None) -> tuple[list, object]:
    """The plan's predictor for this machine, and each cell to run with its time limit: --timeout-minutes or a
    number in the matrix for every cell; `auto` (the default) from the cell's prediction (harness/planning.py)."""
    import dataclasses

    from harness.planning import make_planner

    setting = loaded.matrix.timeout_minutes
    fixed = timeout_s if timeout_s else (setting * 60 if isinstance(setting, (int, float)) else None)
    done = [p.existing for p in planned if p.action == "done"]
    planner = make_planner(done, loaded.matrix.report, loaded.path, fixed)
    if timeout_s or setting != "auto":
        return planned, planner
    out = []
    for p in planned:
        if p.action == "run":
            limit = planner.predict(p.cell).limit_s
            runtime = p.cell.config.runtime.model_copy(update={"timeout_s": limit})
            p = dataclasses.replace(
                p, cell=dataclasses.replace(p.cell, config=p.cell.config.model_copy(update={"runtime": runtime}))
            )
        out.append(p)
    return out, planner


def _executor(args: argparse.Namespace, loaded: object) -> object:
    """The executor the flags and the matrix's `execution:` choose (flags win), or an exit code."""
    from pydantic import ValidationError

    from harness.executors import executor_class

    flags = {
        "executor": args.executor,
        "ray_address": args.ray_address,
        "gpus_per_cell": args.gpus_per_cell,
        "cpus_per_cell": args.cpus_per_cell,
        "max_concurrent": args.max_concurrent,
        "max_retries": args.max_retries,
        "share_gpu": args.share_gpu,
    }
    try:
        options = loaded.matrix.execution.model_validate(
            {**loaded.matrix.execution.model_dump(), **{k: v for k, v in flags.items() if v is not None}}
        )
        return executor_class(options.executor)(options)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(map(str, e["loc"]))
            print(f"error: execution{'.' + where if where else ''}: {e['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyError as exc:
        print(f"error: execution: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _plan_and_run(
    args: argparse.Namespace,
    loaded: object,
    planned: list,
    planner: object,
    executor: object,
    results_dir: Path,
    report_path: Path,
    cache_dir: Path,
) -> int:
    from harness.runner import ResultsBusy, execute

    name = loaded.matrix.name
    pre = None
    if not args.report_only:  # everything checkable, before any cell runs (harness/preflight.py)
        from harness.preflight import run_preflight

        places = {"results folder": results_dir, "cache folder": cache_dir}
        if not args.no_report:
            places["report folder"] = report_path.parent
        pre = run_preflight(loaded, [p.cell for p in planned if p.action == "run"], places=places)
        if pre.unreachable and not args.fail_unreachable:  # its cells are skipped; a later run with the hub runs them
            from harness.preflight import skip_unreachable, unreachable_message

            print(
                f"warning: {unreachable_message(pre.unreachable)}\n(their cells are recorded as skipped; "
                "--fail-unreachable stops instead)",
                file=sys.stderr,
            )
            planned = skip_unreachable(planned, pre)
        if not pre.ok:
            print(pre.message(str(loaded.path)), file=sys.stderr)
            return EXIT_BAD_INPUT
    if executor is not None:
        try:
            planned = executor.place(planned)  # cells that fit no device of the cluster become `skip`
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.dry_run:
        try:
            print_plan(planned, loaded, results_dir, planner)
            if pre is not None:
                print(pre.summary())
        except BrokenPipeError:  # `--dry-run | head` is fine
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK

    exit_code = EXIT_OK
    if not args.report_only:
        t0 = time.monotonic()
        try:
            summary = execute(planned, results_dir, executor=executor, progress=not args.no_progress)
        except ResultsBusy as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print(f"\n{interrupted_message(finished_cells(planned, results_dir))}", file=sys.stderr)
            return EXIT_INTERRUPTED
        done = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
        print(
            f"matrix {name}: {len(planned)} cells ({done}); ran {summary.ran} in "
            f"{fmt_seconds(time.monotonic() - t0)}; results in {results_dir}"
        )
        for cell_id, status, reason in summary.problems:
            print(f"  {status:8} {cell_id}: {reason}")
        if not summary.all_ok:
            exit_code = EXIT_CELLS_FAILED
    return _finish(args, loaded, results_dir, report_path, exit_code)


def _finish(args: argparse.Namespace, loaded: object, results_dir: Path, report_path: Path, exit_code: int) -> int:
    """Statistics, baseline gate and report: all from the results folder alone."""
    from harness.evaluation.stats import compute_comparisons

    if results_dir.is_dir():
        compute_comparisons(results_dir)
    gate = None
    if args.write_baseline:
        from harness.report import write_baseline

        write_baseline(results_dir, Path(args.write_baseline))
        print(f"baseline written to {args.write_baseline}")
    if args.baseline:
        from harness.report import check_baseline

        if not Path(args.baseline).is_file():
            print(f"error: --baseline {args.baseline}: file not found", file=sys.stderr)
            return EXIT_BAD_INPUT
        gate = check_baseline(results_dir, Path(args.baseline), loaded.matrix.report.thresholds)
        print(gate.summary())
        if not gate.passed:
            exit_code = EXIT_REGRESSION
    if loaded.matrix.export is not None and not args.report_only and results_dir.is_dir():
        from harness.export.cli import run_matrix_export  # the matrix's `export:` block, after the run

        if (
            run_matrix_export(loaded.matrix.export, results_dir, args.cache_dir, loaded.data_dir) != 0
            and exit_code == EXIT_OK
        ):
            exit_code = EXIT_CELLS_FAILED
    if not args.no_report:
        from harness.report import render_report

        command = "python run_matrix.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] or [args.matrix]))
        out = render_report(
            results_dir,
            report_path,
            matrix_text=loaded.raw_text,
            matrix_path=str(loaded.path),
            command=command,
            gate=gate,
            title=loaded.matrix.report.title,
        )
        print(f"report: {out}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
