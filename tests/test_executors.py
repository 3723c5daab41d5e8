"""Executors without a Ray session: the registry, placement by the estimator, the cluster's device kinds, the
progress bar's text, the `execution:` section, and that the local executor never imports ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.executors import executor_class, executors
from harness.executors.base import Executor
from harness.planning import plan

ROOT = Path(__file__).resolve().parent.parent

# a 13B-sized Llama (fp32 in these tests): LoRA needs ~52 GB, full fine-tuning with AdamW over 200 GB
HUGE = (
    "{id: huge, source: synthetic, architecture: tiny-llama, config_overrides: {hidden_size: 5120, "
    "intermediate_size: 13824, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 40}}"
)


def test_executors_are_found_by_name():
    found = executors()
    assert {"local", "ray"} <= set(found)
    assert all(issubclass(cls, Executor) for cls in found.values())
    assert executor_class("subprocess") is found["local"]  # the former name still works
    with pytest.raises(KeyError, match="allowed: .*local.*ray"):
        executor_class("slurm-by-hand")


def test_an_executor_is_one_plugin_file(tmp_path, monkeypatch):
    (tmp_path / "my_executor.py").write_text(
        "from harness.executors import register\n"
        "from harness.executors.base import Executor\n\n"
        "@register\n"
        "class Inline(Executor):\n"
        "    name = 'inline-test'\n"
        "    def run(self, cells, results_dir, progress):\n"
        "        pass\n"
    )
    monkeypatch.setenv("MEDBENCH_PLUGINS", str(tmp_path))
    import harness.executors as reg

    monkeypatch.setattr(reg.REGISTRY, "_entries", reg.REGISTRY.entries())  # restored after the test
    monkeypatch.setattr(reg.REGISTRY, "_scanned", False)
    assert executor_class("inline-test").name == "inline-test"


def test_local_executor_never_imports_ray(tmp_path):
    code = (
        "import sys\n"
        "from harness.cli import main\n"
        f"main(['{ROOT / 'matrices' / 'tiny_ci.yaml'}', '--dry-run', '--results', '{tmp_path / 'r'}'])\n"
        "from harness.executors import executors; executors()\n"
        "print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no ray")


def test_fractional_gpus_need_share_gpu(tmp_path):
    from conftest import CI_DATA, matrix_yaml

    from harness.matrix import MatrixError, load_matrix

    path = tmp_path / "m.yaml"
    path.write_text(matrix_yaml(extra="execution: {executor: ray, gpus_per_cell: 0.5}\n"))
    with pytest.raises(MatrixError, match="share_gpu"):
        load_matrix(path, data_dir=CI_DATA)
    path.write_text(matrix_yaml(extra="execution: {executor: ray, gpus_per_cell: 0.5, share_gpu: true}\n"))
    assert load_matrix(path, data_dir=CI_DATA).matrix.execution.options["gpus_per_cell"] == 0.5
    path.write_text(matrix_yaml(extra="execution: {executor: ray, gpu_per_cell: 1}\n"))
    with pytest.raises(MatrixError, match="unknown key 'gpu_per_cell' for executor 'ray'"):
        load_matrix(path, data_dir=CI_DATA)


def test_placement_skips_what_fits_no_device_and_puts_big_cells_first(tmp_path, make_cells):
    from conftest import CI_DATA, matrix_yaml

    from harness.executors.ray import DeviceKind, place_cells

    small = make_cells("[lora-r8]")
    path = tmp_path / "huge.yaml"
    path.write_text(
        matrix_yaml("[full, lora-r8]").replace(
            "{id: tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}", HUGE
        )
    )
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix

    runtime = CellRuntime(data_dir=str(CI_DATA), results_dir=str(tmp_path / "res"), cache_dir=str(tmp_path / "c"))
    huge_full, huge_lora = expand(load_matrix(path, data_dir=CI_DATA), runtime)
    planned = plan([small[0], huge_full, huge_lora], tmp_path / "res")
    l4 = DeviceKind("NVIDIA L4", 23_580_639_232, 4)
    h200 = DeviceKind("NVIDIA H200", 150_754_820_096, 8)

    placed, priority = place_cells(planned, [l4])
    actions = {p.cell.id: (p.action, p.why) for p in placed}
    assert actions[small[0].id][0] == "run"
    for cell in (huge_full, huge_lora):  # a 13B-sized model in fp32 fits no L4, trained in full or with LoRA
        assert actions[cell.id][0] == "skip"
        assert "fits no device of the cluster (largest: NVIDIA L4" in actions[cell.id][1]
    assert priority[huge_full.id] > priority[huge_lora.id] > priority[small[0].id]  # longest first

    placed, _ = place_cells(planned, [l4, h200])  # LoRA of the big model fits the H200, full training does not
    actions = {p.cell.id: p.action for p in placed}
    assert actions == {small[0].id: "run", huge_full.id: "skip", huge_lora.id: "run"}
    placed, _ = place_cells(planned, [DeviceKind("GPU", None, 2)])  # unknown memory never rules a cell out
    assert all(p.action == "run" for p in placed)


def test_cluster_devices_from_ray_nodes_and_probes():
    from harness.executors.ray import DeviceKind, cluster_devices

    nodes = [
        {"NodeID": "a", "Alive": True, "Resources": {"CPU": 64.0, "GPU": 2.0}},
        {"NodeID": "b", "Alive": True, "Resources": {"CPU": 32.0, "GPU": 1.0}},
        {"NodeID": "c", "Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}},
        {"NodeID": "d", "Alive": True, "Resources": {"CPU": 2.0, "GPU": 2.0}},
    ]
    h100 = {"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_520_809_984}
    probes = {
        "a": {"memory_bytes": 10**12, "gpus": [h100, h100]},
        "b": {"memory_bytes": 10**12, "gpus": [{"name": "NVIDIA L4", "memory_bytes": 23_580_639_232}]},
        "d": {"memory_bytes": 8 * 10**9, "gpus": []},
    }  # logical GPUs: Ray counts them, NVML sees none
    gpus, cpus = cluster_devices(nodes, probes)
    assert sorted(gpus, key=lambda k: k.name) == [
        DeviceKind("GPU", None, 2),
        DeviceKind("NVIDIA H100 80GB HBM3", 85_520_809_984, 2),
        DeviceKind("NVIDIA L4", 23_580_639_232, 1),
    ]
    assert sorted(c.memory_bytes for c in cpus) == [8 * 10**9, 10**12] and sum(c.count for c in cpus) == 3


def test_progress_shows_running_queued_and_occupancy():
    from harness.executors.progress import MatrixProgress
    from harness.results import CellResult

    with MatrixProgress(5, enabled=False, capacity={"NVIDIA H100": 2, "NVIDIA L4": 1}) as bar:
        bar.started("a", "NVIDIA H100")
        bar.started("b", "NVIDIA H100")
        bar.started("c", "NVIDIA L4")
        text = bar.postfix()
        assert "running 3" in text and "queued 2" in text
        assert "NVIDIA H100 2/2" in text and "NVIDIA L4 1/1" in text
        bar.finished("a", CellResult(cell_id="a", config_hash="x", matrix="m", status="success", config={}), 1.0)
        assert "running 2" in bar.postfix() and "NVIDIA H100 1/2" in bar.postfix() and bar.ran == 1
