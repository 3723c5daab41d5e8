#!/usr/bin/env python3
"""Rewrite a wheel without some of its files, keeping it installable (RECORD rewritten to match).

Used by scripts/prepare_gpu_wheels.sh to fit the GPU machine's 64 MiB transfer limit:
- bitsandbytes ships one CUDA library per toolkit (cuda118 ... cuda132, ROCm, XPU: 129 MB unpacked); the GPU box
  runs torch built for CUDA 13.0, so only libbitsandbytes_cuda13*.so (and the CPU one) are kept (43 MB -> ~3 MB).
- unsloth ships "Unsloth Studio" (a web UI: 82 MB of JavaScript, docs, scripts) beside the library; training
  needs only the `unsloth` and `unsloth_cli` packages.

The version and file name stay the same; `medbench-slim.txt` in the .dist-info folder lists what was removed.

    python scripts/gpu/slim_wheel.py IN.whl OUT.whl --drop 'bitsandbytes/libbitsandbytes_cuda1[12]*' ...
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import hashlib
import io
import sys
import zipfile


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def slim(src: str, dst: str, drop: list[str], keep: list[str] | None = None) -> tuple[int, list[str]]:
    """Copy `src` to `dst` without members matching any `drop` glob (unless they match a `keep` glob).
    Returns (members kept, members dropped)."""
    keep = keep or []
    dropped: list[str] = []
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if record_name is None:
            raise SystemExit(f"{src}: not a wheel (no .dist-info/RECORD)")
        dist_info = record_name.rsplit("/", 1)[0]
        kept = []
        for name in names:
            if name == record_name:
                continue
            if any(fnmatch.fnmatch(name, p) for p in drop) and not any(fnmatch.fnmatch(name, p) for p in keep):
                dropped.append(name)
            else:
                kept.append(name)
        if not dropped:
            print(f"warning: {src}: nothing matched {drop}", file=sys.stderr)
        note_name = f"{dist_info}/medbench-slim.txt"
        note = (
            "Removed by medbench scripts/gpu/slim_wheel.py to fit a 64 MiB transfer; the library code is "
            "unchanged.\n" + "".join(f"{n}\n" for n in dropped)
        ).encode()
        rows = []
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
            for name in kept:
                info = zin.getinfo(name)
                data = zin.read(name)
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
                if not name.endswith("/"):
                    rows.append((name, _record_hash(data), str(len(data))))
            zout.writestr(note_name, note)
            rows.append((note_name, _record_hash(note), str(len(note))))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in rows:
                writer.writerow(row)
            writer.writerow((record_name, "", ""))
            zout.writestr(record_name, buf.getvalue())
    return len(kept), dropped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--drop", action="append", default=[], help="glob of members to remove (repeatable)")
    p.add_argument("--keep", action="append", default=[], help="glob of members to keep even if dropped")
    args = p.parse_args(argv)
    kept, dropped = slim(args.src, args.dst, args.drop, args.keep)
    print(f"slimmed {args.src} -> {args.dst}: kept {kept} files, removed {len(dropped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
