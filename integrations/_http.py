"""Raw HTTP for servers without an OpenAI API, through httpx (a core dependency).

Each call POSTs the ``request`` template as JSON. A string value that is exactly one
placeholder (``"{prompt}"``, ``"{messages}"``, ``"{max_tokens}"``, ...) becomes the typed
value, at any depth; a placeholder whose sampling setting is unset drops its key (or list
item), so the server applies its own default; every other string is sent as written.
``{prompt}`` is the chat rendered as plain paragraphs, ``{messages}`` the chat as a list of
``{role, content}`` objects.

``response`` names where the answer sits in the JSON reply, as dotted paths with list
indexes (``choices.0.text``). Usage is known only when both ``prompt_tokens`` and
``completion_tokens`` are configured and hold counts in the reply: otherwise (a path not
configured, absent from the reply, or null) the completion has ``usage=None`` and the
budget ledger charges the call's whole reservation (prompt bound + ``max_tokens``), never 0.
``{seed}`` is :func:`agentgraph.sample_seed` of the seed and the call's sample index.

A 200 reply that is not JSON, or JSON without the configured paths or with values of the
wrong type there, is a malformed response: transient, so ``retry:`` tries again, as it
does for the ``openai`` backend. Everything taken from a reply (the answer, messages that
quote it) has the API key cut out after decoding.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import pydantic

from agentgraph import (
    BackendError,
    Completion,
    CompletionRequest,
    EmptyCompletion,
    GraphValidationError,
    ModelSpec,
    Price,
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
from ._llama_cpp import plain_prompt

_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty")
PLACEHOLDERS = ("prompt", "messages", "model", *_SAMPLING, "seed", "stop")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_DROP = object()  # an unset value: its key or list item is left out

DEFAULT_REQUEST: dict[str, Any] = {
    "prompt": "{prompt}",
    "max_tokens": "{max_tokens}",
    "temperature": "{temperature}",
    "top_p": "{top_p}",
    "seed": "{seed}",
    "stop": "{stop}",
}
"""An OpenAI-style ``/v1/completions`` body, used when ``request`` is not given."""


class ResponsePaths(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    text: str
    prompt_tokens: str | None = None
    completion_tokens: str | None = None
    finish_reason: str | None = None

    @pydantic.field_validator("*")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and not all(value.split(".")):
            raise ValueError(f"{value!r} is not a dotted path like 'choices.0.text'")
        return value


class HttpOptions(ClientOptions):
    """``options:`` of a ``backend: http`` model."""

    url: str
    api_key_header: str = "Authorization"
    """Where the key goes: ``Authorization: Bearer <key>``, or the bare key in any other."""
    request: dict[str, Any] = pydantic.Field(default_factory=lambda: dict(DEFAULT_REQUEST))
    response: ResponsePaths

    @pydantic.field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


def check_template(node: Any, model: str | None, at: tuple[str | int, ...] = ()) -> None:
    """Raise GraphValidationError at ``("options", "request", ...)`` for a bad placeholder."""
    if isinstance(node, str):
        m = _PLACEHOLDER.fullmatch(node)
        if m is None:
            return
        where = ("options", "request", *at)
        name = m.group(1)
        if name not in PLACEHOLDERS:
            valid = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
            hint = f"; did you mean {'{' + close[0] + '}'!r}?" if close else ""
            raise GraphValidationError(
                f"unknown placeholder {node!r}{hint}; valid placeholders: {valid}", path=where
            )
        if name == "model" and model is None:
            raise GraphValidationError(
                "'{model}' is used but the model sets no 'model' name", path=where
            )
    elif isinstance(node, Mapping):
        for key, value in node.items():
            check_template(value, model, (*at, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_template(value, model, (*at, i))


def render(node: Any, values: Mapping[str, Any]) -> Any:
    """The template with its placeholders replaced; unset ones come back as ``_DROP``."""
    if isinstance(node, str):
        m = _PLACEHOLDER.fullmatch(node)
        return values.get(m.group(1), _DROP) if m else node
    if isinstance(node, Mapping):
        out = {k: render(v, values) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(node, list):
        return [v for v in (render(item, values) for item in node) if v is not _DROP]
    return node


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path; LookupError says what was there instead."""
    parts = path.split(".")
    cur = data
    for i, part in enumerate(parts):
        where = repr(".".join(parts[:i])) if i else "the top level"
        if isinstance(cur, Mapping):
            if part not in cur:
                keys = ", ".join(repr(str(k)) for k in list(cur)[:12]) or "(none)"
                raise LookupError(f"no key {part!r} at {where}; keys there: {keys}")
            cur = cur[part]
        elif isinstance(cur, list):
            if not part.isdigit() or int(part) >= len(cur):
                raise LookupError(f"no index {part!r} at {where}, a list of {len(cur)}")
            cur = cur[int(part)]
        else:
            raise LookupError(f"{where} holds a {type(cur).__name__}, not an object or list")
    return cur


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


