"""Where a matrix's relative paths point: one rule, used by validation, the cell process and evaluation.

A data path in a matrix (training files, evaluation files, `eval.include_path`) is absolute, or relative to the data
dir: `--data-dir`, else `$MEDBENCH_DATA_DIR`, else the matrix's own `data_dir:` (relative to the matrix file), else
`./data`. `~` is expanded.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MEDBENCH_DATA_DIR"


def resolve_data_dir(given: str | os.PathLike[str] | None, matrix_data_dir: str | None, matrix_path: Path) -> Path:
    """--data-dir, else $MEDBENCH_DATA_DIR, else the matrix's own `data_dir` (relative to the file), else ./data."""
    if given is not None:
        return Path(given)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    if matrix_data_dir:
        return Path(matrix_path).parent / matrix_data_dir
    return Path("data")


def resolve_data_path(path: str, data_dir: str | os.PathLike[str]) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (Path(data_dir) / p)


def display_data_path(path: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> str:
    """A data path as committed results and reports show it: relative to the data dir when it lies inside it
    (never this machine's absolute paths), else its file name."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path(data_dir).resolve()))
    except ValueError:
        return p.name


def folder_size_bytes(path: str | os.PathLike[str]) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            fp = os.path.join(root, name)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total
