"""Money: device time and energy turned into cost, per cell and for the whole matrix (the report's cost section),
and predicted before anything runs (`--dry-run`).

Prices come from the matrix's `report` block:

    report:
      price_per_device_hour: 2.50   # one accelerator (or, on a CPU-only machine, the machine) for one hour
      price_per_kwh: 0.30           # electricity
      currency: EUR

A cell's device-hours are its process's wall time (load, data, training, evaluation: everything it held the device
for) times the number of devices it saw; its energy is what the energy meter measured (training + evaluation
regions, harness/meters/energy.py), so cells without a readable counter have device cost but no energy cost (and
the section says how many). Cost = device-hours × price_per_device_hour + kWh × price_per_kwh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Prices:
    per_device_hour: float | None = None
    per_kwh: float | None = None
    currency: str = "USD"

    @property
    def any(self) -> bool:
        return self.per_device_hour is not None or self.per_kwh is not None

    @classmethod
    def of(cls, report: Any) -> "Prices":
        if report is None:
            return cls()
        get = report.get if isinstance(report, dict) else (lambda k, d=None: getattr(report, k, d))
        return cls(get("price_per_device_hour"), get("price_per_kwh"), get("currency") or "USD")

    @classmethod
    def from_matrix_text(cls, text: str | None) -> "Prices":
        """The prices of a matrix file's text (the report gets the file as written); none where unreadable."""
        if not text:
            return cls()
        try:
            import yaml

            from harness.config import ReportConfig

            raw = yaml.safe_load(text)
            return cls.of(ReportConfig.model_validate((raw or {}).get("report") or {}))
        except Exception:  # a report renders whatever the matrix file says; no prices then
            return cls()


def money(device_hours: float | None, kwh: float | None, prices: Prices) -> float | None:
    """Device cost plus energy cost; None when no price applies to what is known."""
    parts = []
    if prices.per_device_hour is not None and device_hours is not None:
        parts.append(device_hours * prices.per_device_hour)
    if prices.per_kwh is not None and kwh is not None:
        parts.append(kwh * prices.per_kwh)
    return math.fsum(parts) if parts else None


def fmt_money(x: float | None, currency: str) -> str:
    if x is None:
        return "–"
    return f"{x:,.2f} {currency}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g} {currency}"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def cell_usage(record: Any) -> dict[str, Any]:
    """Device-hours and energy (kWh) of one result record, and why energy is missing where it is."""
    timings = record.timings or {}
    device = (record.environment or {}).get("device") or {}
    count = device.get("count") if device.get("type") == "cuda" else 1
    wall = _num(timings.get("wall_s"))
    hours = wall / 3600 * max(int(count or 1), 1) if wall is not None else None
    joules, reasons = [], []
    for by_meter in ((record.metrics or {}).get("meters") or {}).values():  # every region the energy meter read
        e = by_meter.get("energy") if isinstance(by_meter, dict) else None
        if isinstance(e, dict):
            j = _num(e.get("joules"))
            (joules.append(j) if j is not None else reasons.append(str(e.get("reason") or "not measured")))
    kwh = math.fsum(joules) / J_PER_KWH if joules and not reasons else None
    if not joules and not reasons:
        reasons.append("no energy reading in this result (recorded before the energy meter existed)")
    return {
        "device_hours": hours,
        "kwh": kwh,
        "energy_reason": "; ".join(dict.fromkeys(reasons)) or None,
        "devices": int(count or 1),
    }


