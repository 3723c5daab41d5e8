"""`medbench data list|fetch|verify`: the public data sets the shipped matrices name, where they come from, and
whether the copy in a data dir is the one the results were measured on.

    medbench data list   [--data-dir DIR] [MATRIX ...]   what the matrices need: present / missing, sha256, source
    medbench data verify [--data-dir DIR] [MATRIX ...]   sha256 of every present file against the recorded one
    medbench data fetch  [--to DIR] [--mirror URL] [MATRIX ...]   download what is missing (online only)

(`python run_matrix.py data ...` is the same command.) The data dir is --data-dir / --to, else $MEDBENCH_DATA_DIR,
else ./data, where the shipped matrices look by default: `medbench data fetch` followed by
`python run_matrix.py matrices/small_models.yaml` needs no flags. Nothing is ever committed: the files stay in the
data dir. `fetch` downloads from each file's public source (the hub through $HF_ENDPOINT), or from `--mirror URL`
(`URL/<path>`, e.g. a local copy served over HTTP), checks the sha256 before putting a file in place, and writes
`MANIFEST.json` (path, sha256, source, time) in the data dir. Files that are derived rather than downloaded are
built from their sources (PubMedQA's test split); the few that cannot be (a random split, a flattened XML dump)
are listed with how to obtain them. Offline (`HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`), `fetch` stops at once.
Exit codes: 0 ok, 1 a file missing or not matching its sha256, 2 bad input or offline / unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness.hashing import sha256_file

HF = "{hf}"  # replaced by $HF_ENDPOINT (default https://huggingface.co)
PUBMEDQA_RAW = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data dir, as the matrices name it
    dataset: str
    sha256: str  # of the copy the committed results were measured on
    license: str
    source: str  # where it comes from (a page or a file URL)
    url: str | None = None  # what `fetch` downloads; None: derived (`derive`) or obtained by hand (`how`)
    derive: str | None = None  # name of a function in DERIVE building it from other catalog files
    how: str = ""  # how to obtain it when it can be neither downloaded nor derived


CATALOG: list[DataFile] = [
    DataFile(
        "medqa_usmle_4opt/test.jsonl",
        "MedQA (USMLE, 4 options), test split",
        "c3b905ccfa66152dc25afbcb2c10e86c0bdb208824f0658fcdb2c040f60a2beb",
        "MIT",
        "https://github.com/jind11/MedQA (data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl)",
        url=f"{HF}/datasets/GBaker/MedQA-USMLE-4-options/resolve/main/phrases_no_exclude_test.jsonl",
    ),
    DataFile(
        "pubmedqa/ori_pqal.json",
        "PubMedQA PQA-L (1000 expert-labelled items)",
        "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d",
        "MIT",
        "https://github.com/pubmedqa/pubmedqa",
        url=f"{PUBMEDQA_RAW}/ori_pqal.json",
    ),
    DataFile(
        "pubmedqa/test_ground_truth.json",
        "PubMedQA test labels (500 PMIDs)",
        "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51",
        "MIT",
        "https://github.com/pubmedqa/pubmedqa",
        url=f"{PUBMEDQA_RAW}/test_ground_truth.json",
    ),
    DataFile(
        "pubmedqa/test_set.json",
        "PubMedQA test split (500 items)",
        "f420f49d97516329d81f62d7d454055e3a063dbd0913ebaff915993bb321cbab",
        "MIT",
        "https://github.com/pubmedqa/pubmedqa (ori_pqal.json restricted to test_ground_truth.json's PMIDs)",
        derive="pubmedqa_test_set",
    ),
    DataFile(
        "pubmedqa/pqal_fold0/train_set.json",
        "PubMedQA cross-validation fold 0, train (450)",
        "7e539dceebfe5d9fbfc8fa1313713436a1e10f6d6f5bad1ed3fd39d1442be265",
        "MIT",
        "https://github.com/pubmedqa/pubmedqa (preprocess/split_dataset.py pqal)",
        how="run `python split_dataset.py pqal` in a clone of https://github.com/pubmedqa/pubmedqa (preprocess/) "
        "and copy data/pqal_fold0/ here (a random split: it cannot be rebuilt from the other files)",
    ),
    DataFile(
        "pubmedqa/pqal_fold0/dev_set.json",
        "PubMedQA cross-validation fold 0, dev (50)",
        "9d8982fa88a2a7f68230c2757e7eb5b495577a61cdca9e03c3ab308bc725d9f5",
        "MIT",
        "https://github.com/pubmedqa/pubmedqa (preprocess/split_dataset.py pqal)",
        how="as pqal_fold0/train_set.json",
    ),
    DataFile(
        "medquad/medquad.jsonl",
        "MedQuAD (NIH consumer health questions with answers)",
        "1ea61dcf718a28ecba9fc8b1ea1bd0b4088799194476c6d552337f47021b6434",
        "CC BY 4.0",
        "https://github.com/abachaa/MedQuAD",
        how="flatten the XML files of https://github.com/abachaa/MedQuAD into JSONL records with id, source, "
        "url, focus, qtype, question, answer (only the pairs that have an answer)",
    ),
    DataFile(
        "chatdoctor5k/chatdoctor5k.json",
        "GenMedGPT-5k (ChatDoctor patient/doctor dialogues, generated)",
        "780c1a6aa67d461359ac220c120134429290b1e340545c3ad8954e1aa235d80f",
        "Apache-2.0; research use only (its authors' request)",
        "https://github.com/Kent0n-Li/ChatDoctor",
        how="download GenMedGPT-5k.json from https://github.com/Kent0n-Li/ChatDoctor (README, 'Training data') "
        "and save it here (a JSON list of instruction / input / output)",
    ),
]


def _pubmedqa_test_set(data_dir: Path) -> bytes:
    ori = json.loads((data_dir / "pubmedqa/ori_pqal.json").read_text(encoding="utf-8"))
    truth = json.loads((data_dir / "pubmedqa/test_ground_truth.json").read_text(encoding="utf-8"))
    return json.dumps({pmid: ori[pmid] for pmid in truth}, indent=4).encode()


DERIVE: dict[str, tuple[list[str], Callable[[Path], bytes]]] = {
    "pubmedqa_test_set": (["pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json"], _pubmedqa_test_set),
}


class DataCommandError(RuntimeError):
    """Bad input, offline, or a source that cannot be reached: exit 2."""


# ---------------------------------------------------------------------------------------------------- what is needed


def shipped_matrices() -> list[Path]:
    root = Path(__file__).resolve().parent.parent / "matrices"
    return sorted(root.glob("*.yaml")) + sorted((root / "recipes").glob("*.yaml"))


def needed_paths(matrix_paths: list[Path]) -> dict[str, list[str]]:
    """{relative data path: [matrix names]} for every relative data path the matrices name (absolute paths and
    matrices with their own data_dir, such as the CI fixtures, are not the data dir's business)."""
    from harness.config import Matrix
    from harness.evaluation.registry import builtin_task
    from harness.yaml_strict import safe_load_strict

    out: dict[str, list[str]] = {}
    for mp in matrix_paths:
        try:
            raw = safe_load_strict(Path(mp).read_text())
            m = Matrix.model_validate(raw)
        except Exception as exc:  # a broken matrix: say which, do not guess
            raise DataCommandError(f"{mp}: not a valid matrix ({str(exc).splitlines()[0]})") from None
        if m.data_dir:
            continue
        paths = [ds.path for ds in m.train.datasets if ds.path]
        for entry in raw.get("methods") or []:
            if isinstance(entry, dict):
                paths += [d.get("path") for d in (entry.get("train") or {}).get("datasets") or [] if d.get("path")]
        for task in m.eval.tasks:
            bt = builtin_task(task.name)
            paths.append(task.data or (bt.default_data if bt else None))
            if bt and bt.fewshot_data and (task.num_fewshot or m.eval.num_fewshot):
                paths.append(bt.fewshot_data)
        for p in paths:
            if p and not Path(os.path.expanduser(p)).is_absolute():
                out.setdefault(p, [])
                if m.name not in out[p]:
                    out[p].append(m.name)
    return out


def _entry(path: str) -> DataFile | None:
    return next((e for e in CATALOG if e.path == path), None)


def _with_dependencies(paths: list[str]) -> list[str]:
    out = list(paths)
    for p in paths:
        e = _entry(p)
        if e and e.derive:
            out += [d for d in DERIVE[e.derive][0] if d not in out]
    return out


# ---------------------------------------------------------------------------------------------------- commands


def _state(path: Path, entry: DataFile | None, hash_it: bool) -> str:
    if not path.is_file():
        return "missing"
    if not hash_it or entry is None:
        return "present"
    return "ok" if sha256_file(path) == entry.sha256 else "sha256 differs"


def cmd_list(data_dir: Path, needed: dict[str, list[str]], hash_it: bool = False) -> int:
    print(f"data dir: {data_dir}" + ("" if data_dir.is_dir() else "  (does not exist yet)"))
    bad = 0
    for rel in _with_dependencies(list(needed)):
        e = _entry(rel)
        state = _state(data_dir / rel, e, hash_it)
        bad += state != "ok" and (hash_it or state == "missing")
        who = ", ".join(needed.get(rel, [])) or "(source of a derived file)"
        print(f"{state:15} {rel}")
        if e is None:
            print(f"{'':15}   not in the catalog (harness/data_catalog.py); used by {who}")
            continue
        print(f"{'':15}   {e.dataset}; license {e.license}; used by {who}")
        print(f"{'':15}   sha256 {e.sha256}")
        how = (
            f"fetch: {e.url.replace(HF, _hf())}"
            if e.url
            else f"fetch: derived from {', '.join(DERIVE[e.derive][0])}"
            if e.derive
            else f"by hand: {e.how}"
        )
        print(f"{'':15}   source {e.source}; {how}")
    return 1 if bad else 0


def cmd_verify(data_dir: Path, needed: dict[str, list[str]]) -> int:
    rc = cmd_list(data_dir, needed, hash_it=True)
    print(
        "verify: every file present and matching its recorded sha256"
        if rc == 0
        else "verify: some files are missing or differ from the copies the results were measured on"
    )
    return rc


def _hf() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _download(url: str, dest: Path, timeout: float) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "medbench-data-fetch"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataCommandError(
            f"cannot reach {url} ({reason}); no network here? Put the files in the data dir by "
            f"hand (see `medbench data list`), or use --mirror URL"
        ) from None


def _place(data: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(data, target)


def cmd_fetch(data_dir: Path, needed: dict[str, list[str]], mirror: str | None, timeout: float = TIMEOUT_S) -> int:
    if _offline() and not mirror:
        raise DataCommandError(
            "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set): nothing fetched. Unset them "
            "on a machine with network, or put the files in the data dir by hand "
            "(`medbench data list` says where each comes from)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = data_dir / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    todo = _with_dependencies(list(needed))
    todo.sort(key=lambda p: bool((_entry(p) or DataFile("", "", "", "", "")).derive))  # sources first
    problems = 0
    for rel in todo:
        e, target = _entry(rel), data_dir / rel
        if e is None:
            print(f"skip     {rel}: not in the catalog; put it in the data dir by hand")
            problems += not target.is_file()
            continue
        if target.is_file() and sha256_file(target) == e.sha256:
            print(f"ok       {rel} (already here)")
            continue
        if not e.url and not e.derive:
            print(f"by hand  {rel}: {e.how}")
            problems += 1
            continue
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".fetch-", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            if e.url:
                url = f"{mirror.rstrip('/')}/{rel}" if mirror else e.url.replace(HF, _hf())
                _download(url, tmp_path, timeout)
                source = url
            else:
                tmp_path.write_bytes(DERIVE[e.derive][1](data_dir))
                source = f"derived from {', '.join(DERIVE[e.derive][0])}"
            digest = sha256_file(tmp_path)
            if digest != e.sha256:
                print(
                    f"differs  {rel}: sha256 {digest} from {source}, expected {e.sha256}; not put in place "
                    f"(the source changed, or this is another copy)"
                )
                problems += 1
                continue
            _place(tmp_path, target)
            manifest[rel] = {
                "sha256": digest,
                "source": source,
                "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            print(f"fetched  {rel} ({source})")
        except (OSError, KeyError, ValueError) as exc:
            print(f"failed   {rel}: {exc}")
            problems += 1
        finally:
            tmp_path.unlink(missing_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"fetch: {len(todo) - problems} of {len(todo)} files in place in {data_dir}; manifest: {manifest_path}")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------------- entry point


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """`medbench data list|verify|fetch`."""
    sub = p.add_subparsers(dest="data_command", required=True)
    for name, helptext in (
        ("list", "what the matrices need, present or missing, with source and license"),
        ("verify", "sha256 of every needed file against the recorded one"),
        ("fetch", "download the missing files (online; checked against the recorded sha256)"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("matrices", nargs="*", help="matrix files (default: every shipped matrix)")
        s.add_argument(
            "--data-dir", "--to", dest="data_dir", help="the data dir (default: $MEDBENCH_DATA_DIR or ./data)"
        )
        if name == "fetch":
            s.add_argument("--mirror", help="download URL/<path> instead of each file's source")


def data_command(args: argparse.Namespace) -> int:
    from harness.paths import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir, None, Path("."))
    try:
        needed = needed_paths([Path(m) for m in args.matrices] or shipped_matrices())
        if args.data_command == "list":
            cmd_list(data_dir, needed)
            return 0
        if args.data_command == "verify":
            return cmd_verify(data_dir, needed)
        return cmd_fetch(data_dir, needed, args.mirror)
    except DataCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
