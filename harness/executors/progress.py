"""One progress bar for the whole matrix, whatever runs the cells: cells done / running / queued, occupancy per
device label, ETA (tqdm's, from the rate of finished cells, so it accounts for cells running in parallel), and the
running cells' own progress (epoch, step, loss). Without a terminal (CI logs) it prints one line per finished cell.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from harness.results import CellResult


class MatrixProgress:
    def __init__(self, total: int, *, enabled: bool = True, capacity: dict[str, int] | None = None):
        from tqdm import tqdm

        self.total = total
        self.interactive = sys.stderr.isatty()
        self.lines = not enabled or not self.interactive  # one line per finished cell
        self.bar = tqdm(
            total=total,
            unit="cell",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5 if self.interactive else 60.0,
            bar_format="{n_fmt}/{total_fmt} cells |{bar}| {elapsed}<{remaining} {postfix}",
        )
        self.capacity = dict(capacity or {})
        self.running: dict[str, str] = {}  # cell id -> device label
        self.where: dict[str, str] = {}  # cell id -> where it ran (node / device), for the finished line
        self.detail: dict[str, str] = {}  # cell id -> its own progress text
        self.done = 0
        self.ran = 0

    def started(self, cell_id: str, device: str, where: str | None = None) -> None:
        self.running[cell_id] = device
        self.where[cell_id] = where or device
        self._refresh()

    def update(self, cell_id: str, text: str) -> None:
        if cell_id in self.running:
            self.detail[cell_id] = text
            self._refresh()

    def finished(
        self, cell_id: str, record: CellResult | None, wall_s: float | None = None, *, ran: bool = True
    ) -> None:
        self.running.pop(cell_id, None)
        self.detail.pop(cell_id, None)
        self.done += 1
        self.ran += int(ran)
        if self.lines and record is not None:
            where = self.where.get(cell_id)
            text = f"[{self.done}/{self.total}] {cell_id}: {record.status}"
            if wall_s is not None:
                text += f" ({wall_s:.1f} s" + (f", {where}" if where else "") + ")"
            self.bar.write(text + (f" - {record.reason}" if record.reason else ""), file=sys.stderr)
        self.bar.update(1)
        self._refresh()

    def postfix(self) -> str:
        queued = self.total - self.done - len(self.running)
        parts = [f"running {len(self.running)}", f"queued {queued}"]
        busy = Counter(self.running.values())
        for label in sorted(set(self.capacity) | set(busy)):
            cap = self.capacity.get(label)
            parts.append(f"{label} {busy.get(label, 0)}/{cap}" if cap else f"{label} {busy.get(label, 0)}")
        if len(self.running) == 1:
            (only,) = self.running
            detail = self.detail.get(only)
            parts.append(f"{only[:48]}" + (f" {detail}" if detail else ""))
        return " · ".join(parts)

    def _refresh(self) -> None:
        if not self.bar.disable:
            self.bar.set_postfix_str(self.postfix(), refresh=self.interactive)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> MatrixProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
