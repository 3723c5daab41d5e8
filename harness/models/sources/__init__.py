"""Model sources: where a base model comes from. One module each in this package (or a `$MEDBENCH_PLUGINS` file),
found by `source_for(name)`.

A source knows, for a `ModelSpec` with `source: <its name>`:
- `validate(spec)`: which fields it needs (raise ValueError with what is allowed; `ModelSpec` calls it);
- `resolve(spec, cache_dir)`: something `from_pretrained` loads (a hub id or a local folder), materialising once;
- `architecture(spec)`: an HF-style config dict without loading weights (for the estimator), or None and why;
- `check(spec)`: a quick availability check before anything runs (None when usable, else the reason).
Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.plugins import Registry

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import ModelSpec


class ModelSourceError(RuntimeError):
    pass


class ModelSource:
    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ()  # fields of ModelSpec this source needs

    def validate(self, spec: "ModelSpec") -> None:
        for key in self.required:
            if getattr(spec, key) is None:
                raise ValueError(f"source '{self.name}' needs the key '{key}'")
        if spec.config_overrides and not self.accepts_overrides:
            raise ValueError(f"'config_overrides' is not allowed for source '{self.name}'")

    accepts_overrides: ClassVar[bool] = False

    def resolve(self, spec: "ModelSpec", cache_dir: Path) -> Path | str:
        raise NotImplementedError

    def architecture(self, spec: "ModelSpec") -> tuple[dict[str, Any] | None, str]:
        return None, f"model source {self.name!r} does not read architectures"

    def check(self, spec: "ModelSpec") -> str | None:
        return None

    def first_build_s(self, spec: "ModelSpec", cache_dir: Path, gpu: bool) -> float:
        """Seconds a cell spends materialising this model into the cache when it is not there yet (0: nothing to
        build, or already built); the estimator adds it to the first cell's start-up. No torch."""
        return 0.0


REGISTRY: Registry[ModelSource] = Registry("model source", "name", "harness.models.sources")
register = REGISTRY.register


def sources() -> dict[str, type[ModelSource]]:
    return REGISTRY.entries()


def source_for(name: str) -> ModelSource:
    known = sources()
    if name not in known:
        raise ValueError(f"unknown model source {name!r}; allowed: {', '.join(sorted(known))}")
    return known[name]()


def architecture_of(spec: "ModelSpec") -> tuple[dict[str, Any] | None, str]:
    """(HF-style config dict, how it was found) of a model spec; (None, why) when it cannot be known offline."""
    return source_for(spec.source).architecture(spec)
