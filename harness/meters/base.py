"""What a meter is, and the registry that finds meters.

A meter is a small context manager around a region of a cell ("train" or "eval"), as optimum-benchmark's trackers
are: it measures and contains no training logic. A meter class carries everything about itself: the metric group it
writes into the result (`metrics.<group>`), the regions it measures, and the report columns it adds. It is one file
in this package, or one file in a `$MEDBENCH_PLUGINS` folder; nothing else has to change for its value to reach the
result record and the report table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Region = Literal["train", "eval"]
Format = Literal["bytes", "seconds", "pct", "num", "count", "sig", "signed"]  # harness/report/render.FORMATS


@dataclass(frozen=True)
class ReportColumn:
    """One numeric column of the report's cell table, read from a result record's `metrics` at `source`."""

    key: str  # the column's key in the report's table of cells
    source: str | tuple[str, ...]  # dotted path(s) inside `metrics`, e.g. "memory.headline_bytes"; first found wins
    label: str  # table header
    title: str = ""  # header tooltip: what the number is
    fmt: Format = "num"
    in_table: bool = True  # False: loaded (for figures, the gate) but not a column of the cell table


class Meter:
    """Subclass, set the class attributes and implement `__enter__` / `__exit__` and `reading()`."""

    group: ClassVar[str]  # key of the metric group in the result: metrics[group] = reading()
    regions: ClassVar[tuple[Region, ...]] = ("train",)
    columns: ClassVar[tuple[ReportColumn, ...]] = ()
    order: ClassVar[int] = 100  # position of its columns in the table (lower first)

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def reading(self) -> dict[str, Any]:
        raise NotImplementedError


def meter_classes() -> list[type[Meter]]:
    """Every meter: the modules of this package and the plug-in files, in column order."""
    import harness.meters as package
    from harness.plugins import import_package_modules, load_plugins

    import_package_modules(package)
    load_plugins()
    found: list[type[Meter]] = []
    stack = list(Meter.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if getattr(cls, "group", None) and cls not in found:
            found.append(cls)
        stack += cls.__subclasses__()
    groups = [c.group for c in found]
    duplicated = sorted({g for g in groups if groups.count(g) > 1})
    if duplicated:
        raise ValueError(f"two meters write the same metric group(s) {duplicated}: rename one meter's `group`")
    return sorted(found, key=lambda c: (c.order, c.group))


def report_columns() -> list[ReportColumn]:
    return [col for cls in meter_classes() for col in cls.columns]


@contextlib.contextmanager
def measuring(region: Region, device: str) -> Iterator[dict[str, Meter]]:
    """Enter every meter of `region` around the block; yields {group: meter}. Read `reading()` after the block."""
    with contextlib.ExitStack() as stack:
        meters = {cls.group: stack.enter_context(cls(device)) for cls in meter_classes() if region in cls.regions}
        yield meters


def readings(meters: dict[str, Meter]) -> dict[str, dict[str, Any]]:
    return {group: meter.reading() for group, meter in meters.items()}
