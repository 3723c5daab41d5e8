"""Model sources: named architectures, synthetic materialisation, the SmolLM2 GGUF conversion, errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from harness.config import ModelSpec  # noqa: E402
from harness.models import SMOLLM2_GGUF, SMOLLM2_PACKAGE, ModelSourceError, load_model, resolve_model_path  # noqa: E402
from harness.models.architectures import ARCHITECTURES, Architecture, architecture_config  # noqa: E402


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_closed_form_parameter_count_matches_transformers(name):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = architecture_config(name)
    config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert model.num_parameters() == Architecture.named(name).params.total


def test_published_sizes_of_named_architectures():
    # Sanity against the published model sizes (to 1 %): the shapes were copied right.
    published = {
        "llama-3.2-1b": 1.236e9,
        "tinyllama-1.1b": 1.100e9,
        "smollm2-135m": 134.5e6,
        "smollm2-360m": 361.8e6,
        "smollm2-1.7b": 1.711e9,
    }
    for name, size in published.items():
        assert abs(Architecture.named(name).params.total / size - 1) < 0.01, name


def test_synthetic_model_is_deterministic(cache_dir):
    spec = ModelSpec(id="t", source="synthetic", architecture="tiny-llama")
    a, tok = load_model(spec, device="cpu", dtype=torch.float32, cache_dir=cache_dir)
    b, _ = load_model(spec, device="cpu", dtype=torch.float32, cache_dir=cache_dir)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert tok.pad_token_id is not None and tok.chat_template
    other = ModelSpec(id="t", source="synthetic", architecture="tiny-llama", config_overrides={"num_hidden_layers": 1})
    assert resolve_model_path(other, cache_dir) != resolve_model_path(spec, cache_dir)


def test_a_synthetic_model_with_rope_scaling_is_built_once(tmp_path, cache_dir):
    """Llama-3.2's `rope_scaling` dict: transformers writes `rope_theta` into the dict it is given, which used to
    reach ARCHITECTURES and change the cache key, so the same model was built again by the next cell (issue 17)."""
    import shutil
    from pathlib import Path

    from harness.models.sources.synthetic import SyntheticSource, tokenizer_source

    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    small |= {"num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000}
    spec = ModelSpec(id="l", source="synthetic", architecture="llama-3.2-1b", config_overrides=small)
    before = dict(ARCHITECTURES["llama-3.2-1b"]["rope_scaling"])
    cache = tmp_path / "cache"  # a fresh cache, with the session's tokenizer copied in (5 s saved)
    shutil.copytree(Path(str(tokenizer_source(spec, cache_dir))), Path(str(tokenizer_source(spec, cache, build=False))))
    source = SyntheticSource()
    assert source.first_build_s(spec, cache, gpu=False) > 0  # not built yet: the estimator adds its build
    first = resolve_model_path(spec, cache)
    load_model(spec, device="cpu", dtype=torch.float32, cache_dir=cache)  # a second cell's load
    assert resolve_model_path(spec, cache) == first
    assert [p.name for p in (cache / "models").iterdir()] == [first.name]  # one build, one folder
    assert ARCHITECTURES["llama-3.2-1b"]["rope_scaling"] == before
    assert source.first_build_s(spec, cache, gpu=False) == 0.0


def test_missing_local_model_folder_names_it(tmp_path):
    spec = ModelSpec(id="mine", source="local", path=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelSourceError, match="nothing-here is not a model folder"):
        resolve_model_path(spec, tmp_path)


def test_missing_gguf_file_names_it(tmp_path):
    spec = ModelSpec(id="g", source="gguf", path=str(tmp_path / "x.gguf"))
    with pytest.raises(ModelSourceError, match=r"GGUF file not found: .*x\.gguf"):
        resolve_model_path(spec, tmp_path)


@pytest.mark.slow
def test_smollm2_gguf_converts_to_an_identical_savable_model(cache_dir):
    from transformers import AutoModelForCausalLM

    from harness.models import gguf_location

    spec = ModelSpec(id="smol", source="gguf", package=SMOLLM2_PACKAGE, gguf_file=SMOLLM2_GGUF)
    model, tok = load_model(spec, device="cpu", dtype=torch.float32, cache_dir=cache_dir)
    assert model.num_parameters() == 134_515_008
    folder, name = gguf_location(spec)
    direct = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    ids = tok("Question: What lowers blood pressure?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    assert (resolve_model_path(spec, cache_dir) / "model.safetensors").is_file()