class HttpBackend(RemoteBackend[httpx.AsyncClient]):
    """A model behind any JSON-over-HTTP endpoint, described by a request template and
    the paths of the answer in the reply."""

    def __init__(
        self,
        url: str,
        *,
        response: Mapping[str, Any],
        request: Mapping[str, Any] | None = None,
        model: str | None = None,
        headers: Mapping[str, str] | None = None,
        api_key_env: str | None = None,
        api_key_header: str = "Authorization",
        request_timeout_s: float = DEFAULT_TIMEOUT_S,
        slots: int | None = None,
        price: Price | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "url": url,
            "response": dict(response),
            "headers": dict(headers or {}),
            "api_key_env": api_key_env,
            "api_key_header": api_key_header,
            "request_timeout_s": request_timeout_s,
        }
        if request is not None:
            data["request"] = request
        self._opts = opts = validate_options(HttpOptions, data)
        check_template(opts.request, model)
        try:
            json.dumps(opts.request)
        except (TypeError, ValueError) as exc:  # e.g. a YAML date
            raise GraphValidationError(
                f"the request template must be plain JSON: {exc}", path=("options", "request")
            ) from None
        self._model = model
        self._key = api_key_from_env(opts.api_key_env)
        identity = {"model": model, "request": opts.request, "response": opts.response.text}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        clients: PerLoop[httpx.AsyncClient] = PerLoop(self._make_client, _close_client)
        super().__init__(
            f"http:{opts.url}:{digest[:12]}", ("http", opts.url), clients, slots, price
        )

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> HttpBackend:
        try:
            opts = validate_options(HttpOptions, spec.options)
            fields = opts.model_dump()
            fields["response"] = opts.response.model_dump()
            return cls(**fields, model=spec.model, slots=spec.slots, price=spec.price)
        except GraphValidationError as exc:
            raise in_model(exc, name) from None

    def _make_client(self) -> httpx.AsyncClient:
        headers = dict(self._opts.headers)
        if self._key is not None:
            header = self._opts.api_key_header
            bearer = header.lower() == "authorization"
            headers[header] = f"Bearer {self._key}" if bearer else self._key
        return httpx.AsyncClient(headers=headers, timeout=self._opts.request_timeout_s)

    def _values(self, request: CompletionRequest) -> dict[str, Any]:
        s = request.sampling
        values: dict[str, Any] = {
            "prompt": plain_prompt(request.messages),
            "messages": chat_dicts(request.messages),
        }
        if self._model is not None:
            values["model"] = self._model
        for name in _SAMPLING:
            value = getattr(s, name)
            if value is not None:
                values[name] = value
        if s.seed is not None:
            values["seed"] = sample_seed(s.seed, request.sample_index)
        if s.stop:
            values["stop"] = list(s.stop)
        return values

    async def complete(self, request: CompletionRequest) -> Completion:
        client = await self._clients.get()
        body = render(self._opts.request, self._values(request))
        start = perf_counter()
        try:
            resp = await client.post(self._opts.url, json=body)
        except httpx.HTTPError as exc:
            error = transport_error(self.id, exc, self._opts.request_timeout_s)
            if error is None:
                raise
            raise error from exc
        status = resp.status_code
        if status >= 400:
            raise status_error(
                self.id, status, resp.text, resp.headers.get("retry-after"), self._key
            )
        if not 200 <= status < 300:
            raise BackendError(f"{self.id}: unexpected HTTP {status}", backend=self.id)
        try:
            data = json.loads(resp.content)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
            raise malformed(self.id, f"invalid JSON: {exc}", self._key) from None
        paths = self._opts.response
        text = self._find(data, paths.text)
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise malformed(self.id, f"{paths.text!r} holds a {type(text).__name__}, not text")
        # After decoding: a key the server echoed with JSON escapes is plain text by now.
        text = redact(text, self._key)
        finish = self._find(data, paths.finish_reason)
        finish = redact(finish, self._key) if isinstance(finish, str) else None
        if not text.strip():
            raise EmptyCompletion(
                f"{self.id} returned no text (finish_reason={finish!r})", backend=self.id
            )
        prompt = self._count(data, paths.prompt_tokens)
        completion = self._count(data, paths.completion_tokens)
        usage = Usage(prompt, completion) if prompt is not None and completion is not None else None
        return Completion(text, usage, latency_s=perf_counter() - start, finish_reason=finish)

    def _find(self, data: Any, path: str | None) -> Any:
        if path is None:
            return None
        try:
            return lookup(data, path)
        except LookupError as exc:  # the message quotes the reply's own keys
            raise malformed(self.id, f"no {path!r}: {exc}", self._key) from None

    def _count(self, data: Any, path: str | None) -> int | None:
        """The token count at ``path``; None when it is not configured, not in the reply
        or null (the call's usage is then unknown)."""
        if path is None:
            return None
        try:
            value = lookup(data, path)
        except LookupError:
            return None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            shown = f"{value!r:.80}"
            # Redacted both ways: repr() may escape characters of the key.
            if self._key and (self._key in str(value) or self._key in shown):
                shown = f"a {type(value).__name__} quoting the API key"
            raise malformed(self.id, f"{path!r} holds {shown}, not a token count", self._key)
        return value
