"""Built-in evaluation tasks: one folder each, found by scanning (light: no lm_eval import).

A built-in task is a folder `harness/evaluation/tasks/<name>/` (or `<plug-in folder>/tasks/<name>/`, see
`harness.plugins`) holding:
- the lm-eval task YAML, whose prompt, choices, target and metrics are copied from lm-eval's own built-in task
  (`lm_eval_builtin`), and the `utils.py` its `!function` entries name;
- `task.py`, which defines `TASK = BuiltinTask(...)`: the local-file loader (validating and normalising the original
  file), the Hub mapping used only when online and no local file is given, its label and chance levels.
Adding a built-in task is adding a folder: the matrix validation, the evaluation runner and the report's labels and
chance lines all read this registry.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.plugins import Registry

TASKS_DIR = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class BuiltinTask:
    name: str  # the name used in matrix files
    label: str  # how the report names it
    yaml_file: str  # the lm-eval task YAML in the task's folder
    lm_eval_builtin: str  # the lm-eval built-in task whose prompt / choices / target / metrics we copy
    default_data: str  # relative to the data dir
    how_to_obtain: str
    load: Callable[[Path], list[dict[str, Any]]]  # validated, normalised records of a local file, each with `id`
    display_order: int = 50  # the report shows tasks in this order
    hub_dataset: str | None = None  # used only when online and no local file is given or found
    hub_name: str | None = None
    hub_split: str = "test"
    # one Hub record (and its index) in the local schema: the Hub copy's lm-eval `process_docs` maps it (`from_hub`)
    record_from_hub: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    # Few-shot examples: a local file of the same format (relative to the data dir), the same split lm-eval's
    # built-in task draws its few-shot examples from. None: there is none; few-shot examples then come from the
    # evaluated split itself, never the item being evaluated (lm-eval's sampler excludes it).
    fewshot_data: str | None = None
    chance: float | None = None  # accuracy of uniform guessing
    majority: float | None = None  # accuracy of always giving the most frequent answer, where it differs
    # The task's own prompt and answer for a loaded record (the same functions its lm-eval YAML uses): what
    # `format: eval_task` trains on and what the contamination check compares (harness/evaluation/contamination.py)
    doc_to_text: Callable[[dict[str, Any]], str] | None = None
    answer: Callable[[dict[str, Any]], str] | None = None  # the correct choice, as lm-eval scores it
    question: Callable[[dict[str, Any]], str] | None = None  # the question alone (exact-question matches)
    choices: tuple[str, ...] = ()  # the answer labels (lm-eval's doc_to_choice), for trivial baselines
    target_delimiter: str = " "  # lm-eval's default between the prompt and the answer
    folder: Path = field(default=TASKS_DIR)  # set by the registry: the task's folder

    @property
    def yaml_path(self) -> Path:
        return self.folder / self.yaml_file

    def from_hub(self, dataset: Any) -> Any:
        """`process_docs` for the Hub copy (used only when online and no local file is given)."""
        return dataset.map(self.record_from_hub, with_indices=True, remove_columns=dataset.column_names)

    @property
    def lm_eval_task(self) -> str:
        """The task's name inside lm-eval (the YAML's `task:` key)."""
        import yaml

        class _Loader(yaml.SafeLoader):  # lm-eval's YAML uses a `!function` tag; only `task:` is read here
            pass

        _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
        return str(yaml.load(self.yaml_path.read_text(), Loader=_Loader)["task"])


def folder_module(task_py: str | Path, name: str) -> Any:
    """A module of a task's folder (e.g. its `utils.py`, which lm-eval's `!function utils.x` names), imported from
    that folder under a name of its own."""
    folder = Path(task_py).resolve().parent
    key = f"medbench_task_{folder.name}_{name}_{abs(hash(str(folder))) % 10**8}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, folder / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"{folder / (name + '.py')}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


REGISTRY: Registry[BuiltinTask] = Registry("evaluation task", BuiltinTask, "harness.evaluation", folders="tasks")


def builtin_tasks() -> dict[str, BuiltinTask]:
    """Every built-in task by name (this package's task folders and the plug-in folders' `tasks/`), in display order."""
    for task in REGISTRY.entries().values():
        if not (task.folder / task.yaml_file).is_file():
            raise FileNotFoundError(
                f"{task.folder}: the task YAML {task.yaml_file!r} named by task.py is not in the folder"
            )
    return dict(sorted(REGISTRY.entries().items(), key=lambda kv: (kv[1].display_order, kv[0])))


def builtin_task(name: str) -> BuiltinTask | None:
    return builtin_tasks().get(name)


def task_data_path(task: Any, data_dir: Path) -> Path | None:
    """Where a task spec's (`eval.tasks[]`) local data is: its `data`, else a built-in task's default file (both
    relative to the data dir unless absolute); None for tasks whose YAML names their own data."""
    from harness.paths import resolve_data_path

    builtin = builtin_task(task.name)
    rel = task.data or (builtin.default_data if builtin else None)
    return resolve_data_path(rel, data_dir) if rel else None


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_TASKS":  # the registry as a mapping, scanned on first use
        return builtin_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
