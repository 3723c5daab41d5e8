"""Batches of tokenized examples for one epoch: packed rows or padded rows.

One epoch's batches are a function of (examples, seed, epoch) only: the example order is shuffled with
`random.Random(f"{seed}-{epoch}")`, then examples are packed or batched in that order. Every method of a model row
therefore sees the same data in the same order.

Packing: greedy first-fit, in the shuffled order, into rows of at most `max_seq_length` tokens; an example is never
split. Positions restart at 0 for every example of a row and no attention mask is given: transformers then builds a
block-diagonal causal mask from the position ids (sdpa / eager / flash-attention), so no token attends across an
example boundary. That detection only runs without a KV cache: call the model with `use_cache=False`
(`Batch.model_kwargs()` does). The label of the first token of every packed example is -100, so it is never
predicted from the end of the previous example.

Without packing: one example per row, right-padded to the longest row of the batch (or to `max_seq_length` with
`pad_to_max_length`), with an attention mask.

Packed batches also carry each row's segment lengths (its examples, then the padding tail), so a method whose
attention keeps examples apart only inside one flattened row (Unsloth: `packed_seq_lengths`) gets the same batch as
one row of B·T tokens (`Batch.flattened()`): the same tokens, labels and positions, the same matmul work.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.data.format import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Batch:
    input_ids: "torch.LongTensor"  # [B, T]
    labels: "torch.LongTensor"  # [B, T], -100 where no loss
    position_ids: "torch.LongTensor | None"  # packed: positions restart at 0 for every example in a row
    attention_mask: "torch.LongTensor | None"  # unpacked: 1 for real tokens, 0 for padding; None when packed
    real_tokens: int  # non-padding tokens in the batch
    label_tokens: int  # tokens that carry a loss
    padded_tokens: int  # B*T - real_tokens
    examples: int = 0  # examples in the batch
    segments: list[list[int]] | None = None  # packed: per row, its examples' lengths then its padding tail's
    packed_seq_lengths: "torch.IntTensor | None" = None  # flattened: every segment's length, in order

    def flattened(self) -> "Batch":
        """A packed batch as one row of B·T tokens with its segment lengths (see the module doc)."""
        if self.segments is None or self.position_ids is None:
            raise ValueError("only packed batches can be flattened")
        import torch

        lengths = [n for row in self.segments for n in row if n > 0]
        return Batch(
            input_ids=self.input_ids.reshape(1, -1),
            labels=self.labels.reshape(1, -1),
            position_ids=self.position_ids.reshape(1, -1),
            attention_mask=None,
            real_tokens=self.real_tokens,
            label_tokens=self.label_tokens,
            padded_tokens=self.padded_tokens,
            examples=self.examples,
            segments=[lengths],
            packed_seq_lengths=torch.tensor(lengths, dtype=torch.int32),
        )

    def model_kwargs(self, device: Any = None) -> dict[str, Any]:
        """Keyword arguments for `model(**kwargs)`, moved to `device` when given. `use_cache=False`: with a cache,
        transformers ignores packing."""
        kwargs: dict[str, Any] = {"input_ids": self.input_ids, "labels": self.labels}
        if self.position_ids is not None:
            kwargs["position_ids"] = self.position_ids
        if self.attention_mask is not None:
            kwargs["attention_mask"] = self.attention_mask
        if self.packed_seq_lengths is not None:
            kwargs["packed_seq_lengths"] = self.packed_seq_lengths
        if device is not None:
            kwargs = {k: t.to(device, non_blocking=True) for k, t in kwargs.items()}
        return {**kwargs, "use_cache": False}


# ---------------------------------------------------------------------------------------------------- planning


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return order


class _FreeSpace:
    """Free tokens per row in a max-segment tree: the leftmost row with room for n tokens in O(log rows)."""

    def __init__(self, max_rows: int):
        self.size = 1
        while self.size < max(max_rows, 1):
            self.size *= 2
        self.tree = [0] * (2 * self.size)

    def set(self, row: int, free: int) -> None:
        node = row + self.size
        self.tree[node] = free
        while node > 1:
            node //= 2
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])

    def leftmost(self, n: int) -> int | None:
        if self.tree[1] < n:
            return None
        node = 1
        while node < self.size:
            node = 2 * node if self.tree[2 * node] >= n else 2 * node + 1
        return node - self.size


def plan_rows(lengths: list[int], order: list[int], max_seq_length: int, packing: bool) -> list[list[int]]:
    """Rows of example indices: one example per row, or greedy first-fit packing in `order`."""
    for i in order:
        if lengths[i] > max_seq_length:
            raise ValueError(
                f"example {i} has {lengths[i]} tokens, more than max_seq_length={max_seq_length}; "
                f"prepare_data removes or truncates such examples"
            )
    if not packing:
        return [[i] for i in order]
    rows: list[list[int]] = []
    free = _FreeSpace(len(order))
    for i in order:
        n = lengths[i]
        r = free.leftmost(n)
        if r is None:  # no open row has room: open a new one
            r = len(rows)
            rows.append([])
            free.set(r, max_seq_length)
        rows[r].append(i)
        free.set(r, free.tree[r + free.size] - n)
    return rows


def plan_batches(
    lengths: list[int],
    *,
    batch_size: int,
    max_seq_length: int,
    packing: bool,
    pad_to_max_length: bool,
    seed: int,
    epoch: int,
) -> list[tuple[list[list[int]], int]]:
    """(rows, width) of every batch of one epoch: the rows' example indices and the padded length T."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rows = plan_rows(lengths, epoch_order(len(lengths), seed, epoch), max_seq_length, packing)
    batches = []
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        width = max_seq_length if pad_to_max_length else max(sum(lengths[i] for i in row) for row in chunk)
        batches.append((chunk, width))
    return batches


