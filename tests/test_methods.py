"""Each method on a tiny random Llama (in-process, CPU): it trains, lowers the loss, counts its parameters right,
leaves frozen weights alone; QLoRA gradients match a dequantised fp32 reference; Unsloth is skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from harness.methods.base import get_method  # noqa: E402
from harness.methods.lora import TARGET_SETS  # noqa: E402
from harness.models.architectures import Architecture  # noqa: E402
from harness.precision import resolve_precision  # noqa: E402


def prepare(cell, device: str = "cpu"):
    method = get_method(cell.config.method.kind)
    options = method.Options.model_validate(cell.config.method.options)
    precision = resolve_precision(cell.config.train.precision, device)
    torch.manual_seed(cell.config.seed)
    return method, method.prepare(cell.config, options, device, precision.frozen_dtype), precision


def data_for(cell, prepared):
    from harness.data import prepare_data

    cfg = cell.config
    return prepare_data(
        cfg.train, prepared.tokenizer, Path(cfg.runtime.data_dir), Path(cfg.runtime.cache_dir), cfg.seed
    )


def train(cell, method, prepared, precision, data):
    from harness.training import train_model

    return train_model(
        prepared,
        data,
        cell.config,
        device="cpu",
        precision=precision,
        method=method,
        options=method.Options.model_validate(cell.config.method.options),
    )


def val_loss(cell, prepared, precision, data) -> float:
    from harness.training import validation_loss

    return validation_loss(prepared.model, data.train, cell.config, "cpu", precision, prepared.tokenizer.pad_token_id)


@pytest.mark.slow
@pytest.mark.parametrize("methods,lr", [("[full]", "1.0e-3"), ("[lora-r8]", "5.0e-3"), ("[qlora]", "5.0e-3")])
def test_method_lowers_loss(make_cells, methods, lr):
    (cell,) = make_cells(methods, extra=f"learning_rates: [{lr}]\nepochs: [2]\n")
    method, prepared, precision = prepare(cell)
    data = data_for(cell, prepared)
    if method.eval_between_epochs(method.Options.model_validate(cell.config.method.options)):
        before = val_loss(cell, prepared, precision, data)
    else:  # QLoRA: an eval-mode forward before training would repack the 4-bit weights (guide); use step-1 loss
        before = None
    metrics = train(cell, method, prepared, precision, data)
    after = val_loss(cell, prepared, precision, data)
    t = metrics["train"]
    before = before if before is not None else t["loss_curve"][0][1]
    assert after < before - 0.05, (before, after)
    assert t["steps"] == sum(t["steps_per_epoch"]) > 0 and len(t["epoch_times_s"]) == 2
    assert all(v is not None for v in t["val_loss"][-1:])
    assert t["tokens"] > 0 and t["tokens_per_s"] > 0 and t["time_per_epoch_s"] > 0
    assert 0 < t["trainable_params"] <= t["total_params"]
    memory = metrics["meters"]["train"]["memory"]
    assert memory["peak_rss_bytes"] > 100 * 2**20  # torch alone is more than 100 MiB
    assert memory["headline"] == "peak_rss_bytes"


@pytest.mark.parametrize("r,targets", [(8, "all-linear"), (16, "attention"), (64, "all-linear")])
def test_lora_trainable_params_closed_form(make_cells, r, targets):
    methods = f"[{{name: x, preset: lora, options: {{r: {r}, target_modules: {targets}}}}}]"
    (cell,) = make_cells(methods)
    _, prepared, _ = prepare(cell)
    # the live peft model has exactly as many trainable parameters as the estimator's closed form counts
    arch, _ = Architecture.from_config(prepared.model.get_base_model().config.to_dict(), "model")
    assert prepared.trainable_params == arch.lora_params(r, TARGET_SETS[targets])


def test_dora_adds_one_magnitude_per_output(make_cells):
    (cell,) = make_cells("[{name: x, preset: lora-r8, options: {use_dora: true, target_modules: [q_proj]}}]")
    _, prepared, _ = prepare(cell)
    arch, _ = Architecture.from_config(prepared.model.get_base_model().config.to_dict(), "model")
    h, layers = arch.hidden, arch.layers
    assert prepared.trainable_params == layers * (8 * (h + h) + h)  # A, B and one magnitude per output
    assert prepared.trainable_params == arch.lora_params(8, ["q_proj"], dora=True)


@pytest.mark.slow
def test_lora_leaves_base_weights_bit_identical(make_cells):
    (cell,) = make_cells("[lora-r8]", extra="learning_rates: [5.0e-3]\n")
    method, prepared, precision = prepare(cell)
    before = {k: v.detach().clone() for k, v in prepared.model.named_parameters() if "lora_" not in k}
    lora_before = {k: v.detach().clone() for k, v in prepared.model.named_parameters() if "lora_" in k}
    train(cell, method, prepared, precision, data_for(cell, prepared))
    after = dict(prepared.model.named_parameters())
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(lora_before[k], after[k]) for k in lora_before)  # the adapters did move


@pytest.mark.slow
def test_qlora_leaves_4bit_base_untouched(make_cells):
    # No validation split: an eval-mode forward repacks the 4-bit bytes for the CPU kernel (the guide's pitfall),
    # so bytes can only be compared before any evaluation.
    (cell,) = make_cells("[qlora]", train="validation_fraction: 0.0\n", extra="learning_rates: [5.0e-3]\n")
    method, prepared, precision = prepare(cell)
    packed = {k: v.detach().clone() for k, v in prepared.model.named_parameters() if v.dtype == torch.uint8}
    assert packed, "no 4-bit weights found"
    train(cell, method, prepared, precision, data_for(cell, prepared))
    now = {k: v for k, v in prepared.model.named_parameters() if k in packed}
    assert all(torch.equal(packed[k], now[k]) for k in packed)


@pytest.mark.slow
def test_qlora_gradients_match_dequantized_reference(make_cells):
    """Gradients of the LoRA weights through the 4-bit base agree with an fp32 model holding the dequantised weights."""
    import bitsandbytes.functional as bnbf
    from peft import get_peft_model

    from harness.data import iter_batches
    from harness.methods.adapter import build_peft_config
    from harness.models import load_model

    (cell,) = make_cells("[{name: q, preset: qlora, options: {dropout: 0.0, compute_dtype: fp32}}]")
    method, prepared, _ = prepare(cell)
    model = prepared.model
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero (so A gets no gradient): give both sides the same random B
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    data = data_for(cell, prepared)
    batch = next(
        iter(
            iter_batches(
                data.train,
                batch_size=4,
                max_seq_length=128,
                packing=True,
                pad_to_max_length=False,
                pad_token_id=prepared.tokenizer.pad_token_id,
                seed=0,
                epoch=0,
            )
        )
    )
    model(**batch.model_kwargs()).loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    ref, _ = load_model(cell.config.model, device="cpu", dtype=torch.float32, cache_dir=cell.config.runtime.cache_dir)
    ref_modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, module in model.get_base_model().named_modules():
            weight = getattr(module, "weight", None)
            if weight is not None and getattr(weight, "quant_state", None) is not None:
                ref_modules[name.removesuffix(".base_layer")].weight.copy_(
                    bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
                )
    ref = get_peft_model(
        ref, build_peft_config(method.peft_config(method.Options.model_validate(cell.config.method.options)))
    )
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" in k}, strict=False)
    ref.train()
    ref(**batch.model_kwargs()).loss.backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert grads.keys() == ref_grads.keys()
    a = torch.cat([grads[k].flatten() for k in grads])
    b = torch.cat([ref_grads[k].flatten() for k in grads])
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert cosine > 0.99, float(cosine)


def test_unsloth_is_skipped_with_reason_on_cpu(make_cells):
    from harness.cell import run_cell
    from harness.methods.unsloth import NO_GPU

    (cell,) = make_cells("[unsloth]")
    result = run_cell(cell.config, cell.id, cell.config_hash)
    assert result.status == "skipped"
    assert result.reason == NO_GPU


def test_nan_loss_is_a_failure_with_reason(make_cells):
    from harness.training import NonFiniteLoss

    (cell,) = make_cells("[full]")
    method, prepared, precision = prepare(cell)
    with torch.no_grad():
        prepared.model.get_input_embeddings().weight[:] = float("nan")
    with pytest.raises(NonFiniteLoss, match=r"non-finite training loss \(nan\) at step 1 of"):
        train(cell, method, prepared, precision, data_for(cell, prepared))
