"""Experiment trackers (harness/trackers/): what a run logged is read back through each library's own reader
(MLflow's client on the local store, TensorBoard's event accumulator, W&B's own protobuf records of an offline run);
a tracker that cannot start is one line before anything runs; tracking never changes a cell id."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CI_DATA, ROOT, matrix_yaml, run_matrix_cli

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

EVAL = "eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl, limit: 6}]\n"
BROKEN_METHOD = """
from harness.methods.base import Method, register


@register
class Broken(Method):
    kind = "broken"

    def prepare(self, cell, options, device, dtype):
        raise RuntimeError("a deliberate failure after the tracker runs started")
"""


# ---------------------------------------------------------------------------------------------------- readers


def mlflow_runs(store: Path, matrix: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(matrix)
    assert experiment is not None, "one experiment per matrix"
    return client, {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


def wandb_records(run_file: Path) -> list:
    """The records of an offline W&B run file: LevelDB-log framing (7-byte W&B header, 32 KiB blocks, 7-byte record
    headers) around W&B's own protobuf `Record` (wandb.proto), which is how `wandb sync` reads it."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            out.append(record)
            pending = b""
        elif kind in (2, 3):
            pending += chunk
        else:
            pos += left - 7 - length  # block padding
    return out


def wandb_run(store: Path, cell_id: str) -> dict[str, object]:
    found = {}
    for path in glob.glob(str(store / "wandb" / "offline-run-*" / "run-*.wandb")):
        records = wandb_records(Path(path))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        if run.display_name != cell_id:
            continue
        history = [
            {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.HasField("history")
        ]
        summary = {}
        for r in records:
            if r.HasField("summary"):
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
        exits = [r.exit.exit_code for r in records if r.HasField("exit")]
        found = {"group": run.run_group, "tags": list(run.tags), "history": history, "summary": summary, "exit": exits}
    return found


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_three_trackers_record_a_successful_and_a_failed_cell(tmp_path: Path, cache_dir: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text(BROKEN_METHOD)
    (tmp_path / "m.yaml").write_text(
        matrix_yaml("[lora-r8, broken]", train="max_steps: 3\n", extra=EVAL, name="tracked")
    )
    env = {**os.environ, "MEDBENCH_PLUGINS": str(plugins), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = run_matrix_cli(tmp_path, cache_dir, "--track", "mlflow,tensorboard,wandb", env=env)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # the broken cell failed, the others ran
    records = {
        json.loads(p.read_text())["config"]["method"]["name"]: json.loads(p.read_text())
        for p in (tmp_path / "r").glob("tiny_*.json")
    }
    ok, bad = records["lora-r8"], records["broken"]
    assert ok["status"] == "success" and bad["status"] == "failed"
    store = tmp_path / "r" / "tracking"

    client, runs = mlflow_runs(store, "tracked")
    assert set(runs) == {records[m]["cell_id"] for m in ("base", "lora-r8", "broken")}  # one run per cell
    run = runs[ok["cell_id"]]
    assert run.info.status == "FINISHED" and run.data.tags["medbench.status"] == "success"
    assert run.data.tags["medbench.cell_id"] == ok["cell_id"] and run.data.tags["medbench.commit"]
    assert run.data.params["method.kind"] == "lora" and json.loads(run.data.params["learning_rate"]) == 1e-3
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(losses) == 3 and [m.step for m in losses] == [1, 2, 3]
    assert [m.value for m in losses] == pytest.approx([s for _, s in ok["metrics"]["train"]["loss_curve"]])
    assert run.data.metrics["eval/medqa/acc"] == pytest.approx(ok["metrics"]["eval"]["medqa"]["acc"])
    assert "vs_base/medqa/diff" in run.data.metrics and "vs_base/medqa/p_value" in run.data.metrics
    assert "train/lr" in run.data.metrics and "val/loss" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [f"{ok['cell_id']}.json"]
    failed = runs[bad["cell_id"]]
    assert failed.info.status == "FAILED" and "deliberate failure" in failed.data.tags["medbench.reason"]

    events = tensorboard_events(store / "tensorboard" / ok["cell_id"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert events.Scalars("final/eval/medqa/acc")[0].value == pytest.approx(ok["metrics"]["eval"]["medqa"]["acc"])
    status = events.Tensors("status/text_summary")[0].tensor_proto.string_val[0].decode()
    assert status == "success"
    failed_events = tensorboard_events(store / "tensorboard" / bad["cell_id"])
    assert failed_events.Tensors("status/text_summary")[0].tensor_proto.string_val[0].decode().startswith("failed")

    run = wandb_run(store, ok["cell_id"])
    assert run["group"] == "tracked" and f"medbench.cell_id:{ok['cell_id']}"[:64] in run["tags"]
    assert [h["train/loss"] for h in run["history"] if "train/loss" in h] == pytest.approx(
        [s for _, s in ok["metrics"]["train"]["loss_curve"]]
    )
    assert run["summary"]["status"] == "success" and run["exit"] == [0]
    failed = wandb_run(store, bad["cell_id"])
    assert failed["summary"]["status"] == "failed" and failed["exit"] == [1]


# ---------------------------------------------------------------------------------------------------- the parent


def test_a_killed_cell_has_its_runs_ended_by_the_parent(tmp_path: Path) -> None:
    """A cell killed mid-run (timeout) cannot end its tracker runs: the parent does, with the cell's status."""
    from harness.trackers import TRACKING_FILE, RunInfo, Tracking, end_from_parent

    os.environ.setdefault("WANDB_SILENT", "true")
    refs = [{"name": "mlflow", "uri": None, "experiment": None}, {"name": "tensorboard", "logdir": None}]
    workdir = tmp_path / "cell"
    workdir.mkdir()
    store = tmp_path / "tracking"
    tracking = Tracking(refs, store, workdir)
    tracking.start(RunInfo("m", "cell-1", {"a": "1"}, {"medbench.cell_id": "cell-1"}))
    tracking.log({"train/loss": 2.0}, 1)
    assert (workdir / TRACKING_FILE).is_file()  # the handle the parent needs
    end_from_parent(refs, store, workdir, "timeout", "cell exceeded its timeout of 60 s (stopped at step 1 of 9)")
    client, runs = mlflow_runs(store, "m")
    assert runs["cell-1"].info.status == "KILLED" and runs["cell-1"].data.tags["medbench.status"] == "timeout"
    events = tensorboard_events(store / "tensorboard" / "cell-1")
    texts = [t.tensor_proto.string_val[0].decode() for t in events.Tensors("status/text_summary")]
    assert texts == ["timeout: cell exceeded its timeout of 60 s (stopped at step 1 of 9)"]
    assert not (workdir / TRACKING_FILE).exists()


# ---------------------------------------------------------------------------------------------------- before running


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_matrix.py"), "m.yaml", "--data-dir", str(CI_DATA), "--results", "r", *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_tracker_that_cannot_start_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(matrix_yaml("[lora-r8]", extra="tracking: [wandb]\n"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_matrix.py"), "m.yaml", "--data-dir", str(CI_DATA), "--results", "r"],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path), "NETRC": str(tmp_path / "no-netrc")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "tracking (wandb): not logged in: set WANDB_API_KEY or run `wandb login`, or set WANDB_MODE=offline" in (
        out.stderr
    )
    assert not (tmp_path / "r").exists()  # nothing ran


def test_unknown_trackers_and_options_are_named(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(matrix_yaml("[lora-r8]", extra="tracking: [mlflw]\n"))
    out = _run(tmp_path, "--dry-run")
    assert out.returncode == 2 and "tracking: unknown tracker 'mlflw'" in out.stderr and "'mlflow'" in out.stderr
    (tmp_path / "m.yaml").write_text(matrix_yaml("[lora-r8]", extra="tracking: [{name: mlflow, url: x}]\n"))
    out = _run(tmp_path, "--dry-run")
    assert out.returncode == 2 and "unknown key 'url' for tracker 'mlflow'; allowed keys: uri, experiment" in out.stderr
    (tmp_path / "m.yaml").write_text(matrix_yaml("[lora-r8]"))
    out = _run(tmp_path, "--dry-run", "--track", "tensorbord")
    assert out.returncode == 2 and "--track: unknown tracker 'tensorbord'" in out.stderr


def test_tracking_never_changes_a_cell_id(tmp_path: Path) -> None:
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix

    ids = []
    for extra in ("", "tracking: [mlflow, {name: wandb, project: p}]\n"):
        (tmp_path / "m.yaml").write_text(matrix_yaml("[full, lora-r8]", extra=extra))
        loaded = load_matrix(tmp_path / "m.yaml", data_dir=CI_DATA)
        ids.append([c.id for c in expand(loaded, CellRuntime(data_dir=".", results_dir=".", cache_dir="."))])
    assert ids[0] == ids[1]