def cost_section(data: Any, matrix_text: str | None) -> dict[str, Any] | None:
    """The report's money table: per cell device-hours, kWh and cost, and the matrix's totals."""
    prices = Prices.from_matrix_text(matrix_text)
    rows = []
    for rec in sorted(data.records.values(), key=lambda r: r.cell_id):
        if rec.status == "skipped":
            continue
        u = cell_usage(rec)
        rows.append(
            {"cell_id": rec.cell_id, "status": rec.status, **u, "money": money(u["device_hours"], u["kwh"], prices)}
        )
    if not rows:
        return None
    hours = [r["device_hours"] for r in rows if r["device_hours"] is not None]
    kwh = [r["kwh"] for r in rows if r["kwh"] is not None]
    total_hours = math.fsum(hours) if hours else None
    total_kwh = math.fsum(kwh) if kwh else None
    missing_energy = [r for r in rows if r["kwh"] is None]
    reasons = list(dict.fromkeys(r["energy_reason"] for r in missing_energy if r["energy_reason"]))
    return {
        "prices": prices,
        "priced": prices.any,
        "currency": prices.currency,
        "rows": [
            {
                **r,
                "hours_text": "–" if r["device_hours"] is None else f"{r['device_hours']:.3g}",
                "kwh_text": "–" if r["kwh"] is None else f"{r['kwh']:.3g}",
                "money_text": fmt_money(r["money"], prices.currency),
            }
            for r in rows
        ],
        "total_hours": "–" if total_hours is None else f"{total_hours:.3g}",
        "total_kwh": "–" if total_kwh is None else f"{total_kwh:.3g}",
        "total_money": fmt_money(money(total_hours, total_kwh, prices), prices.currency),
        "n_missing_energy": len(missing_energy),
        "energy_reasons": reasons[:3],
    }


# ---------------------------------------------------------------------------------------------------- plan


def plan_cost_lines(planned: list, report: Any, planner: Any = None) -> list[str]:
    """The dry-run's prediction of the matrix's device-hours and cost: measured wall time for cells already done,
    the plan's prediction (harness/planning.py: training and evaluation on this machine) for the others."""
    prices = Prices.of(report)
    done = [
        p.existing for p in planned if p.action == "done" and p.existing is not None and p.existing.status != "skipped"
    ]
    measured_h = predicted_h = 0.0
    unknown: list[str] = []
    n_run = 0
    for p in planned:
        if p.action == "skip":
            continue
        if p.action == "done" and p.existing is not None:
            h = cell_usage(p.existing)["device_hours"]
            if h is not None:
                measured_h += h
            continue
        n_run += 1
        wall = planner.predict(p.cell).wall_s if planner is not None else None
        if wall is None:
            unknown.append(p.cell.id)
            continue
        predicted_h += wall / 3600
    lines = ["predicted cost (device-hours: measured for cells done, predicted for cells to run):"]
    src = "; ".join(planner.sources) if planner is not None and planner.sources else "nothing measured to calibrate on"
    lines.append(
        f"  done: {measured_h:.3g} device-hours measured; to run: {n_run} cell(s), "
        f"{predicted_h:.3g} device-hours predicted (calibrated on {src})"
    )
    if unknown:
        lines.append(
            f"  {len(unknown)} cell(s) to run have no time prediction (e.g. {unknown[0]}): the plan needs cells "
            "measured on this kind of device (this matrix's, or report.calibrate_from), or report.plan_device on a "
            "GPU, and tokens per epoch (train.token_budget, or train.max_examples with a known mean example length)"
        )
    total = measured_h + predicted_h
    if prices.any:
        energy_note = ""
        kwh = None
        if prices.per_kwh is not None:
            done_kwh = [cell_usage(r)["kwh"] for r in done]
            known = [k for k in done_kwh if k is not None]
            kwh = math.fsum(known) if known else None
            energy_note = (
                f"; energy: {kwh:.3g} kWh measured on cells done"
                if kwh is not None
                else "; energy: no measured kWh (not priced)"
            )
        cost = money(total, kwh, prices)
        lines.append(
            f"  matrix: {total:.3g} device-hours ≈ {fmt_money(cost, prices.currency)} at "
            f"{prices.per_device_hour if prices.per_device_hour is not None else '–'} {prices.currency} per "
            f"device-hour{energy_note}" + (" (cells without a prediction not included)" if unknown else "")
        )
    else:
        lines.append(f"  matrix: {total:.3g} device-hours (set report.price_per_device_hour / price_per_kwh for money)")
    return lines
