"""The Ray executor on a real local Ray instance (`ray.init(num_cpus=2, num_gpus=2)`: two CPU slots, two logical
GPUs), one per module: placement over the cluster's devices, logical GPUs kept apart, the same results as the local
executor, failures (an exception, a timeout, a worker lost once, a worker lost every time), and a driver killed
with SIGKILL and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from conftest import CI_DATA, matrix_yaml

from harness.cells import Cell
from harness.config import ModelSpec
from harness.evaluation.stats import read_items
from harness.executors.ray import RayExecutor, RayOptions
from harness.matrix import config_hash
from harness.planning import plan
from harness.results import load_results, read_result, result_path
from harness.runner import execute

ROOT = Path(__file__).resolve().parent.parent
QUICK = "max_steps: 2\nvalidation_fraction: 0.0\n"
EVAL = "eval:\n  tasks: [{name: medqa, data: medqa_fixture.jsonl, limit: 6}]\n  base_rows: false\n"
HUGE = (
    "{id: huge, source: synthetic, architecture: tiny-llama, config_overrides: {hidden_size: 5120, "
    "intermediate_size: 13824, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 40}}"
)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def ray_executor(**kw) -> RayExecutor:
    return RayExecutor(RayOptions(**{"cpus_per_cell": 1, "gpus_per_cell": 0, **kw}))


def broken(cell: Cell, name: str = "broken") -> Cell:
    """A cell whose model folder does not exist: its child raises at once."""
    cfg = cell.config.model_copy(update={"model": ModelSpec(id=name, source="local", path="/nonexistent/model")})
    return Cell(id=f"{name}_full-{config_hash(cfg)[:8]}", config_hash=config_hash(cfg), config=cfg)


def with_timeout(cell: Cell, seconds: float) -> Cell:
    cfg = cell.config.model_copy(update={"runtime": cell.config.runtime.model_copy(update={"timeout_s": seconds})})
    return Cell(id=cell.id, config_hash=cell.config_hash, config=cfg)


# A method plug-in whose cells wait at the start of `prepare` until the test lets them go: each attempt writes
# `<name>.started-<n>` (with its worker's pid) into $MEDBENCH_TEST_HOLD and waits for `<name>.go-<n>`. The test kills
# the worker of the attempts it wants lost and lets the others go: no race with the cell, however loaded the machine.
HELD_METHODS = """
import os, time
from pathlib import Path

from harness.methods.base import register
from harness.methods.full import Full
from harness.methods.lora import Lora


def hold(cell):
    folder = Path(os.environ["MEDBENCH_TEST_HOLD"])
    attempt = len(list(folder.glob(f"{cell.method.name}.started-*"))) + 1
    (folder / f"{cell.method.name}.started-{attempt}").write_text(str(os.getppid()))  # the Ray worker's pid
    while not (folder / f"{cell.method.name}.go-{attempt}").exists():
        time.sleep(0.05)


@register
class HeldFull(Full):
    kind = "held-full"
    presets = {}

    def prepare(self, cell, options, device, dtype):
        hold(cell)
        return super().prepare(cell, options, device, dtype)


@register
class HeldLora(Lora):
    kind = "held-lora"
    presets = {"held-lora-r16": {"r": 16, "alpha": 32}}

    def prepare(self, cell, options, device, dtype):
        hold(cell)
        return super().prepare(cell, options, device, dtype)
