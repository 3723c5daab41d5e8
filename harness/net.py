"""Short, bounded network requests (model hub reachability, data downloads): one place for the timeouts, the
offline switches and the hub endpoint. Standard library only."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def is_offline() -> bool:
    """Whether the hub libraries are told to stay offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def request_status(url: str, timeout: float, method: str = "HEAD") -> int:
    """The HTTP status of one request (redirects not followed); raises OSError when the host cannot be reached."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    headers = {"User-Agent": "medbench-preflight"}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


def bounded(fn: Any, timeout: float) -> Any:
    """fn() with a wall-clock bound (name resolution ignores socket timeouts); raises TimeoutError. The call runs
    in a daemon thread, so a hung lookup never delays the exit either."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
