#!/usr/bin/env python3
"""The GPU benchmark's cells in order of value, split into two device calls, each cell with the estimator's predicted
peak memory and seconds on the device and the time limit it runs under. Imports no torch.

    python scripts/gpu/plan.py [--device "NVIDIA H200"] [--cache-dir DIR]

Cells are ordered by what a researcher most needs from a GPU: the first call returns LoRA r16 packed and padded, full
fine-tuning, QLoRA and Unsloth LoRA r16; the second call the rest. A call cut short still returns every finished
cell, and a cell cut by the call's deadline is run first by the next call.

`--rehearse` plans the very same cells on tiny shapes (`rehearsal_matrices`): what `gpu_bench.sh --rehearse` runs on
this CPU to prove the driver, the cells and what comes back before a GPU is lent.
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
# (what the cell answers, matrix, glob matching exactly one of its cell ids, device call), most valuable first
VALUE_ORDER: list[tuple[str, str, str, int]] = [
    ("LoRA r16, Llama-3.2-1B, seq 2048 packed, bf16", BENCH, "llama-3.2-1b_lora-r16_packed_*", 1),
    ("the same, padded to 2048", BENCH, "llama-3.2-1b_lora-r16_padded_*", 1),
    ("full fine-tuning bf16", BENCH, "llama-3.2-1b_full_packed_*", 1),
    ("QLoRA r16 (NF4)", BENCH, "llama-3.2-1b_qlora-r16_packed_*", 1),
    ("Unsloth LoRA r16 (bf16 base)", BENCH, "llama-3.2-1b_unsloth-lora-r16_packed_*", 1),
    ("LoRA r8", BENCH, "llama-3.2-1b_lora-r8_packed_*", 2),
    ("LoRA r64", BENCH, "llama-3.2-1b_lora-r64_packed_*", 2),
    ("TinyLlama-1.1B LoRA r16", BENCH, "tinyllama-1.1b_lora-r16_packed_*", 2),
    ("TinyLlama-1.1B full fine-tuning", BENCH, "tinyllama-1.1b_full_packed_*", 2),
    ("cell 1 + torch.compile", BENCH, "llama-3.2-1b_lora-r16_packed-compile_*", 2),
    ("cell 1 + Liger kernels", BENCH, "llama-3.2-1b_lora-r16_packed-liger_*", 2),
    ("cell 1 + gradient checkpointing", BENCH, "llama-3.2-1b_lora-r16_packed-gc_*", 2),
    ("SmolLM2-135M MedQA / PubMedQA eval speed", EVAL_SPEED, "smollm2-135m_base-*", 2),
]
# Seconds of command time per call (the device tool's timeout_s gets 30 s more). The second call follows the first
# at once, on the machine still warm (its model cache kept): one start (≈ 1.5 min) + 360 s + 380 s fit the session's
# 15 device minutes.
CALL_BUDGET_S = {1: 330.0, 2: 350.0}
INSTALL_S = 60.0  # wheel install, nvidia-smi and versions, before the first cell
CELL_LIMIT_S = 45.0  # every cell is sized (token budget) to stay under this on an H200
EVAL_CELL_S = 40.0  # the eval-speed cell: model load + ~900 lm-eval items of a 135M model (no estimator for eval)
# A cell's own limit: a few times its prediction, never under the floor (start-up varies), never over the cap (one
# hung cell must not eat the call).
LIMIT_FACTOR, LIMIT_FLOOR_S, LIMIT_CAP_S = 3.0, 90.0, 200.0
DEFAULT_DEVICE = "NVIDIA H200"
# Mean tokenized length of the training examples (chatdoctor5k first 2000: 147; medquad first 600: ~530; with the
# chat template), measured here with the SmolLM2 tokenizer: how many padded rows the token budget makes.
MEAN_TOKENS = 236.0

# ---- the rehearsal: the same cells on tiny shapes, on this CPU, on the project's own fixtures
REHEARSAL_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 49152,  # the SmolLM2 tokenizer's
}
REHEARSAL_TRAIN = {
    "datasets": [{"path": "train_instructions.json", "format": "instruction"}],
    "max_seq_length": 128,
    "token_budget": 1600,
    "precision": "fp32",
}
REHEARSAL_TASKS = [
    {"name": "medqa", "data": "medqa_fixture.jsonl"},
    {"name": "pubmedqa", "data": "pubmedqa_fixture.json"},
]
REHEARSAL_DATA = ROOT / "tests" / "fixtures" / "ci_data"
CPU_FLOPS = 2e10  # what a tiny model's training reaches on a small CPU, FLOP/s (for the rehearsal's limits only)


@dataclass
class PlannedCell:
    rank: int
    label: str
    call: int
    matrix: str  # the matrix file the cell is run from
    matrix_name: str
    cell: Any  # harness.matrix.Cell
    wall_s: float  # predicted seconds of the whole cell (start-up and a first model build included)
    memory_bytes: float | None
    fits: bool | None

    @property
    def cell_id(self) -> str:
        return self.cell.id

    @property
    def limit_s(self) -> float:
        """The cell's own time limit (LIMIT_FACTOR × its prediction, within the floor and the cap)."""
        return min(LIMIT_CAP_S, max(LIMIT_FLOOR_S, LIMIT_FACTOR * self.wall_s))