# ---------------------------------------------------------------------------------------------------- batches


def iter_batches(
    examples: list[dict[str, list[int]]],
    *,
    batch_size: int,
    max_seq_length: int,
    packing: bool,
    pad_to_max_length: bool,
    pad_token_id: int,
    seed: int,
    epoch: int,
) -> Iterator[Batch]:
    """The batches of one epoch (the last one may be smaller)."""
    import torch

    lengths = [len(ex["input_ids"]) for ex in examples]
    for rows, width in plan_batches(
        lengths,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        packing=packing,
        pad_to_max_length=pad_to_max_length,
        seed=seed,
        epoch=epoch,
    ):
        input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long) if packing else None
        attention_mask = None if packing else torch.zeros((len(rows), width), dtype=torch.long)
        segments: list[list[int]] | None = [] if packing else None
        real = 0
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                ids, lab = examples[i]["input_ids"], examples[i]["labels"]
                n = len(ids)
                input_ids[r, at : at + n] = torch.tensor(ids, dtype=torch.long)
                labels[r, at : at + n] = torch.tensor(lab, dtype=torch.long)
                if packing:
                    labels[r, at] = IGNORE_INDEX  # never predicted from the previous example
                    position_ids[r, at : at + n] = torch.arange(n)
                at += n
            if packing:
                # padding is its own "sequence" (positions from 0): it stays out of the examples' attention blocks
                position_ids[r, at:] = torch.arange(width - at)
                segments.append([len(examples[i]["input_ids"]) for i in row] + ([width - at] if width > at else []))
            else:
                attention_mask[r, :at] = 1
            real += at
        yield Batch(
            input_ids=input_ids,
            labels=labels,
            position_ids=position_ids,
            attention_mask=attention_mask,
            real_tokens=real,
            label_tokens=int((labels != IGNORE_INDEX).sum()),
            padded_tokens=len(rows) * width - real,
            examples=sum(len(row) for row in rows),
            segments=segments,
        )


def padding_stats(
    examples: list[dict[str, list[int]]],
    *,
    batch_size: int,
    max_seq_length: int,
    packing: bool,
    pad_to_max_length: bool,
    seed: int = 0,
    epoch: int = 0,
) -> dict[str, Any]:
    """Rows, batches, real and padded tokens of one epoch, as `iter_batches` would build it (no tensors).

    Without packing and without `pad_to_max_length` the padding depends on the order: `seed` and `epoch` pick it.
    """
    lengths = [len(ex["input_ids"]) for ex in examples]
    batches = plan_batches(
        lengths,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        packing=packing,
        pad_to_max_length=pad_to_max_length,
        seed=seed,
        epoch=epoch,
    )
    rows = sum(len(r) for r, _ in batches)
    total = sum(len(r) * width for r, width in batches)
    real = sum(lengths)
    return {
        "rows": rows,
        "batches": len(batches),
        "real_tokens": real,
        "padded_tokens": total - real,
        "padding_fraction": (total - real) / total if total else 0.0,
    }
