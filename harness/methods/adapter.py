"""What every PEFT adapter method shares: a frozen base (in the compute dtype, or 4-bit with bitsandbytes), a PEFT
config applied by `peft.get_peft_model`, and the cost of holding both.

A method of this family says only which PEFT config it applies (`peft_config`: plain data, `peft_type` and the
fields of that type's PEFT config class) and whether the base is quantized (`quantization`). `lora`, `qlora` and
the generic `peft` method (any PEFT config written in the matrix) are such methods; the trainable-parameter count of
any config is exact: closed-form for plain LoRA, otherwise counted by applying the config to the architecture built
on the meta device (no memory, no weights).

Pitfall (see the guide): a forward pass in eval / no-grad mode repacks bitsandbytes' 4-bit weights in place, after
which training gets silently wrong gradients. So a quantized base is trained as freshly loaded, and validation loss
is computed once, after the last epoch (`Method.eval_between_epochs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from harness.methods.base import AdapterShape, Method, PreparedModel, TrainingCost, load_for_training
from harness.models.architectures import PROJECTIONS

if TYPE_CHECKING:  # pragma: no cover
    from harness.models.architectures import Architecture

NF4_BYTES = 0.5
ABSMAX_DOUBLE_QUANT_BYTES = 1 / 64 + 4 / (64 * 256)  # 8-bit absmax per 64-block + fp32 per 256 blocks = 0.127 bit
ABSMAX_BYTES = 4 / 64  # fp32 absmax per 64-block without double quantisation
# Fields of a PEFT config's `to_dict()` that say nothing about the adapter (versions, where it was saved from).
PEFT_NOISE_FIELDS = ("peft_version", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping")


@dataclass(frozen=True)
class Quantization:
    """A 4-bit base (bitsandbytes): NF4 or FP4, with or without double quantisation of the block scales."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # auto: the cell's compute dtype


# ---------------------------------------------------------------------------------------------------- PEFT configs


