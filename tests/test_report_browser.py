"""The report in a real headless Chromium: it loads from disk with no console error and no network request,
every figure decodes, clicking a table header sorts the table, the filter box filters it; a full-page
screenshot is saved to $MEDBENCH_TEST_ARTIFACTS (default: the test's tmp dir).

Chromium is driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`: JSON messages
separated by NUL bytes on fds 3 and 4), so no extra Python package (selenium, websocket client) is needed.
Install Chromium with `apt-get install -y chromium` (Debian) or point $MEDBENCH_CHROMIUM at a binary.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "small"
MATRIX = Path(__file__).parent / "fixtures" / "report" / "small_matrix.yaml"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    env = os.environ.get("MEDBENCH_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CDP:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # The child must find the pipe on fds 3 (commands) and 4 (replies). A tiny Python trampoline moves
        # them there after the fork (fds >= 10 first, so that nothing is overwritten), then execs Chromium.
        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r), os.close(from_child_w)
        trampoline = (
            "import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
            "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])"
        )
        cmd = [
            sys.executable,
            "-c",
            trampoline,
            str(hi_r),
            str(hi_w),
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, pass_fds=(hi_r, hi_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        os.close(hi_r), os.close(hi_w)
        self.w = os.fdopen(to_child_w, "wb", buffering=0)
        self.r = os.fdopen(from_child_r, "rb", buffering=0)
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self.r.read(65536)
            if not chunk:
                self.inbox.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self.inbox.put(json.loads(msg))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._next(deadline, method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, name: str, session: str | None = None) -> dict[str, Any]:
        for ev in self.events:
            if ev.get("method") == name and (session is None or ev.get("sessionId") == session):
                return ev
        deadline = time.monotonic() + self.timeout
        while True:
            ev = self._next(deadline, name)
            self.events.append(ev)
            if ev.get("method") == name and (session is None or ev.get("sessionId") == session):
                return ev

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            msg = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no answer from Chromium for {what} within {self.timeout} s") from None
        if msg is None:
            self.stderr.seek(0)
            raise RuntimeError(
                f"Chromium exited while waiting for {what}: {self.stderr.read().decode(errors='replace')[-2000:]}"
            )
        return msg

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for f in (self.w, self.r, self.stderr):
            try:
                f.close()
            except OSError:
                pass


class Page:
    def __init__(self, cdp: CDP):
        self.cdp = cdp
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.cdp.send(method, params, self.session)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.cdp.wait_event("Page.loadEventFired", self.session)

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
            "return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1}
            )

    def problems(self) -> list[str]:
        out = []
        for ev in self.cdp.events:
            if ev.get("sessionId") != self.session:
                continue
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(
                    f"exception: {p['exceptionDetails'].get('text')} "
                    f"{p['exceptionDetails'].get('exception', {}).get('description', '')}"
                )
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if not url.startswith(("file:", "data:", "about:")):
                    out.append(f"network request: {url}")
            elif m == "Network.loadingFailed":
                out.append(f"failed to load: {p.get('errorText')}")
        return out

    def screenshot(self, path: Path) -> None:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MEDBENCH_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium found (install it: apt-get install -y chromium, or set MEDBENCH_CHROMIUM)")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    cdp = CDP(binary, profile)
    try:
        yield cdp
    finally:
        cdp.close()


COLUMN_VALUES = """(label) => {
  const heads = [...document.querySelectorAll('#results thead th')];
  const i = heads.findIndex(h => h.textContent.trim() === label);
  return [...document.querySelectorAll('#results tbody tr')].map(r => r.cells[i].getAttribute('data-v'));
}"""


@pytest.mark.browser
def test_report_in_headless_chromium(browser: CDP, tmp_path: Path, artifacts: Path) -> None:
    from harness.report import render_report

    out = render_report(
        FIXTURE,
        tmp_path / "report.html",
        matrix_text=MATRIX.read_text(),
        matrix_path=str(MATRIX),
        command=f"medbench run {MATRIX} --results results/fixture-small",
    )
    shutil.copy(out, artifacts / "report.html")
    page = Page(browser)
    page.goto(out.resolve().as_uri())

    # every figure is a decoded image
    sizes = page.js(
        "Promise.all([...document.images].map(i => i.decode().then("
        "() => [i.naturalWidth, i.naturalHeight], () => [0, 0])))"
    )
    assert len(sizes) >= 6, sizes
    assert all(w > 0 and h > 0 for w, h in sizes), sizes

    # sort by peak memory: one click ascending, a second click descending; empty values stay last
    col = "peak mem"
    before = page.js(f"({COLUMN_VALUES})({json.dumps(col)})")
    header = page.js(
        "[...document.querySelectorAll('#results thead th')].findIndex("
        f"h => h.textContent.trim() === {json.dumps(col)}) + 1"
    )
    assert header > 0
    page.click(f"#results thead th:nth-child({header})")
    after = page.js(f"({COLUMN_VALUES})({json.dumps(col)})")
    assert after != before, "clicking the header did not reorder the table"
    numbers = [float(v) for v in after if v]
    assert numbers == sorted(numbers)
    assert all(v == "" for v in after[len(numbers) :]), "empty values must sort last"
    assert (
        page.js(f"document.querySelector('#results thead th:nth-child({header})').getAttribute('aria-sort')")
        == "ascending"
    )
    page.click(f"#results thead th:nth-child({header})")
    desc = [float(v) for v in page.js(f"({COLUMN_VALUES})({json.dumps(col)})") if v]
    assert desc == sorted(numbers, reverse=True)

    # the filter box: typed text keeps only matching rows
    total = page.js("document.querySelectorAll('#results tbody tr').length")
    page.click("#filter")
    page.send("Input.insertText", {"text": "qlora smollm2"})
    visible = page.js(
        "[...document.querySelectorAll('#results tbody tr')].filter(r => r.style.display !== 'none')"
        ".map(r => r.textContent)"
    )
    assert 0 < len(visible) < total
    assert all("qlora" in t and "smollm2" in t for t in visible)
    assert page.js("document.getElementById('shown').textContent") == f"{len(visible)} of {total} rows"
    page.js(
        "(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()"
    )

    page.js("window.scrollTo(0, 0)")
    shot = artifacts / "report.png"
    page.screenshot(shot)
    assert shot.stat().st_size > 50_000
    assert page.problems() == []
