"""Load and validate a matrix file, and expand it into cells.

Validation happens before anything runs. Every error names the file, the key path and what is allowed,
e.g. `matrices/x.yaml: methods[1].train.batch_size: must be >= 1 (got 0)`. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from harness.cells import Cell
from harness.config import (
    LEGACY_MODEL_KEYS,
    CellConfig,
    CellRuntime,
    EvalConfig,
    Matrix,
    MethodConfig,
    MethodEntry,
    TrainConfig,
)
from harness.formatting import lr_text
from harness.methods.base import UNTRAINED, entry_keys, methods, presets, trains
from harness.methods.base import trains as _trains  # `trains` is also a local list in load_matrix
from harness.paths import DATA_DIR_ENV, resolve_data_dir, resolve_data_path
from harness.yaml_strict import DuplicateKeyError, safe_load_strict


class MatrixError(ValueError):
    """A matrix file is invalid. The message lists every problem, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# ---------------------------------------------------------------------------------------------------- errors


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _field_model(arg)
        if found:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _field_model(field.annotation)
    return model


def _describe(err: dict[str, Any], root: type[BaseModel], prefix: tuple[Any, ...] = ()) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    kind, msg, value = err["type"], err["msg"], err.get("input")
    full = prefix + loc
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see the README"
        return f"{_loc_str(full)}: unknown key '{loc[-1]}'; allowed keys here: {allowed}"
    if kind == "missing":
        return f"{_loc_str(full)}: missing required key '{loc[-1]}'"
    msg = msg.removeprefix("Value error, ")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{_loc_str(full)}: {msg} (got {shown})"


def _problems(exc: ValidationError, root: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[str]:
    return [_describe(e, root, prefix) for e in exc.errors()]


# ---------------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ResolvedMethod:
    entry: MethodEntry
    config: MethodConfig
    train: TrainConfig  # matrix-level train with the method's overrides applied (variants come on top)


@dataclass(frozen=True)
class LoadedMatrix:
    path: Path
    matrix: Matrix
    methods: list[ResolvedMethod]
    data_dir: Path
    raw_text: str  # the file as written, for provenance
    warnings: list[str] = field(default_factory=list)  # what is merged or repeated without an error (printed)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _validate_train(
    base: dict[str, Any], override: dict[str, Any], where: tuple[Any, ...], problems: list[str]
) -> TrainConfig | None:
    try:
        return TrainConfig.model_validate(_merge(base, override))
    except ValidationError as exc:
        for err in exc.errors():
            top = err["loc"][0] if err["loc"] else None
            prefix = where if top in override else ("train",)
            problems.append(_describe(err, TrainConfig, prefix))
        return None


def _resolve_method(entry: MethodEntry, index: int, problems: list[str]) -> MethodConfig | None:
    """A method entry as (kind, validated options): a preset (its name, or `preset`) with overrides, or an entry
    whose key selects a kind (`peft: {...}` selects the generic PEFT method). Keys of the entry other than its own
    (name, preset, options, learning_rates, epochs, train) are options of the kind, written flat."""
    flat = dict(entry.model_extra or {})
    selected = [(key, kind) for key, kind in entry_keys().items() if key in flat]
    if len(selected) > 1:
        problems.append(f"methods[{index}]: {', '.join(k for k, _ in selected)} each select a method; give one")
        return None
    if selected:
        kind, preset_options = selected[0][1], {}
        if entry.preset:
            problems.append(f"methods[{index}]: '{selected[0][0]}' and 'preset' both select a method; give one")
            return None
    else:
        known = presets()
        preset_name = entry.preset or entry.name
        if preset_name not in known:
            key = "preset" if entry.preset else "name"
            keys = ", ".join(f"'{k}:'" for k in entry_keys())
            close = difflib.get_close_matches(preset_name, list(known), n=1)
            problems.append(
                f"methods[{index}].{key}: unknown method '{preset_name}'; allowed: "
                f"{', '.join(sorted(known))} (or set 'preset' to one of them and give your own 'name'"
                + (f", or describe it with {keys}" if keys else "")
                + ")"
                + (f"; did you mean '{close[0]}'?" if close else "")
            )
            return None
        kind, preset_options = known[preset_name]
    options_model = methods()[kind].Options
    try:
        options = options_model.model_validate({**preset_options, **flat, **entry.options})
    except ValidationError as exc:
        for err in exc.errors():
            top = err["loc"][0] if err["loc"] else None
            prefix = ("methods", index, "options") if top in entry.options else ("methods", index)
            problems.append(_describe(err, options_model, prefix))
        return None
    return MethodConfig(name=entry.name, kind=kind, options=options.model_dump(mode="json"))


