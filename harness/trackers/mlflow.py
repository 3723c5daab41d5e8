"""`mlflow`: one MLflow run per cell in an experiment named after the matrix. Without `uri`, a local store under the
results folder: `results/<matrix>/tracking/mlflow.db` (SQLite, MLflow's recommended local backend; artifacts beside
it in `mlartifacts/`), browsed with `mlflow ui --backend-store-uri sqlite:///results/<matrix>/tracking/mlflow.db`
(the `mlflow` package; the `tracking` extra installs the lighter `mlflow-skinny`, which logs and reads). With `uri`,
any tracking server (`http://host:5000`, `databricks`, ...).

Uses `MlflowClient` only (no global active run), so nothing else in the process is affected."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.trackers import INSTALL, RunInfo, Tracker, register

PARAM_VALUE_MAX = 6000  # MLflow's limit on a parameter value
BATCH = 100  # params / metrics per log_batch call (MLflow's limit is 1000 metrics, 100 params)


class MlflowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str | None = None  # a tracking URI; None: the local store under the results folder
    experiment: str | None = None  # default: the matrix name


def _status(status: str) -> str:
    return {"success": "FINISHED", "skipped": "FINISHED", "timeout": "KILLED"}.get(status, "FAILED")


@register
class MlflowTracker(Tracker):
    name = "mlflow"
    label = "MLflow"
    requires = ("mlflow",)
    Options = MlflowOptions

    @staticmethod
    def uri(options: MlflowOptions, store: Path) -> str:
        if options.uri:
            return options.uri
        Path(store).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(Path(store) / 'mlflow.db').resolve()}"

    @classmethod
    def preflight(cls, options: MlflowOptions, store: Path) -> str | None:
        missing = super().preflight(options, store)
        if missing:
            return missing
        if not options.uri:
            import importlib.util

            if importlib.util.find_spec("sqlalchemy") is None or importlib.util.find_spec("alembic") is None:
                return "the local store (SQLite) needs sqlalchemy and alembic: " + INSTALL
            return None
        if not options.uri.startswith(("http://", "https://")):
            return None
        from harness.net import bounded, request_status

        try:
            status = bounded(lambda: request_status(options.uri.rstrip("/") + "/health", 5.0, method="GET"), 6.0)
        except (OSError, TimeoutError) as exc:
            return f"tracking server {options.uri} cannot be reached ({exc})"
        return None if status < 400 else f"tracking server {options.uri} answered HTTP {status} on /health"

    def _client(self, uri: str) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)

    def start(self, run: RunInfo) -> dict[str, Any]:
        from mlflow.entities import Param

        uri = self.uri(self.options, self.store)
        self.client = self._client(uri)
        name = self.options.experiment or run.matrix
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        else:  # a local store keeps its artifacts beside it (not in the working folder)
            local = None if self.options.uri else (Path(self.store) / "mlartifacts").resolve().as_uri()
            experiment = self.client.create_experiment(name, artifact_location=local)
        created = self.client.create_run(experiment, run_name=run.cell_id, tags=run.tags)
        self.run_id = created.info.run_id
        params = [Param(k[:250], v[:PARAM_VALUE_MAX]) for k, v in sorted(run.params.items())]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + BATCH])
        return {"run_id": self.run_id, "uri": uri}

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH])

    def finish(self, summary: dict[str, float], status: str, reason: str | None, record_path: Path | None) -> None:
        self.log(summary, 0)
        self.client.set_tag(self.run_id, "medbench.status", status)
        if reason:
            self.client.set_tag(self.run_id, "medbench.reason", reason[:5000])
        if record_path is not None and record_path.is_file():
            self.client.log_artifact(self.run_id, str(record_path))
        self.client.set_terminated(self.run_id, _status(status))

    @classmethod
    def end_from_parent(
        cls, options: MlflowOptions, store: Path, handle: dict[str, Any], status: str, reason: str
    ) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=handle.get("uri") or cls.uri(options, store))
        client.set_tag(handle["run_id"], "medbench.status", status)
        client.set_tag(handle["run_id"], "medbench.reason", reason[:5000])
        client.set_terminated(handle["run_id"], _status(status))
