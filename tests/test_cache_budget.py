"""The call cache (content-addressed, SQLite) and hard budgets (reserve before dispatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentgraph as ag
from agentgraph._budget import prompt_token_bound


class Ask(ag.Role):
    """Sends the question and its inputs' answers as they are: prompts that do not change
    when the shipped roles' prompts do, so budget arithmetic stays exact."""

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        text = " ".join([ctx.question, *(m.content for m in inputs if m.ok)])
        done = await ctx.complete([ag.ChatMessage("user", text)])
        return ag.Message(self.node, "ask", text=done.text)


@pytest.fixture(autouse=True)
def _ask_role() -> None:
    ag.register_role("ask", Ask)


def three_proposers(backend: ag.ModelBackend, **node: object) -> ag.Graph:
    nodes = {f"p{i}": ag.NodeSpec(role="ask", model="m", **node) for i in range(3)}  # type: ignore[arg-type]
    nodes["out"] = ag.NodeSpec(role="ask", model="m", inputs=("p0", "p1", "p2"))
    spec = ag.GraphSpec(models={"m": ag.ModelSpec(backend="scripted")}, nodes=nodes, output="out")
    return ag.Graph(spec, backends={"m": backend})


def request(**sampling: object) -> ag.CompletionRequest:
    return ag.CompletionRequest((ag.ChatMessage("user", "hi"),), ag.Sampling(**sampling))  # type: ignore[arg-type]


async def test_a_repeated_run_is_served_from_the_cache_for_free(tmp_path: Path) -> None:
    backend = ag.ScriptedBackend("Answer: 4", price=ag.Price(input_per_mtok=1, output_per_mtok=1))
    graph = three_proposers(backend)
    graph.cache = ag.CallCache(tmp_path / "calls.sqlite")
    first = await graph.arun("2+2?")
    assert first.tokens > 0 and first.cost > 0 and not any(r.cached for r in first.trace)
    calls = len(backend.calls)
    again = await graph.arun("2+2?")
    assert again.answer == first.answer
    assert len(backend.calls) == calls  # nothing reached the model
    assert all(r.cached for r in again.trace) and again.tokens == 0 and again.cost == 0
    assert graph.cache.stats() == {"entries": 4, "hits": 4, "misses": 4}
    # The file is shared: a new cache object (another run, another process) sees it.
    other = ag.CallCache(tmp_path / "calls.sqlite", mode="replay")
    assert len(other) == 4


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"top_k": 5},
        {"min_p": 0.1},
        {"repeat_penalty": 1.1},
        {"max_tokens": 9},
        {"seed": 2},
        {"stop": ("x",)},
    ],
)
def test_every_sampling_parameter_is_part_of_the_key(change: dict[str, object]) -> None:
    base = request(seed=1)
    assert ag.CallCache.key("b", base) != ag.CallCache.key("b", request(**{"seed": 1, **change}))


def test_backend_messages_and_sample_index_are_part_of_the_key() -> None:
    base = request()
    keys = {
        ag.CallCache.key("b", base),
        ag.CallCache.key("other-backend", base),
        ag.CallCache.key("b", ag.CompletionRequest(base.messages, base.sampling, sample_index=1)),
        ag.CallCache.key("b", ag.CompletionRequest((ag.ChatMessage("user", "hi!"),))),
        ag.CallCache.key("b", ag.CompletionRequest((ag.ChatMessage("system", "hi"),))),
    }
    assert len(keys) == 5
    assert ag.CallCache.key("b", base) == ag.CallCache.key("b", request())


async def test_nodes_can_opt_out_and_read_only_stores_nothing(tmp_path: Path) -> None:
    backend = ag.ScriptedBackend("Answer: 1")
    graph = three_proposers(backend, cache=False)
    graph.cache = ag.CallCache(tmp_path / "c.sqlite")
    await graph.arun("q")
    await graph.arun("q")
    assert len(backend.calls) == 3 + 3 + 1  # proposers twice, synthesizer once
    ro = ag.CallCache(tmp_path / "ro.sqlite", mode="read_only")
    graph.cache = ro
    await graph.arun("q")
    assert len(ro) == 0


async def test_replay_mode_fails_on_a_miss_without_calling_models(tmp_path: Path) -> None:
    backend = ag.ScriptedBackend("Answer: 1")
    graph = three_proposers(backend)
    graph.cache = ag.CallCache(tmp_path / "c.sqlite")
    await graph.arun("recorded")
    graph.cache = ag.CallCache(tmp_path / "c.sqlite", mode="replay")
    calls = len(backend.calls)
    assert (await graph.arun("recorded")).ok
    missed = await graph.arun("new question")
    assert len(backend.calls) == calls
    assert set(missed.failed) == {"p0", "p1", "p2", "out"}
    err = missed.failed["p0"]
    assert isinstance(err, ag.ReplayMiss) and err.node == "p0"
    assert isinstance(missed.failed["out"], ag.UpstreamFailed)