def peft_config_class(peft_type: str) -> type:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    found = {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if peft_type not in found:
        raise ValueError(f"unknown peft_type {peft_type!r}; PEFT {_peft_version()} knows: {', '.join(sorted(found))}")
    return found[peft_type]


def _peft_version() -> str:
    import peft

    return peft.__version__


def _jsonable(value: Any) -> Any:
    """A PEFT config value as JSON (sets, as PEFT keeps target modules, become sorted lists)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)  # enums (peft_type, task_type)


def resolve_peft_config(given: dict[str, Any]) -> dict[str, Any]:
    """The complete PEFT config (every field, PEFT's defaults filled in) of `given` ({peft_type, <fields>}), checked
    by PEFT's own config class: an unknown field or a value PEFT rejects is a ValueError naming it."""
    import dataclasses

    if not isinstance(given, dict) or not isinstance(given.get("peft_type"), str):
        raise ValueError("peft: a mapping with 'peft_type' (e.g. LORA, VERA, IA3) and that PEFT config's fields")
    fields = {k: v for k, v in given.items() if k not in ("peft_type", *PEFT_NOISE_FIELDS)}
    task_type = fields.pop("task_type", "CAUSAL_LM")
    if task_type != "CAUSAL_LM":
        raise ValueError(f"peft.task_type: only CAUSAL_LM is trained here (got {task_type!r})")
    cls = peft_config_class(given["peft_type"].upper())
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in PEFT_NOISE_FIELDS)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        import difflib

        close = [m for u in unknown for m in difflib.get_close_matches(u, allowed, n=1)]
        raise ValueError(
            f"unknown field(s) {unknown} for {cls.__name__} (PEFT {_peft_version()})"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + "; allowed: "
            + ", ".join(a for a in allowed if a not in ("peft_type", "task_type"))
        )
    try:
        config = cls(task_type="CAUSAL_LM", **fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cls.__name__} rejects these fields: {exc}") from None
    out = {k: _jsonable(v) for k, v in config.to_dict().items() if k not in PEFT_NOISE_FIELDS}
    return json.loads(json.dumps(out, sort_keys=True))


def build_peft_config(resolved: dict[str, Any]) -> Any:
    fields = {k: v for k, v in resolved.items() if k not in ("peft_type", "task_type")}
    return peft_config_class(resolved["peft_type"])(task_type="CAUSAL_LM", **fields)


# ---------------------------------------------------------------------------------------------------- counting


def lora_shape(resolved: dict[str, Any]) -> AdapterShape | None:
    """The low-rank shape of a plain LoRA config on the seven projections (what the closed-form counts and the
    activation model know); None for anything else (other PEFT types, patterns, extra trained modules, ...)."""
    if resolved.get("peft_type") != "LORA":
        return None
    plain = (
        resolved.get("bias", "none") == "none"
        and not resolved.get("rank_pattern")
        and not resolved.get("alpha_pattern")
        and resolved.get("layers_to_transform") is None
        and not resolved.get("modules_to_save")
        and not resolved.get("trainable_token_indices")
        and not resolved.get("exclude_modules")
        and not resolved.get("target_parameters")
        and not resolved.get("layer_replication")
        and not resolved.get("lora_bias")
        and not resolved.get("use_qalora")
        and not resolved.get("use_bdlora")
    )
    targets = resolved.get("target_modules")
    if targets == "all-linear":
        targets = list(PROJECTIONS)
    if not plain or not isinstance(targets, list) or not targets or not set(targets) <= set(PROJECTIONS):
        return None
    return AdapterShape(tuple(targets), int(resolved["r"]), float(resolved.get("lora_dropout") or 0.0))


def trainable_parameters(arch: Architecture, resolved: dict[str, Any]) -> int:
    """Exactly the parameters `get_peft_model(model, config)` leaves trainable on this architecture: closed form for
    plain LoRA (+ DoRA's magnitude vectors), otherwise the config applied to the model built on the meta device."""
    shape = lora_shape(resolved)
    if shape is not None:
        return arch.lora_params(shape.rank, list(shape.targets), dora=bool(resolved.get("use_dora")))
    return _count_on_meta(json.dumps(arch.config, sort_keys=True), json.dumps(resolved, sort_keys=True))


@lru_cache(maxsize=256)
def _count_on_meta(config_json: str, resolved_json: str) -> int:
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads(config_json)
    model_type = config.pop("model_type", "llama")
    resolved = json.loads(resolved_json)
    if "init_lora_weights" in resolved:  # data-dependent inits (PiSSA, OLoRA, ...) need weights; shapes do not
        resolved["init_lora_weights"] = True
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
    peft_model = get_peft_model(model, build_peft_config(resolved))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------- the method


def four_bit_bytes(arch: Architecture, double_quant: bool, other_bytes: int) -> tuple[float, float]:
    """(bytes of the frozen base, bytes per quantized parameter): block projections in NF4 (bitsandbytes), every
    other parameter (embeddings, untied head, norms) in `other_bytes` per parameter."""
    per = NF4_BYTES + (ABSMAX_DOUBLE_QUANT_BYTES if double_quant else ABSMAX_BYTES)
    blocks = arch.params.block_linear
    return blocks * per + (arch.params.total - blocks) * other_bytes, per


class AdapterMethod(Method):
    """A PEFT config on a frozen base (see the module doc). Subclasses implement `peft_config`, and
    `quantization` when the base may be 4-bit."""

    saves = "adapter"
    # peft's prepare_model_for_kbit_training upcasts every parameter a 4-bit base keeps unquantised to fp32 (and so
    # the residual stream): that is why QLoRA saves little at 1B. False for a method that keeps them as loaded.
    upcasts_quantized_base: ClassVar[bool] = True

    def peft_config(self, options: Any) -> dict[str, Any]:
        """The PEFT config this method applies, as data: `peft_type` and fields of that type's config class (a field
        left out takes PEFT's default). Plain data, so that costing a preset imports no PEFT."""
        raise NotImplementedError

    def quantization(self, options: Any) -> Quantization | None:
        return None

    def quantizes_base(self, options: Any) -> bool:
        return self.quantization(options) is not None

    def rank(self, options: Any) -> int | None:
        r = self.peft_config(options).get("r")
        return int(r) if isinstance(r, int) else None

    def preflight(self, options: Any) -> str | None:
        import importlib.util

        if self.quantization(options) is not None and importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed (pip install bitsandbytes): a 4-bit base needs it"
        return None

    def training_cost(self, arch: Architecture, options: Any, *, precision: str) -> TrainingCost:
        """Adapters in fp32 (peft's autocast_adapter_dtype=True) on a frozen base in the compute dtype, or 4-bit
        with every other parameter in fp32 (`upcasts_quantized_base`) or the compute dtype."""
        resolved = self.peft_config(options)
        trainable = trainable_parameters(arch, resolved)
        act = 4 if precision == "fp32" else 2
        quant = self.quantization(options)
        notes = [f"{resolved['peft_type']}: {trainable:,} trainable fp32 parameters (counted exactly)"]
        if quant is None:
            frozen, residual, quantized = act * arch.params.total, act, 0
        else:
            residual = 4 if self.upcasts_quantized_base else act
            frozen, per = four_bit_bytes(arch, quant.double_quant, other_bytes=residual)
            quantized = arch.params.block_linear
            notes.insert(
                0,
                f"4-bit {quant.quant_type.upper()} blocks ({per:.4f} B/param"
                f"{' with double quantisation' if quant.double_quant else ''}); embeddings/head/norms {residual} "
                "B/param" + (" (peft prepare_model_for_kbit_training upcasts them to fp32)" if residual > act else ""),
            )
        shape = lora_shape(resolved)
        if shape is None:
            notes.append(
                f"{resolved['peft_type']} activations costed as a frozen base without adapter activations "
                "(calibrate() scales memory and throughput from measured cells)"
            )
        cost = TrainingCost(
            trainable_params=trainable,
            weights_bytes=frozen + 4 * trainable,
            state_bytes_per_param=4,
            residual_bytes=residual,
            autocast_copy_bytes=2 * trainable if act == 2 else 0,
            frozen_base=True,
            adapter=shape,
            quantized_params=quantized,
            notes=notes,
        )
        if quant is not None:
            if residual > act:
                cost.autocast_copy_bytes += 2 * arch.params.embedding  # the fp32 LM head, cast to bf16
            cost.startup_extra_s = 5.0  # quantising the weights at load
        return cost

    def prepare(self, cell: Any, options: Any, device: str, dtype: Any) -> PreparedModel:
        from peft import get_peft_model

        quant = self.quantization(options)
        notes: dict[str, Any] = {"peft_type": self.peft_config(options)["peft_type"]}
        if quant is None:
            # the frozen base in the compute dtype (bf16 on a GPU); adapters are created in fp32
            model, tokenizer, attention = load_for_training(cell, device, dtype, adapters=True)
        else:
            model, tokenizer, attention, compute = _load_four_bit(cell, quant, device, dtype)
            notes.update(quant_type=quant.quant_type, double_quant=quant.double_quant, compute_dtype=str(compute))
        model = get_peft_model(model, build_peft_config(self.peft_config(options)), autocast_adapter_dtype=True)
        model.train()
        return PreparedModel.of(
            model,
            tokenizer,
            save=lambda out: model.save_pretrained(out),
            for_eval=lambda: model.eval(),
            notes=notes,
            attention=attention,
        )


def _load_four_bit(cell: Any, quant: Quantization, device: str, dtype: Any) -> tuple[Any, Any, Any, Any]:
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = {"auto": dtype, "bf16": torch.bfloat16, "fp32": torch.float32}[quant.compute_dtype]
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=torch.uint8,
    )
    model, tokenizer, attention = load_for_training(cell, device, compute, adapters=True, quantization_config=bnb)
    if not device.startswith("cuda"):
        model.to(device)
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cell.train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    return model, tokenizer, attention, compute
