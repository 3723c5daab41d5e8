"""Meters: one file each (this package or a `$MEDBENCH_PLUGINS` folder), found by `meter_classes()`.

`measuring(region, device)` enters every meter of a region; each meter's `reading()` becomes
`metrics["meters"][region][name]` in the cell's result, and its `columns` become columns of the report.
`Stopwatch` / `PhaseTimer` time regions and phases; they are not registered meters because time is what the
training loop itself reports per epoch.
"""

from harness.meters.base import (
    Meter,
    ReportColumn,
    derived_figures,
    measuring,
    meter_classes,
    readings,
    register,
    report_columns,
)
from harness.meters.memory import MemoryMeter, MemoryReading, peak_rss_bytes
from harness.meters.timing import PhaseTimer, Stopwatch, synchronize

__all__ = [
    "MemoryMeter",
    "MemoryReading",
    "Meter",
    "PhaseTimer",
    "ReportColumn",
    "derived_figures",
    "Stopwatch",
    "measuring",
    "meter_classes",
    "peak_rss_bytes",
    "readings",
    "register",
    "report_columns",
    "synchronize",
]
