"""Plain typed configuration that crosses module boundaries.

A matrix file is validated into these pydantic models (unknown keys are errors), and each cell of the
expanded matrix is one fully resolved `CellConfig`. Nothing here imports torch.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from harness.attention import AttentionName

MAX_SEQ_LENGTH = 1 << 20  # tokens; no model of this benchmark has more positions
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan / inf are never a meant value
    # Keys added after cell ids existed: left out of the dump (and so of the cell's id) while at their default, so
    # that adding a key changes no existing cell's id; a value set explicitly is always part of it.
    LATE_KEYS: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_late_defaults(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in self.LATE_KEYS:
            field = type(self).model_fields[key]
            if key in out and getattr(self, key) == field.get_default(call_default_factory=True):
                out.pop(key)
        return out


def _slug(value: str, what: str) -> str:
    if not SLUG.match(value):
        raise ValueError(
            f"{what} {value!r} must be letters, digits, '.', '_' or '-' (and start with a letter or digit)"
        )
    return value


# ---------------------------------------------------------------------------------------------------- models


class ModelSpec(Strict):
    """One base model of the matrix (one row of the report): its id, its source, and the source's own options,
    written flat beside them (e.g. `{id: x, source: local, path: /models/x}`) and validated by the source's
    `Options` (harness/models/sources/). `spec.<option>` reads an option."""

    id: str
    source: str  # a registered model source (harness/models/sources/): hub, local, gguf, synthetic, ...
    chat_template: str | None = None  # replaces the tokenizer's chat template (jinja text)
    eval_batch_size: int = Field(8, ge=1)  # fixed per model across the matrix (lm-eval numbers depend on it)
    options: dict[str, Any] = Field(default_factory=dict)  # the source's options (flat in the matrix)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        return _flat_options(data, {"id", "source", "chat_template", "eval_batch_size", "options"})

    @field_validator("id")
    @classmethod
    def _id_slug(cls, v: str) -> str:
        return _slug(v, "model id")

    @model_validator(mode="after")
    def _source_options(self) -> "ModelSpec":
        from harness.models.sources import source_for

        source = source_for(self.source)
        # keys every built-in source once had (one flat spec), null or empty when unused: not the source's options
        given = {k: v for k, v in self.options.items() if not (k in LEGACY_MODEL_KEYS and v in (None, {}))}
        self.options = _plugin_options(f"source '{self.source}'", source.Options, given)
        source.validate(self)
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        options = out.pop("options", {})
        return {"id": out.pop("id"), "source": out.pop("source"), **options, **out}

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options") or {}
        if name in options:
            return options[name]
        return super().__getattr__(name)  # type: ignore[misc]


# Identity of configs from before sources owned their options: these keys, null or empty when unused, were part of
# every model spec; `matrix.config_hash` keeps them in a cell's identity so that those cells keep their ids.
LEGACY_MODEL_KEYS: dict[str, Any] = {
    "hub_id": None,
    "revision": None,
    "path": None,
    "gguf_file": None,
    "package": None,
    "architecture": None,
    "config_overrides": {},
    "tokenizer": None,
}


def _flat_options(data: Any, own: set[str]) -> Any:
    """A plug-in's options written flat beside the keys of the entry itself, gathered under `options`."""
    if not isinstance(data, dict):
        return data
    options = {**(data.get("options") or {}), **{k: v for k, v in data.items() if k not in own}}
    return {**{k: v for k, v in data.items() if k in own}, "options": options}


