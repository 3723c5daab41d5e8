"""The GPU path, proven on CPU where the mechanism can be (harness/attention.py, harness/cell.py): which attention
kernel a cell trains with and whether it builds a dense mask; the record that says so; Unsloth-style methods
imported before transformers; steady-state throughput in every trained cell's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.attention import AttentionUnavailable, Installed, choose_attention, describe_mask
from harness.results import NON_RESULT_FILES

CPU = Installed(cuda=False, flash_attn=False, flex_attention=True)
GPU = Installed(cuda=True, flash_attn=False, flex_attention=True)
GPU_FLASH = Installed(cuda=True, flash_attn=True, flex_attention=True)


def test_auto_packed_rows_avoid_the_dense_mask_where_a_kernel_can():
    assert choose_attention("auto", packing=True, installed=GPU_FLASH).implementation == "flash_attention_2"
    flex = choose_attention("auto", packing=True, installed=GPU)
    assert (flex.implementation, flex.dense_mask, flex.packed_layout) == ("flex_attention", False, "rows")
    cpu = choose_attention("auto", packing=True, installed=CPU)
    assert (cpu.implementation, cpu.dense_mask) == ("sdpa", True)
    assert "no backward on CPU" in cpu.reason
    padded = choose_attention("auto", packing=False, installed=GPU_FLASH)
    assert (padded.implementation, padded.packed_layout) == ("sdpa", None)


def test_an_explicit_kernel_that_cannot_train_here_is_a_clear_error():
    with pytest.raises(AttentionUnavailable, match="flex_attention needs CUDA to train"):
        choose_attention("flex_attention", packing=True, installed=CPU)
    with pytest.raises(AttentionUnavailable, match="flash-attn package"):
        choose_attention("flash_attention_2", packing=True, installed=GPU)
    assert choose_attention("eager", packing=True, installed=CPU).dense_mask


def test_describe_mask():
    torch = pytest.importorskip("torch")
    assert describe_mask(None) == {"mask": "none", "dense_mask": False}
    dense = describe_mask(torch.ones(2, 1, 8, 8, dtype=torch.bool))
    assert dense["mask"] == "dense" and dense["dense_mask"] and dense["shape"] == [2, 1, 8, 8]


@pytest.mark.slow
@pytest.mark.parametrize("packing", [True, False])
def test_a_trained_cell_records_its_kernel_its_mask_and_steady_throughput(make_cells, packing):
    from harness.cell import run_cell

    (cell,) = make_cells("[lora-r8]", train=f"packing: {str(packing).lower()}\nmax_steps: 5\n")
    result = run_cell(cell.config, cell.id, cell.config_hash)
    assert result.status == "success", result.reason
    t = result.metrics["train"]
    att = t["attention"]
    assert att["requested"] == "auto" and att["implementation"] == "sdpa"
    assert att["mask_source"].startswith("observed")
    if packing:  # CPU: the block-diagonal 4-D mask, observed on the first forward
        assert att["mask"] == "dense" and att["dense_mask"] and att["packed_layout"] == "rows"
        assert att["shape"][0] == 4 and att["shape"][-1] == att["shape"][-2]
    assert t["steady"]["steps"] == t["steps"] - 2 and t["steady"]["first_step"] == 3
    assert t["warmup"]["steps"] == 2 and t["warmup"]["seconds"] > 0 and t["warmup"]["compile_s"] == 0
    assert t["tokens_per_s"] == pytest.approx(t["steady"]["tokens"] / t["steady"]["seconds"])
    assert t["wall_tokens_per_s"] > 0 and len(t["step_times_s"]) == t["steps"]


# ---------------------------------------------------------------------------------------------------- import order

EARLY_PLUGIN = """
import sys
from harness.methods.base import register
from harness.methods.full import Full


@register
class EarlyFull(Full):
    kind = "early-full"
    import_first = ("medbench_early_probe",)
"""

PROBE = """
import json, os, sys
with open(os.environ["EARLY_PROBE_OUT"], "w") as f:
    json.dump(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules), f)
"""


@pytest.mark.slow
def test_import_first_modules_load_before_transformers_in_the_cell_process(tmp_path, cache_dir):
    """A method's `import_first` modules (Unsloth in the shipped methods) are imported by the cell's process before
    anything imports torch, transformers or peft, and the record says so. Unsloth needs a GPU, so a plug-in method with
    a probe module stands in for it: the probe writes down what was loaded when it was imported."""
    from conftest import CI_DATA, matrix_yaml

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "early.py").write_text(textwrap.dedent(EARLY_PLUGIN))
    site = tmp_path / "site"
    site.mkdir()
    (site / "medbench_early_probe.py").write_text(textwrap.dedent(PROBE))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(matrix_yaml("[early-full]", train="max_steps: 1\n") + "eval: {tasks: []}\n")
    env = {
        "MEDBENCH_PLUGINS": str(plugins),
        "PYTHONPATH": f"{site}",
        "EARLY_PROBE_OUT": str(tmp_path / "probe.json"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "run_matrix.py", str(matrix), "--data-dir", str(CI_DATA), "--results", str(tmp_path / "r")]
    cmd += ["--cache-dir", str(cache_dir), "--no-report", "--no-progress"]
    done = subprocess.run(cmd, cwd=root, env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "probe.json").read_text()) == []  # nothing heavy was loaded before it
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json") if p.name not in NON_RESULT_FILES]
    early = record["environment"]["import_first"]
    assert early == {
        "modules": ["medbench_early_probe"],
        "loaded_before": [],
        "imported": ["medbench_early_probe"],
        "not_imported": {},
    }


def test_unsloth_asks_to_be_imported_first_and_its_skip_says_what_happened(make_cells):
    from harness.cell import import_first
    from harness.methods.unsloth import NO_GPU, Unsloth

    assert Unsloth.import_first == ("unsloth",)
    (cell,) = make_cells("[unsloth]")
    record = import_first(cell.config)
    assert record["modules"] == ["unsloth"] and record["imported"] == []
    assert record["not_imported"]["unsloth"] == f"not attempted: {NO_GPU}"


def test_a_cell_the_plan_skips_still_records_the_import_order(make_cells):
    from harness.executors.base import skipped_result

    (cell,) = make_cells("[unsloth]")
    early = skipped_result(cell, "no CUDA GPU visible").environment["import_first"]
    assert early["modules"] == ["unsloth"] and early["imported"] == []
    assert early["not_imported"]["unsloth"].startswith("not attempted: skipped before its process started")
