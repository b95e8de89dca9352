"""The ceiling a benchmark's figure is measured against: a bare uvicorn app (httptools + uvloop,
one worker, like the gateway's) answering every request with a fixed body of the same size as
the gateway's response, driven by the same load generator with the same requests, in the same
run. A figure's ratio to it says how much of what this machine's HTTP stack and load
generator can do the gateway reaches.

    CEILING_BODY_BYTES=200 .venv/bin/python -m uvicorn bench.ceiling:app --factory
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench._gateway import LoadResult, run_load
from ledger.devstack.services import free_port

__all__ = ["app", "ceiling"]

ROOT = Path(__file__).resolve().parent.parent

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def app() -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """An ASGI app answering every HTTP request with ``CEILING_BODY_BYTES`` bytes of JSON."""
    size = int(os.environ.get("CEILING_BODY_BYTES", "200"))
    body = b'{"x":"' + b"a" * max(0, size - 8) + b'"}'
    status = int(os.environ.get("CEILING_STATUS", "200"))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return asgi


def ceiling(
    requests: list[list[bytes]], *, body_bytes: int, status: int, seconds: float
) -> LoadResult:
    """The bare app's answer to ``requests`` (each one connection's cycle) for ``seconds``."""
    port = free_port()
    env = {**os.environ, "CEILING_BODY_BYTES": str(body_bytes), "CEILING_STATUS": str(status)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "bench.ceiling:app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--http", "httptools", "--loop", "uvloop",
        ],
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the ceiling app did not start") from None
                time.sleep(0.05)
        return run_load(url, requests, seconds=seconds)
    finally:
        process.terminate()
        process.wait(timeout=10)
