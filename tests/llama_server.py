"""A real ``python -m llama_cpp.server`` on SmolLM2-135M-Instruct, shared by the test
modules that need one: the first user starts it, the last one to leave stops it."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO

import httpx
import pytest

from agentgraph import resolve_model_path

from .conftest import SMOL_REF

MODEL = "smol"  # the name the server serves the model under
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0

_lock = threading.Lock()
_users = 0
_server: tuple[subprocess.Popen[bytes], str] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(resolve_model_path(SMOL_REF)),
        "--model_alias", MODEL,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        # One thread: llama.cpp's threads spin at barriers, and on a busy 2-core machine
        # a descheduled sibling stalls batched prompt processing for seconds.
        "--n_threads", "1",
        "--n_threads_batch", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, ""
        try:
            if httpx.get(f"{base}/models", timeout=1.0).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return proc, ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running() -> Iterator[str]:
    """The server's ``/v1`` URL while at least one user is inside."""
    global _users, _server
    # find_spec("llama_cpp.server") would import llama_cpp itself; its deps tell enough.
    if any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "uvicorn", "fastapi")):
        pytest.skip("llama-cpp-python[server] is not installed (extra 'dev')")
    with _lock:
        if _server is None:
            with tempfile.TemporaryFile() as log:
                proc, base = _start(log)
                if not base:
                    _stop(proc)
                    log.seek(0)
                    tail = log.read()[-4000:].decode(errors="replace")
                    pytest.fail(
                        f"llama_cpp.server did not come up (exit {proc.returncode}):\n{tail}"
                    )
            _server = (proc, base)
        _users += 1
        base = _server[1]
    try:
        yield base
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _server is not None:
                _stop(_server[0])
                _server = None
