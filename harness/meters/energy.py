"""Energy of a region, from the hardware's own counters; never estimated from a TDP.

- NVIDIA GPU: NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver
  loaded; Volta and later) read at both ends of the region. It counts the whole GPU, so another process on the same
  GPU would be counted too (the runner gives a cell its GPU alone).
- CPU: the kernel's RAPL counters (`/sys/class/powercap/intel-rapl:N/energy_uj`, one per package; sub-domains such
  as core or dram are inside their package and not added again; `psys`, where present, overlaps the packages and is
  left out). Each counter wraps at its `max_energy_range_uj`: a side thread reads the counters every few seconds
  and adds up the deltas, a smaller reading meaning one wrap. RAPL counts the whole package, every process on it.
- Otherwise the reading says `available: false` and why (no counter, not readable by this user, unsupported GPU).

One meter measures both regions (`metrics.meters.train.energy`, `metrics.meters.eval.energy`); real (non-padding)
training tokens per joule and scored items per joule are derived from its `joules` like any meter's totals
(harness/meters/base.py: `metrics.derived.<region>`).
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from harness.meters.base import Meter, Region, ReportColumn, register

POWERCAP = "/sys/class/powercap"
RAPL_POLL_S = 5.0


# ---------------------------------------------------------------------------------------------------- RAPL


def rapl_domains(root: str | None = None) -> list[Path]:
    """Top-level RAPL package domains (intel-rapl:0, intel-rapl:1, ...), without psys."""
    root = root or POWERCAP
    out = []
    for d in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        if not re.fullmatch(r"intel-rapl:\d+", os.path.basename(d)):
            continue  # a sub-domain (intel-rapl:0:0): inside its package
        try:
            name = Path(d, "name").read_text().strip()
        except OSError:
            name = ""
        if name == "psys":
            continue
        out.append(Path(d))
    return out


def rapl_unavailable_reason(root: str | None = None) -> str | None:
    """Why RAPL cannot be read here, or None when every package counter is readable."""
    root = root or POWERCAP
    if not os.path.isdir(root):
        return (
            f"no RAPL counters: {root} does not exist (a virtual machine or container without powercap, or a "
            "CPU without RAPL)"
        )
    domains = rapl_domains(root)
    if not domains:
        return f"no RAPL counters: {root} has no intel-rapl:N package domain (a CPU or kernel without RAPL)"
    for d in domains:
        try:
            int((d / "energy_uj").read_text())
        except PermissionError:
            return (
                f"RAPL counters present but not readable by this user ({d / 'energy_uj'}: permission denied; "
                "root-only since Linux 5.10, or grant read access to the file)"
            )
        except (OSError, ValueError) as exc:
            return f"RAPL counter unreadable: {d / 'energy_uj'}: {exc}"
    return None


class RaplCounter:
    """Joules over a region from the RAPL package counters, wraparound handled."""

    def __init__(self, root: str | None = None, poll_s: float = RAPL_POLL_S):
        self.domains = rapl_domains(root)
        self.max_uj = {}
        for d in self.domains:
            try:
                self.max_uj[d] = int((d / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                self.max_uj[d] = None
        self.poll_s = poll_s
        self.total_uj = {d: 0 for d in self.domains}
        self.wraps = 0
        self._last: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[Path, int]:
        return {d: int((d / "energy_uj").read_text()) for d in self.domains}

    def _accumulate(self) -> None:
        now = self._read()
        with self._lock:
            for d, v in now.items():
                last = self._last[d]
                if v >= last:
                    self.total_uj[d] += v - last
                elif self.max_uj.get(d):
                    self.total_uj[d] += self.max_uj[d] - last + v
                    self.wraps += 1
                self._last[d] = v

    def start(self) -> None:
        self._last = self._read()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._accumulate()
            except (OSError, ValueError):  # a failing read must never break the measured region
                pass

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._accumulate()
        return sum(self.total_uj.values()) / 1e6


# ---------------------------------------------------------------------------------------------------- NVML


def _nvml_handle(device: str) -> Any:
    """The NVML handle of the torch device `device` (matched by UUID: CUDA_VISIBLE_DEVICES renumbers devices)."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    index = torch.device(device).index or 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        text = text if text.startswith("GPU-") else f"GPU-{text}"
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(text)
        except Exception:  # older drivers / formats: fall back to the index
            pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if ids and all(v.isdigit() for v in ids) and index < len(ids):
        index = int(ids[index])
    return pynvml.nvmlDeviceGetHandleByIndex(index)


# ---------------------------------------------------------------------------------------------------- meters


@register
class EnergyMeter(Meter):
    name = "energy"
    regions = ("train", "eval")
    totals = {"joules": "joule"}
    order = 30
    columns = (
        ReportColumn(
            "energy_j",
            "meters.train.energy.joules",
            "energy (J)",
            "energy of the training region: NVML total-energy counter on NVIDIA GPUs, RAPL package counters "
            "on CPU; blank where unavailable (the result says why)",
            "sig",
        ),
        ReportColumn(
            "tokens_per_joule",
            "derived.train.tokens_per_joule",
            "tokens/J",
            "real (non-padding) training tokens per joule of the training region",
            "sig",
        ),
        ReportColumn(
            "eval_energy_j",
            "meters.eval.energy.joules",
            "eval energy (J)",
            "energy of the evaluation region (same counters)",
            "sig",
        ),
    )

    def __init__(self, device: str, region: Region = "train"):
        super().__init__(device, region)
        self.result: dict[str, Any] = {"available": False, "joules": None, "reason": "not measured"}

    def __enter__(self) -> "EnergyMeter":
        self._t0 = time.perf_counter()
        self._nvml = self._rapl = None
        self._start_mj = None
        if self.device.startswith("cuda"):
            try:
                import pynvml

                from harness.meters.timing import synchronize

                self._nvml = _nvml_handle(self.device)
                synchronize(self.device)
                self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml)
            except Exception as exc:  # unsupported GPU or no NVML: recorded, never fatal
                self._nvml = None
                self.result["reason"] = f"NVML total-energy counter unavailable: {type(exc).__name__}: {exc}"[:300]
        else:
            reason = rapl_unavailable_reason()
            if reason is None:
                try:
                    self._rapl = RaplCounter()
                    self._rapl.start()
                except (OSError, ValueError) as exc:
                    self._rapl = None
                    self.result["reason"] = f"RAPL counter unreadable: {exc}"
            else:
                self.result["reason"] = reason
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self._t0
        if self._nvml is not None:
            try:
                import pynvml

                from harness.meters.timing import synchronize

                synchronize(self.device)
                end = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml)
                joules = (end - self._start_mj) / 1000.0
                self.result = {
                    "available": True,
                    "source": "nvml",
                    "joules": joules,
                    "reason": None,
                    "scope": "whole GPU (all processes on it)",
                }
            except Exception as exc:
                self.result["reason"] = f"NVML read failed at the end of the region: {type(exc).__name__}: {exc}"
        elif self._rapl is not None:
            try:
                joules = self._rapl.stop()
                self.result = {
                    "available": True,
                    "source": "rapl",
                    "joules": joules,
                    "reason": None,
                    "domains": [d.name for d in self._rapl.domains],
                    "wraps": self._rapl.wraps,
                    "scope": "whole CPU package(s) (all processes on them)",
                }
            except (OSError, ValueError) as exc:
                self.result["reason"] = f"RAPL read failed at the end of the region: {exc}"
        self.result["seconds"] = seconds
        j = self.result.get("joules")
        self.result["mean_watts"] = j / seconds if j is not None and seconds > 0 else None

    def reading(self) -> dict[str, Any]:
        return dict(self.result)
