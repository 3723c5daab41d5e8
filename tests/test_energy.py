"""The energy meter: its CPU path (RAPL counters with wraparound, or a recorded reason), tokens per joule, and its
report columns. The NVML path needs an NVIDIA GPU and is not run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.meters import derived_figures, energy
from harness.meters.energy import EnergyMeter, RaplCounter, rapl_domains


def _domain(root: Path, name: str, label: str, uj: int, max_uj: int = 1_000_000) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "powercap"
    _domain(root, "intel-rapl:0", "package-0", 900_000)
    _domain(root, "intel-rapl:0:0", "core", 100)  # inside package 0: never added again
    _domain(root, "intel-rapl:1", "package-1", 10_000)
    _domain(root, "intel-rapl:2", "psys", 5)  # the platform domain overlaps the packages
    monkeypatch.setattr(energy, "POWERCAP", str(root))
    return root


def test_package_domains_only(powercap: Path) -> None:
    assert [d.name for d in rapl_domains()] == ["intel-rapl:0", "intel-rapl:1"]


def test_rapl_counter_adds_deltas_across_a_wraparound(powercap: Path) -> None:
    counter = RaplCounter(poll_s=3600)
    counter.start()
    (powercap / "intel-rapl:0" / "energy_uj").write_text("950000\n")  # +50 000
    counter._accumulate()
    (powercap / "intel-rapl:0" / "energy_uj").write_text("20000\n")  # wrapped at 1 000 000: +50 000 + 20 000
    (powercap / "intel-rapl:1" / "energy_uj").write_text("40000\n")  # +30 000
    joules = counter.stop()
    assert joules == pytest.approx((50_000 + 70_000 + 30_000) / 1e6)
    assert counter.wraps == 1


def test_meter_reads_rapl_on_cpu(powercap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "RAPL_POLL_S", 3600)
    with EnergyMeter("cpu") as meter:
        (powercap / "intel-rapl:0" / "energy_uj").write_text("902000\n")
    r = meter.reading()
    assert r["available"] and r["source"] == "rapl" and r["joules"] == pytest.approx(0.002)
    assert r["domains"] == ["intel-rapl:0", "intel-rapl:1"] and r["reason"] is None and r["seconds"] > 0


def test_meter_records_why_when_rapl_is_missing_or_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "POWERCAP", str(tmp_path / "absent"))
    with EnergyMeter("cpu") as meter:
        pass
    r = meter.reading()
    assert r["available"] is False and r["joules"] is None and "does not exist" in r["reason"]

    root = tmp_path / "powercap"
    locked = _domain(root, "intel-rapl:0", "package-0", 1)
    monkeypatch.setattr(energy, "POWERCAP", str(root))
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == locked / "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with EnergyMeter("cpu") as meter:
        pass
    assert "not readable by this user" in meter.reading()["reason"]


def test_this_machine_gives_a_value_or_a_reason() -> None:
    with EnergyMeter("cpu") as meter:
        sum(range(10_000))
    r = meter.reading()
    assert (r["available"] and r["joules"] is not None and r["joules"] >= 0) or (not r["available"] and r["reason"])


def test_tokens_and_items_per_joule_are_derived_per_region() -> None:
    metrics = {
        "train": {"tokens": 5000},
        "eval": {"medqa": {"n": 30}, "pubmedqa": {"n": 10}},
        "meters": {"train": {"energy": {"joules": 250.0}}, "eval": {"energy": {"joules": 8.0}}},
    }
    assert derived_figures(metrics) == {"train": {"tokens_per_joule": 20.0}, "eval": {"items_per_joule": 5.0}}
    metrics["meters"]["train"]["energy"] = {"joules": None, "reason": "x"}
    assert derived_figures(metrics)["train"] == {"tokens_per_joule": None}


def test_one_meter_reads_both_regions() -> None:
    from harness.meters import measuring, readings

    for region in ("train", "eval"):
        with measuring(region, "cpu") as meters:
            sum(range(1000))
        assert "energy" in readings(meters), region


def test_schema_2_records_are_read_with_readings_by_region() -> None:
    from harness.results import upgrade_record

    old = {
        "schema_version": 2,
        "metrics": {
            "train": {"tokens": 10},
            "memory": {"headline_bytes": 5},
            "energy": {"joules": 2.0, "tokens_per_joule": 5.0},
            "energy_eval": {"joules": 1.0},
        },
    }
    new = upgrade_record(old)["metrics"]
    assert new["meters"] == {
        "train": {"memory": {"headline_bytes": 5}, "energy": {"joules": 2.0}},
        "eval": {"energy": {"joules": 1.0}},
    }
    assert new["derived"] == {"train": {"tokens_per_joule": 5.0}} and "memory" not in new


def test_energy_columns_are_report_columns() -> None:
    from harness.report.columns import measurement_columns

    keys = [c.key for c in measurement_columns()]
    assert {"energy_j", "tokens_per_joule", "eval_energy_j", "forgetting"} <= set(keys)


def test_nvml_path_reads_the_total_energy_counter_at_both_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: NVML and the device synchronisation are faked; the meter's arithmetic and record are real."""
    import pynvml

    from harness.meters import timing

    counter = iter([1_000_000, 1_250_500])  # millijoules since the driver loaded
    monkeypatch.setattr(energy, "_nvml_handle", lambda device: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda handle: next(counter))
    monkeypatch.setattr(timing, "synchronize", lambda device: None)
    with EnergyMeter("cuda:0") as meter:
        pass
    r = meter.reading()
    assert r["available"] and r["source"] == "nvml" and r["joules"] == pytest.approx(250.5)

    def unsupported(handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", unsupported)
    with EnergyMeter("cuda:0") as meter:
        pass
    r = meter.reading()
    assert r["available"] is False and r["joules"] is None and "NVML total-energy counter unavailable" in r["reason"]
