"""Each extension point is one file (or one folder) in a `$MEDBENCH_PLUGINS` folder, with nothing else edited
(tests/fixtures/plugins/, copied into a temporary folder per test): a method with its own optimizer groups (LoRA+)
and one with its own cost model, a model source with its own option, a meter of two regions, an executor with its
own option and command-line flag, and an eval task folder. Plug-ins run in child processes, so this test process's
registries stay built-in only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CI_DATA, ROOT

PLUGINS = ROOT / "tests" / "fixtures" / "plugins"
TINY_LLAMA_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    plugins = tmp_path / "plugins"
    if not plugins.is_dir():
        shutil.copytree(PLUGINS, plugins, ignore=shutil.ignore_patterns("demo.yaml", "yesno.jsonl", "__pycache__"))
    environment = {**os.environ, "MEDBENCH_PLUGINS": str(plugins), **env}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )


def test_a_plugin_method_and_model_source_are_planned_with_an_estimate(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror" / "lab-llama"
    mirror.mkdir(parents=True)
    (mirror / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    (tmp_path / "m.yaml").write_text(
        f"name: plug\nmodels: [{{id: lab-llama, source: mirror, mirror_root: '{tmp_path / 'mirror'}'}}]\n"
        "methods: [norm-tuning, lora-r8]\nepochs: [1]\n"
        "learning_rates: [1.0e-3]\ntrain: {datasets: [{path: train.json, format: instruction}], max_seq_length: 64}\n"
        "eval: {tasks: []}\ndata_dir: data\n"
    )
    out = run([str(ROOT / "run_matrix.py"), "m.yaml", "--dry-run"], tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "norm-tuning" in ln)
    assert line.startswith("run") and " ? " not in line, line  # planned to run, with a memory estimate
    assert re.search(r"\d+(\.\d+)? [KMG]iB", line), line


def test_plugin_options_are_checked_by_the_plugin(tmp_path: Path) -> None:
    """A source's and an executor's own options are validated by their own `Options`: an unknown key names the key
    and what is allowed, before anything runs; a flag of another executor is refused."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    m = tmp_path / "m.yaml"
    base = (
        "name: plug\nmethods: [lora-r8]\ntrain: {datasets: [{path: train.json, format: instruction}]}\n"
        "eval: {tasks: []}\ndata_dir: data\n"
    )
    m.write_text(base + "models: [{id: lab-llama, source: mirror, mirror_rot: /x}]\n")
    out = run([str(ROOT / "run_matrix.py"), "m.yaml", "--dry-run"], tmp_path)
    assert out.returncode == 2 and "unknown key 'mirror_rot' for source 'mirror'" in out.stderr, out.stderr
    assert "allowed keys: mirror_root" in out.stderr
    models = f"models: [{{id: lab-llama, source: mirror, mirror_root: '{tmp_path}'}}]\n"
    m.write_text(base + models + "execution: {executor: partitioned, partitoin: a}\n")
    out = run([str(ROOT / "run_matrix.py"), "m.yaml", "--dry-run"], tmp_path)
    assert out.returncode == 2 and "unknown key 'partitoin' for executor 'partitioned'" in out.stderr, out.stderr
    m.write_text(base + models + "execution: {executor: partitioned, partition: a}\n")
    out = run([str(ROOT / "run_matrix.py"), "m.yaml", "--dry-run", "--gpus-per-cell", "1"], tmp_path)
    assert out.returncode == 2 and "--gpus-per-cell is an option of the ray executor" in out.stderr, out.stderr
    help_text = run([str(ROOT / "run_matrix.py"), "run", "--help"], tmp_path).stdout
    assert "--partition" in help_text and "partitioned executor" in help_text


def test_builtin_meter_is_found_and_measures_a_region() -> None:
    import time

    from harness.meters import MemoryMeter, Stopwatch, measuring, meter_classes, readings

    assert MemoryMeter in meter_classes()
    with measuring("train", "cpu") as meters, Stopwatch("cpu") as watch:
        block = bytearray(64 * 2**20)  # touch 64 MiB
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.05)
    reading = readings(meters)["memory"]
    assert watch.elapsed >= 0.05
    assert reading["region_peak_rss_bytes"] >= 64 * 2**20
    assert reading["peak_rss_bytes"] >= reading["region_peak_rss_bytes"] * 0.9
    assert reading["headline_bytes"] == reading["peak_rss_bytes"]
    del block


