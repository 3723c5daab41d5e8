"""A cell and a planned cell: the plain data that crosses from the matrix to the plan, the executors and the runner
(kept apart from matrix.py and planning.py so that executors depend on the data, not on who makes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import CellConfig
    from harness.results import CellResult

Action = Literal["done", "run", "skip"]


@dataclass(frozen=True)
class Cell:
    """One fully resolved cell of a matrix: its id (readable slug + hash of the resolved config) and its config."""

    id: str
    config_hash: str
    config: CellConfig

    @property
    def model(self) -> str:
        return self.config.model.id

    @property
    def method(self) -> str:
        return self.config.method.name


@dataclass
class PlannedCell:
    cell: Cell
    action: Action
    why: str  # one line: why done / run / skipped
    existing: CellResult | None = None
