"""What runs inside one cell's own process, top to bottom: load, prepare data, train, save, evaluate, record.

Started by the runner as `python -m harness.cell <cell.json>`. Whatever happens here (an exception, an
out-of-memory error, a NaN loss, Unsloth's global patching) stays in this process; the parent only reads the
result file this process writes atomically at the end. A crash that prevents even that is recorded by the parent.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.config import CellConfig
from harness.hashing import sha256_file
from harness.results import CellResult, cell_dir, write_result

TRACEBACK_LINES = 40


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _eval_data_files(cfg: CellConfig) -> dict[str, str]:
    from harness.evaluation.registry import task_data_path
    from harness.paths import display_data_path

    out = {}
    for task in cfg.eval.tasks:
        p = task_data_path(task, Path(cfg.runtime.data_dir))
        if p is not None and p.is_file():
            out[display_data_path(p, cfg.runtime.data_dir)] = sha256_file(p)
    from harness.evaluation.custom import custom_task_files

    out.update(custom_task_files(cfg))  # a custom task folder's files and data (eval.include_path)
    return out


def classify_exception(exc: BaseException) -> str:
    """The status an exception maps to: `oom` for any out-of-memory error, else `failed`."""
    if isinstance(exc, MemoryError):
        return "oom"
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return "oom"
    except ImportError:
        pass
    text = str(exc).lower()
    if "out of memory" in text or "cuda error: out of memory" in text:
        return "oom"
    return "failed"


def _estimate(cfg: CellConfig, device: dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        from harness.estimator import estimate_cell, profile_from_environment

        return estimate_cell(cfg, profile_from_environment(device)).as_dict()
    except Exception as exc:  # the estimate is a prediction; it must never fail a cell
        return {"error": f"{type(exc).__name__}: {exc}"}


def import_first(cfg: CellConfig) -> dict[str, Any] | None:
    """Import the modules the cell's method must load before transformers and peft (`Method.import_first`, e.g.
    Unsloth, which patches both), first thing in this process; what happened goes into the record
    (`environment.import_first`: the modules, which of transformers / peft / trl were already loaded (none, when the
    order held), which were imported, and why any was not)."""
    import importlib

    from harness.methods.base import method_class

    cls = method_class(cfg.method.kind)
    wanted = tuple(cls.import_first) if cls is not None else ()
    if not wanted:
        return None
    record: dict[str, Any] = {
        "modules": list(wanted),
        "loaded_before": sorted(m for m in ("transformers", "peft", "trl") if m in sys.modules),
        "imported": [],
        "not_imported": {},
    }
    method = cls()
    skip = method.preflight(method.Options.model_validate(cfg.method.options))
    for name in wanted:
        if skip:
            record["not_imported"][name] = f"not attempted: {skip}"
            continue
        try:
            importlib.import_module(name)
            record["imported"].append(name)
        except Exception as exc:  # the method's prepare says why it cannot run; the record keeps what happened
            record["not_imported"][name] = f"{type(exc).__name__}: {exc}"[:300]
    return record


def run_cell(
    cfg: CellConfig,
    cell_id: str,
    config_hash: str,
    early_imports: dict[str, Any] | None = None,
    tracking: Any = None,
) -> CellResult:
    from harness import environment
    from harness.meters import PhaseTimer
    from harness.methods.base import SkipCell, get_method

    started, t0 = _utc_now(), time.perf_counter()
    results_dir = Path(cfg.runtime.results_dir)
    workdir = cell_dir(results_dir, cell_id)
    workdir.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    metrics: dict[str, Any] = {}
    data_files: dict[str, str] = {}
    artifacts: dict[str, str] = {"log": f"{cell_id}/cell.log"}
    status, reason, tb = "success", None, None
    env: dict[str, Any] = {}
    try:
        env = environment.collect(with_device=False)
        if early_imports is not None:
            env["import_first"] = early_imports
        method = get_method(cfg.method.kind)
        options = method.Options.model_validate(cfg.method.options)
        skip = method.preflight(options)
        if skip:
            raise SkipCell(skip)

        import transformers

        from harness.precision import pick_device, resolve_precision

        env["device"] = environment.device_info()
        if tracking is not None:  # one run per cell in each tracker (harness/trackers/)
            tracking.start(_run_info(cfg, cell_id, env))
        device = pick_device()
        timer.device = device
        precision = resolve_precision(cfg.train.precision, device)
        transformers.set_seed(cfg.seed)
        print(f"[cell] {cell_id}: {cfg.method.kind} on {device} ({precision.name})", flush=True)

        with timer.phase("load"):
            if cfg.train.liger_kernel:
                _apply_liger(cfg, device)
            prepared = method.prepare(cfg, options, device, precision.frozen_dtype)
        data = None
        if method.trains or cfg.eval.generation.n:
            from harness.data import prepare_data

            with timer.phase("data"):
                data = prepare_data(
                    cfg.train, prepared.tokenizer, Path(cfg.runtime.data_dir), Path(cfg.runtime.cache_dir), cfg.seed
                )
            metrics["data"] = data.stats
            data_files.update(data.data_files)
        exclude = None
        if method.trains and cfg.eval.tasks:  # before training: are evaluated items in the training data?
            from harness.evaluation.contamination import check_examples, enforce

            with timer.phase("data"):
                metrics["contamination"] = check_examples(cfg.eval, Path(cfg.runtime.data_dir), data.train_examples)
            exclude = enforce(cfg.eval.decontaminate, metrics["contamination"])
        probe = None
        if cfg.eval.forgetting is not None:  # general-text cross-entropy, base vs trained (evaluation/forgetting.py)
            from harness.evaluation.forgetting import ForgettingProbe

            with timer.phase("forgetting"):
                probe = ForgettingProbe.before_training(cfg, prepared, method.trains)
        if method.trains:
            on_values = tracking.log if tracking is not None else None
            _train_and_save(
                method, options, prepared, data, cfg, device, precision, timer, metrics, artifacts, workdir, on_values
            )
        model = prepared.for_eval() if prepared.for_eval else prepared.model
        _evaluate_with_sdpa(model, prepared, metrics)
        if probe is not None:
            with timer.phase("forgetting"):
                metrics["forgetting"] = probe.after_training(model)
        if cfg.eval.tasks or cfg.eval.generation.n:
            with timer.phase("eval"):
                _evaluate(
                    model, prepared.tokenizer, cfg, device, data, exclude, workdir, metrics, artifacts, data_files
                )
    except SkipCell as exc:
        status, reason = "skipped", str(exc)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        status, reason, tb = _failure(exc)
    if metrics.get("meters"):
        from harness.meters import derived_figures

        metrics["derived"] = derived_figures(metrics)
    return CellResult(
        cell_id=cell_id,
        config_hash=config_hash,
        matrix=cfg.matrix,
        status=status,
        reason=reason,
        traceback=tb,
        config=cfg.model_dump(mode="json"),
        metrics=metrics,
        timings=_timings(started, t0, timer),
        environment=env,
        data_files=data_files,
        estimate=_estimate(cfg, env.get("device")),
        artifacts=artifacts,
    )


def _evaluate(
    model: Any,
    tokenizer: Any,
    cfg: CellConfig,
    device: str,
    data: Any,
    exclude: Any,
    workdir: Path,
    metrics: dict[str, Any],
    artifacts: dict[str, str],
    data_files: dict[str, str],
) -> None:
    """The evaluation phase: the tasks through lm-eval (the meters of the "eval" region around them), then the
    generation metrics on held-out training examples."""
    if cfg.eval.tasks:
        from harness.evaluation import evaluate_model
        from harness.meters import measuring, readings

        with measuring("eval", device) as eval_meters:
            metrics["eval"] = evaluate_model(model, tokenizer, cfg, workdir, exclude)
        metrics.setdefault("meters", {})["eval"] = readings(eval_meters)
        artifacts.update(_item_files(metrics["eval"], Path(cfg.runtime.results_dir)))
        data_files.update(_eval_data_files(cfg))
    if cfg.eval.generation.n and data is not None and data.heldout:
        from harness.evaluation import generation_metrics

        gen = cfg.eval.generation
        metrics["generation"] = generation_metrics(model, tokenizer, data.heldout[: gen.n], gen.max_new_tokens)


def _train_and_save(
    method: Any,
    options: Any,
    prepared: Any,
    data: Any,
    cfg: CellConfig,
    device: str,
    precision: Any,
    timer: Any,
    metrics: dict[str, Any],
    artifacts: dict[str, str],
    workdir: Path,
    on_values: Any = None,
) -> None:
    """The training phase, then what the method ships saved (measured, or kept for `medbench export`)."""
    from harness.training import ProgressFile, train_model

    with timer.phase("train"):
        metrics.update(
            train_model(
                prepared,
                data,
                cfg,
                device=device,
                precision=precision,
                method=method,
                options=options,
                progress=ProgressFile(workdir / "progress.json"),
                on_values=on_values,
            )
        )
    if cfg.train.save != "none" and prepared.save is not None:
        with timer.phase("save"):
            saved = _save(prepared, cfg, workdir, workdir.name)
            metrics["train"]["saved_bytes"] = saved["bytes"]
            if saved.get("path"):  # kept: `medbench export` builds its artifacts from it
                metrics["saved"] = saved
                artifacts[saved["kind"]] = saved["path"]


def _evaluate_with_sdpa(model: Any, prepared: Any, metrics: dict[str, Any]) -> None:
    """Every row is scored with the same kernel: a model that trained with flex attention or flash-attn varlen is
    switched to SDPA for evaluation (lm-eval's batches are padded; the untrained row loads with SDPA)."""
    choice = prepared.attention
    if choice is None or choice.implementation not in ("flex_attention", "flash_attention_2"):
        return
    model.set_attn_implementation("sdpa")
    metrics.setdefault("train", {}).setdefault("attention", {})["eval_implementation"] = "sdpa"


def _item_files(evals: dict[str, Any], results_dir: Path) -> dict[str, str]:
    """Per-item files of each task, relative to the results folder (in the eval metrics and as artifacts)."""
    out = {}
    for task, m in evals.items():
        if m.get("items"):
            m["items"] = out[f"items:{task}"] = str(Path(m["items"]).resolve().relative_to(results_dir.resolve()))
    return out


def _failure(exc: BaseException) -> tuple[str, str, str]:
    """(status, one-line reason, traceback tail) of an exception that ended a cell; the traceback goes to the log."""
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    tb = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
    print(tb, file=sys.stderr, flush=True)
    return classify_exception(exc), reason, tb


def _timings(started: str, t0: float, timer: Any) -> dict[str, Any]:
    """Wall time per phase; the wall time counts from the creation of this process, so interpreter start and
    imports are overhead too."""
    import psutil

    wall = max(time.time() - psutil.Process().create_time(), time.perf_counter() - t0)
    timings = {
        "started_at": started,
        "finished_at": _utc_now(),
        "wall_s": wall,
        **{f"{k}_s": v for k, v in timer.phases.items()},
        "overhead_s": max(wall - sum(timer.phases.values()), 0.0),
    }
    timings["overhead_share"] = timings["overhead_s"] / wall if wall else None
    return timings


def _run_info(cfg: CellConfig, cell_id: str, env: dict[str, Any]) -> Any:
    """What each tracker's run is opened with: the resolved config as parameters, the cell id, the commit and the
    device as tags."""
    from harness.trackers import RunInfo, flat_params

    device = env.get("device") or {}
    git = env.get("git") or {}
    tags = {
        "medbench.cell_id": cell_id,
        "medbench.matrix": cfg.matrix,
        "medbench.method": cfg.method.name,
        "medbench.model": cfg.model.id,
        "medbench.commit": str(git.get("commit") or "unknown") + ("-dirty" if git.get("dirty") else ""),
        "medbench.device": str(device.get("name") or device.get("type") or "unknown"),
    }
    return RunInfo(cfg.matrix, cell_id, flat_params(cfg.model_dump(mode="json", exclude={"runtime"})), tags)


def _apply_liger(cfg: CellConfig, device: str) -> None:
    """Liger's fused kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) patch the model classes, so they
    must be applied before the model is built; this process only. They are triton kernels: a CUDA GPU and the
    liger-kernel package, else the cell is skipped with the reason."""
    from harness.methods.base import SkipCell

    if not device.startswith("cuda"):
        raise SkipCell("train.liger_kernel: Liger's kernels are triton kernels and need a CUDA GPU")
    try:
        from liger_kernel.transformers import _apply_liger_kernel
    except ImportError:
        raise SkipCell("train.liger_kernel: liger-kernel is not installed (pip install liger-kernel)") from None
    from transformers import AutoConfig

    from harness.models import resolve_model_path

    _apply_liger_kernel(AutoConfig.from_pretrained(resolve_model_path(cfg.model, cfg.runtime.cache_dir)).model_type)


def _save(prepared: Any, cfg: CellConfig, workdir: Path, cell_id: str) -> dict[str, Any]:
    """Save what this method would ship. An adapter (small) is always kept, in `<cell>/adapter`; a full checkpoint
    is kept in `<cell>/checkpoint` only when asked (`train.save: keep`), else measured and deleted. Returns
    {kind, bytes} and, when kept, {path (relative to the results folder), sha256, files}."""
    from harness.hashing import folder_manifest
    from harness.paths import folder_size_bytes

    kind = "adapter" if getattr(prepared.model, "peft_config", None) is not None else "checkpoint"
    if kind == "adapter" or cfg.train.save == "keep":
        out = workdir / kind
        shutil.rmtree(out, ignore_errors=True)
        prepared.save(out)
        digest, files = folder_manifest(out)
        return {
            "kind": kind,
            "path": f"{cell_id}/{kind}",
            "bytes": folder_size_bytes(out),
            "sha256": digest,
            "files": files,
        }
    with tempfile.TemporaryDirectory(dir=cfg.runtime.cache_dir) as tmp:
        prepared.save(Path(tmp))
        return {"kind": kind, "bytes": folder_size_bytes(tmp)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.cell CELL_JSON", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    cfg = CellConfig.model_validate(spec["config"])
    from harness.offline import apply_cell_env

    apply_cell_env(cfg)  # before transformers / datasets load: no telemetry; offline when every file is local
    early = import_first(cfg)  # before anything imports transformers / peft (Unsloth patches them)
    Path(cfg.runtime.cache_dir).mkdir(parents=True, exist_ok=True)
    results_dir = Path(cfg.runtime.results_dir)
    tracking = None
    if cfg.runtime.tracking:
        from harness.trackers import Tracking

        workdir = cell_dir(results_dir, spec["cell_id"])
        workdir.mkdir(parents=True, exist_ok=True)
        tracking = Tracking(cfg.runtime.tracking, Path(cfg.runtime.tracking_dir or results_dir / "tracking"), workdir)
    result = run_cell(cfg, spec["cell_id"], spec["config_hash"], early, tracking)
    if spec.get("execution"):  # where it ran (executor, node, GPUs), as the executor tells it
        result.environment["execution"] = spec["execution"]
    path = write_result(results_dir, result)
    if tracking is not None:
        from harness.evaluation.stats import base_record_for
        from harness.trackers import summary_of

        if not tracking.started:  # stopped before its runs started (skipped, failed early): open them to end them
            tracking.start(_run_info(cfg, spec["cell_id"], result.environment))

        summary = summary_of(result, base_record_for(results_dir, result), results_dir)
        tracking.finish(summary, result.status, result.reason, path)
    print(f"[cell] {spec['cell_id']}: {result.status}" + (f" ({result.reason})" if result.reason else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