def _repeated(values: list[Any]) -> list[Any]:
    return [v for i, v in enumerate(values) if v in values[:i] and v not in values[i + 1 :]]


def matrix_warnings(matrix: Matrix) -> list[str]:
    """What the matrix repeats (and so merges quietly) or nearly repeats: a learning rate, epoch count or seed listed
    twice, a task named twice, model ids that differ only by case (two rows, twice the compute if they are one
    model)."""
    out = []
    axes = [("", "learning_rates", matrix.learning_rates), ("", "epochs", matrix.epochs), ("", "seeds", matrix.seeds)]
    for i, m in enumerate(matrix.methods):
        axes += [
            (f"methods[{i}].", "learning_rates", m.learning_rates or []),
            (f"methods[{i}].", "epochs", m.epochs or []),
        ]
    for where, key, values in axes:
        for v in _repeated(list(values)):
            out.append(f"{where}{key}: {v:g} is listed more than once; its cells are the same cells and run once")
    names = [t.name for t in matrix.eval.tasks]
    for name in _repeated(names):
        out.append(f"eval.tasks: '{name}' is named more than once; each cell scores it once")
    ids = [m.id for m in matrix.models]
    for a in ids:
        twins = [b for b in ids if b != a and b.lower() == a.lower()]
        if twins and a < twins[0]:
            out.append(
                f"models: ids '{a}' and '{twins[0]}' differ only by case: two rows of the report (and the same "
                "compute twice if they name one model); give one id"
            )
    return out


def _resolve_execution(matrix: Matrix, problems: list[str]) -> None:
    """`execution:`'s options, validated by the executor's own `Options` (complete afterwards)."""
    from harness.config import _plugin_options
    from harness.executors import executor_class

    execution = matrix.execution
    try:
        cls = executor_class(execution.executor)
        execution.options = _plugin_options(f"executor '{execution.executor}'", cls.Options, execution.options)
    except (KeyError, ValueError) as exc:
        problems.append(f"execution: {exc.args[0]}")


def _resolve_tracking(matrix: Matrix, problems: list[str]) -> None:
    """`tracking:`: each tracker named, with its options validated by the tracker's own `Options`."""
    from harness.plugins import UnknownPlugin
    from harness.trackers import resolve_tracking

    try:
        matrix.tracking = resolve_tracking(matrix.tracking)
    except (UnknownPlugin, ValueError) as exc:
        problems.append(f"tracking: {exc}")


def _check_data_files(
    matrix: Matrix, trains: list[tuple[tuple[Any, ...], TrainConfig]], data_dir: Path, problems: list[str]
) -> None:
    from harness.evaluation.registry import builtin_task, task_data_path

    hint = f"(relative paths resolve against --data-dir, ${DATA_DIR_ENV} or the matrix's data_dir; now {data_dir})"
    seen: set[Path] = set()
    for where, train in trains:
        for i, ds in enumerate(train.datasets):
            if ds.path:
                p = resolve_data_path(ds.path, data_dir)
                if not p.is_file() and p not in seen:
                    seen.add(p)
                    problems.append(f"{_loc_str(where + ('datasets', i, 'path'))}: data file not found: {p} {hint}")
    for i, task in enumerate(matrix.eval.tasks):
        builtin = builtin_task(task.name)
        p = task_data_path(task, data_dir)
        if p is not None:
            if not p.is_file():
                how = f"; {builtin.how_to_obtain}" if builtin else ""
                problems.append(f"eval.tasks[{i}].data: data file for task '{task.name}' not found: {p} {hint}{how}")
    if matrix.eval.include_path:
        p = resolve_data_path(matrix.eval.include_path, data_dir)
        if not p.is_dir():
            problems.append(f"eval.include_path: task folder not found: {p}")


