"""Local llama.cpp models decode concurrent calls together, on one shared thread (real
SmolLM2-135M-Instruct).

Two instances are two load options of one file (``n_ctx`` 2048 and 1024). Timings are
read as order and counts, never as milliseconds: the machine may be busy.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentgraph.integrations import LlamaCppBackend, LlamaOptions, _llama_batch, _llama_cpp

import agentgraph as ag

from .conftest import request


@dataclass
class Span:
    what: str  # "load" or "slice"
    n_ctx: int
    thread: int
    start: float
    end: float


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Span]]:
    """What the instances computed, on which thread and when (``perf_counter``)."""
    record: list[Span] = []
    real_load, real_slice = _llama_cpp._Instance._load, _llama_batch.Batcher._slice

    def load(self: _llama_cpp._Instance) -> None:
        start = time.perf_counter()
        try:
            real_load(self)
        finally:
            span = Span("load", self.opts.n_ctx, threading.get_ident(), start, time.perf_counter())
            record.append(span)

    def slice_(self: _llama_batch.Batcher) -> None:
        # Recorded as it starts: its calls may be answered before it returns.
        span = Span("slice", self.n_ctx, threading.get_ident(), time.perf_counter(), 0.0)
        record.append(span)
        try:
            real_slice(self)
        finally:
            span.end = time.perf_counter()

    monkeypatch.setattr(_llama_cpp._Instance, "_load", load)
    monkeypatch.setattr(_llama_batch.Batcher, "_slice", slice_)
    yield record


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_llama_batch.Job]]:
    """Every call handed to a batcher, in order."""
    record: list[_llama_batch.Job] = []
    real = _llama_batch.Batcher.submit

    def submit(self: _llama_batch.Batcher, job: _llama_batch.Job) -> None:
        record.append(job)
        real(self, job)

    monkeypatch.setattr(_llama_batch.Batcher, "submit", submit)
    yield record


@pytest.fixture(scope="module")
def pair(smol_path: Path) -> tuple[LlamaCppBackend, LlamaCppBackend]:
    """Two llama.cpp instances of one file, four calls at once each."""
    big = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=2048, parallel=4))
    small = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=1024, parallel=4))
    assert big._instance is not small._instance
    return big, small


async def test_two_instances_load_and_decode_on_one_thread(
    smol_path: Path, spans: list[Span]
) -> None:
    a = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=512))
    b = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=768))
    for backend in (a, b, a, b):
        assert (await backend.complete(request("Name a colour.", max_tokens=4))).text.strip()
    assert [(s.what, s.n_ctx) for s in spans if s.what == "load"] == [("load", 512), ("load", 768)]
    decoded = [s.n_ctx for s in spans if s.what == "slice"]
    assert [n for n, _ in itertools.groupby(decoded)] == [512, 768, 512, 768]
    threads = {s.thread for s in spans}
    assert len(threads) == 1 and threading.get_ident() not in threads  # never on the loop


def test_each_model_has_parallel_slots_of_its_own(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], smol_path: Path
) -> None:
    big, small = pair
    assert big.slots == small.slots == big.parallel == 4
    assert big.resource is not small.resource
    # ... but one compute thread, where estimates queue their work together.
    assert big.resource.compute is small.resource.compute is _llama_cpp._compute  # type: ignore[attr-defined]
    again = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=2048, parallel=4))
    assert again.resource is big.resource  # one loaded instance, one slot pool
    assert LlamaCppBackend(smol_path).slots == _llama_cpp.default_parallel()


async def test_calls_of_two_models_interleave_on_one_thread(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], spans: list[Span]
) -> None:
    """Two models busy at once take turns in slices; no two slices overlap."""
    big, small = pair
    await asyncio.gather(big.aopen(), small.aopen())
    done = await asyncio.gather(
        *(
            backend.complete(request(f"Write a story about dog {i}.", max_tokens=48))
            for i, backend in enumerate((big, small, big, small))
        )
    )
    assert all(d.usage and d.usage.completion_tokens > 0 for d in done)
    work = sorted((s for s in spans if s.what == "slice"), key=lambda s: s.start)
    assert len({s.thread for s in work}) == 1
    assert all(x.end <= y.start for x, y in itertools.pairwise(work) if x.end)
    turns = [n for n, _ in itertools.groupby(s.n_ctx for s in work)]
    assert len(turns) >= 3  # neither model waited for the other to finish everything


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
    work = [s.n_ctx for s in spans if s.what == "slice"]
    assert [n for n, _ in itertools.groupby(work)] == [2048, 1024, 2048, 1024]
    assert len({s.thread for s in spans}) == 1


async def test_calls_in_one_batch_keep_their_own_stops_and_lengths(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], jobs: list[_llama_batch.Job]
) -> None:
    big, _ = pair
    await big.aopen()
    counting = "Count from 1 to 50, separated by commas."
    calls = [
        request(counting, max_tokens=5, temperature=0.0),
        request(counting, max_tokens=60, temperature=0.0, stop=("7",)),
        request(counting, max_tokens=60, temperature=0.0, stop=("4",)),
        request("Write a long story about the sea.", max_tokens=30, temperature=0.9, seed=1),
    ]
    done = await asyncio.gather(*(big.complete(c) for c in calls))
    assert max(j.decode_s for j in jobs) > 0 and len(jobs) == 4
    lengths = [d.usage.completion_tokens for d in done if d.usage]
    assert lengths[0] == 5 and done[0].finish_reason == "length"
    for d, stop in ((done[1], "7"), (done[2], "4")):  # cut just before the stop string
        assert d.finish_reason == "stop" and stop not in d.text and "3" in d.text
    assert len(done[1].text) > len(done[2].text)
    assert lengths[3] == 30 and done[3].finish_reason == "length"
    # They were decoded together: each started before any of them finished.
    starts = [j.submitted + j.queued_s for j in jobs]
    ends = [s + j.decode_s for s, j in zip(starts, jobs, strict=True)]
    assert max(starts) < min(ends)


PROMPTS = [
    "What is the capital of France?",
    "Name three fruits.",
    "Translate 'good morning' into Spanish.",
    "What is 7 times 8?",
    "Give one word that rhymes with cat.",
    "What colour is the sky on a clear day?",
    "Write a haiku about rain.",
    "How many legs does a spider have?",
]


async def test_batched_greedy_calls_answer_as_one_at_a_time(smol_path: Path) -> None:
    """Each sequence has a KV stream of its own, so a call decoded among others computes
    the same numbers as alone (in one unified cache a prompt prefilled beside other
    sequences' cells drifted, and 7 of 8 answers changed)."""
    serial = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=1536, parallel=1))
    batched = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=1536, parallel=8))
    calls = [request(p, max_tokens=24, temperature=0.0) for p in PROMPTS]
    one = [await serial.complete(c) for c in calls]
    together = await asyncio.gather(*(batched.complete(c) for c in calls))
    assert [d.text for d in together] == [d.text for d in one]
    assert [d.usage for d in together] == [d.usage for d in one]


