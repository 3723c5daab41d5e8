"""Batches: determinism, packing layout, loss equivalence packed vs unpacked on a tiny random Llama, no attention
across example boundaries, padding statistics."""

from __future__ import annotations

import random

import pytest
import torch

from harness.data import IGNORE_INDEX, iter_batches, padding_stats
from harness.data.pack import plan_batches

PAD = 2


def make_examples(n: int, seed: int = 0, min_len: int = 5, max_len: int = 40, vocab: int = 1000):
    """Synthetic tokenized examples: a prompt (labels -100) then a response (labels = ids)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        prompt = rng.randint(1, length - 2)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def batches(examples, **kw):
    args = dict(
        batch_size=3, max_seq_length=64, packing=True, pad_to_max_length=False, pad_token_id=PAD, seed=0, epoch=0
    )
    args.update(kw)
    return list(iter_batches(examples, **args))


def rows_of(examples, **kw):
    args = dict(batch_size=3, max_seq_length=64, packing=True, pad_to_max_length=False, seed=0, epoch=0)
    args.update(kw)
    lengths = [len(e["input_ids"]) for e in examples]
    return plan_batches(lengths, **args)


# ---------------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("packing", [True, False])
def test_epoch_is_deterministic_and_changes_with_epoch_and_seed(packing):
    exs = make_examples(30)

    def signature(**kw):
        return [b.input_ids.tolist() for b in batches(exs, packing=packing, **kw)]

    assert signature() == signature()
    assert signature(epoch=1) != signature()
    assert signature(seed=1) != signature()


def test_every_example_appears_once_per_epoch_packed():
    exs = make_examples(40)
    seen = []
    for rows, _ in rows_of(exs):
        for row in rows:
            assert sum(len(exs[i]["input_ids"]) for i in row) <= 64
            seen.extend(row)
    assert sorted(seen) == list(range(40))


def test_first_fit_fills_earlier_rows_first():
    from harness.data.pack import plan_rows

    lengths = [40, 30, 20, 24, 10]
    order = [0, 1, 2, 3, 4]
    # 40 -> row 0 (24 left); 30 -> row 1 (34 left); 20 -> row 0 (4 left); 24 -> row 1 (10 left); 10 -> row 1
    assert plan_rows(lengths, order, 64, packing=True) == [[0, 2], [1, 3, 4]]
    assert plan_rows(lengths, order, 64, packing=False) == [[i] for i in order]


def test_first_fit_matches_a_plain_scan_of_the_rows():
    from harness.data.pack import plan_rows

    def plain_first_fit(lengths, order, max_len):
        rows, free = [], []
        for i in order:
            for r, left in enumerate(free):
                if left >= lengths[i]:
                    rows[r].append(i)
                    free[r] -= lengths[i]
                    break
            else:
                rows.append([i])
                free.append(max_len - lengths[i])
        return rows

    rng = random.Random(11)
    for n, max_len in ((300, 64), (200, 512), (7, 10)):
        lengths = [rng.randint(1, max_len) for _ in range(n)]
        order = rng.sample(range(n), n)
        assert plan_rows(lengths, order, max_len, packing=True) == plain_first_fit(lengths, order, max_len)


def test_packed_batch_layout():
    exs = make_examples(20)
    plans = rows_of(exs)
    for batch, (rows, width) in zip(batches(exs), plans, strict=True):
        assert batch.attention_mask is None and batch.position_ids is not None
        assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (len(rows), width)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(exs[i]["input_ids"])
                assert batch.input_ids[r, at : at + n].tolist() == exs[i]["input_ids"]
                assert batch.position_ids[r, at : at + n].tolist() == list(range(n))
                # first token of every packed example: no loss (never predicted from the previous example)
                assert batch.labels[r, at].item() == IGNORE_INDEX
                assert batch.labels[r, at + 1 : at + n].tolist() == exs[i]["labels"][1:]
                at += n
            assert (batch.input_ids[r, at:] == PAD).all() and (batch.labels[r, at:] == IGNORE_INDEX).all()
            assert batch.position_ids[r, at:].tolist() == list(range(width - at))
        real = sum(len(exs[i]["input_ids"]) for row in rows for i in row)
        assert batch.real_tokens == real and batch.padded_tokens == len(rows) * width - real
        # exactly the tokens a causal LM's shifted loss counts (usable as num_items_in_batch)
        assert batch.label_tokens == int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
        assert batch.examples == sum(len(row) for row in rows)
        assert [sum(seg) for seg in batch.segments] == [width] * len(rows)
        assert [seg[: len(row)] for seg, row in zip(batch.segments, rows)] == [
            [len(exs[i]["input_ids"]) for i in row] for row in rows
        ]


def test_flattened_batch_is_the_same_tokens_in_one_row_with_their_lengths():
    """Unsloth's layout (harness/attention.py): B packed rows as one row of B·T tokens, every segment's length given."""
    exs = make_examples(20)
    for batch in batches(exs):
        flat = batch.flattened()
        b, t = batch.input_ids.shape
        assert flat.input_ids.shape == flat.labels.shape == flat.position_ids.shape == (1, b * t)
        assert flat.input_ids[0].tolist() == batch.input_ids.reshape(-1).tolist()
        assert (flat.real_tokens, flat.label_tokens, flat.padded_tokens) == (
            batch.real_tokens,
            batch.label_tokens,
            batch.padded_tokens,
        )
        lengths = flat.packed_seq_lengths.tolist()
        assert sum(lengths) == b * t and lengths == [n for seg in batch.segments for n in seg]
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        assert [i for i, p in enumerate(flat.position_ids[0].tolist()) if p == 0] == starts  # positions restart
        assert "packed_seq_lengths" in flat.model_kwargs() and "packed_seq_lengths" not in batch.model_kwargs()
    (unpacked,) = batches(exs[:2], packing=False)
    with pytest.raises(ValueError, match="only packed batches"):
        unpacked.flattened()


def test_packing_forces_first_label_off_even_if_data_labels_it():
    exs = [{"input_ids": [7, 8, 9], "labels": [7, 8, 9]}, {"input_ids": [10, 11], "labels": [10, 11]}]
    (batch,) = batches(exs, batch_size=4, max_seq_length=8)
    assert batch.labels.tolist() == [[IGNORE_INDEX, 8, 9, IGNORE_INDEX, 11]] or batch.labels.tolist() == [
        [IGNORE_INDEX, 11, IGNORE_INDEX, 8, 9]
    ]


def test_unpacked_batch_layout_and_pad_to_max_length():
    exs = make_examples(10)
    for pad_to_max in (False, True):
        plans = rows_of(exs, packing=False, pad_to_max_length=pad_to_max)
        for batch, (rows, width) in zip(batches(exs, packing=False, pad_to_max_length=pad_to_max), plans, strict=True):
            assert batch.position_ids is None and batch.attention_mask is not None
            lengths = [len(exs[row[0]]["input_ids"]) for row in rows]
            assert width == (64 if pad_to_max else max(lengths))
            for r, n in enumerate(lengths):
                assert batch.attention_mask[r].tolist() == [1] * n + [0] * (width - n)
                assert batch.labels[r, :n].tolist() == exs[rows[r][0]]["labels"]
            assert batch.real_tokens == sum(lengths) == int(batch.attention_mask.sum())
            assert batch.label_tokens == int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def test_packed_pad_to_max_length():
    for batch in batches(make_examples(10), pad_to_max_length=True):
        assert batch.input_ids.shape[1] == 64


def test_overlength_example_is_an_error():
    exs = make_examples(3, min_len=70, max_len=80)
    with pytest.raises(ValueError, match="more than max_seq_length=64"):
        batches(exs)


def test_model_kwargs_disable_the_cache():
    (packed,) = batches(make_examples(2), batch_size=2)
    (unpacked,) = batches(make_examples(2), batch_size=2, packing=False)
    assert set(packed.model_kwargs()) == {"input_ids", "labels", "position_ids", "use_cache"}
    assert set(unpacked.model_kwargs()) == {"input_ids", "labels", "attention_mask", "use_cache"}
    assert packed.model_kwargs()["use_cache"] is False


# ---------------------------------------------------------------------------------------------------- padding stats


@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("pad_to_max", [True, False])
def test_padding_stats_match_the_batches(packing, pad_to_max):
    exs = make_examples(37, seed=3)
    stats = padding_stats(
        exs, batch_size=4, max_seq_length=64, packing=packing, pad_to_max_length=pad_to_max, seed=5, epoch=2
    )
    built = batches(exs, batch_size=4, packing=packing, pad_to_max_length=pad_to_max, seed=5, epoch=2)
    real = sum(b.real_tokens for b in built)
    padded = sum(b.padded_tokens for b in built)
    assert stats == {
        "rows": sum(b.input_ids.shape[0] for b in built),
        "batches": len(built),
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_fraction": padded / (real + padded),
    }
    assert real == sum(len(e["input_ids"]) for e in exs)


def test_packing_pads_less():
    exs = make_examples(60, seed=1)
    kw = dict(batch_size=4, max_seq_length=64, pad_to_max_length=False)
    packed = padding_stats(exs, packing=True, **kw)
    unpacked = padding_stats(exs, packing=False, **kw)
    to_max = padding_stats(exs, packing=False, batch_size=4, max_seq_length=64, pad_to_max_length=True)
    assert packed["rows"] < unpacked["rows"] == 60
    assert packed["padding_fraction"] < unpacked["padding_fraction"] < to_max["padding_fraction"]


def test_padding_stats_of_nothing():
    assert padding_stats([], batch_size=2, max_seq_length=8, packing=True, pad_to_max_length=False) == {
        "rows": 0,
        "batches": 0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "padding_fraction": 0.0,
    }


# ---------------------------------------------------------------------------------------------------- tiny model


# every kernel harness/attention.py can choose for packed rows (flex attention: its forward runs on CPU; its
# backward needs CUDA); flash-attn varlen needs CUDA and the flash-attn package
@pytest.fixture(scope="module", params=["sdpa", "eager", "flex_attention"])
def tiny_llama(request):
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation=request.param)
    assert model.config._attn_implementation == request.param
    return model.eval()


def per_example_losses_unpacked(model, exs, batch):
    """{example index: summed token loss} from the logits of an unpacked batch."""
    with torch.no_grad():
        logits = model(**batch.model_kwargs()).logits.float()
    out = []
    for r in range(logits.shape[0]):
        loss = torch.nn.functional.cross_entropy(
            logits[r, :-1], batch.labels[r, 1:], ignore_index=IGNORE_INDEX, reduction="sum"
        )
        out.append(loss)
    return out


def test_packed_and_unpacked_give_the_same_per_example_loss(tiny_llama):
    exs = make_examples(12, seed=7, min_len=6, max_len=30)
    max_len = 64
    packed_losses: dict[int, float] = {}
    total_label_tokens = 0
    for batch, (rows, _) in zip(
        batches(exs, batch_size=2, max_seq_length=max_len),
        rows_of(exs, batch_size=2, max_seq_length=max_len),
        strict=True,
    ):
        with torch.no_grad():
            out = tiny_llama(**batch.model_kwargs())
        logits = out.logits.float()
        summed = torch.tensor(0.0)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(exs[i]["input_ids"])
                # within the example only: position t predicts label t+1; label at `at` is -100 by construction
                loss = torch.nn.functional.cross_entropy(
                    logits[r, at : at + n - 1],
                    batch.labels[r, at + 1 : at + n],
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                packed_losses[i] = loss.item()
                summed += loss
                at += n
        # the model's own mean loss over the packed batch is the same total: nothing crosses a boundary
        torch.testing.assert_close(out.loss.float(), summed / batch.label_tokens, rtol=1e-5, atol=1e-5)
        total_label_tokens += batch.label_tokens
    assert sorted(packed_losses) == list(range(len(exs)))

    unpacked_losses: dict[int, float] = {}
    for batch, (rows, _) in zip(
        batches(exs, batch_size=3, max_seq_length=max_len, packing=False, seed=1),
        rows_of(exs, batch_size=3, max_seq_length=max_len, packing=False, seed=1),
        strict=True,
    ):
        for (i,), loss in zip(rows, per_example_losses_unpacked(tiny_llama, exs, batch)):
            unpacked_losses[i] = loss.item()
    alone = {}
    for i, e in enumerate(exs):  # each example on its own, no padding, no packing
        ids = torch.tensor([e["input_ids"]])
        with torch.no_grad():
            logits = tiny_llama(input_ids=ids, use_cache=False).logits.float()[0]
        alone[i] = torch.nn.functional.cross_entropy(
            logits[:-1], torch.tensor(e["labels"][1:]), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
    for i in range(len(exs)):
        assert packed_losses[i] == pytest.approx(alone[i], rel=1e-4, abs=1e-4), i
        assert unpacked_losses[i] == pytest.approx(alone[i], rel=1e-4, abs=1e-4), i
    assert total_label_tokens == sum(sum(x != IGNORE_INDEX for x in e["labels"][1:]) for e in exs)


def test_no_attention_across_example_boundaries(tiny_llama):
    first = {"input_ids": list(range(100, 120)), "labels": list(range(100, 120))}
    second = {"input_ids": list(range(300, 315)), "labels": list(range(300, 315))}
    changed_first = {"input_ids": list(range(500, 520)), "labels": list(range(500, 520))}

    def logits_of_row(exs):
        (batch,) = batches(exs, batch_size=1, max_seq_length=64, seed=0)
        assert batch.input_ids.shape[0] == 1  # both examples in one packed row
        with torch.no_grad():
            logits = tiny_llama(**batch.model_kwargs()).logits[0]
        row = batch.input_ids[0].tolist()
        start = next(j for j in range(len(row)) if row[j : j + 15] == second["input_ids"])
        return logits[start : start + 15]

    a = logits_of_row([first, second])
    b = logits_of_row([changed_first, second])
    with torch.no_grad():
        alone = tiny_llama(input_ids=torch.tensor([second["input_ids"]]), use_cache=False).logits[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, alone, rtol=1e-5, atol=1e-5)


def test_flattened_rows_keep_examples_apart(tiny_llama):
    """The flattened layout (one row of B·T tokens, positions restarting per example) gives every example the logits
    it has alone: the layout is safe for any kernel that keeps packed sequences apart from the position ids."""
    exs = make_examples(9, seed=3, min_len=6, max_len=25)
    (batch,) = batches(exs, batch_size=4, max_seq_length=64)[:1]
    flat = batch.flattened()
    kwargs = flat.model_kwargs()
    kwargs.pop("packed_seq_lengths")  # Unsloth's own argument; transformers reads the position ids
    with torch.no_grad():
        logits = tiny_llama(**kwargs).logits[0]
    at = 0
    for n in flat.packed_seq_lengths.tolist():
        ids = flat.input_ids[0, at : at + n]
        if (ids != PAD).any():
            with torch.no_grad():
                alone = tiny_llama(input_ids=ids.unsqueeze(0), use_cache=False).logits[0]
            torch.testing.assert_close(logits[at : at + n], alone, rtol=1e-4, atol=1e-4)
        at += n
