"""One contract for every plug-in, and the one registry mechanism that finds them (as lm-eval's `Registry`: a name
per entry, a base-class check, entry-point plug-ins).

A plug-in is a class of one kind (method, model source, executor, meter, optimizer, scheduler, tracker) or, for an
evaluation task, a task folder. It carries everything about itself:
- `name`: what the matrix (and the command line) call it;
- `Options`: a pydantic model, its section of the matrix, validated before anything runs (unknown keys are errors
  that name the key and what is allowed);
- `cli_flags`: the command-line flags it adds, each overriding one of its options (e.g. the Ray executor's);
- its hooks: the methods of its kind's base class (a method's `prepare` and `param_groups`, a meter's `__enter__` /
  `reading`, an executor's `run`, ...).
Core modules (config, cli, training, cell) name no individual plug-in: they ask the registry.

Discovery, on the first lookup of a kind: every module of its package; every `*.py` file of each `$MEDBENCH_PLUGINS`
folder (folders separated by ':'; a `tasks/` folder there adds task folders); and installed distributions' entry
points in the group `medbench.plugins` (each names a module to import). Cell processes inherit the variable, so the
plan and every cell see the same plug-ins. An entry from a plug-in folder is visible only while its folder is in
`$MEDBENCH_PLUGINS`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

PLUGINS_ENV = "MEDBENCH_PLUGINS"
ENTRY_POINT_GROUP = "medbench.plugins"
_loaded: set[Path] = set()
_loading: list[Path | None] = [None]  # the plug-in folder whose file is being imported (an entry's origin)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Flag:
    """A command-line flag a plug-in adds: `--<flag>` sets its option `option` (flags win over the matrix)."""

    flag: str
    option: str
    help: str
    type: Callable[[str], Any] | None = str  # None: a switch (store_true)
    metavar: str | None = None


class Component:
    """What every plug-in class has (see the module doc); a kind's base class adds its hooks."""

    name: ClassVar[str]
    label: ClassVar[str] = ""  # how reports name it (default: the name)
    Options: ClassVar[type[BaseModel]] = NoOptions
    cli_flags: ClassVar[tuple[Flag, ...]] = ()


class UnknownPlugin(KeyError):
    """A name no registered entry of the kind has; the message names the allowed ones and the closest."""

    def __str__(self) -> str:
        return str(self.args[0])


def plugin_dirs() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p.strip()]


def import_package_modules(package: ModuleType, skip: tuple[str, ...] = ()) -> None:
    """Import every module (and sub-package) of `package` whose name does not start with '_'."""
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


@contextlib.contextmanager
def _origin(folder: Path | None) -> Iterator[None]:
    _loading.append(folder)
    try:
        yield
    finally:
        _loading.pop()