async def test_a_shared_prompt_prefix_is_computed_once(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], jobs: list[_llama_batch.Job]
) -> None:
    big, _ = pair
    await big.aopen()
    story = "Once upon a time, " + "a fox walked through a quiet green forest. " * 30
    questions = ["What animal is it?", "Where does it walk?", "Is it quiet?", "Is it a fox?"]
    msgs = [(ag.ChatMessage("user", f"{story}\n{q}"),) for q in questions]
    done = await asyncio.gather(
        *(big.complete(ag.CompletionRequest(m, ag.Sampling(max_tokens=4))) for m in msgs)
    )
    prompt_tokens = [len(big._instance.render(m)[0]) for m in msgs]
    assert [d.usage.prompt_tokens for d in done if d.usage] == prompt_tokens  # true counts
    assert jobs[0].shared_prefix < 50  # nothing of it was in the cache yet
    assert all(j.shared_prefix > 300 for j in jobs[1:])  # the story is copied, not decoded


async def test_cancelling_one_call_leaves_the_others_decoding(
    pair: tuple[LlamaCppBackend, LlamaCppBackend], jobs: list[_llama_batch.Job]
) -> None:
    big, _ = pair
    await big.aopen()
    essay = request("Write a very long essay about the sea.", max_tokens=400, temperature=0.8)
    long = asyncio.create_task(big.complete(essay))
    other = asyncio.create_task(big.complete(request("Count from 1 to 30.", max_tokens=60)))
    while len(jobs) < 2 or (jobs[0].completion_tokens < 5 and not jobs[0].finish_reason):
        await asyncio.sleep(0.005)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    done = await other
    assert done.usage is not None and done.usage.completion_tokens > 10
    cancelled = jobs[0]
    assert cancelled.cancelled and cancelled.finish_reason is None
    assert cancelled.completion_tokens < 400
    # The sequence is free again: four more calls fit at once.
    more = await asyncio.gather(*(big.complete(request("Hi", max_tokens=2)) for _ in range(4)))
    assert all(m.text.strip() for m in more)


