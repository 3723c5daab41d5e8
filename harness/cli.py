"""Command line: `medbench run MATRIX` (also `python run_matrix.py MATRIX`), `medbench data ...`,
`medbench export ...`: argparse sub-commands, each handled by one function.

Exit codes: 0 every cell succeeded or was skipped with a reason; 1 some cell failed, ran out of memory or timed out
(the others still ran); 2 invalid input (matrix file, flags, busy results folder); 3 the regression gate
(`--baseline`) was crossed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from harness.faults import EXIT_INTERRUPTED, finished_cells, guarded, interrupted_message, positive_minutes
from harness.formatting import fmt_bytes, fmt_seconds

if TYPE_CHECKING:  # pragma: no cover
    from harness.cells import PlannedCell
    from harness.executors.base import Executor
    from harness.matrix import LoadedMatrix
    from harness.planning import Planner
    from harness.preflight import PreflightResult

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT, EXIT_REGRESSION = 0, 1, 2, 3
CACHE_DIR_ENV = "MEDBENCH_CACHE_DIR"
COMMANDS = ("run", "data", "export")
RUNS_DIR = "runs"  # where a run's results and report go unless --results / --report say otherwise


class BadInput(Exception):
    """Invalid input found after the flags were parsed: printed as `error: ...`, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medbench",
        description="Benchmark fine-tuning strategies: train and score every cell of a matrix, prepare the data "
        "it needs, export the cells worth shipping.",
        epilog="`python run_matrix.py MATRIX [options]` is `medbench run MATRIX [options]`.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="train and score every cell of a matrix, render its report",
        description="Train and score every cell of a fine-tuning matrix (model x method x variant x epochs x lr x "
        "seed), one child process per cell, one result JSON per cell, one HTML report.",
        epilog="Exit codes: 0 ok, 1 some cells failed/oom/timeout, 2 invalid input, 3 regression gate crossed.",
    )
    add_run_arguments(run)
    run.set_defaults(handler=run_command)

    from harness.data_catalog import add_data_arguments, data_command

    data = sub.add_parser(
        "data",
        help="the data sets the matrices need: list, verify (sha256), fetch (online)",
        description="The data sets the matrices need: list, verify (sha256), fetch (online).",
    )
    add_data_arguments(data)
    data.set_defaults(handler=data_command)

    from harness.export.cli import build_parser as export_parser
    from harness.export.cli import run_export

    export = sub.add_parser(
        "export",
        parents=[export_parser()],
        conflict_handler="resolve",
        help="merge, quantize and score the chosen cells (Hugging Face folder, GGUF files)",
        description=export_parser().description,
    )
    export.set_defaults(handler=run_export)
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("matrix", help="the matrix YAML file (see README: matrix schema)")
    p.add_argument("--data-dir", help="where relative data paths resolve (default: $MEDBENCH_DATA_DIR or ./data)")
    p.add_argument(
        "--results",
        metavar="DIR",
        help=f"results folder (default: {RUNS_DIR}/<matrix name>/results, your own: results/ holds the committed "
        "examples)",
    )
    p.add_argument("--report", metavar="PATH", help=f"report file (default: {RUNS_DIR}/<matrix name>/report.html)")
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
        "--track",
        metavar="NAMES",
        help="experiment trackers, comma-separated (mlflow, tensorboard, wandb, or a plug-in); replaces the "
        "matrix's tracking:; 'none' turns it off",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-unreachable",
        action="store_true",
        help="stop (exit 2) when a hub model cannot be reached, instead of recording its cells as skipped",
    )
    add_executor_flags(p)


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """`--executor`, and each registered executor's own flags (its `cli_flags`), one group per executor."""
    from harness.executors import executors

    found = executors()
    p.add_argument(
        "--executor",
        choices=sorted(found),
        help="how cells run (default: the matrix's execution.executor, else local); overrides the matrix",
    )
    for name, cls in found.items():
        if not cls.cli_flags:
            continue
        group = p.add_argument_group(f"{name} executor (--executor {name})")
        for f in cls.cli_flags:
            dest = f"executor_{name}_{f.option}"
            if f.type is None:
                group.add_argument(f"--{f.flag}", dest=dest, action="store_true", default=None, help=f.help)
            else:
                metavar = f.metavar or ("N" if f.type in (int, float) else "VALUE")
                group.add_argument(f"--{f.flag}", dest=dest, type=f.type, metavar=metavar, help=f.help)


def print_plan(
    planned: list[PlannedCell],
    loaded: LoadedMatrix,
    results_dir: Path,
    planner: Planner,
    out: TextIO | None = None,
) -> None:
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `python run_matrix.py MATRIX ...`
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return guarded(args.handler, args)  # Ctrl-C and a full / read-only disk: one line, exit 130 / 2


