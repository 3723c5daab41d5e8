"""Peak memory of the training region.

`MemoryMeter`: on CUDA, torch's peak counters (`max_memory_allocated`, `max_memory_reserved`, reset and
  synchronised around the region) and the process's NVML peak sampled from a side thread; on every device the
  peak RSS of this process (the headline on CPU). The headline on CUDA is `max_reserved` (what the allocator held,
  which is what decides an out-of-memory error); all three are reported.
"""

from __future__ import annotations

import os
import resource
import threading
from dataclasses import dataclass
from typing import Any

from harness.meters.base import Meter, Region, ReportColumn, register


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def current_bytes(device: str) -> int:
    """Memory in use now: tensors allocated on a CUDA device, else the process's resident set."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(device))
    return _rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Sampler(threading.Thread):
    """Polls a callable every `interval` seconds and keeps the maximum."""

    def __init__(self, read: Any, interval: float):
        super().__init__(daemon=True)
        self.read, self.interval = read, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, int(self.read() or 0))
            except Exception:  # a failing reading must never break the measured region
                pass
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=2)
        try:
            self.peak = max(self.peak, int(self.read() or 0))
        except Exception:
            pass
        return self.peak


def _nvml_process_reader(device_index: int) -> Any:
    """A callable returning this process's GPU memory from NVML, or None if NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
    except Exception:
        return None
    pid = os.getpid()

    def read() -> int:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        return sum((p.usedGpuMemory or 0) for p in procs if p.pid == pid)

    return read


@dataclass
class MemoryReading:
    device: str
    max_allocated_bytes: int | None = None
    max_reserved_bytes: int | None = None
    nvml_process_peak_bytes: int | None = None
    peak_rss_bytes: int | None = None  # whole process since start (includes loading)
    region_peak_rss_bytes: int | None = None  # sampled during the region only

    @property
    def headline(self) -> str:
        return "max_reserved_bytes" if self.device.startswith("cuda") else "peak_rss_bytes"

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["headline"] = self.headline
        d["headline_bytes"] = getattr(self, self.headline)
        return d


@register
class MemoryMeter(Meter):
    name = "memory"
    order = 10
    columns = (
        # older records without a headline: any measured peak, best first
        ReportColumn(
            "mem_headline",
            (
                "meters.train.memory.headline_bytes",
                "meters.train.memory.max_reserved_bytes",
                "meters.train.memory.max_allocated_bytes",
                "meters.train.memory.nvml_process_peak_bytes",
                "meters.train.memory.peak_rss_bytes",
            ),
            "peak mem",
            "headline peak memory: torch max_memory_reserved on CUDA, peak RSS on CPU",
            "bytes",
        ),
        ReportColumn(
            "mem_allocated",
            "meters.train.memory.max_allocated_bytes",
            "allocated",
            "torch max_memory_allocated",
            "bytes",
        ),
        ReportColumn(
            "mem_reserved", "meters.train.memory.max_reserved_bytes", "reserved", "torch max_memory_reserved", "bytes"
        ),
        ReportColumn(
            "mem_process",
            ("meters.train.memory.nvml_process_peak_bytes", "meters.train.memory.peak_rss_bytes"),
            "process / RSS",
            "NVML process peak on GPU, else peak RSS of the cell process",
            "bytes",
        ),
    )

    def __init__(self, device: str, region: Region = "train", interval: float = 0.02):
        super().__init__(device, region)
        self.interval = interval
        self.memory = MemoryReading(device=device)

    def reading(self) -> dict[str, Any]:
        return self.memory.as_dict()

    def __enter__(self) -> "MemoryMeter":
        self._rss = _Sampler(_rss_bytes, self.interval)
        self._rss.start()
        self._nvml = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            index = torch.device(self.device).index or 0
            reader = _nvml_process_reader(index)
            if reader is not None:
                self._nvml = _Sampler(reader, self.interval)
                self._nvml.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        r = self.memory
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            r.max_allocated_bytes = int(torch.cuda.max_memory_allocated())
            r.max_reserved_bytes = int(torch.cuda.max_memory_reserved())
            if self._nvml is not None:
                r.nvml_process_peak_bytes = self._nvml.stop() or None
        r.region_peak_rss_bytes = self._rss.stop()
        r.peak_rss_bytes = peak_rss_bytes()
