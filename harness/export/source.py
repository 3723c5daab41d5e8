"""Which cells to export, why a cell cannot be, and loading what it trained.

A cell can be exported when it succeeded, trained (not an untrained base row), kept its weights (an adapter, which
every adapter cell keeps, or a full checkpoint, kept with `train.save: keep`) and its base model has real weights.
Synthetic-weight models (random weights of a real architecture) are refused: their accuracy means nothing and there
is nothing worth shipping; `allow_synthetic` lets the mechanics be tested on them, and everything they produce is
labelled synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results import CellResult, read_result, result_path


class ExportRefused(Exception):
    """This cell cannot be exported; the message says why and what to do."""


@dataclass
class Source:
    """A cell to export: its record, where its kept weights are, and how to rebuild its config here."""

    record: CellResult
    results_dir: Path
    kind: str  # "adapter" or "checkpoint"
    weights: Path  # the kept adapter or checkpoint folder
    synthetic: bool

    @property
    def cell_id(self) -> str:
        return self.record.cell_id

    @property
    def model_spec(self) -> Any:
        from harness.config import ModelSpec

        return ModelSpec.model_validate(self.record.config["model"])

    def cell_config(self, *, data_dir: str | Path | None, cache_dir: str | Path) -> Any:
        """The cell's own config with this machine's runtime paths (tasks, limit, batch size as the cell ran)."""
        from harness.config import CellConfig

        cfg = dict(self.record.config)
        old = cfg.get("runtime") or {}
        recorded = old.get("data_dir") or ""
        if recorded.startswith("<") or not Path(recorded).is_dir():  # a portable record's placeholder, or elsewhere
            recorded = "data"
        cfg["runtime"] = {
            "data_dir": str(data_dir or recorded),
            "results_dir": str(self.results_dir.resolve()),
            "cache_dir": str(cache_dir),
            "timeout_s": None,
        }
        return CellConfig.model_validate(cfg)


def rerun_hint(record: CellResult) -> str:
    cfg = record.config
    matrix = record.matrix
    if "r" in ((cfg.get("method") or {}).get("options") or {}):  # an adapter method: it keeps its adapter now
        return (
            f"adapter cells keep their adapter since medbench export exists; this record is older: delete "
            f"results/{matrix}/{record.cell_id}.json and rerun it with `python run_matrix.py "
            f"matrices/{matrix}.yaml --only {record.cell_id}` (same id)"
        )
    return (
        f"rerun it with `train.save: keep` (in the matrix's `train:` block, or in the method's `train:` override "
        f"for {cfg.get('method', {}).get('name')!r}; the cell then gets a new id) and "
        f"`python run_matrix.py matrices/{matrix}.yaml --only '{cfg.get('method', {}).get('name')}'`"
    )


def check_exportable(record: CellResult, results_dir: Path, *, allow_synthetic: bool = False) -> Source:
    """A `Source` for this record, or ExportRefused with the reason."""
    from harness.methods.base import trains

    cid = record.cell_id
    if record.status != "success":
        raise ExportRefused(f"cell {cid} did not succeed (status {record.status}: {record.reason})")
    kind = (record.config.get("method") or {}).get("kind") or ""
    if not trains(kind):
        raise ExportRefused(
            f"cell {cid} is an untrained base row: there is nothing trained to export "
            "(export the base model itself with llama.cpp's tools)"
        )
    model = record.config.get("model") or {}
    synthetic = model.get("source") == "synthetic"
    if synthetic and not allow_synthetic:
        raise ExportRefused(
            f"cell {cid}: model {model.get('id')!r} has synthetic weights (random weights of the "
            f"{model.get('architecture')} architecture, for speed and memory only): its accuracy means nothing and "
            "there is nothing worth shipping. (--allow-synthetic exports it anyway, labelled, to test the mechanics)"
        )
    saved = record.metrics.get("saved") or {}
    rel = saved.get("path") or record.artifacts.get("adapter") or record.artifacts.get("checkpoint")
    if not rel:
        raise ExportRefused(
            f"cell {cid} kept no weights (its result records no adapter or checkpoint; "
            f"train.save was {record.config.get('train', {}).get('save')!r}): " + rerun_hint(record)
        )
    weights = Path(results_dir) / rel
    if not weights.is_dir():
        raise ExportRefused(
            f"cell {cid}: its kept weights {weights} are not on this machine (weights are not "
            "committed, only their sha256): run the cell here, or copy the folder"
        )
    expected = saved.get("sha256")
    if expected:
        from harness.hashing import folder_manifest

        digest, _files = folder_manifest(weights)
        if digest != expected:
            raise ExportRefused(
                f"cell {cid}: {weights} does not match the sha256 in its result "
                f"({digest[:12]} vs {expected[:12]}): the folder changed since the cell ran"
            )
    kind_saved = saved.get("kind") or ("adapter" if (weights / "adapter_config.json").is_file() else "checkpoint")
    return Source(record=record, results_dir=Path(results_dir), kind=kind_saved, weights=weights, synthetic=synthetic)


def load_record(results_dir: Path, cell_id: str) -> CellResult:
    record = read_result(result_path(results_dir, cell_id))
    if record is None:
        from harness.results import load_results

        good, _bad = load_results(results_dir)
        matches = [r for r in good if cell_id in r.cell_id]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(r.cell_id for r in good)) or "none"
        raise ExportRefused(
            f"no result for cell {cell_id!r} in {results_dir}"
            + (f" ({len(matches)} cells match)" if matches else f"; cells: {known}")
        )
    return record


def best_cells(results_dir: Path) -> dict[str, list[str]]:
    """The report headline's winner per model and task: {cell id: ["model/task", ...]} (the same rule as the report:
    highest accuracy, then lowest memory, over successful trained cells of real-weight models)."""
    from harness.report.loader import load_report_data, winners

    out: dict[str, list[str]] = {}
    for (model, task), row in winners(load_report_data(Path(results_dir))).items():
        out.setdefault(row["cell_id"], []).append(f"{model}/{task}")
    return out


# ---------------------------------------------------------------------------------------------------- loading


def load_reference(source: Source, cfg: Any) -> tuple[Any, Any]:
    """The cell's model exactly as the cell evaluated it (its method's own loading: a QLoRA base in 4-bit, adapters
    in fp32), with the kept weights loaded in; (model, tokenizer), in eval mode."""
    import torch

    from harness.methods.base import get_method
    from harness.precision import pick_device, resolve_precision

    device = pick_device()
    precision = resolve_precision(cfg.train.precision, device)
    if source.kind == "checkpoint":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source.weights, dtype=torch.float32).to(device)
        return model.eval(), AutoTokenizer.from_pretrained(source.weights)
    method = get_method(cfg.method.kind)
    options = method.Options.model_validate(cfg.method.options)
    prepared = method.prepare(cfg, options, device, precision.frozen_dtype)
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(source.weights / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(prepared.model, state)
    if result.unexpected_keys:
        raise ExportRefused(
            f"adapter of {source.cell_id} does not fit its method's model: unexpected keys {result.unexpected_keys[:3]}"
        )
    model = prepared.for_eval() if prepared.for_eval else prepared.model.eval()
    return model, prepared.tokenizer


# ---------------------------------------------------------------------------------------------------- base precision

FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def base_weights_file(record: CellResult) -> dict[str, Any] | None:
    """The base model's GGUF file when the cell's base came from one: {file, bytes, type, tensor_types, quantized}
    (`type`: its most common quantized tensor type, e.g. Q4_1; from the header, else from the file name). None for
    other sources."""
    import re

    model = record.config.get("model") or {}
    if model.get("source") != "gguf":
        return None
    name = model.get("gguf_file") or Path(model.get("path") or "").name
    info: dict[str, Any] = {"file": name, "bytes": None, "type": None, "tensor_types": None}
    try:
        from harness.config import ModelSpec
        from harness.export.gguf import read_header
        from harness.models import gguf_location

        folder, name = gguf_location(ModelSpec.model_validate(model))
        info["file"], info["bytes"] = name, (folder / name).stat().st_size
        info["tensor_types"] = read_header(folder / name)["tensor_types"]
    except Exception:  # the file is not on this machine: its name usually says its type
        pass
    quant = {k: v for k, v in (info["tensor_types"] or {}).items() if k not in FLOAT_TYPES}
    if quant:
        info["type"] = max(quant, key=lambda k: quant[k])
    elif info["tensor_types"]:
        info["type"] = max(info["tensor_types"], key=lambda k: info["tensor_types"][k])
    else:
        m = re.search(r"[.-](I?Q\d[A-Z0-9_]*|BF16|F16|F32)\.gguf$", name or "", re.IGNORECASE)
        info["type"] = m.group(1).upper() if m else None
    info["quantized"] = info["type"] is not None and info["type"] not in FLOAT_TYPES
    return info


def base_precision_note(base: dict[str, Any] | None, artifact_bytes: int | None) -> str | None:
    """The note an artifact carries when its base came from a quantized GGUF and the artifact is larger than it."""
    if not base or not base.get("quantized"):
        return None
    if base.get("bytes") and artifact_bytes and artifact_bytes <= base["bytes"]:
        return None
    from harness.formatting import fmt_bytes

    size = f", {fmt_bytes(base['bytes'])}" if base.get("bytes") else ""
    return (
        f"larger than the base model's {base['type']} GGUF ({base['file']}{size}) but not more precise than it: the "
        f"base weights it starts from are the {base['type']} values dequantized, so its extra bits carry only what "
        "training changed, not precision the base had lost"
    )
