"""How numbers are written for people: one module for the CLI's plan and the HTML report, so that the same byte or
second count reads the same everywhere. Every function accepts None (and pandas' NaN / NA) and writes "–" for it."""

from __future__ import annotations

from typing import Any

MISSING = "–"


def value(x: Any) -> Any:
    """A plain Python value: NaN / NA become None (pandas is imported only when it is already loaded)."""
    if x is None:
        return None
    if isinstance(x, float):
        return None if x != x else x
    import sys

    pd = sys.modules.get("pandas")
    if pd is not None:
        try:
            if pd.isna(x):
                return None
        except (TypeError, ValueError):
            pass
    return x


def fmt_bytes(b: Any) -> str:
    b = value(b)
    if b is None:
        return MISSING
    b = float(b)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= size:
            return f"{b / size:.2f} {unit}" if unit in ("GiB", "TiB") else f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_seconds(s: Any) -> str:
    s = value(s)
    if s is None:
        return MISSING
    s = float(s)
    if s < 100:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round((s % 3600) / 60)):02d} min"


def fmt_pct(x: Any, digits: int = 1) -> str:
    x = value(x)
    return MISSING if x is None else f"{100 * float(x):.{digits}f} %"


def fmt_pts(x: Any, digits: int = 1) -> str:
    """A difference of proportions in percentage points, signed, with a true minus sign."""
    x = value(x)
    if x is None:
        return MISSING
    return f"{100 * float(x):+.{digits}f}".replace("-", "−")


def fmt_p(p: Any) -> str:
    p = value(p)
    if p is None:
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def p_text(p: Any) -> str:
    """ "p = 0.013" or "p < 0.001" """
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_count(n: Any) -> str:
    n = value(n)
    if n is None:
        return MISSING
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit != "k" else f"{n / size:.1f} k"
    return f"{n:.0f}"


def fmt_num(x: Any, digits: int = 0) -> str:
    x = value(x)
    return MISSING if x is None else f"{float(x):,.{digits}f}"


def fmt_sig(x: Any, digits: int = 3) -> str:
    """A positive quantity of any size with `digits` significant digits (e.g. joules, tokens per joule)."""
    x = value(x)
    return MISSING if x is None else f"{float(x):,.{digits}g}"


def fmt_signed(x: Any, digits: int = 3) -> str:
    """A signed difference with a true minus sign (e.g. a change of cross-entropy in nats)."""
    x = value(x)
    return MISSING if x is None else f"{float(x):+.{digits}f}".replace("-", "−")


def lr_text(lr: Any) -> str:
    """A learning rate as cell ids and labels write it: 2e-4, 1e-3 (no leading zero in the exponent)."""
    lr = value(lr)
    if lr is None or lr == 0:
        return MISSING
    return f"{float(lr):.0e}".replace("e-0", "e-").replace("e+0", "e")
