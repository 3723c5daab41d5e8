"""Forgetting (as peft's `method_comparison` measures it): mean per-token cross-entropy on a sample of general text,
measured on the base model and again after training, inside the cell's own process. The increase (trained - base,
nats per token) is how much general language modelling the fine-tuning cost; ~0 for an untrained row.

Switched on per matrix by `eval.forgetting` (off by default):

    eval:
      forgetting: {path: general_text.txt, max_tokens: 4096, seq_len: 256}   # a local UTF-8 file (data dir)
      forgetting: {hub_id: wikitext, hub_config: wikitext-2-raw-v1, hub_split: test, path: general_text.txt}

The text source: the hub dataset when `hub_id` is set and the process is online, else the local file `path`.
The sample is the first `max_tokens` tokens of the text cut into windows of `seq_len` tokens (the remainder is
dropped), the same windows for every cell of a model. Each window is scored in full: the cross-entropy of every
token after the first given the ones before it, summed over all windows and divided by the number of predicted
tokens; no autocast (the model's own dtypes), evaluation mode, no gradients.

When the base is measured:
- adapter methods (LoRA, QLoRA, Unsloth): after training, on the same model with its adapters disabled (the frozen
  base is unchanged by training). Measuring a 4-bit model before training would repack its weights and silently
  corrupt the gradients (bitsandbytes on CPU), so it is never done;
- methods that change the weights themselves (full fine-tuning): before training;
- untrained rows: once; the increase is 0 by construction.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

EVAL_BATCH = 4
HUB_MAX_ROWS = 20_000  # rows read from a hub dataset at most while collecting the sample


class ForgettingError(RuntimeError):
    """The general-text sample cannot be read."""


def load_text(fc: Any, data_dir: Path) -> tuple[str, dict[str, Any]]:
    """The general text and where it came from ({source, path | hub_id, sha256})."""
    from harness.evaluation.data import is_offline
    from harness.hashing import sha256_file
    from harness.paths import display_data_path, resolve_data_path

    hub_note = None
    if fc.hub_id:
        if is_offline():
            hub_note = "offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set"
        else:
            try:
                return _hub_text(fc)
            except Exception as exc:  # fall back to the local file when there is one, and say so
                hub_note = f"unreadable: {type(exc).__name__}: {exc}"[:200]
    if not fc.path:
        raise ForgettingError(
            f"eval.forgetting: hub dataset {fc.hub_id!r} not used ({hub_note}) and no local 'path' is given"
        )
    path = resolve_data_path(fc.path, data_dir)
    if not path.is_file():
        raise ForgettingError(
            f"eval.forgetting.path: general-text file not found: {path} (relative paths resolve "
            f"against the data dir {data_dir})"
        )
    text = path.read_text(encoding="utf-8")
    source = {"source": "file", "path": display_data_path(path, data_dir), "sha256": sha256_file(path)}
    if hub_note:
        source["hub_not_used"] = hub_note
    return text, source


def _hub_text(fc: Any) -> tuple[str, dict[str, Any]]:
    from datasets import load_dataset

    rows = load_dataset(fc.hub_id, fc.hub_config, split=fc.hub_split, streaming=True)
    parts: list[str] = []
    chars = 0
    for i, row in enumerate(rows):
        if i >= HUB_MAX_ROWS or chars >= fc.max_tokens * 8:  # ~4 characters per token, twice over
            break
        text = str(row.get(fc.text_field) or "").strip()
        if text:
            parts.append(text)
            chars += len(text)
    if not parts:
        raise ForgettingError(f"hub dataset {fc.hub_id!r}: no text in field {fc.text_field!r}")
    return "\n\n".join(parts), {
        "source": "hub",
        "hub_id": fc.hub_id,
        "hub_config": fc.hub_config,
        "split": fc.hub_split,
    }


def token_windows(tokenizer: Any, text: str, max_tokens: int, seq_len: int) -> list[list[int]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    windows = [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
    if not windows:
        raise ForgettingError(
            f"eval.forgetting: the text has {len(ids)} tokens, fewer than one window of seq_len = {seq_len}"
        )
    return windows


def mean_cross_entropy(model: Any, windows: list[list[int]], batch_size: int = EVAL_BATCH) -> float:
    """Mean per-token cross-entropy (nats) of `model` on the windows, every token after a window's first."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                ids = torch.tensor(windows[start : start + batch_size], dtype=torch.long, device=device)
                logits = model(input_ids=ids).logits[:, :-1].float()
                target = ids[:, 1:]
                total += float(
                    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
                )
                count += target.numel()
    finally:
        model.train(was_training)
    return total / count


def _adapters_off(model: Any) -> Any:
    """A context in which a peft model computes with its base weights only, or None for other models."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else None


class ForgettingProbe:
    """Used by harness/cell.py: `before_training(prepared)` then `after_training(model)` -> the metric group."""

    def __init__(self, cfg: Any, tokenizer: Any, trains: bool):
        fc = cfg.eval.forgetting
        text, self.source = load_text(fc, Path(cfg.runtime.data_dir))
        self.windows = token_windows(tokenizer, text, fc.max_tokens, fc.seq_len)
        self.trains = trains
        self.base_ce: float | None = None
        self.base_when = ""

    @classmethod
    def before_training(cls, cfg: Any, prepared: Any, trains: bool) -> "ForgettingProbe":
        probe = cls(cfg, prepared.tokenizer, trains)
        if trains and not callable(getattr(prepared.model, "disable_adapter", None)):
            probe.base_ce = mean_cross_entropy(prepared.model, probe.windows)
            probe.base_when = "before training"
        return probe

    def after_training(self, model: Any) -> dict[str, Any]:
        trained = mean_cross_entropy(model, self.windows)
        if not self.trains:
            base, when = trained, "untrained row: one measurement (base = trained)"
        elif self.base_ce is not None:
            base, when = self.base_ce, self.base_when
        else:
            ctx = _adapters_off(model)
            with ctx if ctx is not None else contextlib.nullcontext():
                base = mean_cross_entropy(model, self.windows)
            when = "after training, adapters disabled (the frozen base)"
        tokens = sum(len(w) - 1 for w in self.windows)
        return {
            "base_ce": base,
            "trained_ce": trained,
            "increase": trained - base,
            "base_ppl": math.exp(base),
            "trained_ppl": math.exp(trained),
            "tokens": tokens,
            "windows": len(self.windows),
            "seq_len": len(self.windows[0]),
            "base_measured": when,
            "text": self.source,
        }
