"""Dry-run estimates of a graph's tokens, cost and latency, and measured latency profiles.

An estimate runs the graph through the real executor and roles with every model replaced by
a stand-in that answers instantly with ``completion_tokens`` words (from the model's latency
profile, else ``max_tokens``), so prompts are the ones the roles really build. Routers are
ignored: every successor runs, which makes the estimate an upper bound for cascades.
Latency = the larger of the critical path and the busiest backend's serialized work.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ._model import (
    BackendBase,
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelBackend,
    Usage,
    constraints_of,
)
from ._result import TraceRecord, critical_path
from ._spec import LatencyProfile, Sampling

__all__ = ["Estimate", "NodeEstimate", "ProfileStore", "ameasure_profile"]

_DEFAULT_COMPLETION = 256  # when neither max_tokens nor a profile says how long answers are


@dataclass(frozen=True, slots=True)
class NodeEstimate:
    node: str
    model: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float | None  # None: the model has no latency profile


@dataclass(frozen=True, slots=True)
class Estimate:
    nodes: Mapping[str, NodeEstimate]
    tokens: int
    cost: float
    latency_s: float | None
    unprofiled: tuple[str, ...]  # models without a latency profile: latency unknown


class ProfileStore:
    """Measured latency profiles in a YAML file, keyed by backend id (which carries the model
    file's fingerprint, so a profile never outlives its model). Default file:
    ``$AGENTGRAPH_PROFILES`` or ``~/.cache/agentgraph/profiles.yaml``."""

    def __init__(self, path: str | Path | None = None) -> None:
        default = os.environ.get("AGENTGRAPH_PROFILES") or (
            Path.home() / ".cache" / "agentgraph" / "profiles.yaml"
        )
        self.path = Path(path if path is not None else default)

    def _read(self) -> dict[str, dict[str, float]]:
        if not self.path.is_file():
            return {}
        data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        return data if isinstance(data, dict) else {}

    def get(self, backend_id: str) -> LatencyProfile | None:
        entry = self._read().get(backend_id)
        return LatencyProfile.model_validate(entry) if entry else None

    def put(self, backend_id: str, profile: LatencyProfile) -> None:
        data = self._read()
        data[backend_id] = profile.model_dump(exclude_none=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)  # atomic: a crash never leaves half a file


def prompt_tokens_guess(request: CompletionRequest) -> int:
    """About 4 bytes a token plus a little template per message (an estimate, not a bound)."""
    return sum(4 + len(m.content.encode()) // 4 for m in request.messages) + 4


class DryRunBackend(BackendBase):
    """Stands in for a backend during an estimate: instant, free of side effects. Its slots
    are unlimited (the estimate models the real backend's slots itself)."""

    def __init__(self, real: ModelBackend, profile: LatencyProfile | None) -> None:
        super().__init__(
            real.id,
            slots=1 << 20,
            price=real.price,
            # Roles then build the same (constrained) prompts as in a real run.
            constraints=constraints_of(real),
        )
        self.profile = profile
        self.real_resource = real.resource
        self.real_slots = real.slots

    async def complete(self, request: CompletionRequest) -> Completion:
        length = request.sampling.max_tokens or _DEFAULT_COMPLETION
        if self.profile is not None and self.profile.completion_tokens is not None:
            length = min(length, max(1, round(self.profile.completion_tokens)))
        text = "Answer: 0" + " x" * max(0, length - 2)
        return Completion(text, Usage(prompt_tokens_guess(request), length))


async def ameasure_profile(backend: ModelBackend, *, repeats: int = 2) -> LatencyProfile:
    """Time short and long prompts with one-token answers (prefill rate, overhead) and a
    long answer (decode rate), keeping the fastest of ``repeats`` runs of each, as other
    load on the machine only ever adds time. Every prompt starts differently so a prefix
    cache cannot hide prefill time."""
    await backend.aopen()
    filler = " ".join(f"item {i} is a small grey stone." for i in range(40))
    counting = "Count from 1 to 200, separated by spaces."

    def ask(i: int, text: str, max_tokens: int) -> CompletionRequest:
        """Prompt ``i``: its own first characters, so no prefix cache serves it."""
        return CompletionRequest(
            (ChatMessage("user", f"[{i}] {text}"),),
            Sampling(max_tokens=max_tokens, temperature=0.0),
        )

    async def fastest(text: str, max_tokens: int) -> tuple[float, int, int]:
        best: tuple[float, int, int] | None = None
        for i in range(repeats + 1):  # the first run warms caches up and is not kept
            req = ask(i, text, max_tokens)
            start = time.perf_counter()
            done = await backend.complete(req)
            took = time.perf_counter() - start
            usage = done.usage or Usage(prompt_tokens_guess(req), len(done.text.split()))
            run = (took, usage.prompt_tokens, usage.completion_tokens)
            if i and (best is None or took < best[0]):
                best = run
        assert best is not None
        return best

    t_short, p_short, n_short = await fastest("Say OK.", 1)
    t_long, p_long, _ = await fastest(f"Read this list. {filler} Say OK.", 1)
    t_dec, p_dec, n_dec = await fastest(counting, 32)
    prefill = (p_long - p_short) / max(t_long - t_short, 1e-6)
    decode_time = t_dec - t_short - (p_dec - p_short) / prefill
    decode = max(n_dec - n_short, 1) / max(decode_time, 1e-6)
    overhead = max(0.0, t_short - p_short / prefill - n_short / decode)
    speedup = None
    width = min(backend.slots, 8)
    if width > 1:  # the decode call, `width` times at once against once
        calls = [ask(repeats + 1 + i, counting, 32) for i in range(width)]
        start = time.perf_counter()
        await asyncio.gather(*(backend.complete(c) for c in calls))
        speedup = round(min(max(width * t_dec / (time.perf_counter() - start), 1.0), width), 3)
    return LatencyProfile(
        overhead_s=round(overhead, 6),
        prefill_tok_s=round(prefill, 3),
        decode_tok_s=round(decode, 3),
        batch_speedup=speedup,
    )


def summarize(
    calls: Mapping[str, list[TraceRecord]],
    backends: Mapping[str, DryRunBackend | None],
    model_names: Mapping[str, str | None],
    order: list[str],
    preds: Mapping[str, tuple[str, ...]],
) -> Estimate:
    nodes: dict[str, NodeEstimate] = {}
    unprofiled: set[str] = set()
    work: dict[Hashable, float] = {}
    slots: dict[Hashable, float] = {}
    for name in order:
        backend, model = backends[name], model_names[name]
        made = calls.get(name, [])
        prompt = sum(r.prompt_tokens for r in made)
        completion = sum(r.completion_tokens for r in made)
        latency: float | None = 0.0
        cost = 0.0
        if backend is not None:
            cost = backend.price.cost(prompt, completion)
            if backend.profile is None:
                latency = None
                unprofiled.add(model or name)
            else:
                latency = sum(
                    backend.profile.predict(r.prompt_tokens, r.completion_tokens) for r in made
                )
                key = backend.real_resource
                work[key] = work.get(key, 0.0) + latency
                speedup = backend.profile.batch_speedup
                slots[key] = min(backend.real_slots, speedup or backend.real_slots)
        nodes[name] = NodeEstimate(name, model, len(made), prompt, completion, cost, latency)
    total_latency: float | None = None
    if not unprofiled:
        path = critical_path({n: nodes[n].latency_s or 0.0 for n in order}, preds)
        # A resource may name the compute its slots run on (``resource.compute``: local
        # llama.cpp models each have slots of their own but take turns on one thread);
        # resources that share one add up their busy time.
        busy: dict[Hashable, float] = {}
        for key, w in work.items():
            compute = getattr(key, "compute", key)
            busy[compute] = busy.get(compute, 0.0) + w / slots[key]
        total_latency = max(path, max(busy.values(), default=0.0))
    return Estimate(
        nodes=nodes,
        tokens=sum(n.prompt_tokens + n.completion_tokens for n in nodes.values()),
        cost=sum(n.cost for n in nodes.values()),
        latency_s=total_latency,
        unprofiled=tuple(sorted(unprofiled)),
    )
