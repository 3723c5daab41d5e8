"""What a meter is, and the registry that finds meters.

A meter is a small context manager around a region of a cell ("train" or "eval"), as optimum-benchmark's trackers
are: it measures and contains no training logic. A meter class carries everything about itself: its `name`, the
regions it measures, the totals it reads (which derived figures follow from them) and the report columns it adds.
It is one file in this package, or one file in a `$MEDBENCH_PLUGINS` folder; nothing else has to change for its
readings to reach the result record and the report table.

Readings are keyed by region, then meter: `metrics["meters"][region][meter.name] = meter.reading()`, so a meter that
measures two regions keeps both. Derived figures are computed once, for every meter alike (`derived_figures`): each
total a meter declares (`totals = {"joules": "joule"}`) divided into the region's work (real training tokens of
"train", scored items of "eval") gives `metrics["derived"][region]["tokens_per_joule"]`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from harness.plugins import Component, Registry

Region = Literal["train", "eval"]
REGIONS: tuple[Region, ...] = ("train", "eval")
Format = Literal["bytes", "seconds", "pct", "num", "count", "sig", "signed"]  # harness/report/render.FORMATS


@dataclass(frozen=True)
class ReportColumn:
    """One numeric column of the report's cell table, read from a result record's `metrics` at `source`."""

    key: str  # the column's key in the report's table of cells
    source: str | tuple[str, ...]  # dotted path(s) inside `metrics`, e.g. "meters.train.memory.headline_bytes"
    label: str  # table header
    title: str = ""  # header tooltip: what the number is
    fmt: Format = "num"
    in_table: bool = True  # False: loaded (for figures, the gate) but not a column of the cell table


class Meter(Component):
    """Subclass, set the class attributes, implement `__enter__` / `__exit__` and `reading()`, decorate with
    `@register`. One instance per region it measures."""

    regions: ClassVar[tuple[Region, ...]] = ("train",)
    columns: ClassVar[tuple[ReportColumn, ...]] = ()
    order: ClassVar[int] = 100  # position of its columns in the table (lower first)
    # totals in its reading that a region's work is divided by: reading key -> unit (derived: <work>_per_<unit>)
    totals: ClassVar[dict[str, str]] = {}

    def __init__(self, device: str, region: Region = "train"):
        self.device, self.region = device, region

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def reading(self) -> dict[str, Any]:
        raise NotImplementedError


REGISTRY: Registry[Meter] = Registry("meter", Meter, "harness.meters")
register = REGISTRY.register


def meter_classes() -> list[type[Meter]]:
    """Every meter: the modules of this package and the plug-ins, in column order."""
    return sorted(REGISTRY.entries().values(), key=lambda c: (c.order, c.name))


def report_columns() -> list[ReportColumn]:
    return [col for cls in meter_classes() for col in cls.columns]


@contextlib.contextmanager
def measuring(region: Region, device: str) -> Iterator[dict[str, Meter]]:
    """Enter every meter of `region` around the block; yields {name: meter}. Read `readings` after the block."""
    with contextlib.ExitStack() as stack:
        yield {cls.name: stack.enter_context(cls(device, region)) for cls in meter_classes() if region in cls.regions}


def readings(meters: dict[str, Meter]) -> dict[str, dict[str, Any]]:
    return {name: meter.reading() for name, meter in meters.items()}


def region_work(metrics: dict[str, Any], region: str) -> dict[str, float]:
    """What a region did, to divide totals into: real (non-padding) training tokens; scored evaluation items."""
    if region == "train":
        tokens = (metrics.get("train") or {}).get("tokens")
        return {"tokens": tokens} if tokens else {}
    if region == "eval":
        items = sum(int(t.get("n") or 0) for t in (metrics.get("eval") or {}).values() if isinstance(t, dict))
        return {"items": items} if items else {}
    return {}


def derived_figures(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """`<work>_per_<unit>` for every region, every meter's declared totals and the region's work (module doc)."""
    out: dict[str, dict[str, float | None]] = {}
    classes = {cls.name: cls for cls in meter_classes()}
    for region, by_meter in (metrics.get("meters") or {}).items():
        work = region_work(metrics, region)
        for name, reading in by_meter.items():
            cls = classes.get(name)
            if cls is None or not isinstance(reading, dict):
                continue
            for key, unit in cls.totals.items():
                total = reading.get(key)
                for what, amount in work.items():
                    out.setdefault(region, {})[f"{what}_per_{unit}"] = amount / total if total else None
    return out
