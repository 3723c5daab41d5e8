"""The interface every fine-tuning method implements, and the registry that finds them.

A method is one module in `harness/methods/` defining a `Method` subclass decorated with `@register`.
Class attributes describe it without importing torch (for validation and `--dry-run`); `prepare` does the
heavy work inside the cell's own process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import CellConfig


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class PreparedModel:
    """A model ready to train (or to evaluate, for `base`), as a method hands it to the training loop."""

    model: Any
    tokenizer: Any
    trainable_params: int
    total_params: int
    # Called after training with a folder; writes what this method would ship (adapter or full checkpoint).
    save: Any = None
    # Returns the model to evaluate after training (e.g. with autocast wrappers removed).
    for_eval: Any = None
    notes: dict[str, Any] = field(default_factory=dict)


class Method:
    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # preset name -> options of this kind
    default_optimizer: ClassVar[str] = "adamw"
    trains: ClassVar[bool] = True  # False for `base` (evaluation only)
    # False where an eval-mode forward between epochs would corrupt training (QLoRA's 4-bit repacking):
    # validation loss is then computed once, after the last epoch.
    eval_between_epochs: ClassVar[bool] = True

    def preflight(self, options: BaseModel) -> str | None:
        """Why this method cannot run on this machine (a skip reason), without importing torch; None if it can."""
        return None

    def prepare(self, cell: "CellConfig", options: BaseModel, device: str, dtype: Any) -> PreparedModel:
        raise NotImplementedError


class SkipCell(Exception):
    """Raised inside a cell when its method cannot run on this machine; the cell is recorded as `skipped`."""


_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register(cls: type[Method]) -> type[Method]:
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"method kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    # Importing every module of this package registers its methods: adding a method is one new file.
    global _DISCOVERED
    import importlib
    import pkgutil

    import harness.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base",) and not info.name.startswith("_"):
            importlib.import_module(f"harness.methods.{info.name}")
    _DISCOVERED = True


def methods() -> dict[str, type[Method]]:
    if not _DISCOVERED:
        _discover()
    return dict(_REGISTRY)


def get_method(kind: str) -> Method:
    return methods()[kind]()


def presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every preset name -> (kind, options). A kind's own name is always a preset with default options."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for kind, cls in methods().items():
        out[kind] = (kind, {})
        for name, opts in cls.presets.items():
            out[name] = (kind, dict(opts))
    return out
