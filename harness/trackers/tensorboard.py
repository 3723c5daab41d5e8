"""`tensorboard`: TensorBoard event files, one folder per cell under one folder per matrix
(`results/<matrix>/tracking/tensorboard/<cell>`; `tensorboard --logdir` that folder). The config, tags, status and
reason are text summaries; per-step and final values are scalars (final values at step 0 under their own names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.trackers import RunInfo, Tracker, register


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    logdir: str | None = None  # default: <results>/tracking/tensorboard


@register
class TensorBoardTracker(Tracker):
    name = "tensorboard"
    label = "TensorBoard"
    requires = ("tensorboard",)
    Options = TensorBoardOptions

    @staticmethod
    def folder(options: TensorBoardOptions, store: Path, cell_id: str) -> Path:
        return Path(options.logdir or Path(store) / "tensorboard").expanduser() / cell_id

    @staticmethod
    def _writer(logdir: Path) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(logdir))

    def start(self, run: RunInfo) -> dict[str, Any]:
        logdir = self.folder(self.options, self.store, run.cell_id)
        self.writer = self._writer(logdir)
        self.writer.add_text("config", "```\n" + json.dumps(run.params, indent=1, sort_keys=True) + "\n```", 0)
        self.writer.add_text("tags", "\n".join(f"- {k}: {v}" for k, v in sorted(run.tags.items())), 0)
        return {"logdir": str(logdir)}

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: dict[str, float], status: str, reason: str | None, record_path: Path | None) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        self.writer.add_text("status", status + (f": {reason}" if reason else ""), 0)
        if record_path is not None and record_path.is_file():
            self.writer.add_text("result", "```\n" + record_path.read_text()[:100_000] + "\n```", 0)
        self.writer.close()

    @classmethod
    def end_from_parent(cls, options: Any, store: Path, handle: dict[str, Any], status: str, reason: str) -> None:
        writer = cls._writer(Path(handle["logdir"]))
        writer.add_text("status", f"{status}: {reason}", 0)
        writer.close()
