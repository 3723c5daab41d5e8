"""The GPU benchmark kit: matrices/gpu_bench.yaml, scripts/gpu_bench.sh, scripts/prepare_gpu_wheels.sh and the
helpers in scripts/gpu/. Nothing here needs a GPU, the network or the shared data (fixtures are written here)."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from harness.config import CellRuntime, Matrix

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "matrices" / "gpu_bench.yaml"
SCRIPTS = [ROOT / "scripts" / "gpu_bench.sh", ROOT / "scripts" / "prepare_gpu_wheels.sh"]
GPU = ROOT / "scripts" / "gpu"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cells():
    from harness.matrix import expand, load_matrix

    loaded = load_matrix(MATRIX, check_files=False)
    return expand(loaded, CellRuntime(data_dir=".", results_dir=".", cache_dir="."))


# ---------------------------------------------------------------------------------------------------- matrix


def test_matrix_validates_against_the_schema():
    raw = yaml.safe_load(MATRIX.read_text())
    m = Matrix.model_validate(raw)
    assert {x.id for x in m.models} == {"llama-3.2-1b", "tinyllama-1.1b"}
    assert all(x.source == "synthetic" for x in m.models)
    assert m.train.token_budget and m.train.precision == "bf16" and m.eval.tasks == [] and not m.eval.base_rows
    assert {"packed", "padded", "packed-compile", "packed-liger", "packed-gc"} == {v.name for v in m.variants}


def test_every_cell_is_in_the_value_order_exactly_once(cells):
    plan = load_script("plan")
    ordered = plan.ordered_cells()
    assert [c.label for c in ordered][:5] == [
        "LoRA r16, Llama-3.2-1B, seq 2048 packed, bf16",
        "the same, padded to 2048",
        "full fine-tuning bf16",
        "QLoRA r16 (NF4)",
        "Unsloth LoRA r16 (bf16 base)",
    ]
    bench_ids = [c.cell_id for c in ordered if c.matrix_name == "gpu_bench"]
    assert sorted(bench_ids) == sorted(c.id for c in cells)  # every training cell, once
    assert ordered[-1].matrix_name == "gpu_eval_speed"


def test_each_cell_is_sized_to_under_45_s_of_training_on_an_h200(cells):
    from harness.estimator import DeviceProfile, estimate_cell

    plan = load_script("plan")
    h200 = DeviceProfile.for_device("NVIDIA H200")
    for c in cells:
        e = estimate_cell(c.config, h200, mean_tokens_per_example=plan.MEAN_TOKENS)
        assert e.fits, c.id
        assert e.time_per_epoch_s < plan.CELL_LIMIT_S, (c.id, e.time_per_epoch_s)
    # the first, most valuable cells fit one call's budget with their start-ups (the rest: a second call)
    ordered = plan.ordered_cells()
    assert plan.INSTALL_S + sum(c.wall_s for c in ordered[:9]) < 450


def test_data_limits_agree_with_the_slice_the_script_copies():
    prepare = load_script("prepare_data")
    raw = yaml.safe_load(MATRIX.read_text())
    limits = {d["path"]: d["limit"] for d in raw["train"]["datasets"]}
    assert limits == {rel: n for rel, kind, n in prepare.SLICES if kind != "copy"}
    evals = yaml.safe_load((ROOT / "matrices" / "gpu_eval_speed.yaml").read_text())["eval"]["tasks"]
    assert {t["data"] for t in evals} == {rel for rel, kind, _ in prepare.SLICES if kind == "copy"}


# ---------------------------------------------------------------------------------------------------- shell


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text or "set -uo pipefail" in text


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_when_available(script):
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([exe, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_wheel_list_never_carries_the_cuda_stack():
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "prepare_gpu_wheels.sh"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    names = [w.split("==")[0].lower() for w in out]
    assert all("==" in w for w in out), "every wheel is pinned"
    assert len(names) == len(set(names)), "one version per project"
    assert not [n for n in names if n in ("torch", "torchvision", "triton", "xformers") or n.startswith("nvidia-")]
    for wanted in (
        "bitsandbytes==0.50.2",
        "lm-eval==0.4.13",
        "unsloth==2026.10.9",
        "pydantic==2.14.3",
        "trl==1.15.0",
        "liger-kernel==0.8.5",
    ):
        assert wanted in out
    core = subprocess.run(
        ["bash", str(ROOT / "scripts" / "prepare_gpu_wheels.sh"), "--groups", "core", "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "bitsandbytes==0.50.2" not in core and "pydantic==2.14.3" in core
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts" / "prepare_gpu_wheels.sh"), "--groups", "nope", "--list"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2


def test_bench_script_rejects_unknown_arguments(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "OUT": str(tmp_path), "HOME": str(tmp_path)}
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--part", "1"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and "usage" in r.stderr


def test_plan_prints_both_calls_with_the_first_call_holding_the_five_most_wanted_cells():
    r = subprocess.run([sys.executable, str(GPU / "plan.py")], capture_output=True, text=True, check=True)
    call1 = r.stdout.split("-- call 2")[0]
    for wanted in ("lora-r16_packed_", "lora-r16_padded_", "_full_packed_", "_qlora-r16_packed_", "_unsloth-lora-r16_"):
        assert wanted in call1, wanted
    assert "passed over" not in r.stdout  # each call's cells fit its budget
    assert "call 1:" in r.stdout and "call 2:" in r.stdout and "min predicted on NVIDIA H200" in r.stdout


def test_each_call_fits_its_budget_and_the_limits_are_a_few_times_the_prediction():
    plan = load_script("plan")
    cells = plan.ordered_cells(cache_dir="/nonexistent")  # a fresh machine: first builds count
    for call, budget in plan.CALL_BUDGET_S.items():
        mine = [c for c in cells if c.call == call]
        assert plan.INSTALL_S + sum(c.wall_s for c in mine) <= budget, call
    assert plan.CALL_BUDGET_S[1] + 30 <= 360  # the first call: at most 6 minutes of command time
    assert 90 + sum(b + 30 for b in plan.CALL_BUDGET_S.values()) <= 15 * 60  # one start, two calls
    assert [c.rank for c in cells if c.call == 1] == [1, 2, 3, 4, 5]
    without_build = plan.ordered_cells()
    assert cells[0].wall_s > without_build[0].wall_s  # cell 1 pays Llama-3.2-1B's first build, later cells do not
    assert cells[2].wall_s == without_build[2].wall_s
    for c in cells:
        assert plan.LIMIT_FLOOR_S <= c.limit_s <= plan.LIMIT_CAP_S
        assert c.limit_s >= min(plan.LIMIT_CAP_S, plan.LIMIT_FACTOR * c.wall_s)


def test_the_bench_qlora_cell_uses_non_paged_8bit_adamw(cells):
    (qlora,) = [c for c in cells if c.config.method.kind == "qlora"]
    assert qlora.config.train.optimizer == "adamw_8bit"  # paged = CUDA managed memory (the device's notes)


# ---------------------------------------------------------------------------------------------------- data


def _fixture_data(root: Path) -> None:
    (root / "chatdoctor5k").mkdir(parents=True)
    records = [
        {"instruction": "Answer as a doctor.", "input": f"Symptom {i}", "output": f"Advice {i}"} for i in range(2500)
    ]
    (root / "chatdoctor5k" / "chatdoctor5k.json").write_text(json.dumps(records))
    (root / "chatdoctor5k" / "LICENSE").write_text("fixture license\n")
    (root / "medquad").mkdir()
    with (root / "medquad" / "medquad.jsonl").open("w") as f:
        for i in range(700):
            f.write(json.dumps({"id": str(i), "question": f"What is condition {i}?", "answer": f"It is {i}."}) + "\n")
            if i == 3:
                f.write("\n")  # blank lines are skipped
    (root / "medqa_usmle_4opt").mkdir()
    (root / "medqa_usmle_4opt" / "test.jsonl").write_text(
        "".join(
            json.dumps({"question": f"Q{i}?", "options": {k: f"{k}{i}" for k in "ABCD"}, "answer_idx": "ABCD"[i % 4]})
            + "\n"
            for i in range(8)
        )
    )
    (root / "pubmedqa").mkdir()
    (root / "pubmedqa" / "test_set.json").write_text(
        json.dumps(
            {str(1000 + i): {"QUESTION": f"Q{i}?", "CONTEXTS": ["c"], "final_decision": "yes"} for i in range(5)}
        )
    )


def test_prepare_data_copies_the_slice(tmp_path):
    src, dest = tmp_path / "shared", tmp_path / "out"
    _fixture_data(src)
    r = subprocess.run(
        [sys.executable, str(GPU / "prepare_data.py"), "--src", str(src), "--dest", str(dest), "--no-tokenizer"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    chat = json.loads((dest / "chatdoctor5k" / "chatdoctor5k.json").read_text())
    assert len(chat) == 2000 and chat[0]["input"] == "Symptom 0" and chat[-1]["input"] == "Symptom 1999"
    lines = (dest / "medquad" / "medquad.jsonl").read_text().splitlines()
    assert len(lines) == 600 and json.loads(lines[-1])["id"] == "599"
    assert (dest / "chatdoctor5k" / "LICENSE").read_text() == "fixture license\n"
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["files"]["medquad/medquad.jsonl"]["of"] == 700
    assert manifest["files"]["pubmedqa/test_set.json"]["records"] == 5  # eval files: whole
    assert (dest / "medqa_usmle_4opt" / "test.jsonl").read_bytes() == (
        src / "medqa_usmle_4opt" / "test.jsonl"
    ).read_bytes()
    assert not (tmp_path / "out" / "tokenizer").exists()


def test_prepared_slice_loads_as_the_matrix_reads_it(tmp_path):
    from harness.matrix import load_matrix

    src, dest = tmp_path / "shared", tmp_path / "out"
    _fixture_data(src)
    subprocess.run(
        [sys.executable, str(GPU / "prepare_data.py"), "--src", str(src), "--dest", str(dest), "--no-tokenizer"],
        check=True,
        capture_output=True,
    )
    load_matrix(MATRIX, data_dir=dest, check_files=True)  # every data file the matrices name is there
    load_matrix(ROOT / "matrices" / "gpu_eval_speed.yaml", data_dir=dest, check_files=True)


def test_prepare_data_reports_missing_sources(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(GPU / "prepare_data.py"),
            "--src",
            str(tmp_path),
            "--dest",
            str(tmp_path / "o"),
            "--no-tokenizer",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not found" in r.stderr


# ---------------------------------------------------------------------------------------------------- wheels


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _make_wheel(path: Path, name: str, version: str, files: dict[str, bytes], requires: list[str] = ()) -> Path:
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    members = {
        **files,
        f"{dist}/METADATA": meta.encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        rows = []
        for n, data in members.items():
            z.writestr(n, data)
            rows.append((n, _record_hash(data), str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [(f"{dist}/RECORD", "", "")])
        z.writestr(f"{dist}/RECORD", buf.getvalue())
    return whl


def test_slim_wheel_drops_files_and_keeps_a_valid_record(tmp_path):
    slim = load_script("slim_wheel")
    src = _make_wheel(
        tmp_path,
        "toylib",
        "1.0",
        {
            "toylib/__init__.py": b"X = 1\n",
            "toylib/lib_cuda118.so": b"\0" * 1000,
            "toylib/lib_cuda130.so": b"\1" * 10,
            "studio/app.js": b"js",
        },
    )
    out = tmp_path / "slim"
    out.mkdir()
    dst = out / src.name
    kept, dropped = slim.slim(str(src), str(dst), drop=["toylib/lib_*.so", "studio/*"], keep=["toylib/lib_cuda13*.so"])
    assert sorted(dropped) == ["studio/app.js", "toylib/lib_cuda118.so"]
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = list(csv.reader(io.StringIO(z.read("toylib-1.0.dist-info/RECORD").decode())))
        for name, digest, size in record:
            if digest:
                assert _record_hash(z.read(name)) == digest and int(size) == len(z.read(name))
        assert {r[0] for r in record} == names
    assert "toylib/lib_cuda130.so" in names and "toylib/lib_cuda118.so" not in names
    assert "toylib-1.0.dist-info/medbench-slim.txt" in names
    # pip accepts it
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target), str(dst)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (target / "toylib" / "__init__.py").read_text() == "X = 1\n"


def test_check_wheels_finds_duplicates_and_missing_dependencies(tmp_path):
    check = load_script("check_wheels")
    _make_wheel(
        tmp_path,
        "alpha",
        "1.0",
        {"alpha/__init__.py": b""},
        requires=[
            "beta>=1",
            "numpy",
            "torch>=2",
            "xformers; sys_platform == 'linux'",
            "mlx; sys_platform == 'darwin'",
            "gamma; extra == 'dev'",
        ],
    )
    _make_wheel(tmp_path, "beta", "1.0", {"beta/__init__.py": b""}, requires=["missing-thing"])
    errors, notes, total = check.check(tmp_path, max_mib=1)
    assert any("missing-thing" in e for e in errors)
    assert not any("numpy" in e or "torch" in e or "mlx" in e or "gamma" in e for e in errors)
    assert any("torch" in n for n in notes) and any("xformers" in n for n in notes)
    _make_wheel(tmp_path, "beta", "2.0", {"beta/__init__.py": b""})
    errors, _, _ = check.check(tmp_path)
    assert any("more than one version" in e for e in errors)


def test_downloaded_wheels_if_present_are_consistent():
    """When scripts/prepare_gpu_wheels.sh has run here, its .whl/ folder passes the checks it ran."""
    folder = ROOT / ".whl"
    if not any(folder.glob("*.whl")):
        pytest.skip("no .whl/ here (run scripts/prepare_gpu_wheels.sh)")
    check = load_script("check_wheels")
    errors, _, total = check.check(folder, max_mib=50)
    assert not errors and total < 50


# ---------------------------------------------------------------------------------------------------- summary


def test_summary_reads_results(tmp_path, cells, capsys):
    from harness.estimator import DeviceProfile, estimate_cell
    from harness.results import CellResult, write_result

    summary = load_script("summary")
    h100 = DeviceProfile.for_device("NVIDIA H100 80GB HBM3")
    results = tmp_path / "gpu_bench"
    for c in cells[:3]:
        e = estimate_cell(c.config, h100)
        tps = 0.35 * 989e12 / e.hardware_flops_per_position
        write_result(
            results,
            CellResult(
                cell_id=c.id,
                config_hash=c.config_hash,
                matrix="gpu_bench",
                status="success",
                config=c.config.model_dump(mode="json"),
                estimate=estimate_cell(c.config).as_dict(),
                metrics={
                    "train": {
                        "tokens_per_s": tps,
                        "mfu": 0.3,
                        "peak_flops": 989e12,
                        "padding_fraction": 0.0,
                        "time_per_epoch_s": 7.0,
                        "steps": 37,
                        "steps_per_epoch": [37],
                        "tokens": 290000,
                    },
                    "meters": {
                        "train": {"memory": {"headline": "max_reserved_bytes", "headline_bytes": e.peak_memory_bytes}}
                    },
                },
                timings={"wall_s": 30.0, "train_s": 7.0},
                environment={"device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}},
            ),
        )
    write_result(
        results,
        CellResult(
            cell_id=cells[3].id,
            config_hash=cells[3].config_hash,
            matrix="gpu_bench",
            status="oom",
            reason="CUDA out of memory",
            config=cells[3].config.model_dump(mode="json"),
        ),
    )
    out_json = tmp_path / "s.json"
    assert summary.main([str(tmp_path), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in text and "oom" in text and "30.0%" in text
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 4
    assert data["profile"]["achievable_fraction"] == pytest.approx(0.35)
    assert summary.main([str(tmp_path / "empty")]) == 1


# ---------------------------------------------------------------------------------------------------- the driver

STALL_PLUGIN = '''
import os, time
from harness.methods.base import register
from harness.methods.full import Full


@register
class Stall(Full):
    """Full fine-tuning that waits while a marker file exists: a cell that only the call's deadline ends."""

    kind = "stall"

    def prepare(self, cell, options, device, dtype):
        while os.path.exists(os.environ["STALL_MARKER"]):
            time.sleep(0.2)
        return super().prepare(cell, options, device, dtype)
