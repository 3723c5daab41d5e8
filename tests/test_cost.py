"""Cost: device-hours and energy into money, per cell and for the matrix; the dry-run's prediction."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.config import ReportConfig
from harness.report.cost import Prices, cell_usage, cost_section, fmt_money, money, plan_cost_lines
from harness.results import CellResult

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def _rec(
    cell_id: str,
    wall_s: float,
    joules: tuple[float | None, float | None] = (None, None),
    gpus: int = 0,
    status: str = "success",
) -> CellResult:
    metrics: dict = {"meters": {}}
    for region, j in zip(("train", "eval"), joules):
        reading = {"joules": j, "reason": None if j is not None else "no RAPL counters: test"}
        metrics["meters"][region] = {"energy": reading}
    device = {"type": "cuda", "count": gpus} if gpus else {"type": "cpu", "count": 0}
    return CellResult(
        cell_id=cell_id,
        config_hash=cell_id,
        matrix="m",
        status=status,
        config={},
        metrics=metrics,
        timings={"wall_s": wall_s},
        environment={"device": device},
    )


def test_money_is_device_hours_times_price_plus_kwh_times_price() -> None:
    prices = Prices(per_device_hour=2.5, per_kwh=0.3, currency="EUR")
    assert money(2.0, 10.0, prices) == pytest.approx(2.0 * 2.5 + 10.0 * 0.3)  # 8.00
    assert money(2.0, None, prices) == pytest.approx(5.0)  # no energy reading: device cost only
    assert money(None, None, prices) is None
    assert money(2.0, 10.0, Prices()) is None
    assert fmt_money(8.0, "EUR") == "8.00 EUR" and fmt_money(None, "EUR") == "–"


def test_cell_usage_counts_devices_and_both_energy_regions() -> None:
    u = cell_usage(_rec("a", 1800.0, (3.6e6, 1.8e6), gpus=2))
    assert u["device_hours"] == pytest.approx(1.0)  # half an hour on two GPUs
    assert u["kwh"] == pytest.approx(1.5) and u["energy_reason"] is None
    u = cell_usage(_rec("b", 3600.0))
    assert u["device_hours"] == pytest.approx(1.0) and u["kwh"] is None and "no RAPL" in u["energy_reason"]


def test_cost_section_totals() -> None:
    data = SimpleNamespace(
        records={
            r.cell_id: r
            for r in (
                _rec("a", 3600.0, (7.2e6, 0.0), gpus=1),
                _rec("b", 1800.0, (3.6e6, 3.6e6), gpus=1),
                _rec("c", 900.0),
                _rec("d", 100.0, status="skipped"),
            )
        }
    )
    text = "name: m\nreport: {price_per_device_hour: 2.0, price_per_kwh: 0.5, currency: EUR}\n"
    sec = cost_section(data, text)
    assert [r["cell_id"] for r in sec["rows"]] == ["a", "b", "c"]  # skipped cells held no device
    assert sec["total_hours"] == "1.75" and sec["total_kwh"] == "4"
    # 1.75 h x 2.0 + 4 kWh x 0.5 = 5.50 (cell c has no energy reading: device cost only, and it is said)
    assert sec["total_money"] == "5.50 EUR" and sec["n_missing_energy"] == 1
    assert [r["money_text"] for r in sec["rows"]] == ["3.00 EUR", "2.00 EUR", "0.50 EUR"]
    assert cost_section(data, "name: m\n")["priced"] is False


def test_prices_from_the_matrix_report_block() -> None:
    cfg = ReportConfig(price_per_device_hour=1.2, price_per_kwh=0.25, currency="CHF")
    assert Prices.of(cfg) == Prices(1.2, 0.25, "CHF")
    assert Prices.from_matrix_text("report: {price_per_device_hour: 3}\n") == Prices(3.0, None, "USD")
    assert Prices.from_matrix_text("report: {price_per_device_hour: -1}\n") == Prices()  # invalid: no prices


def test_plan_adds_measured_hours_of_done_cells_and_prices_them() -> None:
    done = [SimpleNamespace(action="done", existing=_rec(f"c{i}", 1800.0), cell=None) for i in range(3)]
    skipped = SimpleNamespace(action="skip", existing=None, cell=None)
    lines = plan_cost_lines([*done, skipped], ReportConfig(price_per_device_hour=2.0, currency="EUR"))
    text = "\n".join(lines)
    assert "done: 1.5 device-hours measured; to run: 0 cell(s)" in text
    assert "matrix: 1.5 device-hours ≈ 3.00 EUR at 2.0 EUR per device-hour" in text


def test_dry_run_prints_detectable_difference_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        (Path(__file__).parent.parent / "matrices" / "tiny_ci.yaml")
        .read_text()
        .replace("data_dir: ../tests/fixtures/ci_data", f"data_dir: {FIXTURES.parent / 'ci_data'}")
        .replace("report:\n", "report:\n  price_per_device_hour: 1.0\n")
    )
    assert main([str(matrix), "--dry-run", "--results", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "smallest detectable difference" in out
    assert "MedQA, 20 items: no difference is reliably visible" in out  # 20 fixture items, 20 % discordance
    assert "predicted cost" in out and "device-hours" in out
