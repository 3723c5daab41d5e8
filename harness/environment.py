"""Provenance: what software and hardware produced a result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "lm_eval",
    "datasets",
    "accelerate",
    "tokenizers",
    "unsloth",
    "unsloth_zoo",
    "numpy",
    "pandas",
    "medbench",
)

HARNESS_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = None
    return out


def git_state(root: Path = HARNESS_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_info() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"model": model or platform.processor(), "cores": os.cpu_count(), "memory_bytes": mem}


def device_info() -> dict[str, Any]:
    """Accelerator facts; imports torch, so call it only inside a cell's process."""
    import torch

    info: dict[str, Any] = {"type": "cpu", "name": None, "count": 0}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info = {
            "type": "cuda",
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "memory_bytes": int(props.total_memory),
            "capability": list(torch.cuda.get_device_capability(0)),
            "cuda": torch.version.cuda,
            "bf16": torch.cuda.is_bf16_supported(),
        }
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:
            pass
    info["torch_threads"] = torch.get_num_threads()
    return info


def collect(with_device: bool = True) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": package_versions(),
        "cpu": cpu_info(),
        "git": git_state(),
        "offline": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")},
    }
    if with_device:
        env["device"] = device_info()
    return env


def cuda_visible_without_torch() -> bool:
    """Whether an NVIDIA GPU is visible, asked of NVML so that the parent never initialises CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
