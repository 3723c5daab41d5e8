"""Pareto fronts: the cells that no other cell beats on every objective at once. Pure Python, no imports."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any


def _usable(point: Any, keys: Sequence[Hashable]) -> bool:
    for k in keys:
        try:
            v = point[k]
        except (KeyError, IndexError, TypeError):
            return False
        if v is None or isinstance(v, bool):
            return False
        try:
            if not math.isfinite(float(v)):
                return False
        except (TypeError, ValueError):
            return False
    return True


def pareto_front(
    points: Sequence[Mapping[Hashable, Any] | Sequence[Any]],
    *,
    maximize: Sequence[Hashable] = (),
    minimize: Sequence[Hashable] = (),
) -> list[int]:
    """Indices (ascending) of the points on the Pareto front.

    `points` are mappings (or sequences) indexed by the keys named in `maximize` and `minimize`, e.g.
    `pareto_front(cells, maximize=["acc"], minimize=["memory"])` or, for tuples,
    `pareto_front([(0.30, 4e9), ...], maximize=[0], minimize=[1])`.

    A point is on the front unless another point is at least as good on every objective and strictly
    better on one. Identical points do not dominate each other (both stay). Points with a missing, None,
    NaN or infinite objective take no part (never on the front, never dominating).
    """
    keys = list(maximize) + list(minimize)
    if not keys:
        raise ValueError("pareto_front needs at least one objective in maximize or minimize")
    if set(maximize) & set(minimize):
        raise ValueError("an objective cannot be both maximized and minimized")
    # turn every objective into one to maximize
    vecs: list[tuple[int, tuple[float, ...]]] = []
    for i, p in enumerate(points):
        if _usable(p, keys):
            vecs.append((i, tuple([float(p[k]) for k in maximize] + [-float(p[k]) for k in minimize])))
    front: list[int] = []
    for i, v in vecs:
        dominated = False
        for j, w in vecs:
            if j != i and all(a >= b for a, b in zip(w, v)) and any(a > b for a, b in zip(w, v)):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front
