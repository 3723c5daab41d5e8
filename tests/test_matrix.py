"""Matrix schema validation (exact messages), expansion, pruning and stable cell ids. No torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import CellRuntime
from harness.matrix import MatrixError, expand, load_matrix

ROOT = Path(__file__).resolve().parent.parent

BASE = """
name: t
models:
  - {id: tiny, source: synthetic, architecture: tiny-llama}
methods: [full, lora-r8]
epochs: [1, 2]
learning_rates: [1.0e-4, 2.0e-4]
train:
  datasets: [{path: train.json, format: instruction}]
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.json").write_text("[]")
    (d / "mq.jsonl").write_text("")
    return d


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str, data_dir: Path) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path, data_dir=data_dir)
    assert all(line.startswith(f"{path}: ") for line in str(info.value).splitlines())
    return info.value.problems


def runtime(data_dir: Path) -> CellRuntime:
    return CellRuntime(data_dir=str(data_dir), results_dir="/r", cache_dir="/c")


def test_valid_matrix_expands(tmp_path, data_dir):
    loaded = load_matrix(write(tmp_path, BASE), data_dir=data_dir)
    cells = expand(loaded, runtime(data_dir))
    assert len(cells) == 2 * 2 * 2  # no eval tasks -> no base row
    assert {c.config.method.kind for c in cells} == {"full", "lora"}
    lora = next(c for c in cells if c.config.method.kind == "lora")
    assert lora.config.method.options["r"] == 8 and lora.config.method.options["alpha"] == 16


def test_missing_key(tmp_path, data_dir):
    assert problems(tmp_path, "name: t\nmethods: [full]\n", data_dir) == ["models: missing required key 'models'"]


def test_unknown_key_names_path_and_allowed(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "  batchsize: 4\n", data_dir)
    assert len(got) == 1
    assert got[0].startswith(
        "train.batchsize: unknown key 'batchsize'; allowed keys here: attn_implementation, batch_size,"
    )


def test_unknown_top_level_key(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "epoch: [1]\n", data_dir)
    assert got[0].startswith(
        "epoch: unknown key 'epoch'; allowed keys here: data_dir, description, epochs, eval, exclude,"
    )


def test_wrong_type(tmp_path, data_dir):
    got = problems(tmp_path, BASE.replace("epochs: [1, 2]", "epochs: many"), data_dir)
    assert got == ['epochs: Input should be a valid list (got "many")']


def test_bad_value_in_method_override(tmp_path, data_dir):
    text = BASE.replace("methods: [full, lora-r8]", "methods:\n  - {name: f, preset: full, train: {batch_size: 0}}")
    got = problems(tmp_path, text, data_dir)
    assert got == ["methods[0].train.batch_size: Input should be greater than or equal to 1 (got 0)"]


def test_unknown_method(tmp_path, data_dir):
    from harness.methods.base import presets

    got = problems(tmp_path, BASE.replace("lora-r8", "lora-r9"), data_dir)
    assert len(got) == 1
    # every registered preset is allowed (no list to keep in step here: a new method file adds its own)
    assert got[0].startswith(f"methods[1].name: unknown method 'lora-r9'; allowed: {', '.join(sorted(presets()))}")
    assert "did you mean 'lora-r8'?" in got[0] and "'peft:'" in got[0]


def test_unknown_method_option(tmp_path, data_dir):
    text = BASE.replace("methods: [full, lora-r8]", "methods:\n  - {name: x, preset: lora-r8, options: {rank: 4}}")
    got = problems(tmp_path, text, data_dir)
    assert got[0].startswith(
        "methods[0].options.rank: unknown key 'rank'; allowed keys here: alpha, dropout, r, "
        "target_modules, use_dora, use_rslora"
    )


def test_unknown_architecture(tmp_path, data_dir):
    got = problems(tmp_path, BASE.replace("tiny-llama", "llama-9b"), data_dir)
    assert got == [
        "models[0]: architecture: unknown architecture 'llama-9b'; allowed: llama-3.2-1b, smollm2-1.7b, "
        "smollm2-135m, smollm2-360m, tiny-llama, tinyllama-1.1b (source 'synthetic') (got {...})"
    ]


def test_source_needs_its_key(tmp_path, data_dir):
    got = problems(
        tmp_path,
        BASE.replace("{id: tiny, source: synthetic, architecture: tiny-llama}", "{id: m, source: hub}"),
        data_dir,
    )
    assert got == ["models[0]: source 'hub' needs the key 'hub_id' (got {...})"]


def test_missing_data_file(tmp_path, data_dir):
    got = problems(tmp_path, BASE.replace("train.json", "nope.json"), data_dir)
    assert got == [
        f"train.datasets[0].path: data file not found: {data_dir / 'nope.json'} (relative paths resolve "
        f"against --data-dir, $MEDBENCH_DATA_DIR or the matrix's data_dir; now {data_dir})"
    ]


def test_missing_eval_file_says_how_to_obtain(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "eval: {tasks: [medqa]}\n", data_dir)
    assert len(got) == 1
    assert got[0].startswith(
        f"eval.tasks[0].data: data file for task 'medqa' not found: {data_dir / 'medqa_usmle_4opt/test.jsonl'}"
    )
    assert "github.com/jind11/MedQA" in got[0]


