"""No network when nothing needs it (harness/offline.py): a cell whose models and data are all local runs with the
hub libraries offline and their telemetry / download counters off; a socket guard proves no host is looked up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.offline import OFFLINE_ENV, QUIET_ENV, cell_env, network_needs

ROOT = Path(__file__).resolve().parent.parent
GUARD = ROOT / "tests" / "fixtures" / "guard"
CI_DATA = ROOT / "tests" / "fixtures" / "ci_data"
EVAL = """\
eval:
  tasks:
    - {name: medqa, data: medqa_fixture.jsonl}
    - {name: pubmedqa, data: pubmedqa_fixture.json}
"""


def _guarded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*OFFLINE_ENV, *QUIET_ENV)}
    env.update(
        SOCKET_GUARD_LOG=str(tmp_path / "guard.log"),
        PYTHONPATH=f"{GUARD}{os.pathsep}{ROOT}",
        HF_HOME=str(tmp_path / "hf"),
    )
    return env


def _guard_log(tmp_path: Path) -> list[str]:
    p = tmp_path / "guard.log"
    return p.read_text().splitlines() if p.exists() else []


def test_local_cell_goes_offline_hub_cell_does_not(make_cells, monkeypatch):
    for k in (*OFFLINE_ENV, *QUIET_ENV):
        monkeypatch.delenv(k, raising=False)
    cell = make_cells("[full]", extra=EVAL)[0]
    assert network_needs(cell.config) == []
    assert cell_env(cell.config) == {**QUIET_ENV, **OFFLINE_ENV}
    hub = cell.config.model_copy(
        update={"model": cell.config.model.model_copy(update={"source": "hub", "hub_id": "org/m"})}
    )
    assert network_needs(hub) == ["model tiny from the hub (org/m)"]
    assert cell_env(hub) == QUIET_ENV
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # what the user set wins
    assert "HF_HUB_OFFLINE" not in cell_env(cell.config)


def test_unknown_lm_eval_task_is_not_local(make_cells):
    cell = make_cells(
        "[full]",
        extra="eval:\n  tasks: [hellaswag]\n",
    )[0]
    assert network_needs(cell.config) == ["eval task hellaswag (lm-eval's own data)"]


def test_local_json_through_datasets_opens_no_socket(tmp_path, make_cells):
    """lm-eval reads every local task file through `datasets`; with the cell's environment no host is looked up
    (without it, `datasets` looks up a host for its download counter)."""
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n')
    cell = make_cells("[full]", extra=EVAL)[0]
    spec = tmp_path / "cell.json"
    spec.write_text(json.dumps(cell.config.model_dump(mode="json")))
    code = textwrap.dedent(f"""
        import socket_guard, json
        from harness.config import CellConfig
        from harness.offline import apply_cell_env
        apply_cell_env(CellConfig.model_validate(json.load(open({str(spec)!r}))))
        import datasets
        ds = datasets.load_dataset("json", data_files={{"test": {str(tmp_path / "d.jsonl")!r}}},
                                   cache_dir={str(tmp_path / "cache")!r})
        assert len(ds["test"]) == 1
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_guarded_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _guard_log(tmp_path) == []


@pytest.mark.slow
def test_local_only_cell_makes_no_connection(tmp_path, make_cells):
    """A whole cell (tiny random Llama, base row, MedQA and PubMedQA fixtures through lm-eval) behind the guard."""
    cells = make_cells("[full]", extra=EVAL, results=tmp_path / "results")
    base = next(c for c in cells if c.config.method.kind == "base")
    spec = tmp_path / "cell.json"
    spec.write_text(
        json.dumps({"cell_id": base.id, "config_hash": base.config_hash, "config": base.config.model_dump(mode="json")})
    )
    code = (
        f"import socket_guard, runpy, sys; sys.argv = ['cell', {str(spec)!r}]; "
        f"runpy.run_module('harness.cell', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_guarded_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "results" / f"{base.id}.json").read_text())
    assert result["status"] == "success", result.get("traceback")
    assert result["environment"]["offline"]["HF_HUB_OFFLINE"] == "1"
    assert _guard_log(tmp_path) == []
