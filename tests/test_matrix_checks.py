"""Matrix checks added for a stranger's first hour: duplicate YAML keys, nan / inf and absurd ranges, include /
exclude rules that match nothing (with the closest valid value), rules that leave no trained cell. No torch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.matrix import MatrixError, load_matrix

BASE = """\
name: t
models:
  - {id: tiny, source: synthetic, architecture: tiny-llama}
methods: [full, lora-r8, qlora]
epochs: [1, 2]
learning_rates: [1.0e-4, 2.0e-4]
train:
  datasets: [{path: train.json, format: instruction}]
eval:
  tasks: [{name: medqa, data: mq.jsonl}]
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.json").write_text("[]")
    (d / "mq.jsonl").write_text("")
    return d


def problems(tmp_path: Path, text: str, data_dir: Path) -> list[str]:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(MatrixError) as info:
        load_matrix(path, data_dir=data_dir)
    assert all(line.startswith(f"{path}: ") for line in str(info.value).splitlines())
    return info.value.problems


def test_base_is_valid(tmp_path, data_dir):
    (tmp_path / "m.yaml").write_text(BASE)
    assert load_matrix(tmp_path / "m.yaml", data_dir=data_dir)


def test_duplicate_keys_are_errors_with_lines(tmp_path, data_dir):
    assert problems(tmp_path, BASE + "epochs: [3]\n", data_dir) == [
        "line 11: duplicate key 'epochs' (first on line 5); a key may appear only once in a mapping: remove one of them"
    ]
    nested = BASE.replace("train:\n", "train:\n  batch_size: 2\n") + "  batch_size: 4\n"
    assert problems(tmp_path, nested.replace("eval:\n  tasks: [{name: medqa, data: mq.jsonl}]\n", ""), data_dir)[
        0
    ].startswith("line 10: duplicate key 'batch_size' (first on line 8)")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("learning_rates: [1.0e-4, 2.0e-4]", "learning_rates: [.nan]"), "learning_rates[0]: Input should be a finite"),
        (
            ("epochs: [1, 2]", "epochs: [1, 2]\ntimeout_minutes: .inf"),
            "timeout_minutes: must be 'auto', a finite number",
        ),
        (("epochs: [1, 2]", "epochs: [1, 2]\ntimeout_minutes: -1"), "timeout_minutes: must be 'auto', a finite number"),
        (
            ("format: instruction}]", "format: instruction}]\n  max_seq_length: 1000000000"),
            "train.max_seq_length: Input should be less than or equal to 1048576",
        ),
        (
            ("format: instruction}]", "format: instruction}]\n  warmup_ratio: .nan"),
            "train.warmup_ratio: Input should be",
        ),
    ],
)
def test_numbers_are_range_checked(tmp_path, data_dir, edit, expected):
    got = problems(tmp_path, BASE.replace(*edit), data_dir)
    assert len(got) == 1 and got[0].startswith(expected), got


def test_rule_value_matching_nothing_names_the_allowed_values(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "exclude:\n  - {method: qlorra, epochs: 2}\n", data_dir)
    assert got == [
        "exclude[0].method: 'qlorra' matches no method of this matrix; allowed: full, lora-r8, qlora; "
        "did you mean 'qlora'?"
    ]
    got = problems(tmp_path, BASE + "include:\n  - {epochs: 3}\n  - {model: tiny, learning_rate: 3.0e-4}\n", data_dir)
    assert got == [
        "include[0].epochs: 3 matches no epochs of this matrix; allowed: 1, 2",
        "include[1].learning_rate: 0.0003 matches no learning rate of this matrix; allowed: 1e-4, 2e-4",
    ]


def test_rule_whose_values_never_meet_is_an_error(tmp_path, data_dir):
    text = BASE.replace("methods: [full, lora-r8, qlora]", "methods:\n  - {name: full, epochs: [1]}\n  - lora-r8")
    got = problems(tmp_path, text + "exclude:\n  - {method: full, epochs: 2}\n", data_dir)
    assert got == [
        'exclude[0]: {"method": "full", "epochs": 2} matches no cell of this matrix (each value exists, '
        "but not together: check the methods' own epochs / learning_rates)"
    ]


def test_globs_still_work(tmp_path, data_dir):
    (tmp_path / "m.yaml").write_text(BASE + "exclude:\n  - {method: 'lora*', epochs: 2}\n")
    assert load_matrix(tmp_path / "m.yaml", data_dir=data_dir)


def test_excluding_every_trained_cell_is_an_error(tmp_path, data_dir):
    got = problems(tmp_path, BASE + "exclude:\n  - {model: tiny}\n", data_dir)
    assert got == [
        "include/exclude: the rules leave no trained cell (only the untrained base rows would run); "
        "loosen the rules or remove the methods they exclude"
    ]
