"""`local`: a folder with config.json and weights, as `save_pretrained` writes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.models.architectures import Architecture, read_json
from harness.models.sources import ModelSource, ModelSourceError, register


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # the folder


@register
class LocalSource(ModelSource):
    name = "local"
    Options = LocalOptions

    def folder(self, spec: Any) -> Path:
        return Path(os.path.expanduser(spec.path or ""))

    def resolve(self, spec: Any, cache_dir: Path) -> Path | str:
        folder = self.folder(spec)
        if not (folder / "config.json").is_file():
            raise ModelSourceError(f"model {spec.id!r}: {folder} is not a model folder (no config.json)")
        return folder

    def architecture(self, spec: Any) -> tuple[Architecture | None, str]:
        cfg_path = self.folder(spec) / "config.json"
        if cfg_path.is_file():
            return Architecture.from_config(read_json(str(cfg_path)), f"config.json of {spec.path}")
        return None, f"no config.json in {spec.path}: architecture unknown"

    def check(self, spec: Any) -> str | None:
        folder = self.folder(spec)
        if not folder.is_dir():
            return f"model {spec.id!r}: folder not found: {folder}"
        if not (folder / "config.json").is_file():
            return f"model {spec.id!r}: {folder} is not a model folder (no config.json)"
        return None

    def network_needs(self, spec: Any) -> list[str]:
        return []
