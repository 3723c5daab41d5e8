#!/usr/bin/env python3
"""Predicted memory and time of every cell of a matrix on a GPU (harness.estimator), with the total per part of
scripts/gpu_bench.sh, so that each device call is planned to end inside its 10-minute limit. Imports no torch.

    python scripts/gpu/plan.py [matrices/gpu_bench.yaml] [--device "NVIDIA H100 80GB HBM3"] [--mean-tokens 236]
    python scripts/gpu/plan.py --patterns 2      # the --only globs of part 2
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The parts of matrices/gpu_bench.yaml that scripts/gpu_bench.sh runs with `--part N` (globs on cell ids).
PARTS = {
    "1": ["llama-3.2-1b_*_seq2048-packed_*", "llama-3.2-1b_*_seq1024-packed_*", "llama-3.2-1b_*-gc_*"],
    "2": ["tinyllama-1.1b_*"],
    "3": ["llama-3.2-1b_*_seq2048-padded_*", "llama-3.2-1b_*-compile_*", "llama-3.2-1b_*-liger_*",
          "llama-3.2-1b_*-eager_*"],
}
INSTALL_S = 45.0  # per device call: wheel install, versions, synthetic model materialisation (~10 s per model)
# Mean tokenized length of the gpu_bench examples (chatdoctor5k first 2000: 147; medquad first 600: ~530; with the
# chat template), measured here with the SmolLM2 tokenizer.
MEAN_TOKENS = 236.0


def part_of(cell_id: str) -> str | None:
    for name, patterns in PARTS.items():
        if any(fnmatch.fnmatchcase(cell_id, p) for p in patterns):
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--patterns"]:  # used by gpu_bench.sh --part N: one glob per line, no imports
        if len(argv) != 2 or argv[1] not in PARTS:
            print(f"usage: plan.py --patterns {{{','.join(PARTS)}}}", file=sys.stderr)
            return 2
        print("\n".join(PARTS[argv[1]]))
        return 0
    from harness.config import CellRuntime
    from harness.estimator import DeviceProfile, estimate_cell
    from harness.matrix import expand, load_matrix

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("matrix", nargs="?", default=str(ROOT / "matrices" / "gpu_bench.yaml"))
    p.add_argument("--device", default="NVIDIA H100 80GB HBM3")
    p.add_argument("--fraction", type=float, default=None, help="achievable share of peak (default: estimator's)")
    p.add_argument("--startup", type=float, default=15.0, help="seconds per cell outside training")
    p.add_argument("--mean-tokens", type=float, default=MEAN_TOKENS)
    args = p.parse_args(argv)
    loaded = load_matrix(args.matrix, check_files=False)
    cells = expand(loaded, CellRuntime(data_dir=".", results_dir=".", cache_dir="."))
    device = DeviceProfile.for_device(args.device, startup_s=args.startup)
    if args.fraction:
        device.achievable_fraction = args.fraction
    totals: dict[str, float] = {}
    print(f"{'cell':58} {'mem GiB':>8} {'fits':>5} {'steps':>5} {'train s':>8} {'cell s':>7} part")
    for c in cells:
        est = estimate_cell(c.config, device, mean_tokens_per_example=args.mean_tokens)
        part = part_of(c.id) or "-"
        wall = est.cell_wall_s or 0.0
        totals[part] = totals.get(part, 0.0) + wall
        mem = (est.peak_memory_bytes or 0) / 2**30
        print(f"{c.id[:58]:58} {mem:8.1f} {str(est.fits):>5} {est.steps_per_epoch or 0:5d} "
              f"{est.time_per_epoch_s or 0:8.1f} {wall:7.0f} {part}")
    grand = 0.0
    for part, secs in sorted(totals.items()):
        secs_call = secs + (INSTALL_S if part != "-" else 0)
        grand += secs_call
        print(f"part {part}: {secs_call / 60:5.1f} min (cells {secs / 60:.1f} + install/materialise "
              f"{INSTALL_S / 60:.1f})")
    print(f"whole matrix: {grand / 60:.1f} min on {device.name} at {device.achievable_fraction:.0%} of "
          f"{(device.peak_flops or 0) / 1e12:.0f} TFLOP/s, {device.startup_s:.0f} s start-up per cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
