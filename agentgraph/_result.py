"""What a run returns: per-node results, the call trace, and run totals.

Per-call and per-node records are plain slotted dataclasses, built on the executor's hot
path; treat them as read-only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._errors import RunFailed
from ._model import CompletionRequest
from ._role import Message

__all__ = ["NodeResult", "RunResult", "Trace", "TraceRecord"]


@dataclass(slots=True)
class TraceRecord:
    """One model call of one node, with all its attempts. Times are seconds since the run
    started; ``latency_s`` runs from first dispatch to return (retries and backoff included,
    slot queueing not: that is ``queued_s``). A cache hit costs 0 tokens and 0 money."""

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
            "output": self.output,
            "started_s": round(self.started_s, 6),
            "latency_s": round(self.latency_s, 6),
            "queued_s": round(self.queued_s, 6),
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "cached": self.cached,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }


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
        return sum(r.tokens for r in self.records)

    @property
    def cost(self) -> float:
        return sum(r.cost for r in self.records)

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
        return sum(c.tokens for c in self.calls)

    @property
    def cost(self) -> float:
        return sum(c.cost for c in self.calls)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished run. Nodes that failed are listed in ``failed``; everything that finished
    is kept. ``latency_s`` is the critical path of measured node latencies; ``wall_s`` is
    the elapsed time of the whole run."""

    question: str
    output_node: str
    nodes: Mapping[str, NodeResult]
    trace: Trace
    wall_s: float

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
    def latency_s(self) -> float:
        return critical_path(
            {n: r.latency_s for n, r in self.nodes.items()},
            {n: r.inputs for n, r in self.nodes.items()},
        )

    def raise_for_status(self) -> RunResult:
        """Raise :class:`RunFailed` if the output node did not produce an answer."""
        if not self.ok:
            errors = "; ".join(f"{n}: {e}" for n, e in self.failed.items()) or "output skipped"
            raise RunFailed(f"run failed ({errors})", result=self)
        return self
