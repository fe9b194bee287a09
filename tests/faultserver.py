"""A fault-injecting server that speaks just enough of OpenAI's chat completions API.

It runs in a thread on 127.0.0.1 (a free port). The ``model`` field of a request picks
what happens to it:

====================  ========================================================================
``ok``, ``ok-*``      200, content ``Answer: 42``, usage; streams when asked (chunked)
``echo``              200 whose content is the request body, as sorted JSON
``empty``             200 with empty content
``400``, ``500``      that status with a JSON error body
``401``               401 quoting the Authorization header back, as some servers do
``429``               429 with ``Retry-After: 1``
``slow``              waits (up to 10 s) and counts the client hanging up in ``disconnects``
``trickle``           streams one chunk, then waits like ``slow`` before the rest
``wait-<ms>``         waits ``ms`` milliseconds, then answers as ``ok``
``malformed``         200 whose body (or stream event) is not JSON
``drop``              closes the connection without a response
``truncate``          200 that ends mid-body (stream: after the first chunk)
``truncate-<n>[-*]``  ``truncate`` for the first ``n`` requests naming this model, then ``ok``
``flaky-<n>[-*]``     500 for the first ``n`` requests naming this model, then ``ok``
``long``, ``long-*``  200 with ``LONG_WORDS`` words whatever ``max_tokens`` says, honest usage
                      (a token per word); streams a word per chunk, pausing between chunks and
                      stopping as soon as the client hangs up
``echo-key-<how>``    echoes the API key (from ``Authorization: Bearer``) back; ``<how>`` is one
                      of ``ECHOES``: in a 500 body (``body``; ``escaped``: written with JSON
                      escapes ``\\u002d`` and ``\\/``), in ``Retry-After`` of a 429
                      (``retry-after``), as a usage count (``usage``), in a 200 body of the
                      wrong shape (``shape``; ``string``: a bare JSON string), in the answer
                      (``answer``); all but ``body`` and ``retry-after`` escape it
====================  ========================================================================

Words of a dash-separated name change the usage of an answer: ``nousage`` leaves it out
(no ``usage`` field; no usage chunk in a stream, even when asked for), ``overreport``
claims ``OVERREPORTED`` completion tokens.

Every response closes its connection, so stopping the server never waits on idle
clients; every handler loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import select
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import agentgraph as ag

ANSWER = ("Answer", ":", " 42")
LONG_WORDS = 400
LONG = ("Answer: 42.", *(f" word{i}" for i in range(1, LONG_WORDS)))
OVERREPORTED = 1000
SLOW_MAX_S = 10.0
LONG_CHUNK_PAUSE_S = 0.005


ECHOES = ("body", "escaped", "retry-after", "usage", "shape", "string", "answer")

_COMPLETION = (
    '{"id": "fault-1", "object": "chat.completion", "created": 0, "model": "m", '
    '"choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT}, '
    '"finish_reason": "stop"}]USAGE}'
)
_CHUNK = (
    '{"id": "fault-1", "object": "chat.completion.chunk", "created": 0, "model": "m", '
    '"choices": [{"index": 0, "delta": {"content": CONTENT}, "finish_reason": "stop"}]}'
)
_USAGE_CHUNK = (
    '{"id": "fault-1", "object": "chat.completion.chunk", "created": 0, "model": "m", '
    '"choices": []USAGE}'
)
_KEY_USAGE = ', "usage": {"prompt_tokens": 1, "completion_tokens": KEY, "total_tokens": 2}'


def escaped(key: str) -> str:
    """``key`` as a JSON string literal with every ``-`` and ``/`` escaped: what a raw text
    search for the key cannot find, and any JSON decoder reads back as the key."""
    return json.dumps(key).replace("-", "\\u002d").replace("/", "\\/")


@dataclass(frozen=True)
class Seen:
    """One request as received; header names are lower-cased."""

    model: str
    body: dict[str, Any]
    headers: dict[str, str]


class FaultServer:
    """``hits`` counts requests per model, ``seen`` keeps them, ``disconnects`` counts
    clients that hung up while a handler waited or streamed ``long``, ``max_in_flight``
    the most handlers waiting at once (``slow``, ``wait-*``, ``trickle``).
    ``content_chunks`` counts the content chunks that ``long`` streams of each model sent
    before they ended or were cut, ``sent_in_full`` those streams that were not cut."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.disconnects = 0
        self.errors: list[BaseException] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.content_chunks: Counter[str] = Counter()
        self.sent_in_full: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join(timeout=5)

    def wait_for_disconnects(self, n: int, timeout_s: float = 3.0) -> int:
        """The disconnect count once it reaches ``n`` (handlers notice within ~20 ms)."""
        deadline = time.monotonic() + timeout_s
        while self.disconnects < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.disconnects


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins them
    request_queue_size = 64  # the default 5 drops connects of a wide graph: 1 s SYN retries
    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        # A client hanging up mid-response is what several modes provoke; anything else
        # is a bug in this server, reported by the fixtures.
        if exc is not None and not isinstance(exc, ConnectionError):
            self.owner.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # for chunked streams, so a cut stream is detectable
    timeout = 5.0  # bounds every read of a request

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, {"error": {"message": "request body is not JSON"}})
            return
        srv = self.server.owner
        model = str(body.get("model", "ok"))
        with srv.lock:
            srv.hits[model] += 1
            hit = srv.hits[model]
            srv.seen.append(Seen(model, body, {k.lower(): v for k, v in self.headers.items()}))
        self._serve(model, hit, body)

    def _serve(self, model: str, hit: int, body: dict[str, Any]) -> None:
        flaky = re.fullmatch(r"flaky-(\d+)(?:-.*)?", model)
        wait = re.fullmatch(r"wait-(\d+)", model)
        cut = re.fullmatch(r"truncate-(\d+)(?:-.*)?", model)
        if model in ("400", "500") or (flaky and hit <= int(flaky.group(1))):
            status = 400 if model == "400" else 500
            self._json(status, {"error": {"message": f"injected {status}", "type": "fault"}})
        elif model == "401":
            auth = self.headers.get("Authorization", "")
            self._json(401, {"error": {"message": f"Incorrect API key provided: {auth}"}})
        elif model == "429":
            self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        elif model == "drop":
            self.close_connection = True
        elif model == "slow":
            if self._wait(SLOW_MAX_S):
                self._answer(body, ANSWER)
        elif wait:
            if self._wait(int(wait.group(1)) / 1000):
                self._answer(body, ANSWER)
        elif model == "malformed":
            if body.get("stream"):
                self._stream([b'data: {"choices": [{"delta": {"content": "Ans'], end=False)
            else:
                self._raw(200, b'{"choices": [{"message": {"content": "Ans', "application/json")
        elif model in ("truncate", "trickle"):
            self._answer(body, ANSWER, cut=model)
        elif cut:
            self._answer(body, ANSWER, cut="truncate" if hit <= int(cut.group(1)) else "")
        elif model == "long" or model.startswith("long-"):
            self._answer(body, LONG, cut="long")
        elif model == "echo":
            self._answer(body, (json.dumps(body, sort_keys=True),))
        elif model == "empty":
            self._answer(body, ("",))
        elif model.startswith("echo-key-"):
            self._echo_key(model.removeprefix("echo-key-"), bool(body.get("stream")))
        else:
            self._answer(body, ANSWER)

    def _echo_key(self, how: str, stream: bool) -> None:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        lit = escaped(key)
        answer = json.dumps("Answer: 42 (with key ")[:-1] + lit[1:-1] + ')"'
        if how == "body":
            self._json(500, {"error": {"message": f"over capacity for key {key}"}})
        elif how == "escaped":
            blob = '{"error": {"message": "over capacity for key ' + lit[1:-1] + '"}}'
            self._raw(500, blob.encode(), "application/json")
        elif how == "retry-after":
            self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": key})
        elif how in ("usage", "answer"):
            content = answer if how == "answer" else json.dumps("Answer: 42")
            usage = _KEY_USAGE.replace("KEY", lit) if how == "usage" else ""
            if stream:
                events = [_CHUNK.replace("CONTENT", content)]
                if usage:
                    events.append(_USAGE_CHUNK.replace("USAGE", usage))
                self._sse(events)
            else:
                blob = _COMPLETION.replace("CONTENT", content).replace("USAGE", usage)
                self._raw(200, blob.encode(), "application/json")
        elif how in ("shape", "string"):
            blob = f'{{"result": {lit}, {lit}: 1}}' if how == "shape" else lit
            if stream:
                self._sse([blob])
            else:
                self._raw(200, blob.encode(), "application/json")
        else:
            self._json(400, {"error": {"message": f"unknown echo {how!r}; echoes: {ECHOES}"}})

    def _sse(self, events: list[str]) -> None:
        self._stream([b"data: " + e.encode() for e in events] + [b"data: [DONE]"], end=True)

    def _wait(self, seconds: float) -> bool:
        """Sleep, watching the socket: False as soon as the client hangs up. Waiting
        handlers are what ``in_flight`` counts: they stop counting before they answer,
        so a client's next request can never overlap the previous one's count."""
        srv = self.server.owner
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            return self._watch(seconds)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _watch(self, seconds: float) -> bool:
        srv = self.server.owner
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not srv.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
            if readable:
                try:
                    gone = not self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    gone = True
                if gone:
                    self._hung_up()
                    return False
        return True

    def _hung_up(self) -> None:
        srv = self.server.owner
        with srv.lock:
            srv.disconnects += 1
        self.close_connection = True

    def _answer(self, body: dict[str, Any], pieces: tuple[str, ...], cut: str = "") -> None:
        model = str(body.get("model"))
        words = set(model.split("-"))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = OVERREPORTED if "overreport" in words else len(pieces)
        usage: dict[str, Any] | None = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if "nousage" in words:
            usage = None
        base = {"id": "fault-1", "created": 0, "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            data = {**base, "object": "chat.completion", "choices": [choice]}
            if usage is not None:
                data["usage"] = usage
            blob = json.dumps(data).encode()
            self._raw(
                200,
                blob[: len(blob) // 2] if cut == "truncate" else blob,
                "application/json",
                length=len(blob),
            )
            return
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            choice = {
                "index": 0,
                "delta": {"content": piece},
                "finish_reason": "stop" if last else None,
            }
            events.append({**base, "object": "chat.completion.chunk", "choices": [choice]})
        if usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        lines = [b"data: " + json.dumps(e).encode() for e in events] + [b"data: [DONE]"]
        if cut == "truncate":
            self._stream(lines[:1], end=False)
        elif cut == "long":
            self._stream([], end=False)
            srv = self.server.owner
            for i, line in enumerate(lines):
                # The pause lets a client that stops reading hang up before all is sent.
                if not self._watch(LONG_CHUNK_PAUSE_S):
                    return
                try:
                    self._chunks([line], end=False)
                except ConnectionError:  # it hung up between the check and the write
                    self._hung_up()
                    return
                if i < len(pieces):
                    with srv.lock:
                        srv.content_chunks[model] += 1
            self._chunks([], end=True)
            with srv.lock:
                srv.sent_in_full[model] += 1
        elif cut == "trickle":
            self._stream(lines[:1], end=False)
            if self._wait(SLOW_MAX_S):
                self._chunks(lines[1:], end=True)
        else:
            self._stream(lines, end=True)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(data).encode(), "application/json", headers=headers)

    def _raw(
        self,
        status: int,
        blob: bytes,
        content_type: str,
        *,
        length: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(blob) if length is None else length))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(blob)

    def _stream(self, events: list[bytes], *, end: bool) -> None:
        """Server-sent events in HTTP chunks; without ``end`` the body is cut off."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self._chunks(events, end=end)

    def _chunks(self, events: list[bytes], *, end: bool) -> None:
        for event in events:
            data = event + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        if end:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def fault_graph(good: str, bad: str, *, attempts: int = 3, call_s: float = 2.0) -> str:
    """A graph in which ``faulty`` uses model ``bad`` (a YAML flow mapping) while its
    sibling and the final node use ``good``."""
    return f"""
