"""What a run returns: per-node results, the call trace, and run totals.

Per-call and per-node records are plain slotted dataclasses, built on the executor's hot
path; treat them as read-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic

from ._errors import BudgetExceeded, RunFailed
from ._model import ChatMessage, CompletionRequest, OutputConstraint
from ._role import Message
from ._spec import Sampling

__all__ = ["NodeResult", "RunResult", "Trace", "TraceRecord", "read_trace"]


@dataclass(slots=True)
class TraceRecord:
    """One model call of one node, with all its attempts. Times are seconds since the run
    started.

    ``prompt_tokens``, ``completion_tokens``, ``cost`` and ``latency_s`` are the call's true
    figures: for a cache hit (``cached``), those of the call when it was made, so a search
    sees what a graph really costs. ``elapsed_s`` is what this run waited for it (first
    dispatch to return, retries and backoff included, slot queueing not: that is
    ``queued_s``; for a hit, the lookup). ``charged_tokens`` and ``charged_cost`` are what the
    budget ledger charged: 0 for a hit, the whole reservation for an attempt that failed or
    whose usage the backend could not tell (``usage_known`` false)."""

    node: str
    model: str
    backend: str
    request: CompletionRequest
    output: str | None
    started_s: float
    latency_s: float
    queued_s: float
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    charged_tokens: int = 0
    charged_cost: float = 0.0
    usage_known: bool = True

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        req = self.request
        return {
            "node": self.node,
            "model": self.model,
            "backend": self.backend,
            "request_key": req.key(),
            "sample_index": req.sample_index,
            "messages": [{"role": m.role, "content": m.content} for m in req.messages],
            "sampling": req.sampling.model_dump(mode="json", exclude_none=True),
            **({} if req.constraint is None else {"constraint": _constraint_dict(req.constraint)}),
            "output": self.output,
            "started_s": round(self.started_s, 6),
            "latency_s": round(self.latency_s, 6),
            "elapsed_s": round(self.elapsed_s, 6),
            "queued_s": round(self.queued_s, 6),
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "charged_tokens": self.charged_tokens,
            "charged_cost": self.charged_cost,
            "usage_known": self.usage_known,
            "cached": self.cached,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceRecord:
        """The inverse of :meth:`to_dict`; the request's key is checked against
        ``request_key``, so a record edited by hand cannot replay under a wrong key."""
        request = CompletionRequest(
            tuple(ChatMessage(m["role"], m["content"]) for m in data["messages"]),
            Sampling.model_validate(data.get("sampling", {})),
            int(data.get("sample_index", 0)),
            OutputConstraint(**data["constraint"]) if data.get("constraint") else None,
        )
        if "request_key" in data and request.key() != data["request_key"]:
            raise ValueError(
                "request_key does not match the recorded messages, sampling and constraint"
            )
        fields = {k: data[k] for k in _RECORD_FIELDS if k in data}
        return cls(request=request, **fields)


def _constraint_dict(c: OutputConstraint) -> dict[str, Any]:
    if c.json_schema is not None:
        return {"json_schema": c.json_schema}
    return {"grammar": c.grammar}


_RECORD_FIELDS = tuple(f for f in TraceRecord.__dataclass_fields__ if f != "request")


def read_trace(path: str | Path) -> Iterator[TraceRecord]:
    """The records of a trace written by :meth:`Trace.to_jsonl`. A line that is not a
    record raises ``ValueError`` naming the file and line."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield TraceRecord.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError, pydantic.ValidationError) as exc:
                why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
                raise ValueError(f"{path}:{number}: not a trace record ({why})") from None


@dataclass(frozen=True, slots=True)
class Trace:
    """Every model call of a run, in completion order."""

    records: tuple[TraceRecord, ...] = ()

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> TraceRecord:
        return self.records[i]

    @property
    def tokens(self) -> int:
        """Tokens charged (cache hits are free)."""
        return sum(r.charged_tokens for r in self.records)

    @property
    def cost(self) -> float:
        """Money charged (cache hits are free)."""
        return sum(r.charged_cost for r in self.records)

    @property
    def uncached_tokens(self) -> int:
        """Tokens the calls would have cost without the cache."""
        return sum(r.tokens if r.cached else r.charged_tokens for r in self.records)

    @property
    def uncached_cost(self) -> float:
        """Money the calls would have cost without the cache."""
        return sum(r.cost if r.cached else r.charged_cost for r in self.records)

    def to_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as fh:
            for rec in self.records:
                fh.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")


