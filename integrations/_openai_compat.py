"""Any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp's server, ...) through the
async client of the ``openai`` package (extra ``openai``), imported on first use.

Identity: the backend id, which keys the call cache, is ``openai:<model>``: it names what
is served, not where, so moving a server to another host or port keeps its cache. Give
different models different served names. Slots belong to the server (``base_url``): the
models served there share them.

Token usage is what the server reports in ``usage``; when streaming, it is asked for with
``stream_options: {include_usage: true}`` and read from the chunk that carries it. A reply
without usage (a non-streamed answer without ``usage``, a stream without a usage chunk, as
llama-cpp-python's server sends) has ``usage=None``: the budget ledger then charges the
call's whole reservation (prompt bound + ``max_tokens``), never 0.

A stream is closed as soon as the server sends more content chunks than ``max_tokens`` (or
reports more completion tokens than that): it ignores the limit, and would otherwise run up
the bill. Every content chunk carries at least one token, so a server that keeps the limit
is never cut. The answer keeps the first ``max_tokens`` chunks, with
``finish_reason="length"``; its usage is the server's last report, or None (the reservation
is charged).

The client never retries (``max_retries=0``): the executor owns retries, backoff and call
timeouts, and sees a :class:`TransientBackendError` for anything a retry may cure. What the
server sent back (the answer, and every message quoting it) has the API key cut out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import httpx
import pydantic

from agentgraph import (
    BackendError,
    BackendTimeout,
    Completion,
    CompletionRequest,
    EmptyCompletion,
    GraphValidationError,
    MissingDependency,
    ModelSpec,
    Price,
    TransientBackendError,
    Usage,
    sample_seed,
)

from ._common import (
    DEFAULT_TIMEOUT_S,
    ClientOptions,
    PerLoop,
    RemoteBackend,
    api_key_from_env,
    chat_dicts,
    check_url,
    in_model,
    malformed,
    redact,
    status_error,
    transport_error,
    validate_options,
)

# Local servers ignore the key, but the client refuses to start without one.
_NO_KEY = "sk-no-key-required"


class OpenAIOptions(ClientOptions):
    """``options:`` of a ``backend: openai`` model."""

    base_url: str
    """The API root, e.g. ``http://127.0.0.1:8080/v1``."""
    stream: bool = False
    structured_output: Literal["json_schema", "json_object", "off"] = "json_schema"
    """How a call's JSON schema reaches the server: ``json_schema`` is OpenAI's
    ``response_format`` (also vLLM's, SGLang's and llama.cpp's llama-server's);
    ``json_object`` sends ``{"type": "json_object", "schema": ...}``, the form
    llama-cpp-python's server reads; ``off`` for a server that takes neither (roles then
    ask for plain text)."""

    @pydantic.field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise MissingDependency(
            "the openai backend needs the openai package: pip install 'agentgraph[openai]'"
        ) from None
    return openai


async def _close_client(client: Any) -> None:
    await client.close()


