"""How the report's provenance shows the machine and the data: readable text, never this machine's paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_text(cpu: Any) -> str:
    """`{"model": "AMD EPYC", "cores": 2, "memory_bytes": ...}` -> "AMD EPYC, 2 cores, 23.5 GiB RAM"."""
    if not isinstance(cpu, dict):
        return str(cpu) if cpu else "?"
    parts = [str(cpu.get("model") or "unknown CPU")]
    cores = cpu.get("cores")
    if cores:
        parts.append(f"{cores} core{'s' if cores != 1 else ''}")
    mem = cpu.get("memory_bytes")
    if mem:
        parts.append(f"{mem / 1024**3:.1f} GiB RAM")
    return ", ".join(parts)


def device_text(device: Any) -> str:
    """The accelerator: "none (CPU)" on a CPU-only run, "2 × NVIDIA H100" on GPUs; "not recorded" for cells whose
    process never started (skipped by the plan, e.g. a GPU-only method on a CPU machine)."""
    if isinstance(device, dict):
        if device.get("type") == "cpu" or (not device.get("name") and not device.get("count")):
            return "none (CPU)"
        name = device.get("name") or "?"
        count = device.get("count")
        return f"{count} × {name}" if count and count != 1 else str(name)
    return str(device) if device else "not recorded (no cell process: skipped before it started)"


def shown_data_path(path: str, data_dir: str | None) -> str:
    """A recorded data path as the report shows it: relative to the cell's data dir (older results recorded
    absolute paths), else the file name; `hub:` ids and relative paths unchanged."""
    if not path.startswith("/"):
        return path
    if data_dir:
        try:
            return str(Path(path).relative_to(Path(data_dir)))
        except ValueError:
            pass
    return Path(path).name
