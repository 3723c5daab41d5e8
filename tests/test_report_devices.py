"""Results from several devices (a heterogeneous Ray cluster) and from shared GPUs: the report groups speed and
memory by device type, never ranks them across types, marks shared-GPU cells as not comparable, and the regression
gate does not compare speed or memory across devices."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.report import render_report
from harness.report.gate import check_baseline, write_baseline
from harness.report.loader import load_report_data, perf_rows

SMALL = Path(__file__).parent / "fixtures" / "report" / "small"
L4 = {"type": "cuda", "name": "NVIDIA L4", "count": 1, "memory_bytes": 23_580_639_232}


def edit(folder: Path, every: int, update) -> list[str]:
    """Apply `update(record)` to every `every`-th successful trained record; their cell ids."""
    done = []
    paths = [p for p in sorted(folder.glob("*.json")) if p.name != "comparisons.json"]
    for i, path in enumerate(p for p in paths if json.loads(p.read_text())["status"] == "success"):
        if i % every == 0:
            rec = json.loads(path.read_text())
            update(rec)
            path.write_text(json.dumps(rec))
            done.append(rec["cell_id"])
    return done


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    folder = Path(shutil.copytree(SMALL, tmp_path / "mixed"))
    on_l4 = edit(folder, 3, lambda r: r["environment"].update(device=L4))
    shared = edit(
        folder,
        7,
        lambda r: r["environment"].update(execution={"executor": "ray", "node": "gpu-node-2", "share_gpu": True}),
    )
    return folder, sorted(set(on_l4) - set(shared)), shared


def test_device_type_node_and_sharing_are_columns(mixed):
    folder, on_l4, shared = mixed
    data = load_report_data(folder)
    df = data.cells.set_index("cell_id")
    assert set(df.loc[on_l4, "device_type"]) == {"NVIDIA L4"}
    assert df.loc[shared, "shared_device"].all() and set(df.loc[shared, "node"]) == {"gpu-node-2"}
    assert any("2 device types" in n and "never ranked" in n for n in data.notes)
    assert any("shared GPU" in n for n in data.notes)
    kept = perf_rows(data.cells[data.cells["status"] == "success"])
    assert kept["device_type"].nunique() == 1 and not kept["shared_device"].any()


def test_table_groups_speed_and_memory_by_device(mixed, tmp_path):
    folder, on_l4, shared = mixed
    html = render_report(folder, tmp_path / "r.html").read_text()
    table = html[html.index('<section id="table">') :]
    assert ">device</th>" in table or "device</th>" in table
    rows = re.findall(r"<tr class=\"st-[a-z]+\">(.*?)</tr>", table, flags=re.S)
    shared_rows = [r for r in rows if "(shared)" in r]
    assert len(shared_rows) == len(shared)
    assert all("not comparable" in r for r in shared_rows)
    l4_rows = [r for r in rows if "NVIDIA L4" in r and "(shared)" not in r]
    assert l4_rows and all('data-v="NVIDIA L4|' in r for r in l4_rows)  # memory and time sort within L4


def test_gate_does_not_compare_speed_or_memory_across_devices(tmp_path):
    base = Path(shutil.copytree(SMALL, tmp_path / "base"))
    baseline = tmp_path / "baseline.json"
    write_baseline(base, baseline)
    current = Path(shutil.copytree(SMALL, tmp_path / "current"))

    def slower_on_l4(rec):
        rec["environment"]["device"] = L4
        rec["metrics"]["memory"]["headline_bytes"] = 10 * (rec["metrics"]["memory"].get("headline_bytes") or 1)
        if (rec["metrics"].get("train") or {}).get("time_per_epoch_s"):
            rec["metrics"]["train"]["time_per_epoch_s"] *= 10

    moved = edit(current, 1, slower_on_l4)
    gate = check_baseline(current, baseline, {"max_memory_growth": 0.1, "max_time_growth": 0.5})
    rows = [r for r in gate.rows if r.cell_id in moved and r.metric in ("memory", "time_per_epoch")]
    assert rows and all(r.ok and "different devices" in r.note for r in rows)
    assert gate.passed
