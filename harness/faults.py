"""Faults outside the cells, turned into one clear line and an exit code (no traceback).

- a full or read-only results / cache / report location: `error: cannot write PATH: ...`, exit 2;
- Ctrl-C: `interrupted; N cells finished (kept); rerun the same command to resume`, exit 130.
A result file is written atomically and is the commit point of its cell, so neither leaves anything half-written.
"""

from __future__ import annotations

import errno
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def disk_error_message(exc: OSError) -> str:
    where = exc.filename or "the results / cache / report location"
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EFBIG: "file too large",
    }.get(exc.errno or 0, exc.strerror)
    return (
        f"error: cannot write {where}: {why}. Finished cells are kept; free space or choose another place "
        f"(--results DIR, --cache-dir DIR, --report PATH) and rerun the same command to resume"
    )


def interrupted_message(finished: int | None = None) -> str:
    n = "" if finished is None else f" {finished} cell{'s' if finished != 1 else ''} finished;"
    return f"interrupted;{n} finished cells kept; rerun the same command to resume"


def finished_cells(planned: list[Any], results_dir: Path) -> int:
    """Cells of the plan with a complete result on disk (any status), after an interruption."""
    from harness.results import read_result, result_path

    n = 0
    for p in planned:
        try:
            r = read_result(result_path(Path(results_dir), p.cell.id))
        except Exception:  # an unreadable file is not a finished cell
            r = None
        n += r is not None and r.config_hash == p.cell.config_hash
    return n


def guarded(fn: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """fn(...) with Ctrl-C and disk faults as one line on stderr and their exit codes."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"\n{interrupted_message()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        print(disk_error_message(exc), file=sys.stderr)
        return EXIT_BAD_INPUT


def positive_minutes(text: str) -> float:
    """argparse type of `--timeout-minutes`: a finite number > 0."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of minutes > 0")
    return value