"""


def steer_attempts(folder: Path, name: str, lost: int, then_go: bool) -> threading.Thread:
    """Kill the worker of the first `lost` attempts of method `name` once each has started, then (`then_go`) let
    the next attempt run; waits on the cells' own marker files, never on timing."""

    def steer() -> None:
        deadline = time.monotonic() + 600
        for attempt in range(1, lost + (2 if then_go else 1)):
            started = folder / f"{name}.started-{attempt}"
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not started.exists():
                return
            if attempt <= lost:
                try:
                    os.kill(int(started.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            elif then_go:
                (folder / f"{name}.go-{attempt}").touch()

    t = threading.Thread(target=steer, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------------------------------- quick


def test_placement_uses_the_cluster_devices(ray_session, make_cells, tmp_path):
    (small,) = make_cells("[lora-r8]")
    huge_yaml = tmp_path / "huge.yaml"
    huge_yaml.write_text(
        matrix_yaml("[full]").replace(
            "{id: tiny, source: synthetic, architecture: tiny-llama, eval_batch_size: 8}", HUGE
        )
    )
    from harness.matrix import expand, load_matrix

    (huge,) = expand(load_matrix(huge_yaml, data_dir=CI_DATA), small.config.runtime)
    on_cpus = ray_executor()
    placed = {p.cell.id: p for p in on_cpus.place(plan([small, huge], tmp_path / "res"))}
    assert placed[small.id].action == "run"
    assert placed[huge.id].action == "skip" and "fits no device of the cluster (largest: cpu" in placed[huge.id].why
    assert on_cpus.capacity() == {"cpu": 2}
    on_gpus = RayExecutor(RayOptions(cpus_per_cell=1))  # default: one GPU per cell
    assert on_gpus.gpus_per_cell() == 1 and on_gpus.capacity() == {"GPU": 2}
    # logical GPUs of unknown memory never rule a cell out
    assert all(p.action == "run" for p in on_gpus.place(plan([small, huge], tmp_path / "res")))
    with pytest.raises(ValueError, match="no node of the Ray cluster has 4 GPU"):
        ray_executor(gpus_per_cell=4).place([])


def test_cells_get_their_own_gpu_and_exceptions_are_recorded(ray_session, make_cells, tmp_path):
    (cell,) = make_cells("[full]", results=tmp_path / "res")
    cells = [broken(cell, "broken-a"), broken(cell, "broken-b")]
    summary = execute(
        plan(cells, tmp_path / "res"), tmp_path / "res", executor=ray_executor(gpus_per_cell=1), progress=False
    )
    assert summary.counts == {"failed": 2} and summary.ran == 2
    records = [read_result(result_path(tmp_path / "res", c.id)) for c in cells]
    for r in records:
        assert "/nonexistent/model" in r.reason and "Traceback" in r.traceback
        ex = r.environment["execution"]
        assert ex["executor"] == "ray" and ex["node"] and ex["device"] == "GPU" and ex["attempts"] == 1
        assert r.config["runtime"]["results_dir"] == "<results dir>"  # neither the worker's folder nor the driver's
        assert (tmp_path / "res" / r.cell_id / "cell.log").stat().st_size > 0
    assert sorted(r.environment["execution"]["cuda_visible_devices"] for r in records) == ["0", "1"]


# ---------------------------------------------------------------------------------------------------- slow


def _shape(record) -> tuple:
    return (
        sorted(record.model_dump()),
        sorted(record.metrics),
        sorted(record.timings),
        sorted(k for k in record.artifacts),
    )


@pytest.mark.slow
def test_same_results_as_the_local_executor(ray_session, make_cells, tmp_path):
    local = make_cells("[full, lora-r8]", train=QUICK, extra=EVAL, results=tmp_path / "local")
    remote = make_cells("[full, lora-r8]", train=QUICK, extra=EVAL, results=tmp_path / "ray")
    assert [c.id for c in local] == [c.id for c in remote]
    execute(plan(local, tmp_path / "local"), tmp_path / "local", executor="local", progress=False)
    summary = execute(plan(remote, tmp_path / "ray"), tmp_path / "ray", executor=ray_executor(), progress=False)
    assert summary.counts == {"success": 2}
    for cell in local:
        a = read_result(result_path(tmp_path / "local", cell.id))
        b = read_result(result_path(tmp_path / "ray", cell.id))
        assert (a.status, a.config_hash) == (b.status, b.config_hash) == ("success", cell.config_hash)
        assert a.metrics["eval"]["medqa"]["acc"] == b.metrics["eval"]["medqa"]["acc"]
        assert a.metrics["train"]["steps"] == b.metrics["train"]["steps"] == 2
        assert _shape(a) == _shape(b)
        assert a.environment["execution"]["executor"] == "local"
        assert b.environment["execution"]["executor"] == "ray" and b.environment["execution"]["node"]
        assert b.environment["device"]["type"] == "cpu"
        # the same answers on the same items; log-likelihoods to 1e-4 (a Ray worker runs torch with the thread count
        # of its CPU slot, so float sums may be ordered differently than in the local process)
        ray_items = read_items(tmp_path / "ray" / b.metrics["eval"]["medqa"]["items"])
        local_items = read_items(tmp_path / "local" / a.metrics["eval"]["medqa"]["items"])
        strip = lambda items: [{k: v for k, v in i.items() if k != "ll"} for i in items]
        assert strip(ray_items) == strip(local_items)
        for x, y in zip(ray_items, local_items, strict=True):
            assert x["ll"] == pytest.approx(y["ll"], abs=1e-4)
    assert not list((tmp_path / "ray").glob(".*.tmp"))


@pytest.mark.slow
def test_timeouts_and_lost_workers(ray_session, make_cells, tmp_path, monkeypatch):
    plugins, hold = tmp_path / "plugins", tmp_path / "hold"
    plugins.mkdir()
    hold.mkdir()
    (plugins / "held.py").write_text(HELD_METHODS)
    monkeypatch.setenv("MEDBENCH_PLUGINS", str(plugins))  # the Ray tasks inherit MEDBENCH_* variables
    monkeypatch.setenv("MEDBENCH_TEST_HOLD", str(hold))
    full, r8, r16 = make_cells("[held-full, lora-r8, held-lora-r16]", train=QUICK, results=tmp_path / "res")
    r8 = with_timeout(r8, 1.0)  # a child that imports torch never finishes in a second
    steering = [
        steer_attempts(hold, "held-lora-r16", lost=1, then_go=True),  # lost once, then completes
        steer_attempts(hold, "held-full", lost=2, then_go=False),  # lost on both attempts (max_retries 1)
    ]
    summary = execute(
        plan([full, r8, r16], tmp_path / "res"), tmp_path / "res", executor=ray_executor(max_retries=1), progress=False
    )
    for t in steering:
        t.join(timeout=10)
    got = {c.id: read_result(result_path(tmp_path / "res", c.id)) for c in (full, r8, r16)}
    assert got[r8.id].status == "timeout" and "timeout of 1 s" in got[r8.id].reason
    assert got[r16.id].status == "success"  # its worker was lost once: the cell ran again and completed
    assert got[r16.id].environment["execution"]["attempts"] == 2
    assert "[ray] attempt 2" in (tmp_path / "res" / r16.id / "cell.log").read_text()
    assert got[full.id].status == "failed"  # lost on both attempts
    assert got[full.id].reason.startswith("Ray worker or node lost on each of 2 attempt(s) (max_retries 1)")
    assert summary.counts == {"success": 1, "timeout": 1, "failed": 1}
    assert sorted(p.name for p in hold.glob("*.started-*")) == [
        "held-full.started-1",
        "held-full.started-2",
        "held-lora-r16.started-1",
        "held-lora-r16.started-2",
    ]


@pytest.mark.slow
def test_driver_killed_and_restarted(tmp_path):
    import psutil

    matrix = tmp_path / "m.yaml"
    matrix.write_text(matrix_yaml("[full, lora-r8, lora-r16]", train=QUICK))
    results = tmp_path / "results"
    marker = f"medbench-ray-test-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, MEDBENCH_TEST_MARKER=marker, RAY_TMPDIR=tempfile.mkdtemp(prefix="mbr", dir="/tmp"))
    cmd = [
        sys.executable,
        str(ROOT / "run_matrix.py"),
        str(matrix),
        "--data-dir",
        str(CI_DATA),
        "--results",
        str(results),
        "--no-report",
        "--no-progress",
        "--executor",
        "ray",
        "--cpus-per-cell",
        "1",
        "--cache-dir",
        os.environ.get("MEDBENCH_TEST_CACHE") or str(tmp_path / "cache"),
    ]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(results.glob("*.json")):
        time.sleep(0.05)
    assert list(results.glob("*.json")), "no cell finished in time"
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    def ours() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if marker in (p.environ().get("MEDBENCH_TEST_MARKER") or ""):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    def cells_alive() -> list[psutil.Process]:
        return [p for p in ours() if "harness.cell" in " ".join(p.cmdline())]

    deadline = time.monotonic() + 120  # the kernel and Ray tear them down: wait for that, not for a fixed time
    while cells_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cells_alive() == []  # the running cells died with the driver's Ray session
    for p in ours():  # Ray's own agents may outlive a SIGKILLed driver: not ours to keep
        p.kill()
    done_before = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert all(read_result(results / name) for name in done_before)

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    good, bad = load_results(results)
    assert bad == [] and len(good) == 3 and all(r.status == "success" for r in good)
    for name, mtime in done_before.items():  # finished cells were not redone
        assert (results / name).stat().st_mtime_ns == mtime
    assert not list(results.glob(".*.tmp"))
    cache = Path(cmd[cmd.index("--cache-dir") + 1])
    assert not list(cache.glob("medbench-ray-*"))  # the killed run's task folders were removed by the next run
    for p in ours():
        p.kill()


def test_dead_task_folders_are_removed_and_live_ones_kept(tmp_path):
    from harness.executors.ray import TASK_FOLDER_PREFIX, claimed, remove_dead_task_folders

    dead = tmp_path / f"{TASK_FOLDER_PREFIX}dead"
    live = tmp_path / f"{TASK_FOLDER_PREFIX}live"
    fresh = tmp_path / f"{TASK_FOLDER_PREFIX}fresh"  # made a moment ago, not claimed yet
    for folder in (dead, live, fresh):
        folder.mkdir()
    (dead / ".claim").write_text("")  # its task's process is gone: nobody holds the claim
    with claimed(live):
        assert remove_dead_task_folders(tmp_path) == [dead]
    assert live.is_dir() and fresh.is_dir() and not dead.exists()


def test_a_second_driver_is_refused_before_ray_is_imported(tmp_path):
    """The results lock is taken before the executor starts anything: a second runner on a locked folder stops at
    once, with Ray made unimportable to prove it never got that far."""
    from harness.runner import ResultsLock

    (tmp_path / "m.yaml").write_text(matrix_yaml("[lora-r8]", train=QUICK))
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "ray.py").write_text("raise ImportError('ray was imported before the results lock was checked')\n")
    results = tmp_path / "results"
    with ResultsLock(results):
        out = subprocess.run(
            [sys.executable, str(ROOT / "run_matrix.py"), "m.yaml", "--data-dir", str(CI_DATA), "--results", "results"]
            + ["--executor", "ray", "--no-progress"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(shim)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 2, out.stderr
    assert "another run_matrix (pid" in out.stderr and "ray was imported" not in out.stderr