def _plugin_options(owner: str, model: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """`given` validated by a plug-in's `Options` (complete, JSON): a ValueError naming each bad key otherwise."""
    from pydantic import ValidationError

    try:
        return model.model_validate(given).model_dump(mode="json")
    except ValidationError as exc:
        raise ValueError(_options_problem(owner, model, exc)) from None


def _options_problem(owner: str, model: type[BaseModel], exc: Any) -> str:
    """One line per problem of a plug-in's options, naming the key and what is allowed."""
    allowed = ", ".join(model.model_fields) or "none"
    lines = []
    for e in exc.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(options)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' for {owner}; allowed keys: {allowed}")
        elif e["type"] == "missing":
            lines.append(f"{owner} needs the key '{key}'")
        else:
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')} ({owner})")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------------- data

DataFormat = Literal["instruction", "messages", "qa", "multiple_choice", "pubmedqa", "eval_task"]


class DatasetSpec(Strict):
    """One training data source. `path` is relative to the data dir unless absolute."""

    path: str | None = None
    hub_id: str | None = None  # a hub dataset id, used only when online and no path is given
    hub_config: str | None = None
    split: str = "train"
    format: DataFormat
    fields: dict[str, str] = Field(default_factory=dict)  # canonical name -> field name in the file
    limit: int | None = Field(None, ge=1)  # keep the first N records of this file (before cleaning)
    # format eval_task: a built-in evaluation task whose own prompt -> answer the records become (its file format,
    # its lm-eval prompt, its label), as plain text: exactly what that task scores
    task: str | None = None

    LATE_KEYS = ("task",)

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if not self.path and not self.hub_id:
            raise ValueError("a dataset needs 'path' (a local file) or 'hub_id'")
        if self.format == "eval_task":
            from harness.evaluation.registry import builtin_tasks

            known = builtin_tasks()
            if self.task not in known:
                raise ValueError(
                    f"format 'eval_task' needs 'task': a built-in evaluation task ({', '.join(known)}), "
                    f"got {self.task!r}"
                )
            if not self.path:
                raise ValueError("format 'eval_task' reads a local file in the task's own format: give 'path'")
        elif self.task is not None:
            raise ValueError("'task' is only for format 'eval_task'")
        return self


class CleaningConfig(Strict):
    """Every step is on by default; counts of what each step removed go into the cell's result."""

    dedup_exact: bool = True
    dedup_normalized: bool = True  # case / whitespace / punctuation-insensitive duplicates
    scrub_pii: bool = True
    min_response_chars: int = Field(2, ge=0)
    drop_overlength: bool = True  # examples longer than max_seq_length after formatting


PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
ComponentRef = str | dict[str, Any]  # a plug-in by name, or {name: ..., <its options>}


def component_ref(kind: str, ref: Any) -> ComponentRef:
    """A plug-in named in the matrix (an optimizer, a scheduler), validated by its registry and its `Options`:
    the name alone when no option is set (the form older configs were written in, so their ids are unchanged)."""
    from importlib import import_module

    from harness.plugins import ref_parts

    name, given = ref_parts(ref)
    registry = import_module(REF_KINDS[kind]).REGISTRY
    cls = registry.get(name)
    options = _plugin_options(f"{registry.kind} '{name}'", cls.Options, given)
    return {"name": name, **options} if given else name


REF_KINDS = {"optimizer": "harness.optimizers", "scheduler": "harness.schedulers"}


class TrainConfig(Strict):
    datasets: list[DatasetSpec] = Field(default_factory=list)
    max_examples: int | None = Field(None, ge=1)  # after cleaning and splitting: the same examples for every cell
    token_budget: int | None = Field(None, ge=1)  # stop an epoch after this many real (non-padding) tokens
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    max_seq_length: int = Field(512, ge=8, le=MAX_SEQ_LENGTH)  # and at most the model's positions (preflight)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    packing: bool = True
    pad_to_max_length: bool = False  # without packing: pad every sequence to max_seq_length (as many write-ups do)
    system_prompt: str | None = None
    scheduler: ComponentRef = "cosine"  # harness/schedulers/: cosine, linear, constant, or a plug-in
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    optimizer: ComponentRef | None = None  # harness/optimizers/ (or a plug-in); None: the method's default
    precision: PrecisionName = "auto"  # auto: bf16 on a CUDA device that supports it, else fp32
    gradient_checkpointing: bool = False
    # auto: packed rows without a dense mask where this machine can (flash-attn varlen, flex attention), padded rows
    # with SDPA; what ran is recorded per cell (harness/attention.py)
    attn_implementation: AttentionName = "auto"
    torch_compile: bool = False
    liger_kernel: bool = False
    max_steps: int | None = Field(None, ge=1)  # optimizer steps per epoch at most (quick runs)
    # measure: save, record the size, delete (adapters are always kept: small, and `medbench export` needs them);
    # keep: keep the full checkpoint too (what `medbench export` merges/converts for full fine-tuning); none: no save
    save: Literal["measure", "keep", "none"] = "measure"
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)

    @field_validator("optimizer", "scheduler", mode="before")
    @classmethod
    def _plugin(cls, v: Any, info: Any) -> Any:
        from harness.plugins import UnknownPlugin

        if v is None:
            return v
        try:
            return component_ref(info.field_name, v)
        except UnknownPlugin as exc:
            raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------- eval


class TaskSpec(Strict):
    name: str
    data: str | None = None  # local file for built-in tasks (relative to the data dir)
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1)


class GenerationConfig(Strict):
    """ROUGE-L / BLEU of greedy answers on a held-out slice of the training data."""

    n: int = Field(0, ge=0)  # 0 = off
    max_new_tokens: int = Field(128, ge=1)


