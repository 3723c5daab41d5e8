"""`wandb`: one Weights & Biases run per cell, grouped by matrix (`group`), in the project `project` (default
`medbench`). The usual environment variables apply (`WANDB_MODE=offline` writes runs under
`results/<matrix>/tracking/wandb` for a later `wandb sync`; `WANDB_API_KEY`, `WANDB_BASE_URL`, `WANDB_ENTITY`)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.trackers import RunInfo, Tracker, register


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = "medbench"
    entity: str | None = None
    mode: Literal["online", "offline"] | None = None  # None: $WANDB_MODE, else online


def _mode(options: WandbOptions) -> str:
    return options.mode or os.environ.get("WANDB_MODE") or "online"


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return netrc.is_file() and host in netrc.read_text(errors="replace")


@register
class WandbTracker(Tracker):
    name = "wandb"
    label = "Weights & Biases"
    requires = ("wandb",)
    Options = WandbOptions

    @classmethod
    def preflight(cls, options: WandbOptions, store: Path) -> str | None:
        missing = super().preflight(options, store)
        if missing or _mode(options) in ("offline", "disabled", "dryrun"):
            return missing
        if not _logged_in():
            return "not logged in: set WANDB_API_KEY or run `wandb login`, or set WANDB_MODE=offline to sync later"
        from harness.net import bounded, request_status

        base = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").rstrip("/")
        try:
            bounded(lambda: request_status(base + "/healthz", 5.0, method="GET"), 6.0)
        except (OSError, TimeoutError) as exc:
            return f"{base} cannot be reached ({exc}); WANDB_MODE=offline keeps the runs for a later `wandb sync`"
        return None

    @staticmethod
    def _init(options: WandbOptions, store: Path, **kwargs: Any) -> Any:
        import wandb

        folder = Path(store).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=options.project,
            entity=options.entity,
            dir=str(folder),
            mode=_mode(options),
            settings=wandb.Settings(silent=True, console="off", disable_git=True),  # the commit is a tag
            **kwargs,
        )

    def start(self, run: RunInfo) -> dict[str, Any]:
        # a fresh id per attempt (a cell run again after a failure is another run of the same name)
        run_id = hashlib.sha256(run.cell_id.encode()).hexdigest()[:10] + "-" + uuid.uuid4().hex[:6]
        self.run = self._init(
            self.options,
            self.store,
            id=run_id,
            name=run.cell_id,
            group=run.matrix,
            config=run.params,
            tags=[f"{k}:{v}"[:64] for k, v in sorted(run.tags.items())],
        )
        return {"id": run_id, "project": self.options.project}

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, summary: dict[str, float], status: str, reason: str | None, record_path: Path | None) -> None:
        import wandb

        self.run.summary.update({**summary, "status": status, "reason": reason or ""})
        if record_path is not None and record_path.is_file():
            artifact = wandb.Artifact(f"result-{self.run.id}", type="result")
            artifact.add_file(str(record_path))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if status in ("success", "skipped") else 1)

    @classmethod
    def end_from_parent(
        cls, options: WandbOptions, store: Path, handle: dict[str, Any], status: str, reason: str
    ) -> None:
        run = cls._init(options, store, id=handle["id"], resume="allow")
        run.summary.update({"status": status, "reason": reason})
        run.finish(exit_code=1)