class OpenAIBackend(RemoteBackend[Any]):
    """A model served behind an OpenAI-compatible ``/chat/completions`` endpoint.
    ``model`` is the served model name; the API key is read from the environment
    variable named by ``api_key_env`` and appears in no id, repr, trace or message."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str | None = None,
        stream: bool = False,
        structured_output: Literal["json_schema", "json_object", "off"] = "json_schema",
        headers: Mapping[str, str] | None = None,
        request_timeout_s: float = DEFAULT_TIMEOUT_S,
        slots: int | None = None,
        price: Price | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise GraphValidationError(
                f"'model' must be the served model name, got {model!r}", path=("model",)
            )
        self._opts = validate_options(
            OpenAIOptions,
            {
                "base_url": base_url,
                "api_key_env": api_key_env,
                "stream": stream,
                "structured_output": structured_output,
                "headers": dict(headers or {}),
                "request_timeout_s": request_timeout_s,
            },
        )
        self._model = model
        self._key = api_key_from_env(self._opts.api_key_env)
        base = self._opts.base_url
        clients: PerLoop[Any] = PerLoop(self._make_client, _close_client)
        kinds = frozenset() if self._opts.structured_output == "off" else frozenset({"json_schema"})
        super().__init__(f"openai:{model}", ("openai", base), clients, slots, price, kinds)

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> OpenAIBackend:
        if not spec.model:
            raise GraphValidationError(
                "an openai model needs 'model': the name the server serves it under "
                "(what GET <base_url>/models lists)",
                path=("models", name),
            )
        try:
            opts = validate_options(OpenAIOptions, spec.options)
            return cls(spec.model, **opts.model_dump(), slots=spec.slots, price=spec.price)
        except GraphValidationError as exc:
            raise in_model(exc, name) from None

    @property
    def model(self) -> str:
        return self._model

    def _make_client(self) -> Any:
        openai = _import_openai()
        timeout = self._opts.request_timeout_s
        return openai.AsyncOpenAI(
            base_url=self._opts.base_url,
            api_key=self._key or _NO_KEY,
            max_retries=0,
            timeout=timeout,
            default_headers=self._opts.headers or None,
            # A plain httpx client: its errors are the ones _common maps, and it works
            # with every openai release that takes http_client.
            http_client=httpx.AsyncClient(timeout=timeout),
        )

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        s = request.sampling
        params: dict[str, Any] = {"model": self._model, "messages": chat_dicts(request.messages)}
        for name in ("temperature", "top_p", "max_tokens"):
            value = getattr(s, name)
            if value is not None:
                params[name] = value
        if s.seed is not None:
            params["seed"] = sample_seed(s.seed, request.sample_index)
        if s.stop:
            params["stop"] = list(s.stop)
        # Not in the OpenAI API; llama.cpp and vLLM servers read them from the body.
        extra = {
            name: getattr(s, name)
            for name in ("top_k", "min_p", "repeat_penalty")
            if getattr(s, name) is not None
        }
        if extra:
            params["extra_body"] = extra
        if request.constraint is not None and request.constraint.json_schema is not None:
            schema = dict(request.constraint.json_schema)
            if self._opts.structured_output == "json_object":
                params["response_format"] = {"type": "json_object", "schema": schema}
            else:
                spec = {"name": "reply", "schema": schema, "strict": True}
                params["response_format"] = {"type": "json_schema", "json_schema": spec}
        return params

    async def complete(self, request: CompletionRequest) -> Completion:
        client = await self._clients.get()
        params = self._params(request)
        start = perf_counter()
        try:
            if self._opts.stream:
                limit = request.sampling.max_tokens
                text, usage, finish = await self._streamed(client, params, limit)
            else:
                text, usage, finish = await self._single(client, params)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            # A status error's own message quotes the body, which may echo the key.
            openai = sys.modules.get("openai")
            quotes_body = openai is not None and isinstance(exc, openai.APIStatusError)
            raise error from (None if quotes_body else exc)
        # The client decoded the body: a key echoed with JSON escapes is plain text here.
        text = redact(text, self._key)
        finish = redact(finish, self._key) if isinstance(finish, str) else None
        if not text.strip():
            raise EmptyCompletion(
                f"{self.id} returned no text (finish_reason={finish!r})", backend=self.id
            )
        return Completion(text, usage, latency_s=perf_counter() - start, finish_reason=finish)

    async def _single(
        self, client: Any, params: dict[str, Any]
    ) -> tuple[str, Usage | None, str | None]:
        out = await client.chat.completions.create(**params)
        try:
            choice = out.choices[0]
            text = choice.message.content or ""
            finish = choice.finish_reason
            usage = _usage(getattr(out, "usage", None))
        except (AttributeError, IndexError, TypeError, ValueError):
            # Without strict validation the client hands back whatever the body held.
            shown = type(out).__name__
            if isinstance(out, str):  # redacted before it is cut short
                shown = f"text {redact(out, self._key)[:60]!r}"
            raise malformed(self.id, f"no choices[0].message in {shown}", self._key) from None
        if not isinstance(text, str):
            raise malformed(self.id, f"message content is a {type(text).__name__}")
        return text, usage, finish

    async def _streamed(
        self, client: Any, params: dict[str, Any], max_tokens: int | None
    ) -> tuple[str, Usage | None, str | None]:
        stream = await client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        pieces: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        try:  # closing on every exit, cancellation included, drops the connection
            async for chunk in stream:
                try:
                    usage = _usage(getattr(chunk, "usage", None)) or usage
                    if chunk.choices is None and getattr(chunk, "usage", None) is None:
                        # Neither choices nor usage: not a chunk (the client validates nothing).
                        raise TypeError("a chunk without choices")
                    for choice in chunk.choices or ():
                        content = choice.delta.content if choice.delta is not None else None
                        if content:
                            pieces.append(str(content))
                        finish = choice.finish_reason or finish
                except (AttributeError, TypeError, ValueError):
                    shown = redact(repr(chunk), self._key)[:80]
                    raise malformed(self.id, f"bad stream chunk {shown}", self._key) from None
                if finish is None and _past(max_tokens, len(pieces), usage):
                    # Still going past the limit: the server ignores it. Stop paying.
                    del pieces[max_tokens:]
                    finish = "length"
                    break
        finally:
            await stream.close()
        return "".join(pieces), usage, finish

    def _error(self, exc: Exception) -> BackendError | None:
        """``exc`` as an agentgraph error, or None to let it through (our own errors, bugs)."""
        if isinstance(exc, BackendError):
            return None
        openai = sys.modules.get("openai")
        timeout = self._opts.request_timeout_s
        if openai is not None and isinstance(exc, openai.OpenAIError):
            if isinstance(exc, openai.APIStatusError):
                body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body)
                retry_after = exc.response.headers.get("retry-after")
                return status_error(self.id, exc.status_code, body, retry_after, self._key)
            if isinstance(exc, openai.APITimeoutError):
                return BackendTimeout(
                    f"{self.id}: no response within request_timeout_s={timeout:g}",
                    backend=self.id,
                )
            if isinstance(exc, openai.APIConnectionError):
                cause = exc.__cause__
                mapped = transport_error(self.id, cause, timeout) if cause else None
                return mapped or TransientBackendError(
                    f"{self.id}: connection failed", backend=self.id
                )
            if isinstance(exc, openai.APIResponseValidationError):
                return malformed(self.id, redact(str(exc), self._key))
            if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
                return TransientBackendError(
                    f"{self.id}: server error: {redact(str(exc), self._key)}", backend=self.id
                )
            return BackendError(f"{self.id}: {redact(str(exc), self._key)}", backend=self.id)
        mapped = transport_error(self.id, exc, timeout)  # raised while reading a stream
        if mapped is not None:
            return mapped
        if isinstance(exc, json.JSONDecodeError):  # a 200 whose body is not JSON
            return malformed(self.id, f"invalid JSON: {exc}", self._key)
        return None


def _past(max_tokens: int | None, chunks: int, usage: Usage | None) -> bool:
    """Whether a stream went past ``max_tokens``: every content chunk holds a token or more."""
    if max_tokens is None:
        return False
    return chunks > max_tokens or (usage is not None and usage.completion_tokens > max_tokens)


def _usage(raw: Any) -> Usage | None:
    """The reported usage, or None when there is none (or a count is missing)."""
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None)
    completion = getattr(raw, "completion_tokens", None)
    if prompt is None or completion is None:
        return None
    return Usage(int(prompt), int(completion))