models:
  good: {good}
  bad: {bad}
defaults:
  sampling: {{max_tokens: 8}}
  retry: {{max_attempts: {attempts}, backoff_s: 0.01, jitter: 0}}
  timeout: {{call_s: {call_s}}}
nodes:
  sibling: {{role: proposer, model: good}}
  faulty: {{role: proposer, model: bad}}
  final: {{role: synthesizer, model: good, inputs: [sibling, faulty]}}
output: final
"""


async def run_bounded(text: str, limit_s: float = 30.0) -> tuple[ag.Graph, ag.RunResult]:
    """Load and run a graph, failing (not hanging) if the run outlives ``limit_s``."""
    graph = ag.loads(text)
    async with asyncio.timeout(limit_s), graph:
        result = await graph.arun("What is 6 * 7?")
    return graph, result


@contextlib.contextmanager
def serving() -> Iterator[FaultServer]:
    """A running server; fails the test if a handler broke (a bug in this module)."""
    with FaultServer() as server:
        yield server
    assert not server.errors, server.errors


def assert_only_faulty_failed(
    graph: ag.Graph,
    result: ag.RunResult,
    server: FaultServer,
    model: str,
    error: type[ag.BackendError],
    attempts: int,
    needle: str,
) -> None:
    """``faulty`` failed with ``error`` after ``attempts`` calls to fault ``model``, while its
    sibling and the final node kept their answer."""
    err = result.failed["faulty"]
    assert type(err) is error and needle in str(err)
    assert err.backend == graph.backends["bad"].id and err.node == "faulty"
    assert server.hits[model] == attempts
    (rec,) = [r for r in result.trace if r.node == "faulty"]
    assert rec.attempts == attempts and rec.error and rec.error.startswith(error.__name__)
    assert result.nodes["sibling"].status == "ok" and result.answer == "42"