class ForgettingConfig(Strict):
    """Forgetting (harness/evaluation/forgetting.py): mean per-token cross-entropy on general text, base vs trained."""

    path: str | None = None  # a local UTF-8 text file (relative to the data dir), used when given
    hub_id: str | None = None  # a hub dataset, used only when online and no path is given
    hub_config: str | None = None
    hub_split: str = "train"
    text_field: str = "text"
    max_tokens: int = Field(4096, ge=16)  # tokens of the sample scored (the same sample for every cell)
    seq_len: int = Field(256, ge=8)  # window length the sample is cut into

    @model_validator(mode="after")
    def _one_source(self) -> "ForgettingConfig":
        if not self.path and not self.hub_id:
            raise ValueError("eval.forgetting needs 'path' (a local text file) or 'hub_id'")
        return self


class EvalConfig(Strict):
    tasks: list[TaskSpec] = Field(default_factory=list)
    include_path: str | None = None  # a folder of lm-eval task YAML files
    num_fewshot: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)
    # Which items `limit` keeps from a built-in task's file. `spread`: N items evenly spaced through the file
    # (deterministic; the official PubMedQA test file is sorted by label, so its first 100 items are all "yes").
    # `first`: the first N, exactly as lm-eval's --limit (for parity checks). Other lm-eval tasks take the first N.
    limit_strategy: Literal["spread", "first"] = "spread"
    base_rows: bool = True  # add an untrained `base` row per model
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    forgetting: ForgettingConfig | None = None  # off by default
    # evaluated items found in the cell's training data (harness/evaluation/contamination.py): flag them in the
    # record and report; drop them (the cell and its base row are compared on the clean items); or refuse the cell
    decontaminate: Literal["flag", "drop", "error"] = "flag"

    LATE_KEYS = ("forgetting", "decontaminate")

    @field_validator("tasks", mode="before")
    @classmethod
    def _names_to_specs(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v


# ---------------------------------------------------------------------------------------------------- report


class Thresholds(Strict):
    max_accuracy_drop: float = Field(0.02, ge=0.0)  # absolute, e.g. 0.02 = 2 points
    max_memory_growth: float = Field(0.10, ge=0.0)  # relative, 0.10 = +10 %
    max_time_growth: float = Field(0.50, ge=0.0)  # relative; CPU timings are noisy
    max_forgetting_increase: float | None = Field(None, ge=0.0)  # nats/token over the baseline's forgetting; None: off


class ReportConfig(Strict):
    title: str | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    # planning (harness/evaluation/power.py): the difference that matters, and the discordance assumed before the
    # base row's comparisons measure it
    target_difference: float = Field(0.03, gt=0.0, lt=1.0)
    assumed_discordance: float = Field(0.20, gt=0.0, le=1.0)
    # cost (harness/report/cost.py): device time and energy into money
    price_per_device_hour: float | None = Field(None, ge=0.0)
    price_per_kwh: float | None = Field(None, ge=0.0)
    currency: str = "USD"
    plan_device: str | None = None  # --dry-run predicts time for this GPU (e.g. "NVIDIA H100 80GB HBM3") when no
    # measured cell of this matrix calibrates the estimator
    # results folders (relative to the matrix file) whose measured cells on this kind of device calibrate the plan's
    # predictions and time limits, e.g. an earlier CPU matrix (harness/planning.py)
    calibrate_from: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- matrix


class MethodEntry(Strict):
    """A named method of the matrix: a preset from the registry plus overrides, or an entry whose key selects a
    method (`peft: {peft_type: LORA, ...}`). Other keys are the method's options, written flat (validated by the
    method's own options model when the matrix is resolved)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str
    preset: str | None = None  # defaults to `name`
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the method's own options model
    learning_rates: list[float] | None = None
    epochs: list[int] | None = None
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the matrix-level `train`

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _slug(v, "method name")

    @field_validator("learning_rates")
    @classmethod
    def _positive_lrs(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(lr <= 0 for lr in v)):
            raise ValueError("learning_rates must be a non-empty list of positive numbers")
        return v

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(e < 1 for e in v)):
            raise ValueError("epochs must be a non-empty list of integers >= 1")
        return v


class Variant(Strict):
    """A named set of `train` overrides: an extra axis (e.g. sequence length, packing on/off)."""

    name: str
    train: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _slug(v, "variant name")


class ExecutionConfig(Strict):
    """How cells run (`execution:` in the matrix; the command-line flags win): the executor, and its own options
    written flat beside it (e.g. `{executor: ray, gpus_per_cell: 1}`), validated by the executor's `Options` when the
    matrix loads (harness/matrix.py; harness/executors/). Not part of any cell's identity."""

    executor: str = "local"  # a registered executor (harness/executors/): local, ray, ...
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        return _flat_options(data, {"executor", "options"})

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        return {"executor": out["executor"], **out.get("options", {})}


class ExportConfig(Strict):
    """`export:` in a matrix: run `medbench export` on the results folder after the run (harness/export/)."""

    cells: Literal["best"] | list[str] = "best"  # "best": the headline's winner per model and task; or cell ids
    formats: list[Literal["hf", "f16", "q8_0", "q5_k_m", "q4_k_m"]] = Field(
        default_factory=lambda: ["hf", "f16", "q8_0", "q5_k_m", "q4_k_m"], min_length=1
    )
    limit: int | None = Field(None, ge=1)  # items per task for scoring the artifacts (None: as the cells ran)
    out: str | None = None  # artifact folder (default: exports/<matrix>)
    engines: list[Literal["transformers", "llama.cpp"]] = Field(default_factory=lambda: ["transformers", "llama.cpp"])


RULE_KEYS = ("model", "method", "variant", "epochs", "learning_rate", "seed")


class Matrix(Strict):
    name: str
    description: str | None = None
    models: list[ModelSpec] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="default")], min_length=1)
    epochs: list[int] = Field(default_factory=lambda: [1], min_length=1)
    learning_rates: list[float] = Field(default_factory=lambda: [2e-4], min_length=1)
    # numpy / torch seeds are 0 .. 2**32 - 1
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    # per cell: auto (a few times the cell's predicted time on this machine, with a floor; harness/planning.py),
    # a fixed number of minutes for every cell, or null for no limit
    timeout_minutes: float | Literal["auto"] | None = Field("auto")

    @field_validator("timeout_minutes", mode="before")
    @classmethod
    def _positive_timeout(cls, v: Any) -> Any:
        import math

        if v is None or v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError("must be 'auto', a finite number of minutes > 0, or null for no limit")
        return float(v)

    data_dir: str | None = None  # default data dir, relative to the matrix file (--data-dir and the env var win)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)  # how cells run (harness/executors/)
    # experiment trackers (harness/trackers/): [mlflow], [{name: mlflow, uri: ...}]; --track wins; never in a cell id
    tracking: list[ComponentRef] = Field(default_factory=list)
    export: ExportConfig | None = None  # merge / quantize / score chosen cells after the run (see ExportConfig)

    @field_validator("name")
    @classmethod
    def _name_slug(cls, v: str) -> str:
        return _slug(v, "matrix name")

    @field_validator("methods", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, v: list[int]) -> list[int]:
        if any(e < 1 for e in v):
            raise ValueError("epochs must be integers >= 1")
        return v

    @field_validator("learning_rates")
    @classmethod
    def _positive_lrs(cls, v: list[float]) -> list[float]:
        if any(lr <= 0 for lr in v):
            raise ValueError("learning_rates must be positive numbers")
        return v

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 0 <= s <= SEED_MAX]
        if bad:
            raise ValueError(f"seeds must be integers from 0 to {SEED_MAX} (2**32 - 1, as numpy and torch take them)")
        return v

    @field_validator("include", "exclude")
    @classmethod
    def _rule_keys(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in v:
            bad = sorted(set(rule) - set(RULE_KEYS))
            if bad:
                raise ValueError(f"unknown rule key(s) {bad}; allowed: {', '.join(RULE_KEYS)}")
            if not rule:
                raise ValueError("an empty rule matches every cell; name at least one key")
        return v


# ---------------------------------------------------------------------------------------------------- cell


class MethodConfig(Strict):
    """The resolved method of one cell."""

    name: str  # the matrix's name for it (e.g. lora-r16-attn)
    kind: str  # the registry key of the implementation (full, lora, qlora, unsloth, base)
    options: dict[str, Any]  # the validated, complete options of that kind


class CellConfig(Strict):
    """Everything one cell needs, fully resolved. Its hash (without `runtime`) is the cell's identity."""

    matrix: str
    model: ModelSpec
    method: MethodConfig
    variant: str
    epochs: int  # 0 for a base row
    learning_rate: float  # 0 for a base row
    seed: int
    train: TrainConfig
    eval: EvalConfig
    # Where things are on this machine; excluded from the hash so ids are the same on every machine.
    runtime: "CellRuntime"


class CellRuntime(Strict):
    data_dir: str
    results_dir: str
    cache_dir: str
    timeout_s: float | None = None
    # experiment trackers of this run (harness/trackers/), each {name, <options>}, and their local store
    tracking: list[dict[str, Any]] = Field(default_factory=list)
    tracking_dir: str | None = None


CellConfig.model_rebuild()
