"""How many items and seeds an experiment needs: `python -m harness.evaluation.sizing`.

    python -m harness.evaluation.sizing --items 100 --target 3
    python -m harness.evaluation.sizing --items 100 --target 3 --discordance 0.15 --seed-sd 1.5 --seeds 3
    python -m harness.evaluation.sizing --results results/cpu_smollm2 --target 3

With `--results`, the discordance and the number of items of every task are read from that folder's paired
comparisons with the base row, and the seed spread from its cells that differ only by seed (when there are none,
`--seed-sd` is used as an assumption).
Differences and spreads are in accuracy points (3 = 3 percentage points).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.evaluation import power as pw


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.evaluation.sizing",
        description="Detectable difference, and the items / seeds needed to see a target "
        "difference, for the paired McNemar test against the base row.",
    )
    p.add_argument("--items", type=int, help="items the task is scored on (n)")
    p.add_argument("--target", type=float, default=3.0, help="the difference that matters, in points (default 3)")
    p.add_argument(
        "--discordance",
        type=float,
        default=pw.ASSUMED_DISCORDANCE,
        help=f"share of items on which the two cells disagree (default {pw.ASSUMED_DISCORDANCE})",
    )
    p.add_argument("--seed-sd", type=float, default=None, help="sd of accuracy across training seeds, in points")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    p.add_argument("--alpha", type=float, default=pw.ALPHA)
    p.add_argument("--power", type=float, default=pw.POWER)
    p.add_argument("--results", type=Path, help="a results folder: measure discordance, items and seed spread there")
    return p


def report_lines(
    n: int,
    target: float,
    discordance: float,
    seed_sd: float | None,
    seeds: int,
    alpha: float,
    power: float,
    label: str = "task",
    source: str = "given",
) -> list[str]:
    """The answer for one task, as lines of text (`target` and `seed_sd` as fractions)."""
    disc = pw.Discordance(discordance, source, source)
    d = pw.detectability(label, n, disc, target, alpha, power)
    lines = [pw.sentence(d)]
    if seed_sd is None:
        lines.append(
            "  seeds: no seed spread given (--seed-sd) or measured; the line above ignores seed-to-seed "
            "variation, which is often as large as the gain itself"
        )
        return lines
    mdd = pw.mdd_with_seeds(n, discordance, seed_sd, seeds, alpha, power)
    lines.append(
        f"  with a seed sd of {100 * seed_sd:.1f} points and {seeds} seed{'s' if seeds != 1 else ''} per "
        f"configuration: differences under ≈ {'–' if mdd is None else f'{100 * mdd:.1f}'} points are "
        "invisible (seed lines: Connor's normal approximation with the seed variance added; the seed spread has "
        "no exact binomial form)"
    )
    items = pw.items_needed_with_seeds(target, discordance, seed_sd, seeds, alpha, power)
    lines.append(
        f"  {100 * target:g} points with {seeds} seed{'s' if seeds != 1 else ''}: "
        + (
            f"≈ {items} items"
            if items is not None
            else "not reachable with any number of items: the seed spread alone hides it; add seeds"
        )
    )
    for k in sorted({seeds, 3, 5, 10}):
        if k == seeds:
            continue
        items_k = pw.items_needed_with_seeds(target, discordance, seed_sd, k, alpha, power)
        lines.append(
            f"  {100 * target:g} points with {k} seeds: "
            + (f"≈ {items_k} items" if items_k is not None else "not reachable (seed spread too large)")
        )
    k_needed = pw.seeds_needed(target, n, discordance, seed_sd, alpha, power)
    lines.append(
        f"  {100 * target:g} points on these {n} items: "
        + (
            f"≈ {k_needed} seed{'s' if k_needed != 1 else ''}"
            if k_needed is not None
            else "not reachable with any number of seeds: too few items"
        )
    )
    return lines


def from_results(
    folder: Path,
    target: float,
    alpha: float,
    power: float,
    seeds: int | None,
    assumed: float,
    seed_sd: float | None = None,
) -> list[str]:
    from harness.evaluation.plan import read_comparisons
    from harness.evaluation.seeds import seed_spread
    from harness.report.loader import task_label

    comparisons = read_comparisons(folder)
    if not comparisons:
        return [
            f"{folder}: no comparisons.json with paired comparisons (run the matrix, or `run_matrix.py MATRIX "
            "--report-only`, first)"
        ]
    spreads = seed_spread(folder)
    lines = []
    for task in dict.fromkeys(c.get("task") for c in comparisons if c.get("task")):
        ns = [int(c["n"]) for c in comparisons if c.get("task") == task and c.get("n")]
        disc = pw.discordance_for(task, comparisons, assumed)
        spread = spreads.get(task)
        k = seeds or (spread["seeds"] if spread else 1)
        sd = spread["sd"] if spread else seed_sd
        lines += report_lines(
            max(ns), target, disc.rate, sd, k, alpha, power, label=task_label(task), source=disc.detail
        )
        if spread:
            lines.append(
                f"  seed sd measured: {100 * spread['sd']:.2f} points (pooled over {spread['groups']} "
                f"configuration(s) with {spread['seeds']} seeds)"
            )
        elif sd is not None:
            lines.append(
                f"  seed sd assumed: {100 * sd:.2f} points (--seed-sd; these results have one seed per configuration)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    target = args.target / 100
    seed_sd = None if args.seed_sd is None else args.seed_sd / 100
    try:
        if args.results:
            lines = from_results(
                args.results,
                target,
                args.alpha,
                args.power,
                args.seeds if args.seeds != 1 else None,
                args.discordance,
                seed_sd,
            )
        elif args.items:
            lines = report_lines(args.items, target, args.discordance, seed_sd, args.seeds, args.alpha, args.power)
        else:
            print("error: give --items N (or --results FOLDER)", file=sys.stderr)
            return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