def import_file(path: Path, name: str) -> ModuleType:
    """Import one file as module `name` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be imported as a plug-in")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugins() -> None:
    """Import every `*.py` file of the plug-in folders once (in name order, so registration order is stable), and
    every `medbench.plugins` entry point once."""
    for folder in plugin_dirs():
        if not folder.is_dir():
            raise FileNotFoundError(f"${PLUGINS_ENV}: {folder} is not a folder")
        for path in sorted(folder.glob("*.py")):
            path = path.resolve()
            if path not in _loaded:
                _loaded.add(path)
                with _origin(folder):
                    import_file(path, f"medbench_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}")
    _load_entry_points()


_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def plugin_task_dirs() -> list[Path]:
    return [d / "tasks" for d in plugin_dirs() if (d / "tasks").is_dir()]


class Registry(Generic[T]):
    """The entries of one kind, by name: classes (or, with `folders`, task objects) registered with `register`.

    `base`: what every entry must be (a subclass of it, or with `folders` an instance): anything else is a TypeError
    naming it. `package`: the package whose modules hold the built-in entries. `folders`: the entries are folders of
    that package's sub-folder of this name (and of `<plug-in folder>/<folders>`), each with a `task.py` defining
    `TASK`. `key`: the attribute naming an entry."""

    def __init__(
        self,
        kind: str,
        base: type,
        package: str,
        *,
        key: str = "name",
        skip: tuple[str, ...] = (),
        folders: str | None = None,
    ):
        self.kind, self.base, self.package, self.key, self.skip, self.folders = kind, base, package, key, skip, folders
        self._entries: dict[str, T] = {}
        self._origin: dict[str, Path | None] = {}
        self._scanned: tuple[Path, ...] | None = None
        self._visible: tuple[tuple[Path, ...], dict[str, T]] | None = None  # entries() for these plug-in folders

    def register(self, entry: T) -> T:
        ok = isinstance(entry, self.base) if self.folders else isinstance(entry, type) and issubclass(entry, self.base)
        if not ok:
            raise TypeError(f"{entry!r} cannot be a {self.kind}: it must be a {self.base.__name__}")
        name = getattr(entry, self.key)
        old = self._entries.get(name)
        if old is not None and old is not entry and self._origin.get(name) in (None, *plugin_dirs()):
            # a visible entry of this name exists (built-in or from a current plug-in folder): never replaced quietly
            raise ValueError(f"{self.kind} {name!r} is defined twice ({old!r} and {entry!r})")
        self._entries[name] = entry
        self._origin[name] = _loading[-1]
        self._visible = None
        return entry

    def _scan(self) -> None:
        dirs = tuple(plugin_dirs())
        if self._scanned == dirs:
            return
        first = self._scanned is None
        self._scanned = dirs  # set first: the modules imported here look entries up too
        try:
            if first:
                package = importlib.import_module(self.package)
                if self.folders:
                    self._load_folders(Path(package.__path__[0]) / self.folders, None)
                else:
                    import_package_modules(package, skip=self.skip)
            load_plugins()
            if self.folders:
                for d in dirs:
                    if (d / self.folders).is_dir():
                        self._load_folders(d / self.folders, d)
        except BaseException:
            self._scanned = None
            raise

    def _load_folders(self, root: Path, origin: Path | None) -> None:
        for folder in sorted(p for p in root.iterdir() if (p / "task.py").is_file()):
            name = f"medbench_{self.folders}_{folder.name}_{abs(hash(str(folder.resolve()))) % 10**8}"
            with _origin(origin):
                module = import_file(folder / "task.py", name)
                entry = getattr(module, "TASK", None)
                if entry is None:
                    raise TypeError(f"{folder / 'task.py'} must define TASK = {self.base.__name__}(...)")
                if getattr(entry, "folder", None) != folder:
                    object.__setattr__(entry, "folder", folder)
                if self._entries.get(getattr(entry, self.key)) is not entry:
                    self.register(entry)

    def entries(self) -> dict[str, T]:
        """name -> entry, for every entry visible now (built-in, entry points, the current plug-in folders)."""
        self._scan()
        dirs = tuple(plugin_dirs())
        if self._visible is None or self._visible[0] != dirs:
            shown = {n: e for n, e in self._entries.items() if self._origin.get(n) is None or self._origin[n] in dirs}
            self._visible = (dirs, shown)
        return self._visible[1]

    def get(self, name: str) -> T:
        found = self.entries()
        if name not in found:
            close = difflib.get_close_matches(str(name), list(found), n=1)
            raise UnknownPlugin(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(found))}"
                + (f"; did you mean {close[0]!r}?" if close else "")
            )
        return found[name]

    def find(self, name: str) -> T | None:
        """The entry named `name`, or None (e.g. a kind in old results whose plug-in is not installed here)."""
        return self.entries().get(name)


def ref_parts(ref: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, options) of a plug-in named in the matrix: `adamw_8bit` or `{name: adamw, betas: [0.9, 0.95]}`."""
    if isinstance(ref, str):
        return ref, {}
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise ValueError(f"expected a name or a mapping with 'name' and its options, got {ref!r}")
    return ref["name"], {k: v for k, v in ref.items() if k != "name"}
