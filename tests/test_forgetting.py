"""Forgetting: general-text cross-entropy of the base model and of the trained one, its config, its report column
and its gate threshold. The slow test trains the tiny model: full fine-tuning on narrow data raises the
cross-entropy; an untrained row gives 0; LoRA's base (adapters disabled) is the untrained model's value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import EvalConfig, ForgettingConfig
from harness.evaluation.forgetting import ForgettingError, load_text, token_windows
from harness.results import CellResult, write_result

CI_DATA = Path(__file__).parent / "fixtures" / "ci_data"


def test_forgetting_is_off_by_default_and_leaves_cell_ids_alone() -> None:
    off = EvalConfig()
    assert off.forgetting is None and "forgetting" not in off.model_dump(mode="json")
    on = EvalConfig(forgetting={"path": "general_text.txt"})
    assert on.model_dump(mode="json")["forgetting"]["path"] == "general_text.txt"
    assert EvalConfig.model_validate(on.model_dump(mode="json")) == on
    with pytest.raises(ValueError, match="needs 'path'"):
        ForgettingConfig()


def test_local_text_is_read_with_its_hash_and_offline_hub_falls_back() -> None:
    text, source = load_text(ForgettingConfig(path="general_text.txt"), CI_DATA)
    assert "morning train" in text and source["source"] == "file" and source["path"] == "general_text.txt"
    assert len(source["sha256"]) == 64
    # offline (conftest sets HF_HUB_OFFLINE): the hub dataset is not used, the local file is, and that is recorded
    _, source = load_text(ForgettingConfig(hub_id="some/dataset", path="general_text.txt"), CI_DATA)
    assert source["source"] == "file" and "offline" in source["hub_not_used"]
    with pytest.raises(ForgettingError, match="offline.*no local 'path'"):
        load_text(ForgettingConfig(hub_id="some/dataset"), CI_DATA)
    with pytest.raises(ForgettingError, match="not found"):
        load_text(ForgettingConfig(path="missing.txt"), CI_DATA)


class _Tokenizer:
    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [len(w) for w in text.split()]}


def test_windows_are_full_and_capped() -> None:
    windows = token_windows(_Tokenizer(), "a " * 50, max_tokens=35, seq_len=10)
    assert [len(w) for w in windows] == [10, 10, 10]  # 35 tokens: three full windows, the remainder dropped
    with pytest.raises(ForgettingError, match="fewer than one window"):
        token_windows(_Tokenizer(), "a b c", max_tokens=100, seq_len=10)


def _cell(folder: Path, cell_id: str, method: str, forgetting: float | None) -> None:
    kind = "base" if method == "base" else "full"
    metrics = {"eval": {"medqa": {"acc": 0.3, "n": 100}}}
    if forgetting is not None:
        metrics["forgetting"] = {"increase": forgetting, "base_ce": 2.0, "trained_ce": 2.0 + forgetting}
    write_result(
        folder,
        CellResult(
            cell_id=cell_id,
            config_hash=cell_id,
            matrix="m",
            status="success",
            metrics=metrics,
            config={
                "model": {"id": "m1"},
                "method": {"name": method, "kind": kind},
                "variant": "default",
                "epochs": 0 if kind == "base" else 1,
                "learning_rate": 0.0 if kind == "base" else 1e-4,
                "seed": 0,
            },
        ),
    )


def test_report_column_and_gate_threshold(tmp_path: Path) -> None:
    from harness.config import Thresholds
    from harness.report import check_baseline, write_baseline
    from harness.report.loader import load_report_data

    base_dir, now_dir = tmp_path / "base", tmp_path / "now"
    for folder, inc in ((base_dir, 0.05), (now_dir, 0.30)):
        _cell(folder, "b", "base", 0.0)
        _cell(folder, "f", "full", inc)
    df = load_report_data(now_dir).cells.set_index("cell_id")
    assert df.loc["f", "forgetting"] == pytest.approx(0.30) and df.loc["b", "forgetting"] == 0.0
    write_baseline(base_dir, tmp_path / "baseline.json")
    assert json.loads((tmp_path / "baseline.json").read_text())["cells"]["m1/full/default/e1/lr0.0001/s0"][
        "forgetting"
    ] == pytest.approx(0.05)
    assert check_baseline(now_dir, tmp_path / "baseline.json", Thresholds()).passed  # off by default
    gate = check_baseline(now_dir, tmp_path / "baseline.json", Thresholds(max_forgetting_increase=0.1))
    assert not gate.passed
    (row,) = [r for r in gate.failures if r.metric == "forgetting"]
    assert row.change == pytest.approx(0.25) and "FAIL" in gate.summary() and "+0.250 nats" in gate.summary()
    assert check_baseline(now_dir, tmp_path / "baseline.json", Thresholds(max_forgetting_increase=0.3)).passed


@pytest.mark.slow
def test_forgetting_rises_after_full_fine_tuning_and_is_zero_untrained(make_cells) -> None:
    from harness.cell import run_cell

    extra = (
        "epochs: [2]\neval:\n  tasks: []\n  base_rows: false\n"
        "  forgetting: {path: general_text.txt, max_tokens: 1024, seq_len: 128}\n"
    )
    base, full, lora = make_cells("[base, full, lora-r8]", train="validation_fraction: 0.0\n", extra=extra)
    got = {c.config.method.kind: run_cell(c.config, c.id, c.config_hash) for c in (base, full, lora)}
    assert all(r.status == "success" for r in got.values()), {k: r.reason for k, r in got.items()}
    f_base, f_full, f_lora = (got[k].metrics["forgetting"] for k in ("base", "full", "lora"))
    assert f_base["increase"] == 0.0 and "untrained" in f_base["base_measured"]
    assert f_full["base_measured"] == "before training"
    assert f_full["base_ce"] == pytest.approx(f_base["base_ce"], abs=1e-6)  # the same model and text
    assert f_full["increase"] > 0.02, f_full  # narrow data, every weight trained: general text gets harder
    assert "adapters disabled" in f_lora["base_measured"]
    assert f_lora["base_ce"] == pytest.approx(f_base["base_ce"], abs=1e-6)  # the frozen base is the base model
    assert f_full["windows"] == 8 and f_full["tokens"] == 8 * 127  # 1024 tokens in windows of 128
