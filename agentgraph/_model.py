"""The model protocol, and the scripted and replay backends for tests.

A backend turns a :class:`CompletionRequest` into a :class:`Completion`. Requests and
completions are plain slotted records (frozen dataclasses cost microseconds per call on
the executor's hot path); treat them as read-only. It declares how
many calls it can serve at once (``slots``) and which shared ``resource`` those slots
belong to: backends that share one loaded model share its slots. The executor owns
scheduling; a backend only answers calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from ._errors import EmptyCompletion, GraphValidationError, ReplayMiss
from ._spec import ModelSpec, Price, Sampling

__all__ = [
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ModelBackend",
    "ReplayBackend",
    "ScriptedBackend",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(slots=True)
class CompletionRequest:
    """One model call: the chat messages, fully resolved sampling, and which sample this is
    (``sample_index`` separates repeated samples of the same prompt)."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = field(default_factory=Sampling)
    sample_index: int = 0

    def key(self) -> str:
        """Content hash of the request (backend identity is added by whoever caches)."""
        payload = {
            "messages": [[m.role, m.content] for m in self.messages],
            "sampling": self.sampling.model_dump(mode="json"),
            "sample_index": self.sample_index,
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    text: str
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None


@runtime_checkable
class ModelBackend(Protocol):
    """What the runtime needs from a model backend."""

    @property
    def id(self) -> str:
        """Stable identity of the model behind this backend (kind + file hash or name)."""
        ...

    @property
    def slots(self) -> int:
        """How many calls may run at once on ``resource``."""
        ...

    @property
    def resource(self) -> Hashable:
        """Backends with equal ``resource`` share one pool of ``slots``."""
        ...

    @property
    def price(self) -> Price: ...

    async def aopen(self) -> None:
        """Load or connect ahead of the first call (idempotent)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


Responder = Callable[[CompletionRequest], str]


class _InProcess:
    """What the two in-process test backends share: no connection to open or close, slots
    of their own."""

    _kind = ""

    def __init__(self, name: str, slots: int, price: Price | None) -> None:
        self._name = name
        self._slots = slots
        self._price = price or Price()

    @property
    def id(self) -> str:
        return f"{self._kind}:{self._name}"

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def resource(self) -> Hashable:
        return self

    @property
    def price(self) -> Price:
        return self._price

    async def aopen(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ScriptedBackend(_InProcess):
    """A backend that answers from a script: fixed text, a list cycled in call order, or a
    function of the request. ``latency_s`` simulates model time; ``failures`` are raised on
    the first calls, one each, for fault injection. Every request is kept in ``calls``.
    Tokens are counted as words (prompts: spaces + 1), and ``max_tokens`` truncates the
    answer like a model."""

    _kind = "scripted"

    def __init__(
        self,
        responses: str | Sequence[str] | Responder = "ok",
        *,
        name: str = "scripted",
        latency_s: float | Callable[[CompletionRequest], float] = 0.0,
        slots: int = 1 << 20,
        price: Price | None = None,
        failures: Iterable[BaseException] = (),
    ) -> None:
        if isinstance(responses, str):
            fixed = responses
            self._respond: Responder = lambda _r: fixed
        elif callable(responses):
            self._respond = responses
        else:
            if not responses:
                raise ValueError("ScriptedBackend needs at least one response")
            cycle = itertools.cycle(list(responses))
            self._respond = lambda _r: next(cycle)
        super().__init__(name, slots, price)
        self._latency = latency_s
        self._failures = list(failures)
        self.calls: list[CompletionRequest] = []

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> ScriptedBackend:
        opts = dict(spec.options)
        responses = opts.pop("responses", "ok")
        latency = opts.pop("latency_s", 0.0)
        if opts:
            raise GraphValidationError(
                f"unknown option {next(iter(opts))!r}; valid options: 'responses', 'latency_s'",
                path=("models", name, "options", next(iter(opts))),
            )
        if not (
            isinstance(responses, str)
            or (
                isinstance(responses, list)
                and responses
                and all(isinstance(r, str) for r in responses)
            )
        ):
            raise GraphValidationError(
                "'responses' must be a string or a non-empty list of strings",
                path=("models", name, "options", "responses"),
            )
        if not isinstance(latency, (int, float)) or latency < 0:
            raise GraphValidationError(
                f"'latency_s' must be a number >= 0, got {latency!r}",
                path=("models", name, "options", "latency_s"),
            )
        return cls(
            responses,
            name=name,
            latency_s=float(latency),
            slots=spec.slots or 1 << 20,
            price=spec.price,
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls.append(request)
        latency = self._latency(request) if callable(self._latency) else self._latency
        if latency:
            await asyncio.sleep(latency)
        if self._failures:
            raise self._failures.pop(0)
        text = self._respond(request)
        finish = "stop"
        words = text.split()  # a "token" here is a word
        limit = request.sampling.max_tokens
        if limit is not None and len(words) > limit:
            words = words[:limit]
            text, finish = " ".join(words), "length"
        if not words:
            raise EmptyCompletion("scripted response is empty", backend=self.id)
        prompt_tokens = sum(m.content.count(" ") + 1 for m in request.messages)
        return Completion(text, Usage(prompt_tokens, len(words)), latency, False, finish)


class ReplayBackend(_InProcess):
    """Answers only requests it has a record of (keyed by :meth:`CompletionRequest.key`);
    anything else raises :class:`ReplayMiss`. Records come from a mapping or from a trace
    written by :meth:`Trace.to_jsonl`."""

    _kind = "replay"

    def __init__(
        self,
        records: Mapping[str, str | Completion],
        *,
        name: str = "replay",
        price: Price | None = None,
    ) -> None:
        self._records = {
            k: v if isinstance(v, Completion) else Completion(v) for k, v in records.items()
        }
        super().__init__(name, 1 << 20, price)

    @classmethod
    def from_trace(
        cls,
        path: str | Path,
        *,
        name: str = "replay",
        model: str | None = None,
        price: Price | None = None,
    ) -> ReplayBackend:
        """Records from a trace JSONL file; ``model`` keeps only calls made to that model."""
        records: dict[str, str | Completion] = {}
        with Path(path).open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if rec.get("error") is not None or (model and rec.get("model") != model):
                    continue
                usage = Usage(rec.get("prompt_tokens", 0), rec.get("completion_tokens", 0))
                records[rec["request_key"]] = Completion(
                    rec["output"], usage, finish_reason=rec.get("finish_reason")
                )
        return cls(records, name=name, price=price)

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> ReplayBackend:
        if spec.path is None:
            raise GraphValidationError(
                "a replay model needs 'path': the trace JSONL file to replay",
                path=("models", name, "path"),
            )
        trace = Path(spec.path)
        trace = trace if trace.is_absolute() else base_dir / trace
        if not trace.is_file():
            raise GraphValidationError(
                f"trace file {str(trace)!r} not found", path=("models", name, "path")
            )
        model = spec.options.get("model")
        return cls.from_trace(trace, name=name, model=model, price=spec.price)

    async def complete(self, request: CompletionRequest) -> Completion:
        start = time.perf_counter()
        hit = self._records.get(request.key())
        if hit is None:
            last = request.messages[-1].content if request.messages else ""
            preview = last if len(last) <= 80 else last[:77] + "..."
            raise ReplayMiss(
                f"{self.id}: no recorded completion for this request (last message {preview!r}, "
                f"sample {request.sample_index}); {len(self._records)} records loaded",
                backend=self.id,
            )
        return Completion(
            hit.text,
            hit.usage,
            latency_s=time.perf_counter() - start,
            cached=True,
            finish_reason=hit.finish_reason,
        )
