"""Each extension point is one file (or one folder) in a `$MEDBENCH_PLUGINS` folder, with nothing else edited:
a method with its cost model, a model source, a meter and an eval task (tests/fixtures/plugins/, copied into a
temporary folder per test). Plug-ins run in child processes, so this test process's registries stay built-in only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

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
        "name: plug\nmodels: [{id: lab-llama, source: mirror}]\nmethods: [norm-tuning, lora-r8]\nepochs: [1]\n"
        "learning_rates: [1.0e-3]\ntrain: {datasets: [{path: train.json, format: instruction}], max_seq_length: 64}\n"
        "eval: {tasks: []}\ndata_dir: data\n"
    )
    out = run([str(ROOT / "run_matrix.py"), "m.yaml", "--dry-run"], tmp_path, MODEL_MIRROR=str(tmp_path / "mirror"))
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "norm-tuning" in ln)
    assert line.startswith("run") and " ? " not in line, line  # planned to run, with a memory and time estimate
    assert re.search(r"\d+(\.\d+)? [KMG]iB", line), line


def test_a_plugin_meter_becomes_a_report_column(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(ROOT / "tests" / "fixtures" / "report" / "small", tmp_path / "results"))
    record_path = next(
        p
        for p in sorted(folder.glob("*.json"))
        if p.name != "comparisons.json" and json.loads(p.read_text())["status"] == "success"
    )
    record = json.loads(record_path.read_text())
    record["metrics"]["region_clock"] = {"cpu_s": 754.0}
    record_path.write_text(json.dumps(record))
    script = (
        "import sys; from pathlib import Path; from harness.report import render_report; "
        "render_report(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    out = run(["-c", script, str(folder), str(tmp_path / "r.html")], tmp_path)
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "r.html").read_text()
    table = html[html.index('<section id="table">') :]
    assert "region CPU time" in table and "12 min 34 s" in table, "the meter's column and its formatted value"


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
def test_plugins_run_end_to_end_method_meter_and_task_scored(tmp_path: Path, cache_dir: Path) -> None:
    out = run(
        [
            str(ROOT / "run_matrix.py"),
            str(PLUGINS / "demo.yaml"),
            "--results",
            "res",
            "--report",
            "r.html",
            "--no-progress",
            "--cache-dir",
            str(cache_dir),
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*norm-tuning*.json")]
    assert result["status"] == "success"
    assert result["metrics"]["region_clock"]["cpu_s"] > 0
    assert result["metrics"]["eval"]["yesno"]["n"] == 12
    assert 0 < result["metrics"]["train"]["trainable_params"] < result["metrics"]["train"]["total_params"]
    html = (tmp_path / "r.html").read_text()
    assert "norm tuning" in html and "Yes/No fixture" in html and "region CPU time" in html
    table = html[html.index('<section id="table">') :]
    assert table.index(">norm-tuning<") < table.index(">lora-r8<")  # its display order: after full, before LoRA


def test_no_method_kind_is_named_outside_its_own_file() -> None:
    """A method is one file: no other module branches on a kind's name (package names excepted)."""
    from harness.methods.base import methods

    kinds = "|".join(re.escape(k) for k in methods())
    literal = re.compile(rf"[\"']({kinds})[\"']")
    allowed = {("harness/environment.py", "unsloth")}  # the package name in the version list, not the method kind
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