def run_command(args: argparse.Namespace) -> int:
    """`medbench run`: plan, preflight, run the cells, statistics, gate, export, report."""
    from harness.config import CellRuntime
    from harness.matrix import MatrixError, expand, load_matrix

    try:
        loaded = load_matrix(args.matrix, data_dir=args.data_dir, check_files=not args.report_only)
    except MatrixError as exc:
        print(f"error: invalid matrix\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for warning in loaded.warnings:
        print(f"warning: {loaded.path}: {warning}", file=sys.stderr)
    name = loaded.matrix.name
    # a run's own home (untracked): the committed example results / reports are never reused or rewritten by default
    results_dir = Path(args.results or Path(RUNS_DIR) / name / "results")
    report_path = Path(args.report or Path(RUNS_DIR) / name / "report.html")
    cache_dir = Path(args.cache_dir or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "medbench")
    timeout_s = args.timeout_minutes * 60 if args.timeout_minutes else None
    try:
        tracking = _tracking(args, loaded)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    runtime = CellRuntime(
        data_dir=str(loaded.data_dir.resolve()),
        results_dir=str(results_dir.resolve()),
        cache_dir=str(cache_dir.resolve()),
        timeout_s=timeout_s,
        tracking=tracking,
        tracking_dir=str((results_dir / "tracking").resolve()),
    )
    cells = expand(loaded, runtime)

    from harness.planning import plan

    planned = plan(cells, results_dir, rerun_failed=args.rerun_failed, only=args.only)
    _warn_foreign(results_dir, name)
    if args.only and not planned:
        print(f"error: --only {' '.join(args.only)} matches none of the {len(cells)} cells", file=sys.stderr)
        return EXIT_BAD_INPUT
    planned, planner = _with_limits(planned, loaded, timeout_s)
    try:
        executor = None if args.report_only else _executor(args, loaded)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _plan_and_run(args, loaded, planned, planner, executor, results_dir, report_path, cache_dir)
    finally:
        if executor is not None:
            executor.close()


def _warn_foreign(results_dir: Path, matrix: str) -> None:
    """Result files of another matrix in the results folder: named, and left out of statistics and report."""
    from harness.results import foreign_note, load_results, split_foreign

    _, foreign = split_foreign(load_results(results_dir)[0], matrix)
    if foreign:
        print(f"warning: {results_dir}: {foreign_note(foreign)} (of the statistics and the report)", file=sys.stderr)


def _with_limits(
    planned: list[PlannedCell], loaded: LoadedMatrix, timeout_s: float | None
) -> tuple[list[PlannedCell], Planner]:
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


def _tracking(args: argparse.Namespace, loaded: LoadedMatrix) -> list[dict]:
    """The trackers of this run: --track (names) replaces the matrix's `tracking:`; each validated by its own
    `Options` (harness/trackers/)."""
    if args.track is None:
        return list(loaded.matrix.tracking)
    names = [n.strip() for n in args.track.split(",") if n.strip()]
    if names == ["none"]:
        return []
    from harness.plugins import UnknownPlugin
    from harness.trackers import resolve_tracking

    try:
        return resolve_tracking(names)
    except (UnknownPlugin, ValueError) as exc:
        raise BadInput(f"--track: {exc}") from None


def _executor(args: argparse.Namespace, loaded: LoadedMatrix) -> Executor:
    """The executor the flags and the matrix's `execution:` choose, with its options (flags win); BadInput when an
    option is invalid or a flag belongs to another executor."""
    from pydantic import ValidationError

    from harness.config import _options_problem
    from harness.executors import executor_class, executors

    execution = loaded.matrix.execution
    name = args.executor or execution.executor
    cls = executor_class(name)
    given = dict(execution.options) if name == execution.executor else {}
    for other, other_cls in executors().items():
        for f in other_cls.cli_flags:
            value = getattr(args, f"executor_{other}_{f.option}", None)
            if value is None:
                continue
            if other != name:
                raise BadInput(f"--{f.flag} is an option of the {other} executor, and cells run with {name}")
            given[f.option] = value
    try:
        return cls(cls.Options.model_validate(given))
    except ValidationError as exc:
        raise BadInput(f"execution: {_options_problem(f'executor {name!r}', cls.Options, exc)}") from None


def _plan_and_run(
    args: argparse.Namespace,
    loaded: LoadedMatrix,
    planned: list[PlannedCell],
    planner: Planner,
    executor: Executor | None,
    results_dir: Path,
    report_path: Path,
    cache_dir: Path,
) -> int:
    from harness.runner import ResultsBusy

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
        for warning in pre.warnings:
            print(f"warning: {loaded.path}: {warning}", file=sys.stderr)
        if not pre.ok:
            print(pre.message(str(loaded.path)), file=sys.stderr)
            return EXIT_BAD_INPUT
    with contextlib.ExitStack() as held:
        if not args.dry_run and not args.report_only:
            from harness.runner import ResultsLock

            try:  # before an executor starts anything (Ray): a second runner on this folder is refused at once
                held.enter_context(ResultsLock(results_dir))
            except ResultsBusy as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
        exit_code = _place_and_execute(args, loaded, planned, planner, executor, results_dir, pre)
    if exit_code in (EXIT_BAD_INPUT, EXIT_INTERRUPTED) or args.dry_run:
        return exit_code
    return _finish(args, loaded, results_dir, report_path, exit_code)


def _place_and_execute(
    args: argparse.Namespace,
    loaded: LoadedMatrix,
    planned: list[PlannedCell],
    planner: Planner,
    executor: Executor | None,
    results_dir: Path,
    pre: PreflightResult | None,
) -> int:
    """Place the plan on the executor's devices, then print it (--dry-run) or run it; the exit code so far."""
    from harness.runner import execute

    name = loaded.matrix.name
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
            summary = execute(planned, results_dir, executor=executor, progress=not args.no_progress, lock=False)
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
    return exit_code


def _finish(
    args: argparse.Namespace, loaded: LoadedMatrix, results_dir: Path, report_path: Path, exit_code: int
) -> int:
    """Statistics, baseline gate and report: all from the results folder alone."""
    from harness.evaluation.stats import compute_comparisons
    from harness.results import write_run_file

    if results_dir.is_dir():
        compute_comparisons(results_dir, loaded.matrix.name)
        write_run_file(results_dir, loaded.path, loaded.data_dir)
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
            matrix=loaded.matrix.name,
        )
        print(f"report: {out}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
