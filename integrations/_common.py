"""Plumbing shared by the backends that talk HTTP (``openai`` and ``http``).

- :class:`PerLoop`: one client per running event loop. ``Graph.run`` calls ``asyncio.run``
  each time, and a connection pool bound to a closed loop cannot be used again.
- API keys read from the environment, and kept out of every message: what a server sends
  back is redacted after it is decoded (a key written with JSON escapes such as ``\\/``
  or ``\\u002d`` is still the key), at every place it can leave a backend: error
  messages (bodies, ``Retry-After``, odd values) and the answer text itself.
- Option validation through the core's one formatter (:func:`validation_error`): errors
  name the field, the valid options and the closest one to a typo.
- HTTP failures mapped onto the agentgraph exception tree: what a retry may cure
  (overload, lost connection, a garbled body: not JSON, or JSON of the wrong shape) is a
  :class:`TransientBackendError`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

import httpx
import pydantic

from agentgraph import (
    BackendBase,
    BackendError,
    BackendTimeout,
    ChatMessage,
    GraphValidationError,
    Price,
    TransientBackendError,
)
from agentgraph._errors import validation_error

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_SLOTS = 8
DEFAULT_TIMEOUT_S = 600.0


class ClientOptions(pydantic.BaseModel):
    """Options every HTTP backend takes."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    request_timeout_s: float = pydantic.Field(default=DEFAULT_TIMEOUT_S, gt=0)
    """Client-level safety net; the graph's ``timeout.call_s`` is the limit that matters."""

    @pydantic.field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "=" in value or "\0" in value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


def check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    # The URL becomes part of the backend id, which traces and caches record.
    if "@" in value.split("/")[2]:
        raise ValueError("credentials in the URL would be recorded; use api_key_env or headers")
    return value.rstrip("/")


def validate_options(cls: type[M], data: Mapping[str, Any]) -> M:
    """``data`` as ``cls``; problems become GraphValidationError at ``("options", field)``,
    naming the valid options (and the closest one to a typo)."""
    try:
        return cls.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise validation_error(exc, cls, path=("options",), what="option") from None


def in_model(exc: GraphValidationError, name: str) -> GraphValidationError:
    """An error found by a backend constructor, placed under ``models.<name>``."""
    return GraphValidationError(exc.message, path=("models", name, *exc.path))


def api_key_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    key = os.environ.get(var)
    if not key:
        raise GraphValidationError(
            f"environment variable {var!r} is not set or empty; it should hold the API key",
            path=("options", "api_key_env"),
        )
    return key


def redact(text: str, secret: str | None) -> str:
    """``text`` with the secret cut out: servers echo credentials in their errors. Also
    cut: the secret as a JSON string literal writes it (text that was not decoded)."""
    if not secret:
        return text
    for form in {secret, json.dumps(secret)[1:-1], secret.replace("/", "\\/")}:
        text = text.replace(form, "***")
    return text


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\/")


def decoded_body(body: str) -> str:
    """A response body as it reads once decoded: JSON re-encoded without escapes, so a
    secret written with ``\\uXXXX`` or ``\\/`` shows (and is redacted) as itself; text that
    is not JSON has those escapes undone where they stand."""
    try:
        text = json.dumps(json.loads(body), ensure_ascii=False)
    except (ValueError, RecursionError):
        text = _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else "/", body)
    # A lone surrogate (half of an escaped pair) cannot be printed: shown as "?".
    return text.encode("utf-8", "replace").decode("utf-8")


def chat_dicts(messages: tuple[ChatMessage, ...]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def status_error(
    backend: str, status: int, body: str, retry_after: str | None, secret: str | None
) -> BackendError:
    """The error for an HTTP error status: overload, rate limits and server faults are
    transient, other client errors are not (the same request would fail again)."""
    # Redacted before it is cut short: a cut could keep part of the secret.
    snippet = " ".join(redact(decoded_body(body), secret).split())
    snippet = snippet if len(snippet) <= 300 else snippet[:297] + "..."
    wait = f", Retry-After {redact(retry_after, secret)!r}" if retry_after else ""
    msg = f"{backend}: HTTP {status}{wait}: {snippet or '(empty body)'}"
    if status in (408, 429) or status >= 500:
        return TransientBackendError(msg, backend=backend, retry_after_s=_seconds(retry_after))
    return BackendError(msg, backend=backend)


def transport_error(backend: str, exc: BaseException, timeout_s: float) -> BackendError | None:
    """The error for an httpx failure, or None when ``exc`` is not one."""
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(
            f"{backend}: no response within request_timeout_s={timeout_s:g} ({type(exc).__name__})",
            backend=backend,
        )
    if isinstance(exc, (httpx.TransportError, httpx.DecodingError)):
        detail = str(exc) or "no detail"
        return TransientBackendError(
            f"{backend}: connection failed ({type(exc).__name__}: {detail})", backend=backend
        )
    return None


def malformed(backend: str, detail: str, secret: str | None = None) -> TransientBackendError:
    """A 200 whose body is garbled (not JSON, or JSON of the wrong shape): transient, as a
    server that answered so once may answer properly on the next try."""
    return TransientBackendError(
        f"{backend}: malformed response ({redact(detail, secret)})", backend=backend
    )


async def _close_at_shutdown(
    item: T, close: Callable[[T], Awaitable[None]]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await close(item)


class PerLoop(Generic[T]):
    """One ``T`` per running event loop, made on first use inside that loop.

    Each one is parked in an async generator that its loop tracks: ``asyncio.run`` and
    ``asyncio.Runner`` finalize those (``loop.shutdown_asyncgens``) before closing the
    loop, so a client nobody closed is still closed inside its own loop.
    """

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[T, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is None:
            item = self._make()
            guard = _close_at_shutdown(item, self._close)
            self._by_loop[loop] = entry = (item, guard)
            await anext(guard)  # first iteration registers it with the loop
        return entry[0]

    async def aclose(self) -> None:
        """Close the running loop's one (others close when their loops shut down)."""
        entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


C = TypeVar("C")


class RemoteBackend(BackendBase, Generic[C]):
    """What the HTTP backends share beyond :class:`BackendBase`: a client per loop, made
    by ``aopen`` (or the first call) and closed by ``aclose``."""

    def __init__(
        self,
        id: str,
        resource: Hashable,
        clients: PerLoop[C],
        slots: int | None,
        price: Price | None,
        constraints: frozenset[str] = frozenset(),
    ) -> None:
        if slots is not None and slots < 1:
            raise GraphValidationError(f"'slots' must be >= 1, got {slots!r}", path=("slots",))
        super().__init__(
            id,
            slots=slots or DEFAULT_SLOTS,
            price=price,
            resource=resource,
            constraints=constraints,
        )
        self._clients = clients

    async def aopen(self) -> None:
        # Only makes the client: a network probe here would fail the whole run instead
        # of the nodes that use this model.
        await self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()


def _seconds(retry_after: str | None) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is rare from model servers and is
    left to the retry policy."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None
