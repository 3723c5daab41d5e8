"""The interface every fine-tuning method implements, and the registry that finds them.

A method is one module in `harness/methods/` (or in a `$MEDBENCH_PLUGINS` folder, see `harness.plugins`) defining a
`Method` subclass decorated with `@register`. Everything about the method lives in that file:

- class attributes that describe it without importing torch: its options (`Options`, pydantic), `presets`, its
  default optimizer, what it saves, its display order and label for the report, and `entry_key` when a key of a
  matrix entry selects it (`peft:` selects the generic PEFT adapter method);
- `training_cost`: what it holds in memory while training, in the estimator's terms (`TrainingCost`); a method without
  one is costed as full fine-tuning (an upper bound), and the plan says so;
- `param_groups`: the parameter groups its optimizer gets (which decay, which learn at a multiple of the learning
  rate: LoRA+'s B matrices);
- `prepare`: the heavy work, inside the cell's own process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from harness.plugins import Component, NoOptions, Registry

if TYPE_CHECKING:  # pragma: no cover
    from harness.config import CellConfig
    from harness.models.architectures import Architecture

UNTRAINED = "base"  # the kind (and the name) of the untrained reference row every model gets: "the base row"


def count_live_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of a live torch module (the closed-form counts of an architecture are
    `Architecture.params`)."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


@dataclass
class PreparedModel:
    """A model ready to train (or to evaluate, for an untrained row), as a method hands it to the training loop."""

    model: Any
    tokenizer: Any
    trainable_params: int
    total_params: int
    # Called after training with a folder; writes what this method would ship (adapter or full checkpoint).
    save: Any = None
    # Returns the model to evaluate after training (e.g. with autocast wrappers removed).
    for_eval: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    attention: Any = None  # harness.attention.AttentionChoice: the kernel it trains with (None: not a trained model)

    @classmethod
    def of(cls, model: Any, tokenizer: Any, **kwargs: Any) -> "PreparedModel":
        trainable, total = count_live_parameters(model)
        return cls(model=model, tokenizer=tokenizer, trainable_params=trainable, total_params=total, **kwargs)


@dataclass(frozen=True)
class AdapterShape:
    """Low-rank adapters on a frozen base: which projections, which rank, which dropout."""

    targets: tuple[str, ...]
    rank: int
    dropout: float


@dataclass
class TrainingCost:
    """What a method holds in memory while training one cell, in the terms of `harness.estimator` (its module doc
    gives the memory model). Bytes are totals unless named per parameter or per element."""

    trainable_params: int
    weights_bytes: float  # every parameter as held during training, trainable ones included
    state_bytes_per_param: int  # a gradient, and each AdamW state, per trainable parameter (fp32: 4, bf16: 2)
    residual_bytes: int  # bytes per element of the residual stream (4 when fp32 weights or upcast norms sit on it)
    autocast_copy_bytes: float = 0.0  # low-precision copies autocast keeps of fp32 weights for the backward
    frozen_base: bool = False  # the base's weights get no gradient (adapters): FLOPs 4N + 6N_trainable
    adapter: AdapterShape | None = None  # low-rank adapters (their activations); None: see frozen_base
    norms_train: bool = False
    quantized_params: int = 0
    # Who decides activation checkpointing: "train" (train.gradient_checkpointing), or the method itself:
    # "none", "blocks" (each block's input kept, one block recomputed), "offloaded" (block inputs in host memory).
    checkpointing: Literal["train", "none", "blocks", "offloaded"] = "train"
    logits_bytes_per_element: float | None = None  # None: transformers' loss (see the estimator)
    startup_extra_s: float = 0.0  # start-up beyond a plain model load (quantising, patching)
    packed_layout: Literal["rows", "flattened"] = "rows"  # "flattened": packed rows as one row (its own attention)
    notes: list[str] = field(default_factory=list)


class Method(Component):
    kind: ClassVar[str]
    display_order: ClassVar[int] = 50  # where the report puts the kind: untrained 0, full 10, LoRA 20, ...
    Options: ClassVar[type[BaseModel]] = NoOptions
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # preset name -> options of this kind
    entry_key: ClassVar[str | None] = None  # a key of a matrix method entry that selects this kind (e.g. "peft")
    default_optimizer: ClassVar[str | dict[str, Any]] = "adamw"  # harness/optimizers/
    saves: ClassVar[Literal["adapter", "checkpoint"] | None] = "checkpoint"  # what `train.save` writes
    trains: ClassVar[bool] = True  # False for the untrained reference row (evaluation only)
    # Modules the cell's process imports before anything else (before transformers and peft): a library that patches
    # them globally must come first (Unsloth). The record says whether that order held (`environment.import_first`).
    import_first: ClassVar[tuple[str, ...]] = ()

    def quantizes_base(self, options: Any) -> bool:
        """Whether training holds the frozen base in a quantized form (export then merges onto it reloaded
        unquantized, never onto the quantized weights)."""
        return False

    def eval_between_epochs(self, options: Any) -> bool:
        """False where an eval-mode forward between epochs would corrupt training (4-bit repacking: the guide):
        validation loss is then computed once, after the last epoch."""
        return not self.quantizes_base(options)

    def rank(self, options: Any) -> int | None:
        """The adapter rank the report shows in its `r` column (None: not a low-rank adapter)."""
        return None

    def cost_key(self, options: Any) -> str:
        """Which measured cells `estimator.calibrate` fits this method's throughput to: its kind, or finer where
        one kind trains very differently (the `peft` method: per PEFT type)."""
        return self.kind

    def preflight(self, options: BaseModel) -> str | None:
        """Why this method cannot run on this machine (a skip reason), without importing torch; None if it can."""
        return None

    def training_cost(self, arch: Architecture, options: Any, *, precision: str) -> TrainingCost:
        """Memory terms of training with these options, `precision` the resolved compute precision ("fp32", "bf16"
        or "fp16"). By default: every parameter trains (full fine-tuning's cost, an upper bound), said in a note."""
        total = arch.params.total
        b = 4 if precision == "fp32" else 2
        return TrainingCost(
            trainable_params=total,
            weights_bytes=4 * total,
            state_bytes_per_param=4,
            residual_bytes=4 if precision == "fp32" else b,
            norms_train=True,
            notes=[f"{self.kind}: no cost model of its own; costed as full fine-tuning (an upper bound)"],
        )

    def param_groups(self, model: Any, options: Any, weight_decay: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the trainable parameters, biases, norms and vectors (LoRA magnitude)
        without weight decay (standard practice). A group may carry `lr_scale` (its learning rate = lr × scale)."""
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def prepare(self, cell: "CellConfig", options: BaseModel, device: str, dtype: Any) -> PreparedModel:
        raise NotImplementedError


def load_for_training(
    cell: "CellConfig", device: str, dtype: Any, *, adapters: bool, **from_pretrained: Any
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, attention choice): the base model loaded with the attention kernel this cell trains with
    (harness/attention.py), gradient checkpointing switched on when `train.gradient_checkpointing` asks for it
    (non-reentrant; with `adapters`, the embedding output requires grad so that the checkpointed blocks' adapters get
    gradients). Every method that trains through transformers loads its base here."""
    from harness.attention import Installed, choose_attention
    from harness.models import load_model

    choice = choose_attention(
        cell.train.attn_implementation, packing=cell.train.packing, installed=Installed.probe(device)
    )
    model, tokenizer = load_model(
        cell.model,
        device=device,
        dtype=dtype,
        cache_dir=cell.runtime.cache_dir,
        attn_implementation=choice.implementation,
        **from_pretrained,
    )
    if cell.train.gradient_checkpointing and "quantization_config" not in from_pretrained:
        # (a quantized base is prepared by peft's prepare_model_for_kbit_training, which checkpoints itself)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if adapters:
            model.enable_input_require_grads()
        model.config.use_cache = False
    return model, tokenizer, choice


class SkipCell(Exception):
    """Raised inside a cell when its method cannot run on this machine; the cell is recorded as `skipped`."""


# Importing every module of this package (and of the plug-in folders) registers its methods: adding a method is one
# new file.
REGISTRY: Registry[Method] = Registry("method kind", Method, "harness.methods", key="kind", skip=("base",))
register = REGISTRY.register


def methods() -> dict[str, type[Method]]:
    return REGISTRY.entries()


def get_method(kind: str) -> Method:
    return REGISTRY.get(kind)()


def method_class(kind: str) -> type[Method] | None:
    """The registered class of a kind, or None (e.g. a kind in old results whose file is gone)."""
    return REGISTRY.find(kind)


def trains(kind: str) -> bool:
    cls = method_class(kind)
    return True if cls is None else cls.trains


def display_order(kind: str) -> int:
    cls = method_class(kind)
    return cls.display_order if cls is not None else 90


def kind_label(kind: str) -> str:
    """How the report names a method kind: the method's `label`, else the kind itself."""
    cls = method_class(kind)
    return (cls.label if cls is not None else "") or kind


def _instance(method: dict[str, Any]) -> tuple[Method, Any] | None:
    """The method and options of a result's method entry; the options were validated when the cell was planned, so
    they are read as they are (validating them again could import heavy libraries, e.g. PEFT)."""
    cls = method_class(str(method.get("kind")))
    if cls is None:
        return None
    return cls(), cls.Options.model_construct(**(method.get("options") or {}))


def quantizes_base(method: dict[str, Any]) -> bool:
    """`Method.quantizes_base` for a method entry of a result's config ({kind, options})."""
    found = _instance(method)
    return found is not None and found[0].quantizes_base(found[1])


def rank(method: dict[str, Any]) -> int | None:
    """`Method.rank` for a method entry of a result's config ({kind, options})."""
    found = _instance(method)
    return found[0].rank(found[1]) if found is not None else None


def saves(method: dict[str, Any]) -> str | None:
    """What a result's method saves ("adapter", "checkpoint" or None), from its registered class."""
    cls = method_class(str(method.get("kind")))
    return cls.saves if cls is not None else None


def presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every preset name -> (kind, options). A kind's own name is always a preset with default options."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for kind, cls in methods().items():
        out[kind] = (kind, {})
        for name, opts in vars(cls).get("presets", {}).items():  # its own presets, not a parent method's
            if name in out and out[name][0] != kind:
                raise ValueError(f"method preset {name!r} is defined by both {out[name][0]!r} and {kind!r}")
            out[name] = (kind, dict(opts))
    return out


def entry_keys() -> dict[str, str]:
    """Matrix method-entry keys that select a kind (`peft` -> the generic PEFT adapter method)."""
    return {cls.entry_key: kind for kind, cls in methods().items() if cls.entry_key}
