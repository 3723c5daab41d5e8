"""Model sources: where a base model comes from. One module each in this package (or a `$MEDBENCH_PLUGINS` file),
found by `source_for(name)`.

A source owns its options: the keys a model entry of the matrix has besides `id`, `source`, `chat_template` and
`eval_batch_size` (e.g. `hub_id` / `revision` for `hub`, `path` for `local`) are validated by the source's `Options`
model, so a source with options of its own (`mirror_root`, ...) is one file. For a model spec it knows:
- `validate(spec)`: checks across its options (raise ValueError with what is allowed);
- `resolve(spec, cache_dir)`: something `from_pretrained` loads (a hub id or a local folder), materialising once;
- `load_kwargs(spec)`: what `from_pretrained` needs besides it (a hub revision);
- `architecture(spec)`: the typed `Architecture` without loading weights (for the estimator), or None and why;
- `check_many(specs)`: availability before anything runs ({model id: why unreachable}, [other problems]);
- `network_needs(spec)`: what loading it may fetch (empty: nothing; the cell then runs offline);
- `first_build_s(spec, cache_dir, gpu)`: seconds of a first materialisation into the cache (the estimator's).
Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.plugins import Component, Registry, UnknownPlugin


class ModelSourceError(RuntimeError):
    pass


class ModelSource(Component):
    def validate(self, spec: Any) -> None:
        """Checks across the source's options (each option alone is checked by `Options`)."""

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        raise NotImplementedError

    def load_kwargs(self, spec: Any) -> dict[str, Any]:
        """Keyword arguments `from_pretrained` needs besides the resolved path (e.g. a hub revision)."""
        return {}

    def architecture(self, spec: Any) -> tuple[Any, str]:
        return None, f"model source {self.name!r} does not read architectures"

    def check(self, spec: Any) -> str | None:
        """Why this model cannot be loaded here (None: it can), quickly and with no network."""
        return None

    def check_many(self, specs: list[Any], timeout: float) -> tuple[dict[str, str], list[str]]:
        """({model id: why unreachable}, [problems]) for this source's models; by default `check` each."""
        problems = []
        for spec in specs:
            try:
                reason = self.check(spec)
            except Exception as exc:  # a source's check must report, never crash the preflight
                reason = f"model {spec.id!r}: {exc}"
            if reason:
                problems.append(f"models ({spec.id}): {reason}")
        return {}, problems

    def network_needs(self, spec: Any) -> list[str]:
        """What loading this model may fetch from a network (empty: nothing). A plug-in source that says nothing
        is assumed to fetch."""
        return [f"model {spec.id}: source {self.name!r} (a plug-in: may download)"]

    def first_build_s(self, spec: Any, cache_dir: Path, gpu: bool) -> float:
        """Seconds a cell spends materialising this model into the cache when it is not there yet (0: nothing to
        build, or already built); the estimator adds it to the first cell's start-up. No torch."""
        return 0.0


REGISTRY: Registry[ModelSource] = Registry("model source", ModelSource, "harness.models.sources")
register = REGISTRY.register


def sources() -> dict[str, type[ModelSource]]:
    return REGISTRY.entries()


def source_for(name: str) -> ModelSource:
    try:
        return REGISTRY.get(name)()
    except UnknownPlugin as exc:
        raise ValueError(str(exc)) from None


def architecture_of(spec: Any) -> tuple[Any, str]:
    """(`Architecture`, how it was found) of a model spec; (None, why) when it cannot be known offline."""
    return source_for(spec.source).architecture(spec)
