"""The report's measurement columns, from one list: every meter's columns, then the training loop's figures.

A column names where its number lives in a result record's `metrics`; the loader reads it, the table formats it
with `fmt`. A new meter adds its columns by declaring them (harness/meters/); nothing here changes.
"""

from __future__ import annotations

from typing import Any

from harness.meters.base import ReportColumn

TRAINING_COLUMNS = (
    ReportColumn(
        "time_per_epoch",
        "train.time_per_epoch_s",
        "time / epoch",
        "wall time per epoch, device synchronized, no eval or saving",
        "seconds",
    ),
    ReportColumn(
        "tokens_per_s",
        "train.tokens_per_s",
        "tokens/s",
        "steady-state real (non-padding) training tokens per second: the warm-up steps (the first optimizer steps, "
        "and any step that compiled) are left out; hover for the steps covered and the whole-run figure",
    ),
    ReportColumn(
        "mfu",
        "train.mfu",
        "MFU",
        "steady-state model FLOPs utilisation (same steps as tokens/s), where the peak FLOP/s is known",
        "pct",
    ),
    ReportColumn(
        "wall_tokens_per_s",
        "train.wall_tokens_per_s",
        "tokens/s (whole run)",
        "real training tokens per second over every step, warm-up included",
        in_table=False,
    ),
    ReportColumn(
        "steady_steps", "train.steady.steps", "steady steps", "optimizer steps that tokens/s and MFU cover", "count"
    ),
    ReportColumn("warmup_steps", "train.warmup.steps", "warm-up steps", "optimizer steps left out", "count", False),
    ReportColumn("warmup_s", "train.warmup.seconds", "warm-up", "seconds of the steps left out", "seconds", False),
    ReportColumn("compile_s", "train.warmup.compile_s", "compile", "seconds torch.compile spent", "seconds", False),
    ReportColumn(
        "trainable_params", "train.trainable_params", "trainable", "trainable parameters (share of all)", "count"
    ),
    ReportColumn("total_params", "train.total_params", "parameters", "all parameters", "count", in_table=False),
    ReportColumn(
        "saved_bytes", "train.saved_bytes", "saved", "size of what the method ships (adapter or checkpoint)", "bytes"
    ),
)


EVALUATION_COLUMNS = (
    ReportColumn(
        "forgetting",
        "forgetting.increase",
        "forgetting",
        "increase of the mean per-token cross-entropy (nats) on general text, trained minus base "
        "(eval.forgetting; harness/evaluation/forgetting.py)",
        "signed",
    ),
)


def measurement_columns() -> list[ReportColumn]:
    from harness.meters import report_columns

    return [*report_columns(), *TRAINING_COLUMNS, *EVALUATION_COLUMNS]


def read_column(metrics: dict[str, Any], column: ReportColumn) -> Any:
    """The column's value in a record's metrics: the first of its source paths that holds a value, else None."""
    sources = (column.source,) if isinstance(column.source, str) else column.source
    for source in sources:
        obj: Any = metrics
        for part in source.split("."):
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is not None:
            return obj
    return None
