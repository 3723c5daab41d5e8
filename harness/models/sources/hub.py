"""`hub`: a model id on the Hugging Face Hub (or a mirror through HF_ENDPOINT), loaded by `from_pretrained`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.models.architectures import Architecture, read_json
from harness.models.sources import ModelSource, register

# Hub ids whose architecture is one of ours (used when no config.json is in the local hub cache).
KNOWN_HUB_IDS = {
    "meta-llama/llama-3.2-1b": "llama-3.2-1b",
    "meta-llama/llama-3.2-1b-instruct": "llama-3.2-1b",
    "unsloth/llama-3.2-1b": "llama-3.2-1b",
    "unsloth/llama-3.2-1b-instruct": "llama-3.2-1b",
    "tinyllama/tinyllama-1.1b-chat-v1.0": "tinyllama-1.1b",
    "tinyllama/tinyllama-1.1b-intermediate-step-1431k-3t": "tinyllama-1.1b",
    "huggingfacetb/smollm2-135m": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-360m": "smollm2-360m",
    "huggingfacetb/smollm2-360m-instruct": "smollm2-360m",
    "huggingfacetb/smollm2-1.7b": "smollm2-1.7b",
    "huggingfacetb/smollm2-1.7b-instruct": "smollm2-1.7b",
}


def cached_config(spec: Any) -> str | None:
    """The path of the model's config.json in the local hub cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.hub_id, "config.json", revision=spec.revision)
    except Exception:
        return None
    return cached if isinstance(cached, str) and os.path.isfile(cached) else None


HUB_TIMEOUT_S = 5.0  # one short request per hub host (and one per model once the host answered)


class HubOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hub_id: str  # e.g. meta-llama/Llama-3.2-1B
    revision: str | None = None


@register
class HubSource(ModelSource):
    name = "hub"
    Options = HubOptions

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        return spec.hub_id or ""

    def load_kwargs(self, spec: Any) -> dict[str, Any]:
        return {"revision": spec.revision} if spec.revision else {}

    def architecture(self, spec: Any) -> tuple[Architecture | None, str]:
        cached = cached_config(spec)
        if cached:
            return Architecture.from_config(read_json(cached), f"cached config.json of {spec.hub_id}")
        known = KNOWN_HUB_IDS.get((spec.hub_id or "").lower())
        if known:
            return Architecture.named(known), f"architecture of {spec.hub_id} from the named architectures ({known})"
        return None, f"hub model {spec.hub_id} not in the local cache and not a named architecture"

    def network_needs(self, spec: Any) -> list[str]:
        return [f"model {spec.id} from the hub ({spec.hub_id})"]

    def check_many(self, specs: list[Any], timeout: float = HUB_TIMEOUT_S) -> tuple[dict[str, str], list[str]]:
        """A model in the local hub cache needs no request; offline, none is made; else one request to the host,
        then one per model, in parallel: at most one timeout per host, never one per model."""
        return check_hub_models(specs, timeout)


def check_hub_models(specs: list[Any], timeout: float = HUB_TIMEOUT_S) -> tuple[dict[str, str], list[str]]:
    """({model id: why unreachable}, [other errors]) for `source: hub` models (see `HubSource.check_many`)."""
    import threading
    import time

    from harness.net import bounded, hub_endpoint, is_offline, request_status

    unreachable: dict[str, str] = {}
    errors: list[str] = []
    todo = [s for s in specs if not cached_config(s)]
    if not todo:
        return unreachable, errors
    endpoint = hub_endpoint()
    if is_offline():
        for s in todo:
            unreachable[s.id] = f"{s.hub_id}: not in the local hub cache, and HF_HUB_OFFLINE is set"
        return unreachable, errors
    try:
        bounded(lambda: request_status(endpoint + "/api/whoami-v2", timeout), timeout + 1)
    except (OSError, TimeoutError) as exc:
        for s in todo:
            unreachable[s.id] = f"{s.hub_id}: not in the local hub cache, and {endpoint} cannot be reached ({exc})"
        return unreachable, errors
    answers: dict[int, int | str] = {}

    def ask(i: int, s: Any) -> None:
        try:
            answers[i] = request_status(f"{endpoint}/{s.hub_id}/resolve/{s.revision or 'main'}/config.json", timeout)
        except OSError as exc:
            answers[i] = str(exc)

    threads = [threading.Thread(target=ask, args=(i, s), daemon=True) for i, s in enumerate(todo)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 1
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for i, s in enumerate(todo):
        status = answers.get(i, f"no answer within {timeout:.0f} s")
        if isinstance(status, str):
            unreachable[s.id] = f"{s.hub_id}: {endpoint} did not answer ({status})"
        elif status in (401, 403):
            errors.append(
                f"models ({s.id}): hub model {s.hub_id} is gated or private (HTTP {status}): accept "
                f"its license on {endpoint}/{s.hub_id} and set HF_TOKEN, or use a local copy"
            )
        elif status == 404:
            errors.append(
                f"models ({s.id}): hub model {s.hub_id}"
                + (f" at revision {s.revision}" if s.revision else "")
                + f" not found on {endpoint} (HTTP 404): check hub_id / revision"
            )
        elif status >= 500:
            unreachable[s.id] = f"{s.hub_id}: {endpoint} answered HTTP {status}"
    return unreachable, errors