@pytest.mark.slow
def test_plugins_run_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    """Every kind of plug-in at once, on the tiny model served by the plug-in source, run by the plug-in executor."""
    from harness.config import ModelSpec
    from harness.models.sources import source_for

    built = source_for("synthetic").resolve(
        ModelSpec(id="tiny-llama", source="synthetic", architecture="tiny-llama"), cache_dir
    )
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "lab-llama").symlink_to(built, target_is_directory=True)
    matrix = (PLUGINS / "demo.yaml").read_text()
    matrix = matrix.replace(
        "{id: tiny-llama, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}",
        f"{{id: lab-llama, source: mirror, mirror_root: '{tmp_path / 'mirror'}', eval_batch_size: 8}}",
    )
    matrix = matrix.replace("data_dir: ../ci_data", f"data_dir: '{CI_DATA}'")
    matrix = matrix.replace("../plugins/yesno.jsonl", str(PLUGINS / "yesno.jsonl"))
    (tmp_path / "demo.yaml").write_text(matrix)
    args = ["demo.yaml", "--results", "res", "--report", "r.html", "--no-progress", "--cache-dir", str(cache_dir)]
    out = run([str(ROOT / "run_matrix.py"), *args, "--executor", "partitioned", "--partition", "cpu-small"], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = {}
    for p in (tmp_path / "res").glob("lab-llama_*.json"):
        r = json.loads(p.read_text())
        records[r["config"]["method"]["name"]] = r
    assert set(records) == {"base", "norm-tuning", "loraplus"}, sorted(records)
    for r in records.values():
        assert r["status"] == "success", r["reason"]
        assert r["environment"]["execution"]["executor"] == "partitioned"
        assert r["environment"]["execution"]["partition"] == "cpu-small"  # the flag reached the executor
        assert r["metrics"]["eval"]["yesno"]["n"] == 12  # the task folder, scored
        assert r["metrics"]["meters"]["eval"]["region_clock"]["cpu_s"] > 0
    for name in ("norm-tuning", "loraplus"):
        metrics = records[name]["metrics"]
        assert metrics["meters"]["train"]["region_clock"]["cpu_s"] > 0  # both regions kept
        assert metrics["derived"]["train"]["tokens_per_cpu_second"] > 0  # derived generically from its total
        assert metrics["train"]["trainable_params"] == records[name]["estimate"]["params"]["trainable"]
    # LoRA+: the optimizer's own groups, A at the learning rate, B at 4 x (read back from torch's param_groups)
    groups = records["loraplus"]["metrics"]["train"]["param_groups"]
    assert sorted(g["lr"] for g in groups) == [1e-3, 4e-3]
    assert sum(g["params"] for g in groups) == records["loraplus"]["metrics"]["train"]["trainable_params"]
    html = (tmp_path / "r.html").read_text()
    table = html[html.index('<section id="table">') :]
    assert "norm tuning" in html and "Yes/No fixture" in html and "LoRA+ (plug-in)" in html
    assert "train CPU time" in table and "eval CPU time" in table  # both regions' columns
    assert table.index(">norm-tuning<") < table.index(">loraplus<")  # display order: before the LoRA kinds


def test_no_method_kind_is_named_outside_its_own_file() -> None:
    """A method is one file: no other module branches on a kind's name (package names excepted)."""
    from harness.methods.base import methods

    kinds = "|".join(re.escape(k) for k in methods())
    literal = re.compile(rf"[\"']({kinds})[\"']")
    # package names (the version list, the modules a cell reports as loaded before Unsloth), not method kinds
    allowed = {("harness/environment.py", "unsloth"), ("harness/environment.py", "peft"), ("harness/cell.py", "peft")}
    found = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("harness/methods/"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{rel}:{n}: {m.group(0)}" for m in literal.finditer(line) if (rel, m.group(1)) not in allowed]
    assert not found, "method kinds named outside harness/methods/:\n" + "\n".join(found)


def test_no_function_in_the_harness_is_longer_than_120_lines() -> None:
    import ast

    long = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 120:
                long.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, "\n".join(long)