def load_matrix(
    path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, check_files: bool = True
) -> LoadedMatrix:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MatrixError(source, [f"cannot read the matrix file: {exc.strerror}"]) from None
    try:
        raw = safe_load_strict(text)
    except DuplicateKeyError as exc:
        raise MatrixError(source, [str(exc)]) from None
    except yaml.YAMLError as exc:
        raise MatrixError(source, [f"not valid YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(raw, dict):
        raise MatrixError(
            source, ["(top level): a matrix file must be a mapping with keys such as name, models, methods"]
        )
    try:
        matrix = Matrix.model_validate(raw)
    except ValidationError as exc:
        raise MatrixError(source, _problems(exc, Matrix)) from None

    problems: list[str] = []
    base_train = raw.get("train") or {}
    resolved: list[ResolvedMethod] = []
    names = [m.name for m in matrix.methods]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"methods: the name '{dup}' is used twice; give each entry its own 'name'")
    for dup in sorted({m.id for m in matrix.models if [x.id for x in matrix.models].count(m.id) > 1}):
        problems.append(f"models: the id '{dup}' is used twice")
    trains: list[tuple[tuple[Any, ...], TrainConfig]] = [(("train",), matrix.train)]
    for i, entry in enumerate(matrix.methods):
        config = _resolve_method(entry, i, problems)
        train = _validate_train(base_train, entry.train, ("methods", i, "train"), problems)
        if config and train:
            resolved.append(ResolvedMethod(entry, config, train))
            if "datasets" in entry.train:
                trains.append((("methods", i, "train"), train))
            for j, variant in enumerate(matrix.variants):
                vt = _validate_train(_merge(base_train, entry.train), variant.train, ("variants", j, "train"), problems)
                if vt and "datasets" in variant.train:
                    trains.append((("variants", j, "train"), vt))
    _resolve_execution(matrix, problems)
    _resolve_tracking(matrix, problems)
    if not matrix.train.datasets and any(_trains(r.config.kind) for r in resolved):
        if not any(r.train.datasets for r in resolved):
            problems.append("train.datasets: missing; a matrix that trains needs at least one dataset")
    if not problems:
        _check_rules(matrix, resolved, problems)
    ddir = resolve_data_dir(data_dir, matrix.data_dir, path)
    if check_files and not problems:
        _check_data_files(matrix, trains, ddir, problems)
    if problems:
        raise MatrixError(source, list(dict.fromkeys(problems)))
    loaded = LoadedMatrix(
        path=path, matrix=matrix, methods=resolved, data_dir=ddir, raw_text=text, warnings=matrix_warnings(matrix)
    )
    cells = expand(loaded, CellRuntime(data_dir=str(ddir), results_dir="", cache_dir=""))
    if not cells:
        raise MatrixError(source, ["include/exclude: the rules leave no cell to run (empty product)"])
    if any(_trains(r.config.kind) for r in resolved) and not any(_trains(c.config.method.kind) for c in cells):
        raise MatrixError(
            source,
            [
                "include/exclude: the rules leave no trained cell (only the untrained base rows "
                "would run); loosen the rules or remove the methods they exclude"
            ],
        )
    return loaded


def _axis_values(matrix: Matrix, resolved: list[ResolvedMethod]) -> dict[str, list[Any]]:
    """Every value a rule key can match: the axes of the trained cells, before include / exclude."""
    trained = [r for r in resolved if trains(r.config.kind)]
    return {
        "model": [m.id for m in matrix.models],
        "method": [r.config.name for r in trained],
        "variant": [v.name for v in matrix.variants],
        "epochs": sorted({e for r in trained for e in (r.entry.epochs or matrix.epochs)}),
        "learning_rate": sorted({lr for r in trained for lr in (r.entry.learning_rates or matrix.learning_rates)}),
        "seed": list(matrix.seeds),
    }


def _check_rules(matrix: Matrix, resolved: list[ResolvedMethod], problems: list[str]) -> None:
    """An include / exclude rule (or one of its values) that matches nothing is a mistake, e.g. a typo."""
    import difflib

    axes = _axis_values(matrix, resolved)
    trained = [r for r in resolved if trains(r.config.kind)]
    for kind in ("include", "exclude"):
        for i, rule in enumerate(getattr(matrix, kind)):
            bad = False
            for key, wanted in rule.items():
                for opt in wanted if isinstance(wanted, list) else [wanted]:
                    if any(_rule_matches({key: opt}, {key: v}) for v in axes[key]):
                        continue
                    bad = True
                    allowed = ", ".join(lr_text(v) if key == "learning_rate" else str(v) for v in axes[key])
                    close = (
                        difflib.get_close_matches(opt, [str(v) for v in axes[key]], n=1) if isinstance(opt, str) else []
                    )
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(
                        f"{kind}[{i}].{key}: {opt!r} matches no {key.replace('_', ' ')} of this matrix; "
                        f"allowed: {allowed or 'none'}{hint}"
                    )
            if bad:
                continue
            hit = any(
                _rule_matches(
                    rule,
                    {
                        "model": m.id,
                        "method": r.config.name,
                        "variant": v.name,
                        "epochs": e,
                        "learning_rate": lr,
                        "seed": s,
                    },
                )
                for m in matrix.models
                for r in trained
                for v in matrix.variants
                for e in (r.entry.epochs or matrix.epochs)
                for lr in (r.entry.learning_rates or matrix.learning_rates)
                for s in matrix.seeds
            )
            if not hit:
                problems.append(
                    f"{kind}[{i}]: {json.dumps(rule, default=str)} matches no cell of this matrix (each "
                    f"value exists, but not together: check the methods' own epochs / learning_rates)"
                )


# ---------------------------------------------------------------------------------------------------- cells


def config_hash(config: CellConfig) -> str:
    """sha256 of the resolved config without machine-specific paths: the same cell has the same hash anywhere."""
    payload = config.model_dump(mode="json", exclude={"runtime"})
    payload["model"] = {**LEGACY_MODEL_KEYS, **payload["model"]}  # ids from before sources owned their options
    if config.eval.include_path and config.eval.tasks:  # a custom task's YAML and data are part of the cell
        from harness.evaluation.custom import folder_digest, include_folder

        folder = include_folder(config.eval.include_path, config.runtime.data_dir)
        if folder is not None:
            payload["eval"]["include_digest"] = folder_digest(folder)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cell_slug(config: CellConfig) -> str:
    if not trains(config.method.kind):
        parts = [config.model.id, config.method.name]
    else:
        parts = [config.model.id, config.method.name]
        if config.variant != "default":
            parts.append(config.variant)
        parts += [f"e{config.epochs}", f"lr{lr_text(config.learning_rate)}", f"s{config.seed}"]
    return "_".join(parts)


def _rule_matches(rule: dict[str, Any], values: dict[str, Any]) -> bool:
    for key, wanted in rule.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        value = values[key]
        hit = False
        for opt in options:
            if isinstance(opt, str) and isinstance(value, str):
                hit = fnmatch.fnmatchcase(value, opt)
            elif isinstance(value, float) or isinstance(opt, float):
                try:
                    hit = abs(float(opt) - float(value)) <= 1e-12 * max(1.0, abs(float(value)))
                except (TypeError, ValueError):
                    hit = False
            else:
                hit = opt == value
            if hit:
                break
        if not hit:
            return False
    return True


def expand(loaded: LoadedMatrix, runtime: CellRuntime) -> list[Cell]:
    """Every cell of the matrix, base rows first for each model, in a stable order."""
    m = loaded.matrix
    if runtime.timeout_s is None and isinstance(m.timeout_minutes, (int, float)):
        runtime = runtime.model_copy(update={"timeout_s": m.timeout_minutes * 60})
    cells: list[Cell] = []
    trained = [r for r in loaded.methods if trains(r.config.kind)]
    explicit_base = [r for r in loaded.methods if not trains(r.config.kind)]
    # every model gets an untrained reference row, named as its kind (ids stay the same as before)
    base = UNTRAINED
    base_methods = explicit_base or (
        [ResolvedMethod(MethodEntry(name=base), MethodConfig(name=base, kind=base, options={}), m.train)]
        if m.eval.base_rows and m.eval.tasks
        else []
    )
    base_train_raw = m.train.model_dump(mode="json")
    for model in m.models:
        for rm in base_methods:
            cells.append(_make_cell(m, model, rm.config, "default", 0, 0.0, m.seeds[0], rm.train, m.eval, runtime))
        for rm in trained:
            epochs = rm.entry.epochs or m.epochs
            lrs = rm.entry.learning_rates or m.learning_rates
            for variant, ep, lr, seed in itertools.product(m.variants, epochs, lrs, m.seeds):
                values = {
                    "model": model.id,
                    "method": rm.config.name,
                    "variant": variant.name,
                    "epochs": ep,
                    "learning_rate": lr,
                    "seed": seed,
                }
                if m.include and not any(_rule_matches(r, values) for r in m.include):
                    continue
                if any(_rule_matches(r, values) for r in m.exclude):
                    continue
                train = rm.train
                if variant.train:
                    merged = _merge(_merge(base_train_raw, rm.entry.train), variant.train)
                    train = TrainConfig.model_validate(merged)
                cells.append(_make_cell(m, model, rm.config, variant.name, ep, lr, seed, train, m.eval, runtime))
    return cells


def _make_cell(
    m: Matrix,
    model: Any,
    method: MethodConfig,
    variant: str,
    epochs: int,
    lr: float,
    seed: int,
    train: TrainConfig,
    eval_cfg: EvalConfig,
    runtime: CellRuntime,
) -> Cell:
    config = CellConfig(
        matrix=m.name,
        model=model,
        method=method,
        variant=variant,
        epochs=epochs,
        learning_rate=lr,
        seed=seed,
        train=train,
        eval=eval_cfg,
        runtime=runtime,
    )
    digest = config_hash(config)
    return Cell(id=f"{cell_slug(config)}-{digest[:8]}", config_hash=digest, config=config)