'''


@pytest.fixture
def bench_on_tiny_cells(tmp_path):
    """scripts/gpu/bench.py with its value order pointed at tiny CPU cells (the real driver, real cells), in a child
    process: the stalling plug-in method stays out of this test process's registries."""
    from conftest import CI_DATA, matrix_yaml

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stall.py").write_text(STALL_PLUGIN)
    matrix = tmp_path / "tiny.yaml"
    matrix.write_text(
        matrix_yaml("[full, lora-r8, stall]", train="token_budget: 1000\n", name="tiny_gpu")
        + "eval: {tasks: [], base_rows: false}\n"
    )
    order = [("full", str(matrix), "*_full_*", 1), ("lora", str(matrix), "*_lora-r8_*", 1)]
    order.append(("stall", str(matrix), "*_stall_*", 2))
    driver = (
        f"import sys; sys.path.insert(0, {str(GPU)!r}); import bench, plan; plan.VALUE_ORDER = {order!r}; "
        "sys.exit(bench.run(sys.argv[1:]))"
    )
    env = {**os.environ, "MEDBENCH_PLUGINS": str(plugins), "STALL_MARKER": str(tmp_path / "stall")}
    common = ["--data-dir", str(CI_DATA), "--results", str(tmp_path / "results"), "--device", "cpu"]
    common += ["--cache-dir", str(tmp_path / "cache")]

    def bench(*args: str) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-c", driver, *common, *args], env=env, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr

    return bench, tmp_path


def test_bench_passes_over_cells_that_do_not_fit_the_time_left(bench_on_tiny_cells):
    bench, tmp_path = bench_on_tiny_cells
    code, text = bench("--out", str(tmp_path / "out"), "--budget-s", "25", "--call", "1")
    assert code == 4, text
    assert text.count("passed over (next call)") == 2 and "run the next call" in text
    assert load_script("outbox").archive_records(tmp_path / "out") == {}


@pytest.mark.slow
def test_bench_returns_one_archive_and_a_second_call_continues(bench_on_tiny_cells):
    bench, tmp_path = bench_on_tiny_cells
    outbox = load_script("outbox")
    out1 = tmp_path / "out1"
    code, text = bench("--out", str(out1), "--budget-s", "600", "--order", "1")  # only cell 1 asked for
    assert code == 0, text
    assert outbox.check(out1) == []
    names = sorted(p.name for p in out1.iterdir())
    assert names == ["report-tiny_gpu.html", "results.tar.gz", "summary.json", "summary.txt"]
    ((cell_id, status),) = outbox.archive_records(out1).items()
    assert status == "success" and "_full_" in cell_id
    assert "tiny " in (out1 / "summary.txt").read_text() and "steady-state" in (out1 / "summary.txt").read_text()
    assert json.loads((out1 / "summary.json").read_text())["rows"][0]["steady_steps"] is not None
    out2 = tmp_path / "out2"  # the continuation: the finished cell is skipped, the other one of call 1 runs
    code, text = bench("--out", str(out2), "--budget-s", "600", "--call", "1")
    assert code == 0 and "already success (carried), skipped" in text, text
    assert sorted(outbox.archive_records(out2).values()) == ["success", "success"]  # every finished cell
    restored = tmp_path / "restored"
    outbox.collect(out2, restored, None)
    here = sorted(p.name for p in (tmp_path / "results" / "tiny_gpu").glob("*.json"))
    assert sorted(p.name for p in (restored / "tiny_gpu").glob("*.json")) == here


@pytest.mark.slow
def test_a_cell_cut_by_the_calls_deadline_is_not_done_and_runs_first_in_the_next_call(bench_on_tiny_cells):
    """The stalling cell waits on a marker, so only the call's deadline can end it (no race with a timer)."""
    bench, tmp_path = bench_on_tiny_cells
    outbox = load_script("outbox")
    (tmp_path / "stall").touch()
    out1 = tmp_path / "out1"
    code, text = bench("--out", str(out1), "--budget-s", "45", "--call", "2")
    assert code == 4, text
    assert "cut by the call's deadline" in text and "the next call runs it first" in text
    assert outbox.archive_records(out1) == {}  # set aside: no record counts it as done
    cut = (tmp_path / "results" / "deadline_cut.txt").read_text().split()
    assert len(cut) == 1 and "_stall_" in cut[0]
    assert list((tmp_path / "results" / "tiny_gpu").glob("*_stall_*.json.cut"))
    (tmp_path / "stall").unlink()
    out2 = tmp_path / "out2"
    code, text = bench("--out", str(out2), "--budget-s", "600", "--call", "1")
    assert code == 0, text
    ran = [line for line in text.splitlines() if line.startswith("== ") and "predicted" in line]
    assert "_stall_" in ran[0] and "cut earlier: first" in ran[0]  # first, though it belongs to call 2
    assert sorted(outbox.archive_records(out2).values()) == ["success"] * 3
    assert (tmp_path / "results" / "deadline_cut.txt").read_text() == ""


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_cell_and_returns_within_the_limits(tmp_path):
    """`gpu_bench.sh --rehearse`: the very same driver and cells on tiny shapes on this CPU (with the device's
    package versions where .ci/run installed them), then the device tool's return limits and a collect."""
    out = tmp_path / "out"
    env = {**os.environ, "MEDBENCH_CACHE_DIR": str(tmp_path / "cache")}
    script = str(ROOT / "scripts" / "gpu_bench.sh")
    r = subprocess.run(["bash", script, "--rehearse", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "return limits: ok" in r.stdout and "collect: all" in r.stdout
    records = load_script("outbox").archive_records(out)
    assert len(records) == 13 and set(records.values()) <= {"success", "skipped"}
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_bench.log",
        "report-gpu_bench.html",
        "report-gpu_eval_speed.html",
        "results.tar.gz",
        "summary.json",
        "summary.txt",
    ]


def test_outbox_check_names_every_broken_limit(tmp_path):
    outbox = load_script("outbox")
    out = tmp_path / "out"
    (out / "a" / "b" / "c").mkdir(parents=True)
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    (out / "bad name.txt").write_text("x")
    for i in range(8):
        (out / f"f{i}.txt").write_text("x")
    problems = "\n".join(outbox.check(out))
    assert "10 files" in problems and "more than 2 folders down" in problems and "bad name.txt" in problems
    assert "results.tar.gz missing" in problems
