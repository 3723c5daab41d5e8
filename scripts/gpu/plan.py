#!/usr/bin/env python3
"""The GPU benchmark's cells in order of value, each with the estimator's predicted peak memory and seconds on the
device, and the running total against the one-call budget of scripts/gpu_bench.sh. Imports no torch.

    python scripts/gpu/plan.py [--device "NVIDIA H200"] [--budget-s 450]

Cells are ordered by what a researcher most needs from a GPU (issue 14): a call cut short still returns the most
valuable cells, and a second call continues with the rest (finished cells are skipped).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BENCH = "matrices/gpu_bench.yaml"
EVAL_SPEED = "matrices/gpu_eval_speed.yaml"
# (what the cell answers, matrix, glob matching exactly one of its cell ids), most valuable first
VALUE_ORDER: list[tuple[str, str, str]] = [
    ("LoRA r16, Llama-3.2-1B, seq 2048 packed, bf16", BENCH, "llama-3.2-1b_lora-r16_packed_*"),
    ("the same, padded to 2048", BENCH, "llama-3.2-1b_lora-r16_padded_*"),
    ("full fine-tuning bf16", BENCH, "llama-3.2-1b_full_packed_*"),
    ("QLoRA r16 (NF4)", BENCH, "llama-3.2-1b_qlora-r16_packed_*"),
    ("Unsloth LoRA r16 (bf16 base)", BENCH, "llama-3.2-1b_unsloth-lora-r16_packed_*"),
    ("LoRA r8", BENCH, "llama-3.2-1b_lora-r8_packed_*"),
    ("LoRA r64", BENCH, "llama-3.2-1b_lora-r64_packed_*"),
    ("TinyLlama-1.1B LoRA r16", BENCH, "tinyllama-1.1b_lora-r16_packed_*"),
    ("TinyLlama-1.1B full fine-tuning", BENCH, "tinyllama-1.1b_full_packed_*"),
    ("cell 1 + torch.compile", BENCH, "llama-3.2-1b_lora-r16_packed-compile_*"),
    ("cell 1 + Liger kernels", BENCH, "llama-3.2-1b_lora-r16_packed-liger_*"),
    ("cell 1 + gradient checkpointing", BENCH, "llama-3.2-1b_lora-r16_packed-gc_*"),
    ("SmolLM2-135M MedQA / PubMedQA eval speed", EVAL_SPEED, "smollm2-135m_base-*"),
]
INSTALL_S = 60.0  # wheel install, nvidia-smi and versions, before the first cell
CELL_LIMIT_S = 45.0  # every cell is sized (token budget) to stay under this on an H200
EVAL_CELL_S = 40.0  # the eval-speed cell: model load + ~900 lm-eval items of a 135M model (no estimator for eval)
DEFAULT_DEVICE = "NVIDIA H200"
# Mean tokenized length of the training examples (chatdoctor5k first 2000: 147; medquad first 600: ~530; with the
# chat template), measured here with the SmolLM2 tokenizer: how many padded rows the token budget makes.
MEAN_TOKENS = 236.0


@dataclass
class PlannedCell:
    rank: int
    label: str
    matrix: str  # relative to the project root
    matrix_name: str
    cell: Any  # harness.matrix.Cell
    wall_s: float  # predicted seconds of the whole cell (start-up included)
    memory_bytes: float | None
    fits: bool | None

    @property
    def cell_id(self) -> str:
        return self.cell.id


def ordered_cells(device_name: str = DEFAULT_DEVICE, root: Path = ROOT) -> list[PlannedCell]:
    """Every cell of the GPU matrices in value order, with the estimator's prediction on `device_name`."""
    from harness.config import CellRuntime
    from harness.estimator import DeviceProfile, estimate_cell
    from harness.matrix import expand, load_matrix
    from harness.methods.base import trains

    device = DeviceProfile.for_device(device_name)
    cells: dict[str, tuple[str, list[Any]]] = {}
    for matrix in {m for _, m, _ in VALUE_ORDER}:
        loaded = load_matrix(root / matrix, check_files=False)
        cells[matrix] = (loaded.matrix.name, expand(loaded, CellRuntime(data_dir=".", results_dir=".", cache_dir=".")))
    out = []
    for rank, (label, matrix, pattern) in enumerate(VALUE_ORDER, 1):
        name, candidates = cells[matrix]
        matched = [c for c in candidates if fnmatch.fnmatchcase(c.id, pattern)]
        if len(matched) != 1:
            raise ValueError(f"VALUE_ORDER {pattern!r} matches {len(matched)} cells of {matrix} (must be exactly 1)")
        est = estimate_cell(matched[0].config, device, mean_tokens_per_example=MEAN_TOKENS)
        wall = est.cell_wall_s if trains(matched[0].config.method.kind) else EVAL_CELL_S
        if wall is None:
            raise ValueError(f"{matched[0].id}: the estimator has no time for this cell on {device_name}")
        out.append(PlannedCell(rank, label, matrix, name, matched[0], wall, est.peak_memory_bytes, est.fits))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds of the call (scripts/gpu_bench.sh)")
    args = p.parse_args(argv)
    plan = ordered_cells(args.device)
    total = INSTALL_S
    print(f"{'#':>2} {'cell':58} {'mem GiB':>8} {'fits':>5} {'cell s':>7} {'total s':>8}  what")
    for item in plan:
        total += item.wall_s
        mem = (item.memory_bytes or 0) / 2**30
        over = "" if total <= args.budget_s else "  (after the budget: next call)"
        print(
            f"{item.rank:2d} {item.cell_id[:58]:58} {mem:8.1f} {str(item.fits):>5} {item.wall_s:7.0f} "
            f"{total:8.0f}  {item.label}{over}"
        )
    print(
        f"all {len(plan)} cells: {total / 60:.1f} min predicted on {args.device} ({INSTALL_S:.0f} s install "
        f"included); one call's budget: {args.budget_s / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
