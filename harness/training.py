"""The training loop: one readable function, with meters around it and no hidden framework.

Every cell of a model row sees the same batches in the same order (a function of the data, the seed and the
epoch), the same token budget and the same schedule shape; only the method and the recipe knobs differ.
Loss is normalised by the number of label tokens of the whole accumulation group, so gradient accumulation
and packing do not change what one optimizer step means.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.attention import MaskObserver, attention_record
from harness.config import CellConfig
from harness.measures import TrainCounters, throughput
from harness.meters import Stopwatch, measuring, readings
from harness.meters.timing import StepClock
from harness.precision import Precision
from harness.results import atomic_write_text


class NonFiniteLoss(RuntimeError):
    pass


def build_optimizer(method: Any, options: Any, model: Any, cell: CellConfig) -> tuple[Any, Any]:
    """(torch optimizer, the matrix's reference to it): the optimizer component the cell names (or the method's
    default), over the parameter groups the method declares (`Method.param_groups`)."""
    from harness.optimizers import REGISTRY
    from harness.plugins import ref_parts

    ref = cell.train.optimizer or method.default_optimizer
    name, given = ref_parts(ref)
    optimizer = REGISTRY.get(name)
    groups = method.param_groups(model, options, cell.train.weight_decay)
    return optimizer().build(groups, cell.learning_rate, optimizer.Options.model_validate(given)), ref


def build_scheduler(optimizer: Any, cell: CellConfig, total_steps: int) -> Any:
    from harness.plugins import ref_parts
    from harness.schedulers import REGISTRY

    name, given = ref_parts(cell.train.scheduler)
    scheduler = REGISTRY.get(name)
    warmup = math.ceil(cell.train.warmup_ratio * total_steps)
    return scheduler().build(optimizer, warmup, total_steps, scheduler.Options.model_validate(given))


def param_group_summary(optimizer: Any) -> list[dict[str, Any]]:
    """The optimizer's own groups: parameters, peak learning rate (torch's schedulers keep it as `initial_lr`) and
    weight decay of each (LoRA+: A and B at their two rates)."""
    return [
        {
            "params": sum(p.numel() for p in g["params"]),
            "lr": g.get("initial_lr", g["lr"]),
            "weight_decay": g.get("weight_decay", 0.0),
        }
        for g in optimizer.param_groups
    ]


def step_values(clock: StepClock, loss: float, lr: float, grad_norm: float | None, device: str) -> dict[str, Any]:
    """What a tracker gets after each optimizer step: loss, learning rate, gradient norm, the step's tokens/s (once
    past the warm-up, as the steady-state figure counts it) and the memory in use."""
    from harness.measures import WARMUP_STEPS
    from harness.meters.memory import current_bytes

    last = clock.steps[-1]
    steady = len(clock.steps) > WARMUP_STEPS and not last.compile_s and last.seconds > 0
    return {
        "train/loss": loss,
        "train/lr": lr,
        "train/grad_norm": grad_norm,
        "train/tokens_per_s": last.real_tokens / last.seconds if steady else None,
        "memory/bytes": current_bytes(device),
    }


class ProgressFile:
    """A small JSON the parent polls to show per-cell training progress (written atomically, at most 1/s)."""

    def __init__(self, path: Path | None):
        self.path, self._last = path, 0.0

    def update(self, force: bool = False, **state: Any) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._last < 1.0):
            return
        self._last = now
        atomic_write_text(self.path, json.dumps(state))


def _plan_epoch(examples: list[dict], cell: CellConfig, pad_id: int, epoch: int) -> list[Any]:
    """The micro-batches of one epoch, cut to the token budget and the step cap."""
    from harness.data import iter_batches

    t = cell.train
    batches = []
    tokens = 0
    max_micro = t.max_steps * t.gradient_accumulation_steps if t.max_steps else None
    for batch in iter_batches(
        examples,
        batch_size=t.batch_size,
        max_seq_length=t.max_seq_length,
        packing=t.packing,
        pad_to_max_length=t.pad_to_max_length,
        pad_token_id=pad_id,
        seed=cell.seed,
        epoch=epoch,
    ):
        batches.append(batch)
        tokens += batch.real_tokens
        if t.token_budget and tokens >= t.token_budget:
            break
        if max_micro and len(batches) >= max_micro:
            break
    return batches


def _model_inputs(batch: Any, device: str, vocab: int, flatten: bool = False) -> dict[str, Any]:
    """The model's keyword arguments for a batch: packed rows flattened into one row for methods that keep packed
    examples apart only that way (harness/attention.py), token ids folded into a synthetic model's vocabulary."""
    if flatten and batch.segments is not None:
        batch = batch.flattened()
    ids, labels = batch.input_ids, batch.labels
    if int(ids.max()) >= vocab:
        # Only synthetic models get here (their tokenizer may be larger than the architecture's vocabulary):
        # folding ids keeps shapes, and so speed and memory, exact; the text is meaningless anyway.
        ids = ids % vocab
        labels = labels.where(labels < 0, labels % vocab)
    return dataclasses.replace(batch, input_ids=ids, labels=labels).model_kwargs(device)


