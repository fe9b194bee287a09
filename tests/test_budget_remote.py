"""Hard budgets against remote servers that do not keep to what they were asked.

Each test runs a real graph (``proposer`` nodes, ``backend: openai``) on the fault server
and reproduces a measured failure: a server that answers past ``max_tokens`` (non-streamed,
so nothing can stop it), one that over-reports usage, one that reports none (answered or
streamed), and attempts that fail after the server did the work.
"""

from __future__ import annotations

import asyncio
import json

import pytest

import agentgraph as ag
from agentgraph._budget import prompt_token_bound

from .faultserver import LONG, LONG_WORDS, OVERREPORTED, FaultServer

QUESTION = "What is 6 * 7?"
MAX_TOKENS = 16
PRICE = 100.0  # $ per million tokens, in and out: $0.15 buys 1,500 tokens
TOKENS, COST = 1500, 0.15


def graph_text(
    url: str,
    model: str,
    *,
    proposers: int = 8,
    slots: int = 8,
    stream: bool = False,
    budget: bool = True,
    attempts: int = 1,
) -> str:
    """``proposers`` parallel proposers and a synthesizer over them, on one served model."""
    names = [f"p{i}" for i in range(proposers)]
    nodes = "\n".join(f"  {n}: {{role: proposer, model: m}}" for n in names)
    options = json.dumps({"base_url": url, "stream": stream})
    price = f"{{input_per_mtok: {PRICE}, output_per_mtok: {PRICE}}}"
    return f"""
models:
  m: {{backend: openai, model: {model}, slots: {slots}, price: {price}, options: {options}}}
defaults:
  sampling: {{max_tokens: {MAX_TOKENS}, temperature: 0.0}}
  retry: {{max_attempts: {attempts}, backoff_s: 0.01, jitter: 0}}
  timeout: {{call_s: 10}}
nodes:
{nodes}
  final: {{role: synthesizer, model: m, inputs: [{", ".join(names)}]}}
output: final
{f"budget: {{tokens: {TOKENS}, cost_usd: {COST}}}" if budget else ""}
"""


async def run(text: str) -> ag.RunResult:
    graph = ag.loads(text)
    async with asyncio.timeout(30), graph:
        return await graph.arun(QUESTION)


def reservation(rec: ag.TraceRecord) -> int:
    """What the ledger holds for one attempt of this call."""
    max_tokens = rec.request.sampling.max_tokens
    assert max_tokens is not None
    return prompt_token_bound(rec.request) + max_tokens


def refused(rec: ag.TraceRecord) -> bool:
    return rec.error is not None and rec.error.startswith("BudgetExceeded")


def assert_stopped_at_the_overrun(result: ag.RunResult, server: FaultServer) -> None:
    """The spend passed the limit only by what calls already in flight used: every call
    charged after the one whose usage passed the limit had been dispatched before it
    returned, and every call that reached the server was charged."""
    overrun = result.overrun
    assert overrun is not None and overrun.kind == "tokens" and overrun.limit == TOKENS
    spent = 0
    crossing = None
    for i, rec in enumerate(result.trace):  # completion order, as the ledger settled them
        spent += rec.charged_tokens
        if spent > TOKENS:
            crossing = i
            break
    assert crossing is not None and overrun.spent == spent
    rec = result.trace[crossing]
    passed_at = rec.started_s + rec.elapsed_s
    later = [r for r in result.trace.records[crossing + 1 :] if r.charged_tokens]
    assert all(r.started_s < passed_at for r in later), (passed_at, later)
    served = [r for r in result.trace if not refused(r)]
    assert sum(server.hits.values()) == len(served)  # nothing was sent after the overrun
    assert all(r.charged_tokens == 0 for r in result.trace if refused(r))
    err = result.failed["final"]
    assert isinstance(err, ag.BudgetExceeded) and not result.ok
    assert result.tokens == sum(r.charged_tokens for r in served)
    assert result.cost == pytest.approx(result.tokens * PRICE / 1e6)


