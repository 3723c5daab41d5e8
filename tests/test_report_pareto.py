"""Pareto fronts on hand-made points."""

from __future__ import annotations

import math

import pytest

from harness.report.pareto import pareto_front


def test_accuracy_vs_memory() -> None:
    pts = [
        {"acc": 0.30, "mem": 8.0},  # 0: most accurate -> front
        {"acc": 0.28, "mem": 2.0},  # 1: cheapest -> front
        {"acc": 0.29, "mem": 4.0},  # 2: in between, not dominated -> front
        {"acc": 0.27, "mem": 5.0},  # 3: dominated by 2 (less accurate, more memory)
        {"acc": 0.29, "mem": 6.0},  # 4: dominated by 2 (as accurate, more memory)
        {"acc": 0.25, "mem": 2.0},  # 5: dominated by 1 (same memory, less accurate)
    ]
    assert pareto_front(pts, maximize=["acc"], minimize=["mem"]) == [0, 1, 2]


def test_identical_points_do_not_dominate_each_other() -> None:
    pts = [(0.3, 1.0), (0.3, 1.0), (0.2, 2.0)]
    assert pareto_front(pts, maximize=[0], minimize=[1]) == [0, 1]


def test_missing_values_take_no_part() -> None:
    pts = [
        {"acc": 0.9, "mem": None},
        {"acc": math.nan, "mem": 1.0},
        {"acc": 0.5},
        {"acc": 0.4, "mem": 3.0},
        {"acc": 0.3, "mem": math.inf},
    ]
    # the 0.9 point has no memory: it cannot dominate the others, and is not on the front itself
    assert pareto_front(pts, maximize=["acc"], minimize=["mem"]) == [3]


def test_single_objective_is_the_argmax_with_ties() -> None:
    assert pareto_front([{"a": 1}, {"a": 3}, {"a": 3}, {"a": 2}], maximize=["a"]) == [1, 2]
    assert pareto_front([{"a": 1}, {"a": 3}, {"a": 1}], minimize=["a"]) == [0, 2]


def test_three_objectives() -> None:
    pts = [
        {"acc": 0.3, "mem": 4, "t": 10},
        {"acc": 0.3, "mem": 4, "t": 5},
        {"acc": 0.2, "mem": 1, "t": 50},
        {"acc": 0.1, "mem": 2, "t": 60},
    ]
    assert pareto_front(pts, maximize=["acc"], minimize=["mem", "t"]) == [1, 2]


def test_empty_input_and_bad_arguments() -> None:
    assert pareto_front([], maximize=["acc"], minimize=["mem"]) == []
    with pytest.raises(ValueError):
        pareto_front([{"a": 1}])
    with pytest.raises(ValueError):
        pareto_front([{"a": 1}], maximize=["a"], minimize=["a"])


def test_front_is_monotone_on_a_random_cloud() -> None:
    import random

    rng = random.Random(3)
    pts = [{"acc": rng.random(), "mem": rng.random()} for _ in range(300)]
    front = sorted((pts[i] for i in pareto_front(pts, maximize=["acc"], minimize=["mem"])), key=lambda p: p["mem"])
    # along a 2-D front, more memory must buy more accuracy
    assert all(a["acc"] < b["acc"] for a, b in zip(front, front[1:]))
    # and no point outside the front beats any front point on both axes
    for p in pts:
        assert not any(p["acc"] > f["acc"] and p["mem"] < f["mem"] for f in front)
