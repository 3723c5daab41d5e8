"""Any PEFT adapter as a matrix entry (`peft: {...}`): checked by PEFT's own config classes before anything runs,
hashed as resolved, counted exactly by the estimator; LoRA+ as a real method with two learning rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CI_DATA, ROOT, matrix_yaml, run_matrix_cli

ZOO = """[
  lora-r16,
  {name: dora-r16, peft: {peft_type: LORA, r: 16, lora_alpha: 32, use_dora: true, target_modules: all-linear}},
  {name: pissa-r16, peft: {peft_type: LORA, r: 16, init_lora_weights: pissa_niter_4, target_modules: all-linear}},
  {name: vera, peft: {peft_type: VERA, r: 256, target_modules: [q_proj, v_proj]}},
  {name: ia3, peft: {peft_type: IA3}},
  {name: qdora-r16, peft: {peft_type: LORA, r: 16, use_dora: true}, quantize: nf4},
]"""


def _load(tmp_path: Path, methods: str):
    from harness.matrix import load_matrix

    path = tmp_path / "m.yaml"
    path.write_text(matrix_yaml(methods))
    return load_matrix(path, data_dir=CI_DATA)


def test_a_peft_entry_keeps_the_resolved_config_and_its_id_follows_it(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "[{name: d, peft: {peft_type: LORA, r: 8, use_dora: true}}]")
    (method,) = [r.config for r in loaded.methods]
    peft = method.options["peft"]
    assert method.kind == "peft" and peft["peft_type"] == "LORA" and peft["use_dora"] is True
    assert peft["lora_alpha"] == 8 and "init_lora_weights" in peft  # PEFT's defaults filled in
    assert "peft_version" not in peft  # nothing that says nothing about the adapter

    from harness.methods.adapter import resolve_peft_config

    assert resolve_peft_config(peft) == peft  # resolving again changes nothing (the child validates it again)

    from harness.config import CellRuntime
    from harness.matrix import expand

    def trained_id(methods: str) -> str:
        runtime = CellRuntime(data_dir=str(CI_DATA), results_dir="", cache_dir="")
        return next(c.id for c in expand(_load(tmp_path, methods), runtime) if c.config.method.kind != "base")

    same = trained_id("[{name: d, peft: {peft_type: LORA, r: 8, use_dora: true, lora_alpha: 8}}]")
    other = trained_id("[{name: d, peft: {peft_type: LORA, r: 8, use_dora: true, lora_alpha: 16}}]")
    first = trained_id("[{name: d, peft: {peft_type: LORA, r: 8, use_dora: true}}]")
    assert first == same != other  # a default written out is the same cell; another value is another cell


@pytest.mark.parametrize(
    "entry,expected",
    [
        ("{name: d, peft: {peft_type: LORA, r: 8, target_module: all-linear}}", "did you mean target_modules"),
        ("{name: d, peft: {peft_type: LOR, r: 8}}", "unknown peft_type 'LOR'"),
        ("{name: d, peft: {peft_type: LORA, r: 8}, quantize: int3}", "methods[0].quantize"),
        ("{name: d, peft: {peft_type: LORA}, preset: lora-r8}", "'peft' and 'preset' both select a method"),
        ("{name: d, preset: lora-r8, rr: 3}", "unknown key 'rr'"),
    ],
)
def test_invalid_peft_entries_are_named(tmp_path: Path, entry: str, expected: str) -> None:
    from harness.matrix import MatrixError

    with pytest.raises(MatrixError) as err:
        _load(tmp_path, f"[{entry}]")
    assert expected in str(err.value)


def test_an_invalid_peft_field_is_exit_2_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        matrix_yaml("[{name: vera, peft: {peft_type: VERA, r: 256, projection_prng_kee: 1}}]")
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "run_matrix.py"), "m.yaml", "--data-dir", str(CI_DATA), "--results", "r"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "methods[0].peft: unknown field(s) ['projection_prng_kee'] for VeraConfig" in out.stderr
    assert "did you mean projection_prng_key" in out.stderr
    assert not (tmp_path / "r").exists()  # nothing ran


def test_the_estimator_counts_any_peft_config_exactly_on_the_meta_device() -> None:
    """The meta-device count is the live model's count, and the closed form of plain LoRA agrees with it."""
    pytest.importorskip("peft")
    import copy

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from harness.methods.adapter import _count_on_meta, build_peft_config, resolve_peft_config, trainable_parameters
    from harness.models.architectures import Architecture

    arch = Architecture.named("tiny-llama")
    configs = [
        {"peft_type": "LORA", "r": 4, "target_modules": "all-linear"},  # closed form
        {"peft_type": "LORA", "r": 4, "use_dora": True, "target_modules": ["q_proj", "down_proj"]},
        {"peft_type": "LORA", "r": 4, "rank_pattern": {"q_proj": 8}, "target_modules": ["q_proj", "v_proj"]},
        {"peft_type": "VERA", "r": 32, "target_modules": ["q_proj", "v_proj"]},
        {"peft_type": "IA3"},
        {"peft_type": "LOHA", "r": 4, "target_modules": ["q_proj"]},
    ]
    for given in configs:
        resolved = resolve_peft_config(given)
        torch.manual_seed(0)
        live = get_peft_model(
            AutoModelForCausalLM.from_config(LlamaConfig(**copy.deepcopy(arch.config))), build_peft_config(resolved)
        )
        expected = sum(p.numel() for p in live.parameters() if p.requires_grad)
        assert trainable_parameters(arch, resolved) == expected, given
        counted = _count_on_meta(json.dumps(arch.config, sort_keys=True), json.dumps(resolved, sort_keys=True))
        assert counted == expected, given