@pytest.mark.parametrize("slots", [8, 2])
async def test_a_server_answering_past_max_tokens_is_caught(
    faults: FaultServer, slots: int
) -> None:
    # "long" answers LONG_WORDS words to max_tokens 16, and says so in its usage. Measured
    # before: ok, 3,296 tokens and $0.33 charged against 1,500 tokens / $0.15.
    result = await run(graph_text(faults.url, "long", slots=slots))
    assert_stopped_at_the_overrun(result, faults)
    for rec in result.trace:
        if not refused(rec):
            assert rec.usage_known and rec.completion_tokens == LONG_WORDS
            assert rec.charged_tokens == rec.prompt_tokens + LONG_WORDS
    if slots == 2:  # calls queued behind the slots were refused, not sent
        assert sum(faults.hits.values()) < 8
        assert [r.node for r in result.trace if refused(r)][-1] == "final"


async def test_a_server_over_reporting_usage_is_charged_what_it_reports(
    faults: FaultServer,
) -> None:
    result = await run(graph_text(faults.url, "ok-overreport", slots=2))
    assert_stopped_at_the_overrun(result, faults)
    served = [r for r in result.trace if not refused(r)]
    assert served and all(r.completion_tokens == OVERREPORTED for r in served)
    assert all(r.charged_tokens == r.prompt_tokens + OVERREPORTED for r in served)
    assert sum(faults.hits.values()) < 8  # the rest were refused after the overrun


async def test_a_server_reporting_no_usage_is_charged_the_reservation(
    faults: FaultServer,
) -> None:
    # Measured before: 0 tokens and $0 charged, so no budget could ever stop it.
    result = await run(graph_text(faults.url, "ok-nousage", proposers=3, budget=False))
    assert result.ok, result.failed
    assert len(result.trace) == 4 and faults.hits["ok-nousage"] == 4
    for rec in result.trace:
        assert not rec.usage_known and rec.charged_tokens == reservation(rec) > MAX_TOKENS
        assert rec.tokens == rec.charged_tokens  # the trace shows the reservation it stood for
        assert rec.charged_cost == pytest.approx(rec.charged_tokens * PRICE / 1e6)
    assert result.tokens == sum(reservation(r) for r in result.trace)


async def test_unknown_usage_counts_against_the_budget(faults: FaultServer) -> None:
    # 8 reservations fit in the budget; charged in full, the synthesizer no longer does.
    result = await run(graph_text(faults.url, "ok-nousage"))
    proposers = [r for r in result.trace if r.node != "final"]
    assert len(proposers) == 8 and all(r.charged_tokens == reservation(r) for r in proposers)
    assert result.overrun is None  # a reservation never passes the limit
    err = result.failed["final"]
    assert isinstance(err, ag.BudgetExceeded) and err.spent == result.tokens <= TOKENS
    assert faults.hits["ok-nousage"] == 8


@pytest.mark.parametrize("model", ["long", "long-nousage"])
async def test_a_stream_without_usage_is_cut_and_charged_the_reservation(
    faults: FaultServer, model: str
) -> None:
    # Measured before: 0 prompt tokens and one token per chunk, and every chunk paid for.
    # "long" sends its usage chunk at the end, "long-nousage" none: neither is reached.
    result = await run(graph_text(faults.url, model, proposers=3, stream=True, budget=False))
    assert result.ok, result.failed
    proposers = [r for r in result.trace if r.node != "final"]
    assert len(proposers) == 3
    for rec in proposers:
        assert rec.output == "".join(LONG[:MAX_TOKENS]) and rec.finish_reason == "length"
        assert not rec.usage_known and rec.charged_tokens == reservation(rec)
    assert faults.wait_for_disconnects(4) == 4  # every stream was closed early
    assert not faults.sent_in_full and faults.content_chunks[model] < 4 * LONG_WORDS


@pytest.mark.parametrize("stream", [False, True])
async def test_failed_attempts_are_charged_their_reservations(
    faults: FaultServer, stream: bool
) -> None:
    # Two 200s cut mid-body, then an answer: the server did the work three times.
    # Measured before: 462 tokens served, 154 charged.
    text = graph_text(faults.url, "truncate-2", proposers=1, stream=stream, attempts=3)
    result = await run(text)
    assert result.ok, result.failed
    rec = next(r for r in result.trace if r.node == "p0")
    assert rec.attempts == 3 and rec.error is None and faults.hits["truncate-2"] == 4
    assert rec.usage_known and rec.completion_tokens == 3  # the server's usage of the last
    assert rec.charged_tokens == 2 * reservation(rec) + rec.prompt_tokens + 3
    assert rec.charged_cost == pytest.approx(rec.charged_tokens * PRICE / 1e6)
    assert result.tokens == sum(r.charged_tokens for r in result.trace)
