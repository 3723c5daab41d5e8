"""Executors: how the cells of a plan run. One module each in this package (or a `$MEDBENCH_PLUGINS` file),
registered with `@register` and found by name (`--executor NAME` or `execution.executor` in the matrix).

Every executor keeps the same contract (harness/executors/base.py): one child process per cell
(`python -m harness.cell`), the cell's result file written atomically into the results folder as its commit point,
a record written by the parent for a child that died without one. Adding an executor is one file: subclass
`Executor`, set `name`, implement `run`, decorate with `@register`.

    local   one cell after the other on this machine (the default)
    ray     cells as Ray tasks over every GPU of this machine or of a Ray cluster (pip install -e '.[ray]')

Nothing here imports ray or torch: an executor imports what it needs inside its methods.
"""

from __future__ import annotations

from harness.executors.base import Executor
from harness.plugins import Registry, UnknownPlugin

REGISTRY: Registry[Executor] = Registry("executor", Executor, "harness.executors")
register = REGISTRY.register
_ALIASES = {"subprocess": "local"}  # the local executor's former name


def executors() -> dict[str, type[Executor]]:
    """name -> class of every executor (this package's modules, then the plug-in folders)."""
    return REGISTRY.entries()


def executor_class(name: str) -> type[Executor]:
    """The executor registered as `name`; KeyError with the allowed names otherwise."""
    try:
        return REGISTRY.get(_ALIASES.get(name, name))
    except UnknownPlugin as exc:
        raise KeyError(str(exc)) from None