def _autocast(device: str, precision: Precision) -> Any:
    import contextlib

    import torch

    if not precision.uses_autocast:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=precision.autocast_dtype)


def validation_loss(
    model: Any,
    examples: list[dict],
    cell: CellConfig,
    device: str,
    precision: Precision,
    pad_id: int,
    flatten: bool = False,
) -> float | None:
    """Token-weighted mean loss over the validation split (eval mode, no grad)."""
    import torch

    from harness.data import iter_batches

    if not examples:
        return None
    was_training = model.training
    model.eval()
    vocab = model.get_input_embeddings().num_embeddings
    total, count = 0.0, 0
    t = cell.train
    with torch.no_grad():
        for batch in iter_batches(
            examples,
            batch_size=t.batch_size,
            max_seq_length=t.max_seq_length,
            packing=t.packing,
            pad_to_max_length=False,
            pad_token_id=pad_id,
            seed=cell.seed,
            epoch=0,
        ):
            with _autocast(device, precision):
                out = model(**_model_inputs(batch, device, vocab, flatten), num_items_in_batch=batch.label_tokens)
            total += float(out.loss) * batch.label_tokens
            count += batch.label_tokens
    model.train(was_training)
    return total / max(count, 1)


def _optimizer_step(
    optimizer: Any, scheduler: Any, scaler: Any, params: list[Any], max_grad_norm: float | None
) -> float | None:
    """One optimizer step: unscale (fp16), clip, step, advance the schedule, zero the gradients. Returns the
    gradient norm before clipping (None without clipping: computing it would cost a pass for nothing)."""
    import torch

    norm = None
    if scaler:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def _forward_backward(
    forward: Any, group: list[Any], device: str, vocab: int, flatten: bool, precision: Precision, scaler: Any
) -> float:
    """Forward and backward of one accumulation group; its loss, normalised by the group's label tokens (one host
    sync per optimizer step)."""
    group_labels = sum(b.label_tokens for b in group)
    step_loss = 0.0
    for batch in group:
        with _autocast(device, precision):
            out = forward(**_model_inputs(batch, device, vocab, flatten), num_items_in_batch=group_labels)
        loss = out.loss
        (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.detach().float()
    return float(step_loss)


def _derived_metrics(
    prepared: Any, cell: CellConfig, precision: Precision, device: str, counters: TrainCounters
) -> dict[str, Any]:
    """Token counts, parameters and the figures derived from them (tokens/s, FLOPs per token, checked MFU)."""
    import torch

    from harness.models.architectures import Architecture

    t = cell.train
    base = prepared.model.get_base_model() if hasattr(prepared.model, "get_base_model") else prepared.model
    arch, _ = Architecture.from_config(base.config.to_dict(), "the trained model's config")
    derived = throughput(
        counters,
        arch=arch,
        trainable_params=prepared.trainable_params,
        total_params=prepared.total_params,
        seq_len=t.max_seq_length,
        dtype=precision.name,
        # Some methods checkpoint on their own (Unsloth): the recomputed forward counts as work done.
        gradient_checkpointing=bool(t.gradient_checkpointing or prepared.notes.get("gradient_checkpointing")),
        device_name=torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
    )
    real, padded = counters.real_tokens, counters.padded_tokens
    return {
        "step_times_s": [round(s.seconds, 6) for s in counters.steps],
        "precision": precision.name,
        "tokens": real,
        "label_tokens": counters.label_tokens,
        "padded_tokens": padded,
        "padding_fraction": padded / max(real + padded, 1),
        "epoch_times_s": counters.epoch_times_s,
        "trainable_params": prepared.trainable_params,
        "total_params": prepared.total_params,
        "trainable_share": prepared.trainable_params / max(prepared.total_params, 1),
        "method_notes": prepared.notes,
        **derived,
    }


def train_model(
    prepared: Any,
    data: Any,
    cell: CellConfig,
    *,
    device: str,
    precision: Precision,
    method: Any,
    options: Any,
    progress: ProgressFile | None = None,
    on_values: Callable[[dict[str, Any], int], None] | None = None,
) -> dict[str, Any]:
    """Train `prepared.model` on `data.train` with `method`'s parameter groups; return the `train` metric group and
    the meters' readings of the region."""
    import torch

    model, t = prepared.model, cell.train
    pad_id = prepared.tokenizer.pad_token_id
    vocab = model.get_input_embeddings().num_embeddings
    progress = progress or ProgressFile(None)
    plans = [_plan_epoch(data.train, cell, pad_id, e) for e in range(cell.epochs)]
    steps_per_epoch = [math.ceil(len(p) / t.gradient_accumulation_steps) for p in plans]
    total_steps = sum(steps_per_epoch)
    if total_steps == 0:
        raise ValueError("no training batches: the training data is empty after cleaning")
    optimizer, optimizer_ref = build_optimizer(method, options, model, cell)
    scheduler = build_scheduler(optimizer, cell, total_steps)
    eval_between_epochs = method.eval_between_epochs(options)
    scaler = torch.amp.GradScaler("cuda") if precision.name == "fp16" else None
    params = [p for p in model.parameters() if p.requires_grad]
    # torch.compile wraps the forward only; validation and evaluation use the plain module.
    forward = torch.compile(model) if t.torch_compile else model
    attention = prepared.attention
    flatten = attention is not None and attention.packed_layout == "flattened"
    # the mask transformers' attention modules get, seen on the first forward (not under torch.compile, whose graph
    # a hook would break, nor for a method running its own attention on flattened rows: its record says what it runs)
    observer = MaskObserver(model) if attention is not None and not (t.torch_compile or flatten) else None
    clock = StepClock(device)

    loss_curve: list[list[float]] = []
    val_losses: list[float | None] = []
    epoch_times: list[float] = []
    real_tokens = padded_tokens = label_tokens_seen = 0
    step = 0
    where = {"phase": "train", "epochs": cell.epochs, "total_steps": total_steps}  # for the progress file
    model.train()
    with measuring("train", device) as meters:
        for epoch, plan in enumerate(plans):
            watch = Stopwatch(device)
            with watch:
                clock.start()
                for start in range(0, len(plan), t.gradient_accumulation_steps):
                    group = plan[start : start + t.gradient_accumulation_steps]
                    step_loss = _forward_backward(forward, group, device, vocab, flatten, precision, scaler)
                    real_tokens += sum(b.real_tokens for b in group)
                    padded_tokens += sum(b.padded_tokens for b in group)
                    label_tokens_seen += sum(b.label_tokens for b in group)
                    if not math.isfinite(step_loss):
                        raise NonFiniteLoss(
                            f"non-finite training loss ({step_loss}) at step {step + 1} of "
                            f"{total_steps} (epoch {epoch + 1}); lr={cell.learning_rate:g}"
                        )
                    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the schedule moves after it)
                    grad_norm = _optimizer_step(optimizer, scheduler, scaler, params, t.max_grad_norm)
                    clock.step(sum(b.real_tokens for b in group))
                    step += 1
                    loss_curve.append([step, step_loss])
                    if on_values is not None:
                        on_values(step_values(clock, step_loss, lr, grad_norm, device), step)
                    progress.update(**where, epoch=epoch + 1, step=step, loss=step_loss)
            epoch_times.append(watch.elapsed)
            if eval_between_epochs or epoch == cell.epochs - 1:
                val_losses.append(validation_loss(model, data.validation, cell, device, precision, pad_id, flatten))
            else:
                val_losses.append(None)
            if on_values is not None:
                on_values({"val/loss": val_losses[-1], "time/epoch_s": watch.elapsed, "epoch": epoch + 1}, step)
            progress.update(force=True, **where, epoch=epoch + 1, step=step, loss=step_loss, val_loss=val_losses[-1])

    if observer is not None:
        observer.remove()
    counters = TrainCounters(
        real_tokens=real_tokens,
        padded_tokens=padded_tokens,
        label_tokens=label_tokens_seen,
        epoch_times_s=epoch_times,
        steps=clock.steps,
    )
    train_metrics = {
        "epochs": cell.epochs,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "optimizer": optimizer_ref,
        "param_groups": param_group_summary(optimizer),
        "loss_curve": loss_curve,
        "initial_loss": loss_curve[0][1],
        "final_train_loss": loss_curve[-1][1],
        "val_loss": val_losses,
        **_derived_metrics(prepared, cell, precision, device, counters),
    }
    if attention is not None:
        train_metrics["attention"] = attention_record(attention, observer.seen if observer else None)
    return {"train": train_metrics, "meters": {"train": readings(meters)}}