def critical_path(durations: Mapping[str, float], inputs: Mapping[str, Sequence[str]]) -> float:
    """The longest path through the graph, ``durations`` given in topological order."""
    finish: dict[str, float] = {}
    for name, took in durations.items():
        finish[name] = max((finish[p] for p in inputs[name] if p in finish), default=0.0) + took
    return max(finish.values(), default=0.0)


NodeStatus = Literal["ok", "failed", "skipped"]


@dataclass(slots=True)
class NodeResult:
    node: str
    role: str
    model: str | None
    inputs: tuple[str, ...]
    message: Message
    started_s: float
    finished_s: float
    calls: tuple[TraceRecord, ...]

    @property
    def status(self) -> NodeStatus:
        if self.message.skipped:
            return "skipped"
        return "failed" if self.message.error is not None else "ok"

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.started_s

    @property
    def tokens(self) -> int:
        """Tokens charged for this node's calls."""
        return sum(c.charged_tokens for c in self.calls)

    @property
    def cost(self) -> float:
        """Money charged for this node's calls."""
        return sum(c.charged_cost for c in self.calls)

    @property
    def uncached_latency_s(self) -> float:
        """The node's latency had its cached calls taken their original time."""
        saved = sum(c.latency_s - c.elapsed_s for c in self.calls if c.cached)
        return self.latency_s + max(0.0, saved)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run. Nodes that failed are listed in ``failed``; everything that finished
    is kept.

    Spent figures: ``tokens`` and ``cost`` are what the budget ledger charged (cache hits
    are free), ``latency_s`` the critical path of measured node latencies, ``wall_s`` the
    elapsed time of the whole run. Would-be figures, as if no call had been cached:
    ``uncached_tokens``, ``uncached_cost``, ``uncached_latency_s``. ``overrun`` is set when
    the calls really used more than a hard budget (a backend answered past ``max_tokens``
    or over-reported): every call after it was refused."""

    question: str
    output_node: str
    nodes: Mapping[str, NodeResult]
    trace: Trace
    wall_s: float
    overrun: BudgetExceeded | None = None

    @property
    def output(self) -> Message:
        return self.nodes[self.output_node].message

    @property
    def answer(self) -> str | None:
        out = self.output
        return out.content if out.ok else None

    @property
    def ok(self) -> bool:
        return self.output.ok

    @property
    def failed(self) -> dict[str, BaseException]:
        return {n: r.message.error for n, r in self.nodes.items() if r.message.error is not None}

    @property
    def skipped(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.message.skipped]

    @property
    def tokens(self) -> int:
        return self.trace.tokens

    @property
    def cost(self) -> float:
        return self.trace.cost

    @property
    def uncached_tokens(self) -> int:
        return self.trace.uncached_tokens

    @property
    def uncached_cost(self) -> float:
        return self.trace.uncached_cost

    @property
    def latency_s(self) -> float:
        return self._path(lambda r: r.latency_s)

    @property
    def uncached_latency_s(self) -> float:
        return self._path(lambda r: r.uncached_latency_s)

    def _path(self, took: Callable[[NodeResult], float]) -> float:
        # Nodes cancelled because they lost a race took no part in the answer.
        nodes = {n: r for n, r in self.nodes.items() if not r.message.lost_race}
        return critical_path(
            {n: took(r) for n, r in nodes.items()}, {n: r.inputs for n, r in nodes.items()}
        )

    def raise_for_status(self) -> RunResult:
        """Raise :class:`RunFailed` if the output node did not produce an answer."""
        if not self.ok:
            errors = "; ".join(f"{n}: {e}" for n, e in self.failed.items()) or "output skipped"
            raise RunFailed(f"run failed ({errors})", result=self)
        return self
