"""No network when nothing needs it: the environment of a cell's process.

Always: `datasets`' download counter and the hub's telemetry are off (`HF_UPDATE_DOWNLOAD_COUNTS=0`,
`HF_HUB_DISABLE_TELEMETRY=1`): a cell never reports anything to anyone.
When every model and every data file of the cell is local (no `source: hub` model, no hub dataset, built-in eval
tasks with their local files, custom tasks whose data files are local), the hub libraries are also put offline
(`HF_HUB_OFFLINE=1`, `HF_DATASETS_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1`) unless the user set them: no host is looked
up, no socket opened. `harness.cell` applies this first thing, before transformers / datasets / lm_eval load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

QUIET_ENV = {"HF_UPDATE_DOWNLOAD_COUNTS": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def network_needs(cfg: Any) -> list[str]:
    """What in a cell config may need the network (empty: everything is local)."""
    from harness.evaluation.registry import builtin_task, task_data_path
    from harness.models.sources import source_for

    needs: list[str] = list(source_for(cfg.model.source).network_needs(cfg.model))  # the model source says
    for ds in cfg.train.datasets:
        if not ds.path:
            needs.append(f"hub dataset {ds.hub_id}")
    data_dir = Path(cfg.runtime.data_dir)
    for task in cfg.eval.tasks:
        builtin = builtin_task(task.name)
        if builtin is not None:
            p = task_data_path(task, data_dir)
            if p is None or not p.is_file():
                needs.append(f"eval task {task.name}: no local file (the hub copy)")
        elif not _custom_task_is_local(task.name, cfg.eval.include_path, data_dir):
            needs.append(f"eval task {task.name} (lm-eval's own data)")
    return needs


def _custom_task_is_local(name: str, include_path: str | None, data_dir: Path) -> bool:
    from harness.evaluation.custom import LOCAL_BUILDERS, include_folder, read_task_yaml, task_data_files
    from harness.preflight import yaml_task_names

    folder = include_folder(include_path, data_dir)
    if folder is None:
        return False
    yaml_path = yaml_task_names(folder).get(name)
    if yaml_path is None:
        return False
    try:
        cfg = read_task_yaml(yaml_path)
        found, missing = task_data_files(yaml_path)
    except Exception:  # unreadable: the preflight says so; here, stay online to be safe
        return False
    dp = cfg.get("dataset_path")
    return not missing and (
        dp in LOCAL_BUILDERS or (isinstance(dp, str) and Path(dp).exists()) or bool(cfg.get("custom_dataset"))
    )


def cell_env(cfg: Any) -> dict[str, str]:
    """Variables to set in a cell's process (never overriding what the user set)."""
    env = dict(QUIET_ENV)
    if not network_needs(cfg):
        env.update(OFFLINE_ENV)
    return {k: v for k, v in env.items() if not os.environ.get(k)}


def apply_cell_env(cfg: Any) -> dict[str, str]:
    """Set `cell_env(cfg)` in this process; returns what was set."""
    try:
        env = cell_env(cfg)
    except Exception:  # deciding must never fail a cell: then only the quiet variables
        env = {k: v for k, v in QUIET_ENV.items() if not os.environ.get(k)}
    os.environ.update(env)
    return env