def test_matrix_own_data_dir_is_relative_to_the_file(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("MEDBENCH_DATA_DIR", raising=False)
    sub = tmp_path / "matrices"
    sub.mkdir()
    path = sub / "m.yaml"
    path.write_text(BASE + "data_dir: ../data\n")
    assert load_matrix(path).data_dir == sub / "../data"
    monkeypatch.setenv("MEDBENCH_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(MatrixError, match="elsewhere"):
        load_matrix(path)
    assert load_matrix(path, data_dir=data_dir).data_dir == data_dir


def test_empty_product(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "exclude: [{method: '*'}]\n", data_dir)
    assert got == ["include/exclude: the rules leave no cell to run (empty product)"]


def test_bad_rule_key(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "exclude: [{lr: 1}]\n", data_dir)
    assert got[0].startswith("exclude: Value error, unknown rule key(s) ['lr']") or got[0].startswith(
        "exclude: unknown rule key(s) ['lr']; allowed: model, method, variant, epochs, learning_rate, seed"
    )


def test_not_yaml_and_not_mapping(tmp_path, data_dir):
    assert problems(tmp_path, "- a\n- b\n", data_dir)[0].startswith("(top level): a matrix file must be a mapping")
    assert problems(tmp_path, "name: [unclosed\n", data_dir)[0].startswith("not valid YAML")


def test_duplicate_names(tmp_path, data_dir):
    text = BASE.replace("methods: [full, lora-r8]", "methods: [full, full]")
    assert problems(tmp_path, text, data_dir) == [
        "methods: the name 'full' is used twice; give each entry its own 'name'"
    ]


def test_per_method_lrs_epochs_and_exclude(tmp_path, data_dir):
    text = (
        BASE.replace(
            "methods: [full, lora-r8]",
            textwrap.dedent("""\
        methods:
          - {name: full, learning_rates: [1.0e-5]}
          - {name: lora-r8, epochs: [3]}
        """),
        )
        + "seeds: [0, 1]\nexclude: [{method: lora-r8, seed: 1}]\n"
    )
    cells = expand(load_matrix(write(tmp_path, text), data_dir=data_dir), runtime(data_dir))
    full = [c for c in cells if c.method == "full"]
    lora = [c for c in cells if c.method == "lora-r8"]
    assert {c.config.learning_rate for c in full} == {1e-5} and len(full) == 2 * 2  # 2 epochs x 2 seeds
    assert {(c.config.epochs, c.config.seed) for c in lora} == {(3, 0)} and len(lora) == 2  # 2 global lrs


def test_include_rule_and_globs(tmp_path, data_dir):
    text = BASE + "include: [{method: 'lora*', learning_rate: 2.0e-4}]\n"
    cells = expand(load_matrix(write(tmp_path, text), data_dir=data_dir), runtime(data_dir))
    assert [(c.method, c.config.learning_rate) for c in cells] == [("lora-r8", 2e-4)] * 2


def test_variants_axis_and_base_rows(tmp_path, data_dir):
    text = BASE + textwrap.dedent("""\
        variants:
          - {name: packed, train: {packing: true}}
          - {name: padded, train: {packing: false, pad_to_max_length: true}}
        eval: {tasks: [{name: medqa, data: mq.jsonl}]}
        """)
    cells = expand(load_matrix(write(tmp_path, text), data_dir=data_dir), runtime(data_dir))
    assert cells[0].config.method.kind == "base" and cells[0].id.startswith("tiny_base-")
    trained = cells[1:]
    assert len(trained) == 2 * 2 * 2 * 2
    padded = [c for c in trained if c.config.variant == "padded"]
    assert all(not c.config.train.packing and c.config.train.pad_to_max_length for c in padded)
    assert all("_padded_" in c.id for c in padded)


def test_cell_ids_are_stable_and_readable(tmp_path, data_dir):
    path = write(tmp_path, BASE)
    a = expand(load_matrix(path, data_dir=data_dir), runtime(data_dir))
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    (other_dir / "train.json").write_text("[]")
    b = expand(
        load_matrix(path, data_dir=other_dir),
        CellRuntime(data_dir=str(other_dir), results_dir="/x", cache_dir="/y", timeout_s=5),
    )
    assert [c.id for c in a] == [c.id for c in b]  # machine paths and timeouts are not part of the identity
    assert a[0].id.startswith("tiny_full_e1_lr1e-4_s0-") and len(a[0].id.rsplit("-", 1)[1]) == 8
    assert len({c.id for c in a}) == len(a)
    changed = expand(
        load_matrix(
            write(tmp_path, BASE.replace("datasets:", "batch_size: 8\n  datasets:"), "n.yaml"), data_dir=data_dir
        ),
        runtime(data_dir),
    )
    assert {c.id for c in changed}.isdisjoint({c.id for c in a})  # any config change -> new hash


def test_shipped_matrices_validate():
    for path in sorted((ROOT / "matrices").rglob("*.yaml")):
        loaded = load_matrix(path, check_files=False)
        assert expand(loaded, CellRuntime(data_dir="/d", results_dir="/r", cache_dir="/c")), path


def test_dry_run_imports_no_torch(tmp_path, data_dir):
    path = write(tmp_path, BASE)
    code = (
        f"import sys; from harness.cli import main; rc = main([{str(path)!r}, '--data-dir', {str(data_dir)!r}, "
        f"'--dry-run', '--results', {str(tmp_path / 'res')!r}]); assert 'torch' not in sys.modules, "
        "'torch imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "matrix t: 8 cells  (run 8, done 0, skip 0)" in out.stdout