async def test_a_call_cancelled_while_queued_never_computes(
    smol_path: Path, jobs: list[_llama_batch.Job]
) -> None:
    one = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=512, parallel=1))
    await one.aopen()
    first = asyncio.create_task(one.complete(request("Write a poem.", max_tokens=24)))
    queued = asyncio.create_task(one.complete(request("Write a song.", max_tokens=24)))
    while len(jobs) < 2:
        await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await first).text.strip()
    assert (await one.complete(request("Hi", max_tokens=2))).text.strip()
    assert jobs[1].cancelled and jobs[1].queued_s == 0 and jobs[1].completion_tokens == 0


async def test_a_failing_call_fails_alone(
    pair: tuple[LlamaCppBackend, LlamaCppBackend],
) -> None:
    _, small = pair  # n_ctx 1024
    await small.aopen()
    too_long = request("word " * 1500, max_tokens=4)
    bad_grammar = request("Say yes.", max_tokens=4)
    bad_grammar.constraint = ag.OutputConstraint(grammar='root ::= "yes" | (')
    fine = request("Count from 1 to 20.", max_tokens=30)
    out = await asyncio.gather(
        *(small.complete(c) for c in (too_long, fine, bad_grammar)), return_exceptions=True
    )
    assert isinstance(out[0], ag.BackendError) and "n_ctx=1024" in str(out[0])
    assert isinstance(out[2], ag.BackendError) and "grammar" in str(out[2])
    assert isinstance(out[1], ag.Completion) and out[1].text.strip()


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["A", "B", "C", "D"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


async def test_output_constraints_apply_per_call_within_a_batch(
    pair: tuple[LlamaCppBackend, LlamaCppBackend],
) -> None:
    big, _ = pair
    assert big.constraints == frozenset({"json_schema", "grammar"})
    question = "Which letter comes first in the alphabet? A, B, C or D?"
    json_call = request(question, max_tokens=40, temperature=0.7, seed=3)
    json_call.constraint = ag.OutputConstraint(json_schema=SCHEMA)
    gbnf_call = request(question, max_tokens=8, temperature=0.7, seed=3)
    gbnf_call.constraint = ag.OutputConstraint(grammar='root ::= "Answer: " [ABCD]')
    free_call = request(question, max_tokens=40, temperature=0.7, seed=3)
    done = await asyncio.gather(*(big.complete(c) for c in (json_call, gbnf_call, free_call)))
    reply = json.loads(done[0].text)
    assert reply["answer"] in "ABCD" and isinstance(reply["sure"], bool)
    assert done[1].text in {"Answer: A", "Answer: B", "Answer: C", "Answer: D"}
    assert not done[2].text.lstrip().startswith("{")


async def test_every_call_is_done_before_the_loop_closes(smol_path: Path) -> None:
    """Many more calls than sequences at once: they queue and all finish."""
    b = LlamaCppBackend(smol_path, options=LlamaOptions(n_ctx=512, parallel=2))
    done = await asyncio.gather(
        *(b.complete(request(f"Say the number {i}.", max_tokens=6)) for i in range(7))
    )
    assert all(d.text.strip() for d in done)
