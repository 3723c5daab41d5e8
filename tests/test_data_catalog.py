"""`medbench data list|fetch|verify` (harness/data_catalog.py), against a stand-in HTTP server on 127.0.0.1 (no
network here) and project-written fixture files; the real data dir only where it exists (verify)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from harness import data_catalog as dc
from harness.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MEDBENCH_DATA_DIR") or ROOT.parent / "shared" / "data")

ORI = {
    "1": {"QUESTION": "q1", "final_decision": "yes"},
    "2": {"QUESTION": "q2", "final_decision": "no"},
    "3": {"QUESTION": "q3", "final_decision": "maybe"},
}
TRUTH = {"3": "maybe", "1": "yes"}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A stand-in source with three files, a catalog naming them (one derived, one by hand)."""
    src = tmp_path / "server"
    files = {
        "mq/test.jsonl": b'{"question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}\n',
        "pubmedqa/ori_pqal.json": json.dumps(ORI).encode(),
        "pubmedqa/test_ground_truth.json": json.dumps(TRUTH).encode(),
    }
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(src))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    derived = json.dumps({k: ORI[k] for k in TRUTH}, indent=4).encode()
    catalog = [
        dc.DataFile(
            "mq/test.jsonl", "MQ", _sha(files["mq/test.jsonl"]), "MIT", "a page", url=f"{dc.HF}/mq/test.jsonl"
        ),  # through $HF_ENDPOINT, as hub files are
        dc.DataFile(
            "pubmedqa/ori_pqal.json",
            "P",
            _sha(files["pubmedqa/ori_pqal.json"]),
            "MIT",
            "p",
            url=f"{url}/pubmedqa/ori_pqal.json",
        ),
        dc.DataFile(
            "pubmedqa/test_ground_truth.json",
            "P",
            _sha(files["pubmedqa/test_ground_truth.json"]),
            "MIT",
            "p",
            url=f"{url}/pubmedqa/test_ground_truth.json",
        ),
        dc.DataFile("pubmedqa/test_set.json", "P", _sha(derived), "MIT", "p", derive="pubmedqa_test_set"),
        dc.DataFile("byhand/x.json", "X", "0" * 64, "CC", "x", how="ask someone"),
    ]
    monkeypatch.setattr(dc, "CATALOG", catalog)
    needed = {"mq/test.jsonl": ["m"], "pubmedqa/test_set.json": ["m"], "byhand/x.json": ["m"]}
    monkeypatch.setattr(dc, "needed_paths", lambda paths: needed)
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    yield src, url
    server.shutdown()


def test_fetch_downloads_derives_checks_and_records(served, tmp_path, capsys):
    data = tmp_path / "data"
    assert cli_main(["data", "fetch", "--to", str(data)]) == 1  # one file can only be obtained by hand
    out = capsys.readouterr().out
    assert "fetched  mq/test.jsonl" in out and "fetched  pubmedqa/test_set.json (derived from" in out
    assert "by hand  byhand/x.json: ask someone" in out
    manifest = json.loads((data / "MANIFEST.json").read_text())
    assert set(manifest) == {
        "mq/test.jsonl",
        "pubmedqa/ori_pqal.json",
        "pubmedqa/test_ground_truth.json",
        "pubmedqa/test_set.json",
    }
    assert manifest["mq/test.jsonl"]["source"] == f"{served[1]}/mq/test.jsonl"
    assert not list(data.glob(".fetch-*"))  # no temporary file left behind
    (data / "byhand").mkdir()
    (data / "byhand" / "x.json").write_text("?")
    assert cli_main(["data", "verify", "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "sha256 differs  byhand/x.json" in out and "ok              mq/test.jsonl" in out


def test_a_changed_source_is_not_put_in_place(served, tmp_path, capsys):
    (served[0] / "mq" / "test.jsonl").write_text("tampered\n")
    data = tmp_path / "data"
    assert cli_main(["data", "fetch", "--to", str(data)]) == 1
    assert "differs  mq/test.jsonl" in capsys.readouterr().out
    assert not (data / "mq" / "test.jsonl").exists()


def test_mirror_serves_every_downloadable_file(served, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the mirror, not the sources, is asked
    assert cli_main(["data", "fetch", "--to", str(tmp_path / "d"), "--mirror", served[1]]) == 1
    assert "fetched  mq/test.jsonl" in capsys.readouterr().out


def test_offline_fetch_fails_at_once(served, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main(["data", "fetch", "--to", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.startswith("error: offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)")
    assert not (tmp_path / "d").exists()


def test_unreachable_source_fails_fast_with_the_fix(served, tmp_path, capsys, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert cli_main(["data", "fetch", "--to", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}/mq/test.jsonl" in err and "--mirror" in err


def test_every_path_the_shipped_matrices_name_is_catalogued():
    needed = dc.needed_paths(dc.shipped_matrices())
    assert "medqa_usmle_4opt/test.jsonl" in needed and "chatdoctor5k/chatdoctor5k.json" in needed
    assert sorted(set(needed) - {e.path for e in dc.CATALOG}) == []
    for e in dc.CATALOG:
        assert e.url or e.derive or e.how, e.path


def test_list_shows_state_source_and_license(tmp_path, capsys):
    assert cli_main(["data", "list", "--data-dir", str(tmp_path), "matrices/cpu_smollm2.yaml"]) == 0
    out = capsys.readouterr().out
    assert "missing         medqa_usmle_4opt/test.jsonl" in out
    assert "license MIT" in out and "sha256 c3b905cc" in out and "used by cpu_smollm2" in out


@pytest.mark.skipif(not (SHARED / "medqa_usmle_4opt" / "test.jsonl").is_file(), reason="no real data dir here")
def test_verify_the_real_data_dir(capsys):
    assert cli_main(["data", "verify", "--data-dir", str(SHARED)]) == 0
    assert "verify: every file present and matching" in capsys.readouterr().out