def test_loraplus_gives_the_b_matrices_their_own_learning_rate(make_cells) -> None:
    pytest.importorskip("torch")
    from harness.methods.base import get_method
    from harness.training import build_optimizer

    (cell,) = make_cells("[{name: lp, preset: loraplus-r16, ratio: 8}]", extra="learning_rates: [2.0e-4]\n")
    method = get_method("loraplus")
    options = method.Options.model_validate(cell.config.method.options)
    prepared = method.prepare(cell.config, options, "cpu", None)
    optimizer, ref = build_optimizer(method, options, prepared.model, cell.config)
    names = {id(p): n for n, p in prepared.model.named_parameters()}
    by_lr: dict[float, set[str]] = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(round(group["lr"], 12), set()).update(
            "lora_B" if "lora_B" in names[id(p)] else "A" for p in group["params"]
        )
    assert by_lr == {2e-4: {"A"}, 1.6e-3: {"lora_B"}}
    assert ref == "adamw" and sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in prepared.model.parameters() if p.requires_grad
    )


@pytest.mark.slow
def test_the_peft_zoo_runs_end_to_end_with_exact_counts(tmp_path: Path, cache_dir: Path) -> None:
    """The five `peft:` entries of the issue plus lora-r16 train and score on the tiny model; each cell's trainable
    parameters equal the estimator's to the parameter."""
    (tmp_path / "m.yaml").write_text(
        matrix_yaml(
            ZOO, train="max_steps: 2\n", extra="eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl, limit: 4}]\n"
        )
    )
    out = run_matrix_cli(tmp_path, cache_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("tiny_*.json")]
    trained = {r["config"]["method"]["name"]: r for r in records if r["config"]["method"]["kind"] != "base"}
    assert set(trained) == {"lora-r16", "dora-r16", "pissa-r16", "vera", "ia3", "qdora-r16"}
    for name, r in trained.items():
        assert r["status"] == "success", (name, r["reason"])
        counted = r["metrics"]["train"]["trainable_params"]
        assert counted == r["estimate"]["params"]["trainable"], name
        assert r["metrics"]["eval"]["medqa"]["n"] == 4
    assert (
        trained["dora-r16"]["metrics"]["train"]["trainable_params"]
        > trained["lora-r16"]["metrics"]["train"]["trainable_params"]
    )  # one magnitude per output feature on top of LoRA's A and B
    assert trained["qdora-r16"]["metrics"]["train"]["method_notes"]["quant_type"] == "nf4"
