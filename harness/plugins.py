"""Registries find their entries by importing modules: every module of a package, plus the researcher's own files.

`$MEDBENCH_PLUGINS` (folders separated by ':') holds plug-ins outside the source tree: every `*.py` file there is
imported once, so a file that registers a method (`@harness.methods.register`), a model source, or a meter extends
the harness with no fork; a `tasks/` folder there adds evaluation task folders. Cell processes inherit the variable,
so a plug-in is seen by the plan and by every cell alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")

PLUGINS_ENV = "MEDBENCH_PLUGINS"
_loaded: set[Path] = set()


def plugin_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p.strip()]


def import_package_modules(package: ModuleType, skip: tuple[str, ...] = ()) -> None:
    """Import every module (and sub-package) of `package` whose name does not start with '_'."""
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def load_plugins() -> None:
    """Import every `*.py` file of the plug-in folders once (in name order, so registration order is stable)."""
    for folder in plugin_dirs():
        if not folder.is_dir():
            raise FileNotFoundError(f"${PLUGINS_ENV}: {folder} is not a folder")
        for path in sorted(folder.glob("*.py")):
            path = path.resolve()
            if path in _loaded:
                continue
            _loaded.add(path)
            name = f"medbench_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"{path}: cannot be imported as a plug-in")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)


def plugin_task_dirs() -> list[Path]:
    return [d / "tasks" for d in plugin_dirs() if (d / "tasks").is_dir()]


class Registry(Generic[T]):
    """One generic registry (methods, model sources, executors): classes register with `@registry.register`, keyed by
    their `key` attribute; the first lookup imports every module of `package` and every plug-in file, so adding an
    entry is adding a file."""

    def __init__(self, what: str, key: str, package: str, skip: tuple[str, ...] = ()):
        self.what, self.key, self.package, self.skip = what, key, package, skip
        self._entries: dict[str, type[T]] = {}
        self._scanned = False

    def register(self, cls: type[T]) -> type[T]:
        name = getattr(cls, self.key)
        if name in self._entries and self._entries[name] is not cls:
            raise ValueError(f"{self.what} {name!r} is registered twice ({self._entries[name]} and {cls})")
        self._entries[name] = cls
        return cls

    def entries(self) -> dict[str, type[T]]:
        """name -> class of every entry (the package's modules, then the plug-in folders)."""
        if not self._scanned:
            self._scanned = True  # set first: the modules imported here look entries up too
            try:
                import_package_modules(importlib.import_module(self.package), skip=self.skip)
                load_plugins()
            except BaseException:
                self._scanned = False
                raise
        return dict(self._entries)
