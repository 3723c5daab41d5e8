"""Preflight (harness/preflight.py): every mistake that can be caught before a cell runs is one exit-2 error that
lists them all, shown by --dry-run too; unreachable hub models cost one short timeout per host, never per cell.
No torch, no network (stand-in HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import errno
import http.server
import shutil
import socket
import textwrap
import threading
from pathlib import Path

import pytest

from harness import preflight
from harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from harness.models.sources.hub import check_hub_models
from harness.results import NON_RESULT_FILES

ROOT = Path(__file__).resolve().parent.parent
CI_DATA = ROOT / "tests" / "fixtures" / "ci_data"


@pytest.fixture(autouse=True)
def _no_lm_eval_confirmation(monkeypatch):
    # the text scan of lm-eval's task folders decides; importing lm-eval's TaskManager takes seconds
    monkeypatch.setattr(preflight, "_confirm_unknown", lambda names, include: set(names))


def _data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(CI_DATA, d, dirs_exist_ok=True)
    return d


def _matrix(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(body))
    return p


GOOD = """\
name: pf
models:
  - {id: tiny, source: synthetic, architecture: tiny-llama}
methods: [full]
train:
  datasets: [{path: train_instructions.json, format: instruction}]
  max_seq_length: 128
eval:
  tasks:
    - {name: medqa, data: medqa_fixture.jsonl}
    - {name: pubmedqa, data: pubmedqa_fixture.json}
"""


def _run(tmp_path: Path, matrix: Path, data: Path, *extra: str) -> int:
    return main(
        [
            str(matrix),
            "--dry-run",
            "--data-dir",
            str(data),
            "--results",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
            *extra,
        ]
    )


def test_good_matrix_passes_and_dry_run_says_so(tmp_path, capsys):
    data = _data(tmp_path)
    assert _run(tmp_path, _matrix(tmp_path, GOOD), data) == EXIT_OK
    out = capsys.readouterr().out
    assert "preflight: ok (1 models, 2 eval tasks, 1 data files" in out


def test_every_problem_is_one_exit_2_error_before_anything_runs(tmp_path, capsys):
    data = _data(tmp_path)
    (data / "bad.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": \n')
    (data / "latin1.jsonl").write_bytes('{"question": "caf\xe9", "answer": "b"}\n'.encode("latin-1"))
    (data / "nofield.jsonl").write_text('{"question": "a"}\n')
    (data / "renamed.jsonl").write_text('{"q": "a", "a": "b"}\n')
    (tmp_path / "notgguf.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    (tmp_path / "emptymodel").mkdir()
    body = (
        GOOD.replace(
            "  - {id: tiny, source: synthetic, architecture: tiny-llama}",
            f"""\
  - {{id: tiny, source: synthetic, architecture: tiny-llama}}
  - {{id: gone, source: local, path: {tmp_path / "no-such-model"}}}
  - {{id: empty, source: local, path: {tmp_path / "emptymodel"}}}
  - {{id: fake, source: gguf, path: {tmp_path / "notgguf.gguf"}}}""",
        )
        .replace(
            "  datasets: [{path: train_instructions.json, format: instruction}]",
            """\
  datasets:
    - {path: bad.jsonl, format: qa}
    - {path: latin1.jsonl, format: qa}
    - {path: nofield.jsonl, format: qa}
    - {path: renamed.jsonl, format: qa, fields: {questio: q}}""",
        )
        .replace(
            "    - {name: pubmedqa, data: pubmedqa_fixture.json}",
            """\
    - {name: pubmedqa, data: pubmedqa_fixture.json}
    - pubmedq""",
        )
    )
    rc = _run(tmp_path, _matrix(tmp_path, body), data)
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT
    assert "Traceback" not in err
    assert err.startswith("error: preflight found 8 problem(s); nothing ran")
    assert f"folder not found: {tmp_path / 'no-such-model'}" in err
    assert "emptymodel is not a model folder (no config.json)" in err
    assert "notgguf.gguf is not a GGUF file" in err
    assert f"{data / 'bad.jsonl'}: line 2 (record 1): not valid JSON" in err
    assert f"{data / 'latin1.jsonl'}" in err and "UTF-8" in err
    assert "missing field 'answer'" in err
    assert "unknown canonical name(s) ['questio']" in err
    assert "unknown task 'pubmedq'" in err and "did you mean pubmedqa" in err


def test_eval_data_that_does_not_parse_is_caught(tmp_path, capsys):
    data = _data(tmp_path)
    lines = (data / "medqa_fixture.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"answer_idx"', '"answer_index"')
    (data / "medqa_fixture.jsonl").write_text("\n".join(lines) + "\n")
    assert _run(tmp_path, _matrix(tmp_path, GOOD), data) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{data / 'medqa_fixture.jsonl'}, line 3: field 'answer_idx' is missing" in err


def test_sequence_longer_than_the_model_is_an_error(tmp_path, capsys):
    data = _data(tmp_path)
    body = GOOD.replace("max_seq_length: 128", "max_seq_length: 4096")
    assert _run(tmp_path, _matrix(tmp_path, body), data) == EXIT_BAD_INPUT
    assert "train.max_seq_length: 4096 is longer than model tiny's 2048 positions" in capsys.readouterr().err


def test_done_cells_are_not_checked(tmp_path, capsys):
    data = _data(tmp_path)
    body = GOOD.replace(
        "architecture: tiny-llama}", "architecture: tiny-llama}\n  - {id: gone, source: local, path: /no/such/model}"
    )
    assert _run(tmp_path, _matrix(tmp_path, body), data, "--only", "tiny") == EXIT_OK


# ---------------------------------------------------------------------------------------------------- hub models

HUB_MATRIX = """\
name: hubby
models:
  - {id: a, source: hub, hub_id: org/model-a}
  - {id: b, source: hub, hub_id: org/model-b}
  - {id: c, source: hub, hub_id: org/model-c}
