"""Backends for tests: scripted answers and replayed traces. Public, so users test their
graphs and roles without a model."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ._errors import EmptyCompletion, GraphValidationError, ReplayMiss
from ._model import BackendBase, Completion, CompletionRequest, Usage
from ._result import TraceRecord
from ._spec import ModelSpec, Price

__all__ = ["ReplayBackend", "ScriptedBackend"]

Responder = Callable[[CompletionRequest], str]


class ScriptedBackend(BackendBase):
    """A backend that answers from a script: fixed text, a list cycled in call order, or a
    function of the request. ``latency_s`` simulates model time; ``failures`` are raised on
    the first calls, one each, for fault injection. Every request is kept in ``calls``.
    Tokens are counted as words (prompts: spaces + 1), and ``max_tokens`` truncates the
    answer like a model."""

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
        super().__init__(f"scripted:{name}", slots=slots, price=price)
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
        if (
            isinstance(latency, bool)
            or not isinstance(latency, (int, float))
            or not math.isfinite(latency)
            or latency < 0
        ):
            raise GraphValidationError(
                f"'latency_s' must be a finite number >= 0, got {latency!r}",
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


def _read_records(path: Path) -> Iterator[TraceRecord]:
    """The records of a trace file, checked enough that replaying them cannot fail later."""
    source = str(path)
    try:
        fh = path.open("rb")  # bytes: a line that is not UTF-8 is that line's error
    except OSError as exc:
        raise GraphValidationError(
            f"cannot read the trace file: {exc.strerror or exc}", source=source
        ) from None
    with fh:
        number = 0
        while True:
            try:
                raw = fh.readline()
            except OSError as exc:
                raise GraphValidationError(
                    f"cannot read the trace file: {exc.strerror or exc}",
                    source=source,
                    line=number + 1,
                ) from None
            if not raw:
                return
            number += 1
            if not raw.strip():
                continue
            try:
                rec = TraceRecord.from_dict(json.loads(raw.decode("utf-8")))
                _check_record(rec)
            except (
                ArithmeticError,  # int(Infinity)
                AttributeError,
                KeyError,
                RecursionError,  # JSON nested past the decoder's depth
                TypeError,
                ValueError,  # bad JSON or UTF-8, a key that does not match, bad sampling
            ) as exc:
                why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
                raise GraphValidationError(
                    f"not a trace record ({why})", source=source, line=number
                ) from None
            yield rec


def _check_record(rec: TraceRecord) -> None:
    for m in rec.request.messages:
        if m.role not in ("system", "user", "assistant") or not isinstance(m.content, str):
            raise ValueError(f"bad message {m!r}")
    for field in ("node", "model"):
        if not isinstance(getattr(rec, field), str):
            raise ValueError(f"{field!r} must be a string, got {getattr(rec, field)!r}")
    for field in ("output", "error", "finish_reason"):
        value = getattr(rec, field)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{field!r} must be a string or null, got {value!r}")
    for field in ("prompt_tokens", "completion_tokens"):
        value = getattr(rec, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{field!r} must be a whole number >= 0, got {value!r}")


class ReplayBackend(BackendBase):
    """Answers only requests it has a record of (keyed by :meth:`CompletionRequest.key`);
    anything else raises :class:`ReplayMiss`. Records come from a mapping or from a trace
    written by :meth:`Trace.to_jsonl`."""

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
        super().__init__(f"replay:{name}", slots=1 << 20, price=price)

    @classmethod
    def from_trace(
        cls,
        path: str | Path,
        *,
        name: str = "replay",
        model: str | None = None,
        price: Price | None = None,
    ) -> ReplayBackend:
        """Records from a trace JSONL file; ``model`` keeps only calls made to that model.
        A file that cannot be read, or a line that is not a trace record, is a
        :class:`GraphValidationError` naming the file and the line."""
        records: dict[str, str | Completion] = {}
        for rec in _read_records(Path(path)):
            if rec.error is not None or rec.output is None or (model and rec.model != model):
                continue
            usage = Usage(rec.prompt_tokens, rec.completion_tokens)
            records[rec.request.key()] = Completion(
                rec.output, usage, finish_reason=rec.finish_reason
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
        if model is not None and not isinstance(model, str):
            raise GraphValidationError(
                f"'model' must be the name of a model in the trace, got {model!r}",
                path=("models", name, "options", "model"),
            )
        try:
            return cls.from_trace(trace, name=name, model=model, price=spec.price)
        except GraphValidationError as exc:  # the trace's own location, and the field
            raise GraphValidationError(
                f"{exc.message} (model {name!r} replays this file)",
                path=("models", name, "path"),
                source=exc.source,
                line=exc.line,
            ) from None

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
