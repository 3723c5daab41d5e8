"""Speed of the estimator that `--dry-run` calls once per cell (pytest-benchmark).

pytest benchmarks/bench_estimator.py --benchmark-only -p no:cacheprovider
"""

from __future__ import annotations

from pathlib import Path

from harness.config import CellRuntime
from harness.estimator import DeviceProfile, estimate_cell
from harness.matrix import expand, load_matrix

ROOT = Path(__file__).resolve().parent.parent


def test_estimate_every_gpu_bench_cell(benchmark):
    loaded = load_matrix(ROOT / "matrices" / "gpu_bench.yaml", check_files=False)
    cells = expand(loaded, CellRuntime(data_dir=".", results_dir=".", cache_dir="."))
    device = DeviceProfile.for_device("NVIDIA H100 80GB HBM3")

    def run() -> int:
        return sum(1 for c in cells if estimate_cell(c.config, device, mean_tokens_per_example=236).fits)

    assert benchmark(run) == len(cells)
