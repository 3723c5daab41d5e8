#!/usr/bin/env python3
"""What a device call returns, and how it comes back here.

The device tool returns at most 8 files from $OUT, at most 2 folders deep, each named in letters, digits, '.', '_'
and '-' (.library/device/README.md). So the benchmark never streams per-cell folders: every finished cell (record,
log, per-item files) goes into ONE archive, `results.tar.gz`, rewritten after every cell (a call cut short still
returns all that finished), beside the summary, the log and the reports: 6 files in all.

    python scripts/gpu/outbox.py check OUTDIR              # the return limits, and the archive's records
    python scripts/gpu/outbox.py collect FILES_AT [--results .gpu/results] [--commit-root results/gpu]

`collect` unpacks the archive into the bench's results folder (a second call continues from there) and into
results/gpu/<date>-<device>/ with the summary, to commit.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.results import NON_RESULT_FILES  # noqa: E402

ARCHIVE = "results.tar.gz"
MAX_FILES, MAX_DEPTH, MAX_FILE_BYTES = 8, 2, 16 * 2**20
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
CUT_LIST = "deadline_cut.txt"  # cells cut by a call's deadline (one id per line): run first by the next call
WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")


def _members(results_root: Path) -> list[Path]:
    """Files of every finished cell under <root>/<matrix>/: records, cut records, logs, per-item files; no weights."""
    out = []
    for path in sorted(results_root.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.suffix in WEIGHTS:
            continue
        rel = path.relative_to(results_root)
        if any(part in ("adapter", "checkpoint") for part in rel.parts):
            continue
        out.append(path)
    return out


def pack(results_root: Path, out: Path) -> Path:
    """Write `out/results.tar.gz` of every finished cell under `results_root`, atomically (temp file, rename)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / ARCHIVE
    tmp = out / f".{ARCHIVE}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for path in _members(results_root):
            tar.add(path, arcname=str(Path("results") / path.relative_to(results_root)), recursive=False)
    os.replace(tmp, target)
    return target


def check(out: Path) -> list[str]:
    """Every way `out` breaks the device tool's return limits, or what its archive lacks (empty: all is well)."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files in {out} (at most {MAX_FILES} come back): {sorted(map(str, files))}")
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if not NAME.match(p.name):
            problems.append(f"{rel}: name outside letters, digits, '.', '_', '-'")
        if p.is_file() and len(rel.parts) - 1 > MAX_DEPTH:
            problems.append(f"{rel}: more than {MAX_DEPTH} folders down (does not come back)")
        if p.is_file() and p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size / 2**20:.1f} MiB (at most 16 MiB per file)")
    archive = out / ARCHIVE
    if not archive.is_file():
        problems.append(f"{ARCHIVE} missing in {out}")
        return problems
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        for name in names:
            if _is_record(name):
                record = json.load(tar.extractfile(name) or io.BytesIO(b"{}"))
                if not record.get("cell_id") or record.get("status") not in (
                    "success",
                    "failed",
                    "oom",
                    "timeout",
                    "skipped",
                ):
                    problems.append(f"{ARCHIVE}: {name} is not a cell record")
    return problems


def _is_record(name: str) -> bool:
    """results/<matrix>/<cell-id>.json inside the archive."""
    path = Path(name)
    return path.suffix == ".json" and path.parent.parent.name == "results" and path.name not in NON_RESULT_FILES


def archive_records(out: Path) -> dict[str, str]:
    """cell id -> status of every record in `out`'s archive."""
    found = {}
    with tarfile.open(out / ARCHIVE) as tar:
        for name in tar.getnames():
            if _is_record(name):
                record = json.load(tar.extractfile(name) or io.BytesIO(b"{}"))
                found[record["cell_id"]] = record["status"]
    return found


def _device_slug(folder: Path) -> str:
    for p in sorted(folder.rglob("*.json")):
        try:
            dev = json.loads(p.read_text()).get("environment", {}).get("device", {})
        except (ValueError, AttributeError):
            continue
        name = dev.get("name") if isinstance(dev, dict) else None
        if name:
            return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return "unknown-device"


def collect(files_at: Path, results_root: Path, commit_root: Path | None) -> Path | None:
    """Unpack a call's archive into `results_root` (the next call continues from it) and, with `commit_root`, into
    <commit_root>/<date>-<device>/ with the summary and log; returns that folder."""
    archive = files_at / ARCHIVE
    if not archive.is_file():
        raise SystemExit(f"error: {archive} not found (nothing finished in that call?)")
    with tarfile.open(archive) as tar:
        staging = results_root.parent / f".collect-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        tar.extractall(staging, filter="data")
    results_root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staging / "results", results_root, dirs_exist_ok=True)
    dest = None
    if commit_root is not None:
        dest = commit_root / f"{time.strftime('%Y-%m-%d', time.gmtime())}-{_device_slug(staging / 'results')}"
        shutil.copytree(staging / "results", dest, dirs_exist_ok=True)
        for name in ("summary.txt", "summary.json", "gpu_bench.log"):
            if (files_at / name).is_file():
                shutil.copy2(files_at / name, dest / name)
        for report in files_at.glob("report-*.html"):
            shutil.copy2(report, dest / report.name)
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="the device tool's return limits, and the archive's records")
    c.add_argument("out")
    g = sub.add_parser("collect", help="unpack a call's files into the results folder (and the folder to commit)")
    g.add_argument("files_at")
    g.add_argument("--results", default=".gpu/results")
    g.add_argument("--commit-root", default="results/gpu")
    g.add_argument("--no-commit-copy", action="store_true")
    args = p.parse_args(argv)
    if args.command == "check":
        problems = check(Path(args.out))
        for line in problems:
            print(f"return limits: {line}", file=sys.stderr)
        if not problems:
            records = archive_records(Path(args.out))
            print(
                f"return limits: ok ({len(list(Path(args.out).rglob('*')))} entries; {len(records)} cell records in "
                f"{ARCHIVE})"
            )
        return 1 if problems else 0
    dest = collect(Path(args.files_at), Path(args.results), None if args.no_commit_copy else Path(args.commit_root))
    print(f"collected into {args.results}" + (f" and {dest} (commit it)" if dest else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
