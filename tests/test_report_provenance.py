"""Report rough edges (issue 11): provenance without this machine's paths, the CPU and the accelerator as text,
heatmap method names that fit their block, a sane validation-loss axis for one epoch. Uses the committed
results of matrices/cpu_smollm2.yaml (recorded with absolute data paths, as older results were)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.report.figures import method_block_label
from harness.report.provenance_text import cpu_text, device_text, shown_data_path

ROOT = Path(__file__).resolve().parent.parent
CPU_RESULTS = ROOT / "results" / "cpu_smollm2"


def test_cpu_and_accelerator_as_text():
    assert cpu_text({"model": "AMD EPYC", "cores": 2, "memory_bytes": 25276518400}) == "AMD EPYC, 2 cores, 23.5 GiB RAM"
    assert cpu_text(None) == "?"
    assert device_text({"type": "cpu", "name": None, "count": 0, "torch_threads": 2}) == "none (CPU)"
    assert device_text({"type": "cuda", "name": "NVIDIA H200", "count": 1}) == "NVIDIA H200"
    assert device_text({"type": "cuda", "name": "NVIDIA H100", "count": 2}) == "2 × NVIDIA H100"
    assert device_text(None) == "not recorded (no cell process: skipped before it started)"


def test_data_paths_shown_relative_to_the_data_dir():
    assert shown_data_path("/x/data/medqa/test.jsonl", "/x/data") == "medqa/test.jsonl"
    assert shown_data_path("/elsewhere/file.json", "/x/data") == "file.json"
    assert shown_data_path("medqa/test.jsonl", "/x/data") == "medqa/test.jsonl"
    assert shown_data_path("hub:org/ds", None) == "hub:org/ds"


@pytest.mark.parametrize(
    "label, width",
    [
        ("LoRA r16 [unpacked]", 0.62),
        ("QLoRA r16 (NF4)", 0.42),
        ("full", 0.42),
        ("lora-r16-attn", 0.42),
        ("LoRA r64", 1.86),
    ],
)
def test_heatmap_method_names_fit_their_block(label, width):
    text, size = method_block_label(label, width)
    widest = max(len(line) for line in text.splitlines())
    assert widest * size * 0.62 / 72 <= width + 1e-9  # the estimate used for bold 8.5 pt text
    assert text.replace("\n", " ").replace("- ", "-") == label or "".join(text.split()) == "".join(label.split())


@pytest.mark.skipif(not CPU_RESULTS.is_dir(), reason="committed cpu_smollm2 results not present")
def test_report_provenance_has_no_absolute_paths(tmp_path):
    from harness.report import render_report

    out = render_report(CPU_RESULTS, tmp_path / "r.html", matrix_path="matrices/cpu_smollm2.yaml")
    html = Path(out).read_text()
    assert "/work/shared" not in html and "/home/" not in html
    assert "medqa_usmle_4opt/test.jsonl" in html and "chatdoctor5k/chatdoctor5k.json" in html
    assert "none (CPU)" in html and "AMD EPYC, 2 cores" in html
    assert "&#39;cores&#39;" not in html and "{'model'" not in html


@pytest.mark.skipif(not CPU_RESULTS.is_dir(), reason="committed cpu_smollm2 results not present")
def test_one_epoch_validation_axis_is_not_a_zoom(monkeypatch):
    import harness.report.figures as figures
    from harness.report.loader import load_report_data

    figs = []
    monkeypatch.setattr(figures, "to_data_uri", lambda fig: figs.append(fig) or "data:")
    data = load_report_data(CPU_RESULTS)
    methods = sorted(data.cells["method"].unique())
    assert figures.training_curves(data, methods)
    ax1, ax2 = figs[0].axes[:2]
    lo, hi = ax2.get_ylim()
    assert hi - lo >= 0.5 * (ax1.get_ylim()[1] - ax1.get_ylim()[0])  # the training-loss scale, not ±5 %
    assert list(ax2.get_xticks()) == [1] and ax2.get_xlim() == (0.5, 1.5)