def rehearsal_matrices(dest: Path, root: Path = ROOT) -> dict[str, Path]:
    """The benchmark's matrices on tiny shapes (REHEARSAL_*), written into `dest`: matrix -> its rehearsal file.
    Same names, methods, variants, include/exclude and cell order; models shrunk, data from the CI fixtures."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for matrix in (BENCH, EVAL_SPEED):
        raw = yaml.safe_load((root / matrix).read_text())
        for model in raw["models"]:
            model.pop("tokenizer", None)  # SmolLM2's, from the installed package
            model["config_overrides"] = dict(REHEARSAL_SHAPE)
            model["eval_batch_size"] = 8
        raw["train"] = {**raw.get("train", {}), **REHEARSAL_TRAIN}
        if raw.get("eval", {}).get("tasks"):
            raw["eval"]["tasks"] = REHEARSAL_TASKS
        raw["data_dir"] = str(REHEARSAL_DATA)
        raw["timeout_minutes"] = LIMIT_CAP_S / 60
        path = dest / Path(matrix).name
        path.write_text(f"# rehearsal of {matrix} on tiny shapes (scripts/gpu/plan.py)\n" + yaml.safe_dump(raw))
        out[matrix] = path
    return out


def device_profile(device_name: str) -> Any:
    from harness.estimator import DeviceProfile

    if device_name.lower() == "cpu":
        return DeviceProfile.cpu(CPU_FLOPS)
    return DeviceProfile.for_device(device_name)


def ordered_cells(
    device_name: str = DEFAULT_DEVICE,
    root: Path = ROOT,
    *,
    cache_dir: str | None = None,
    matrices: dict[str, Path] | None = None,
) -> list[PlannedCell]:
    """Every cell of the GPU matrices in value order, with the estimator's prediction on `device_name`; with
    `cache_dir`, the first cell of each model also pays its first build when the cache has no copy."""
    from harness.config import CellRuntime
    from harness.estimator import estimate_cell
    from harness.matrix import expand, load_matrix
    from harness.methods.base import trains
    from harness.models.sources import source_for

    device = device_profile(device_name)
    files = matrices or {m: root / m for m in dict.fromkeys(m for _, m, _, _ in VALUE_ORDER)}
    runtime = CellRuntime(data_dir=".", results_dir=".", cache_dir=".")
    cells: dict[str, tuple[str, list[Any]]] = {}
    for matrix, path in files.items():
        loaded = load_matrix(path, check_files=False)
        cells[matrix] = (loaded.matrix.name, expand(loaded, runtime))
    out: list[PlannedCell] = []
    built: set[str] = set()
    for rank, (label, matrix, pattern, call) in enumerate(VALUE_ORDER, 1):
        name, candidates = cells[matrix]
        matched = [c for c in candidates if fnmatch.fnmatchcase(c.id, pattern)]
        if len(matched) != 1:
            raise ValueError(f"VALUE_ORDER {pattern!r} matches {len(matched)} cells of {matrix} (must be exactly 1)")
        cell = matched[0]
        est = estimate_cell(cell.config, device, mean_tokens_per_example=MEAN_TOKENS)
        wall = est.cell_wall_s if trains(cell.config.method.kind) else EVAL_CELL_S
        if wall is None:
            raise ValueError(f"{cell.id}: the estimator has no time for this cell on {device_name}")
        model_key = cell.config.model.model_dump_json()
        if cache_dir and model_key not in built:
            wall += source_for(cell.config.model.source).first_build_s(
                cell.config.model, Path(cache_dir), not device.is_cpu
            )
        built.add(model_key)
        out.append(
            PlannedCell(rank, label, call, str(files[matrix]), name, cell, wall, est.peak_memory_bytes, est.fits)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=DEFAULT_DEVICE)
    p.add_argument("--cache-dir", default=None, help="the cache the cells will use (first builds count when empty)")
    args = p.parse_args(argv)
    plan = ordered_cells(args.device, cache_dir=args.cache_dir)
    print(f"{'#':>2} {'cell':58} {'mem GiB':>8} {'fits':>5} {'cell s':>7} {'limit s':>7} {'call s':>7}  what")
    for call in sorted(CALL_BUDGET_S):
        total = INSTALL_S
        print(
            f"-- call {call}: {CALL_BUDGET_S[call]:.0f} s of command time (device tool timeout_s "
            f"{CALL_BUDGET_S[call] + 30:.0f})"
        )
        for item in (c for c in plan if c.call == call):
            total += item.wall_s
            mem = (item.memory_bytes or 0) / 2**30
            over = "" if total <= CALL_BUDGET_S[call] else "  (over this call's budget: passed over)"
            print(
                f"{item.rank:2d} {item.cell_id[:58]:58} {mem:8.1f} {str(item.fits):>5} {item.wall_s:7.0f} "
                f"{item.limit_s:7.0f} {total:7.0f}  {item.label}{over}"
            )
        print(f"   call {call}: {total / 60:.1f} min predicted on {args.device} ({INSTALL_S:.0f} s install included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
