"""Every local llama.cpp instance computes on one shared thread, taking turns (real SmolLM2).

Two instances are two load options of one file (``n_ctx`` 2048 and 1024). Timings are
read as order and counts, never as milliseconds: the machine may be busy.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentgraph.integrations import LlamaCppBackend, LlamaOptions, _llama_cpp

import agentgraph as ag

from .conftest import request


@dataclass
class Span:
    what: str  # "load" or "generate"
    n_ctx: int
    thread: int
    start: float
    end: float


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Span]]:
    """What the instances computed, on which thread and when (``perf_counter``)."""
    record: list[Span] = []
    real_load, real_generate = _llama_cpp._Instance._load, _llama_cpp._Instance.generate

    def load(self: _llama_cpp._Instance) -> None:
        start = time.perf_counter()
        try:
            real_load(self)
        finally:
            span = Span("load", self.opts.n_ctx, threading.get_ident(), start, time.perf_counter())
            record.append(span)

    def generate(self: _llama_cpp._Instance, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_generate(self, *args)
        finally:
            end = time.perf_counter()
            record.append(Span("generate", self.opts.n_ctx, threading.get_ident(), start, end))

    monkeypatch.setattr(_llama_cpp._Instance, "_load", load)
    monkeypatch.setattr(_llama_cpp._Instance, "generate", generate)
    yield record


@pytest.fixture(scope="module")
def pair(smol_path: Path) -> tuple[LlamaCppBackend, LlamaCppBackend]:
    """Two llama.cpp instances of one file."""
    big = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=2048))
    small = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=1024))
    assert big._instance is not small._instance
    return big, small


async def test_two_instances_load_and_generate_on_one_thread(
    smol_path: Path, spans: list[Span]
) -> None:
    a = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=512))
    b = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=768))
    for backend in (a, b, a, b):
        assert (await backend.complete(request("Name a colour.", max_tokens=4))).text.strip()
    assert [(s.what, s.n_ctx) for s in spans] == [
        ("load", 512),
        ("generate", 512),
        ("load", 768),
        ("generate", 768),
        ("generate", 512),
        ("generate", 768),
    ]
    threads = {s.thread for s in spans}
    assert len(threads) == 1 and threading.get_ident() not in threads  # never on the loop


def test_every_local_model_shares_one_slot(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], gemma_path: Path
) -> None:
    big, small = pair
    gemma = LlamaCppBackend(gemma_path)
    assert big.resource is small.resource is gemma.resource
    assert big.slots == small.slots == gemma.slots == 1
    assert "compute thread" in repr(big.resource)


async def test_concurrent_calls_on_two_instances_take_turns(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], spans: list[Span]
) -> None:
    """Even called at once outside the executor, and each call's latency is its own
    compute, not its wait for the other."""
    big, small = pair
    await asyncio.gather(big.aopen(), small.aopen())
    done = await asyncio.gather(
        *(
            backend.complete(request("Write a story about a dog.", max_tokens=24))
            for backend in (big, small, big, small)
        )
    )
    work = sorted((s for s in spans if s.what == "generate"), key=lambda s: s.start)
    assert len(work) == 4 and len({s.thread for s in work}) == 1
    assert all(x.end <= y.start for x, y in itertools.pairwise(work))
    # First in, first served; a call's latency lies within its own turn.
    assert all(0 < d.latency_s <= s.end - s.start for d, s in zip(done, work, strict=True))


async def test_a_chain_alternating_two_models_completes(smol_path: Path, spans: list[Span]) -> None:
    text = f"""
models:
  big: {{backend: llama_cpp, path: {smol_path}, options: {{n_ctx: 2048}}}}
  small: {{backend: llama_cpp, path: {smol_path}, options: {{n_ctx: 1024}}}}
defaults:
  sampling: {{max_tokens: 16, temperature: 0.0}}
nodes:
  a: {{role: proposer, model: big}}
  b: {{role: synthesizer, model: small, inputs: [a]}}
  c: {{role: synthesizer, model: big, inputs: [b]}}
  d: {{role: synthesizer, model: small, inputs: [c]}}
output: d
"""
    graph = ag.loads(text)
    result = await graph.arun("What is 2 + 3?")
    assert result.ok, result.failed
    assert [r.node for r in sorted(result.trace, key=lambda r: r.started_s)] == list("abcd")
    assert all(r.completion_tokens > 0 for r in result.trace)
    work = [s for s in spans if s.what == "generate"]
    assert [s.n_ctx for s in work] == [2048, 1024, 2048, 1024]
    assert len({s.thread for s in spans}) == 1


async def test_cancel_frees_the_thread_at_the_next_token(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    big, small = pair
    await big.aopen()
    llama = big._instance.llama
    sampled = 0
    outs: list[dict[str, Any]] = []
    real = llama.create_chat_completion

    def counting(**kwargs: Any) -> Any:
        def count(_ids: Any, scores: Any) -> Any:
            nonlocal sampled
            sampled += 1
            return scores

        kwargs["logits_processor"] = [*kwargs["logits_processor"], count]
        out = real(**kwargs)
        outs.append(out)
        return out

    monkeypatch.setattr(llama, "create_chat_completion", counting)
    prompt = request("Write a very long essay about the sea.", max_tokens=400, temperature=0.8)
    long = asyncio.create_task(big.complete(prompt))
    while sampled < 5:  # it is generating
        await asyncio.sleep(0.005)
    long.cancel()
    at_cancel = sampled
    with pytest.raises(asyncio.CancelledError):
        await long
    # The other instance's call can only start once the thread is free.
    assert (await small.complete(request("Hi", max_tokens=2))).text.strip()
    (out,) = outs
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] <= at_cancel + 2  # not 400


async def test_a_call_cancelled_while_waiting_never_computes(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], spans: list[Span]
) -> None:
    big, small = pair
    await asyncio.gather(big.aopen(), small.aopen())
    first = asyncio.create_task(big.complete(request("Write a poem.", max_tokens=24)))
    queued = asyncio.create_task(small.complete(request("Write a song.", max_tokens=24)))
    await asyncio.sleep(0)  # both are submitted; the first holds the thread
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await first).text.strip()
    assert (await small.complete(request("Hi", max_tokens=2))).text.strip()
    assert [s.n_ctx for s in spans if s.what == "generate"] == [2048, 1024]  # first, "Hi"