async def test_token_budget_refuses_the_call_that_would_overflow() -> None:
    backend = ag.ScriptedBackend("Answer: 1 2 3 4 5", latency_s=0.01)
    graph = three_proposers(backend, sampling=ag.Sampling(max_tokens=8))
    free = await graph.arun("q")
    held = prompt_token_bound(free.trace[0].request) + 8  # what one proposer reserves
    # The three proposers start together: room for two reservations, not three.
    limit = 2 * held + held // 2
    result = await graph.arun("q", budget=ag.Budget(tokens=limit))
    assert result.tokens <= limit
    assert [n for n, r in result.nodes.items() if r.status == "ok"] == ["p0", "p1", "out"]
    err = result.failed["p2"]
    assert isinstance(err, ag.BudgetExceeded) and err.kind == "tokens" and err.node == "p2"
    assert (err.spent, err.limit, err.needed) == (2 * held, limit, held)
    assert f"node 'p2': tokens budget exceeded: {2 * held} spent + {held} needed" in str(err)
    (refused,) = [r for r in result.trace if r.node == "p2"]
    # Refused once it held a slot, before anything was sent: nothing charged.
    assert refused.attempts == 1 and refused.charged_tokens == 0
    assert "BudgetExceeded" in str(refused.error)
    last_prompt = result.trace[-1].request.messages[-1].content
    assert last_prompt.count("1 2 3 4 5") == 2  # the last node saw the two answers


async def test_concurrent_calls_reserve_before_dispatch() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=0.02)
    graph = three_proposers(backend, sampling=ag.Sampling(max_tokens=50))
    result = await graph.arun("q", budget=ag.Budget(tokens=250))
    # All three start at once, each holding ~108 tokens; the third does not fit.
    refused = [n for n, e in result.failed.items() if isinstance(e, ag.BudgetExceeded)]
    assert refused == ["p2"]
    assert [r.node for r in result.trace if r.error is None] == ["p0", "p1", "out"]
    assert len(backend.calls) == 3
    assert result.ok and result.tokens <= 250


async def test_a_call_without_max_tokens_is_capped_to_the_budget_left() -> None:
    backend = ag.ScriptedBackend(" ".join(["word"] * 1000))
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role="proposer", model="m")},
        output="p",
    )
    graph = ag.Graph(spec, backends={"m": backend})
    result = await graph.arun("q", budget=ag.Budget(tokens=600))
    (call,) = backend.calls
    assert call.sampling.max_tokens is not None and call.sampling.max_tokens < 600
    assert result.ok and result.tokens <= 600


async def test_cost_budget_uses_the_price_table() -> None:
    price = ag.Price(input_per_mtok=1000.0, output_per_mtok=2000.0)
    backend = ag.ScriptedBackend("Answer: 1", price=price, latency_s=0.01)
    graph = three_proposers(backend, sampling=ag.Sampling(max_tokens=10))
    free = await graph.arun("q")
    held = price.cost(prompt_token_bound(free.trace[0].request), 10)
    result = await graph.arun("q", budget=ag.Budget(cost_usd=2.5 * held))
    assert 0 < result.cost <= 2.5 * held
    err = result.failed["p2"]
    assert isinstance(err, ag.BudgetExceeded) and err.kind == "cost"
    assert err.needed == pytest.approx(held)


async def test_latency_budget_cuts_the_run_and_keeps_finished_nodes() -> None:
    slow = ag.ScriptedBackend("Answer: 1", latency_s=lambda r: 5.0 if "slow" in str(r) else 0.0)
    spec = ag.loads_spec(
        "models: {m: {backend: scripted}}\n"
        "nodes:\n  fast: {role: proposer, model: m}\n"
        "  slow: {role: proposer, model: m, prompt: 'slow {question}'}\n"
        "  out: {role: synthesizer, model: m, inputs: [fast, slow]}\n"
        "output: out\nbudget: {latency_s: 0.1}\n"
    )
    result = await ag.Graph(spec, backends={"m": slow}).arun("q")
    assert result.wall_s < 1.0
    assert result.nodes["fast"].status == "ok"
    err = result.failed["slow"]
    assert isinstance(err, ag.BudgetExceeded) and err.kind == "latency" and err.limit == 0.1


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(50, 3000),
    words=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    max_tokens=st.none() | st.integers(1, 80),
)
def test_a_run_never_exceeds_its_token_budget(
    limit: int, words: list[int], max_tokens: int | None
) -> None:
    backend = ag.ScriptedBackend([" ".join(["w"] * n) for n in words])
    sampling = ag.Sampling(max_tokens=max_tokens)
    graph = three_proposers(backend, sampling=sampling)
    result = asyncio.run(graph.arun("q", budget=ag.Budget(tokens=limit)))
    assert result.tokens <= limit
    for err in result.failed.values():
        assert isinstance(err, (ag.BudgetExceeded, ag.UpstreamFailed))
