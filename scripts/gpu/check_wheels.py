#!/usr/bin/env python3
"""Check a folder of wheels for the GPU machine: one version per project, every dependency either carried or
already on the machine (scripts/gpu/box_packages.txt), and the total size under a limit.

Dependencies deliberately not carried (the machine's own torch stack, and optional extras that the libraries
import inside try/except) are listed in NOT_CARRIED with the reason; anything else missing is an error.

    python scripts/gpu/check_wheels.py .whl [--max-mib 50]
"""

from __future__ import annotations

import argparse
import email.parser
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Evaluated for the GPU machine: Linux x86-64, CPython 3.12.
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}

NOT_CARRIED = {
    "torch": "the machine's torch 2.11 (CUDA 13) must stay; a wheel would replace it with GBs of CUDA",
    "torchvision": "on the machine",
    "triton": "on the machine",
    "xformers": "optional in unsloth (caught ModuleNotFoundError: SDPA is used); its wheel pins another torch",
    "diffusers": "unsloth imports it only for diffusion models (not used here)",
    "torchao": "optional in unsloth/unsloth_zoo (try/except; QAT and torchao saving only)",
    "hf-transfer": "only for faster hub downloads; the machine is offline",
    "certifi": "on the machine; unsloth's certifi>=2026.10.19 is not on PyPI (newest 2026.10.18)",
    "mlx": "macOS only",
    "mlx-lm": "macOS only",
    "mlx-vlm": "macOS only",
    "triton-windows": "Windows only",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def box_packages(path: Path = HERE / "box_packages.txt") -> set[str]:
    return {
        normalize(line.strip()) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    }


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    """(project name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(path) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta_name).decode("utf-8", "replace"))
    return msg["Name"], msg["Version"], msg.get_all("Requires-Dist") or []


def needed(requirement: str) -> str | None:
    """The project a Requires-Dist line needs on the target machine (None if its marker excludes it there)."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
        return None
    return normalize(req.name)


def check(folder: Path, max_mib: float | None = None) -> tuple[list[str], list[str], float]:
    """(errors, notes, total MiB) for the wheels in `folder`."""
    wheels = sorted(folder.glob("*.whl"))
    errors: list[str] = []
    notes: list[str] = []
    carried: dict[str, list[str]] = {}
    requires: dict[str, list[str]] = {}
    for w in wheels:
        name, version, reqs = wheel_metadata(w)
        carried.setdefault(normalize(name), []).append(f"{name}=={version}")
        requires[f"{name}=={version}"] = reqs
    for proj, versions in carried.items():
        if len(versions) > 1:
            errors.append(f"{proj}: more than one version carried ({', '.join(versions)}); pip --no-deps would stop")
    present = box_packages()
    for who, reqs in requires.items():
        for line in reqs:
            proj = needed(line)
            if proj is None or proj in carried:
                continue
            if proj in present:
                continue
            if proj in NOT_CARRIED:
                notes.append(f"{who} needs {proj}: not carried ({NOT_CARRIED[proj]})")
                continue
            if proj.startswith("nvidia-"):
                notes.append(f"{who} needs {proj}: not carried (CUDA libraries come with the machine's torch)")
                continue
            errors.append(f"{who} needs {proj} ({line}): neither carried nor on the machine")
    total = sum(w.stat().st_size for w in wheels) / 2**20
    if max_mib is not None and total > max_mib:
        errors.append(f"total {total:.1f} MiB exceeds the limit of {max_mib} MiB")
    return errors, sorted(set(notes)), total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default=".whl")
    p.add_argument("--max-mib", type=float, default=None)
    args = p.parse_args(argv)
    folder = Path(args.folder)
    errors, notes, total = check(folder, args.max_mib)
    for w in sorted(folder.glob("*.whl")):
        print(f"  {w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"  {total:7.2f} MiB  total ({len(list(folder.glob('*.whl')))} wheels)")
    for n in notes:
        print(f"note: {n}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