methods: [full]
train:
  datasets: [{path: train_instructions.json, format: instruction}]
"""


def test_offline_unreachable_models_are_named_once_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = _data(tmp_path)
    calls = _counting_requests(monkeypatch)
    rc = main(
        [
            str(_matrix(tmp_path, HUB_MATRIX)),
            "--data-dir",
            str(data),
            "--results",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--no-report",
            "--fail-unreachable",
        ]
    )
    assert calls == []  # offline: no request at all (so no timeout to wait for)
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT
    assert "models: 3 hub model(s) cannot be loaded on this machine:" in err
    for mid in "abc":
        assert err.count(f"org/model-{mid}") == 1
    assert "source: local" in err and "HF_HUB_OFFLINE" in err and "HF_ENDPOINT" in err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_research_matrix_offline_makes_no_request(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = tmp_path / "data"
    for rel, src in {
        "chatdoctor5k/chatdoctor5k.json": "train_instructions.json",
        "medqa_usmle_4opt/test.jsonl": "medqa_fixture.jsonl",
        "pubmedqa/test_set.json": "pubmedqa_fixture.json",
        "pubmedqa/pqal_fold0/train_set.json": "pubmedqa_fixture.json",
    }.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CI_DATA / src, data / rel)
    (data / "medquad").mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "data" / "qa.jsonl", data / "medquad" / "medquad.jsonl")
    calls = _counting_requests(monkeypatch)
    rc = main(
        [
            str(ROOT / "matrices" / "small_models.yaml"),
            "--dry-run",
            "--data-dir",
            str(data),
            "--results",
            str(tmp_path / "r"),
        ]
    )
    assert calls == []  # offline: no request at all
    captured = capsys.readouterr()
    assert rc == EXIT_OK  # every cell of the unreachable models is planned as skipped, the reason given once
    assert "3 hub model(s)" in captured.err and captured.err.count("meta-llama/Llama-3.2-1B-Instruct") == 1


class _Hub(http.server.BaseHTTPRequestHandler):
    answers = {
        "/org/model-a/resolve/main/config.json": 200,
        "/org/model-b/resolve/main/config.json": 404,
        "/org/model-c/resolve/main/config.json": 401,
    }

    def do_HEAD(self):
        self.send_response(self.answers.get(self.path, 200))
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def hub_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _specs():
    from harness.config import ModelSpec

    return [ModelSpec(id=m, source="hub", hub_id=f"org/model-{m}") for m in "abc"]


def test_online_hub_answers_are_read(hub_server, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    unreachable, errors = check_hub_models(_specs(), timeout=2)
    assert unreachable == {}
    assert any("org/model-b not found" in e and "404" in e for e in errors)
    assert any("org/model-c is gated or private (HTTP 401)" in e and "HF_TOKEN" in e for e in errors)
    assert len(errors) == 2


def _counting_requests(monkeypatch):
    import harness.net

    calls = []
    real = harness.net.request_status

    def counted(url, timeout, method="HEAD"):
        calls.append(url)
        return real(url, timeout, method)

    monkeypatch.setattr(harness.net, "request_status", counted)
    return calls


def test_silent_hub_costs_one_request_not_one_per_model(monkeypatch, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts connections, never answers
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = _counting_requests(monkeypatch)
    unreachable, errors = check_hub_models(_specs() * 10, timeout=0.5)
    silent.close()
    # one request to the host, which never answered: none per model (30 models would be 30 timeouts)
    assert len(calls) == 1 and calls[0].endswith("/api/whoami-v2")
    assert set(unreachable) == {"a", "b", "c"} and not errors
    assert "cannot be reached" in unreachable["a"]


def test_closed_port_is_one_request(monkeypatch, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = _counting_requests(monkeypatch)
    unreachable, _ = check_hub_models(_specs(), timeout=5)
    assert len(calls) == 1 and len(unreachable) == 3
    assert all("cannot be reached" in why for why in unreachable.values())


# -------------------------------------------------------------------------------------------- places, flags, faults


def test_full_or_read_only_places_are_errors(tmp_path, monkeypatch):
    assert preflight.writable_problem(tmp_path / "new" / "results", "results folder") is None
    full = preflight.writable_problem(tmp_path / "r", "results folder", min_free=1 << 62)
    assert full and full.startswith(f"results folder {tmp_path / 'r'}: the disk is full")
    monkeypatch.setattr(preflight.os, "access", lambda *a, **k: False)
    ro = preflight.writable_problem(tmp_path / "r", "cache folder")
    assert (
        ro == f"cache folder {tmp_path / 'r'}: {tmp_path} is read-only (no write permission, or a read-only file "
        f"system)"
    )


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "abc"])
def test_timeout_minutes_must_be_finite_and_positive(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["matrices/tiny_ci.yaml", "--dry-run", "--timeout-minutes", value])
    assert info.value.code == EXIT_BAD_INPUT
    assert "--timeout-minutes" in capsys.readouterr().err


def _fault(tmp_path, monkeypatch, exc):
    import harness.runner

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(harness.runner, "execute", boom)
    data = _data(tmp_path)
    return main(
        [
            str(_matrix(tmp_path, GOOD)),
            "--data-dir",
            str(data),
            "--results",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--no-report",
            "--no-progress",
        ]
    )


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    assert _fault(tmp_path, monkeypatch, KeyboardInterrupt()) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted; 0 cells finished; finished cells kept; rerun the same command to resume"


def test_full_disk_is_exit_2_naming_the_path(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "r" / "x.json")
    assert _fault(tmp_path, monkeypatch, OSError(errno.ENOSPC, "No space left on device", path)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {path}: the disk is full.") and "Traceback" not in err
    assert _fault(tmp_path, monkeypatch, OSError(errno.EROFS, "Read-only file system", path)) == EXIT_BAD_INPUT
    assert "the file system is read-only" in capsys.readouterr().err


def test_unreachable_models_cells_are_recorded_skipped_with_the_reason_once_per_model(tmp_path, capfd, monkeypatch):
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = _data(tmp_path)
    body = HUB_MATRIX.replace(
        "  - {id: a, source: hub, hub_id: org/model-a}\n",
        "  - {id: a, source: hub, hub_id: org/model-a}\n  - {id: tiny, source: synthetic, architecture: tiny-llama}\n",
    )
    args = [
        str(_matrix(tmp_path, body)),
        "--data-dir",
        str(data),
        "--results",
        str(tmp_path / "r"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    import sys

    import harness.cli

    # print_plan's `out` default is the sys.stdout of import time; point it at this test's
    monkeypatch.setattr(harness.cli.print_plan, "__defaults__", (sys.stdout,))
    assert main(args + ["--dry-run"]) == EXIT_OK
    out = capfd.readouterr().out
    assert out.count("skip   ") == 3 and "hub model unreachable: org/model-a" in out
    assert "run    tiny_full" in out

    import harness.runner

    real = harness.runner.execute
    monkeypatch.setattr(
        harness.runner, "execute", lambda planned, *a, **k: real([p for p in planned if p.action != "run"], *a, **k)
    )  # record the skips only; nothing trains here
    assert main(args + ["--no-report", "--no-progress"]) == EXIT_OK
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json") if p.name not in NON_RESULT_FILES]
    assert sorted(r["cell_id"].split("_")[0] for r in records) == ["a", "b", "c"]
    assert all(r["status"] == "skipped" and "HF_HUB_OFFLINE is set" in r["reason"] for r in records)
