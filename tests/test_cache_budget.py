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
    ag.CallCache(tmp_path / "ro.sqlite").close()  # read_only needs an existing cache
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


class Adversary(ag.BackendBase):
    """A fake model that uses every token it is allowed (``max_tokens``, or ``length`` when
    uncapped), fails transiently now and then, and over- or under-reports its usage: the
    budget property below must hold against all of it, and can fail."""

    def __init__(self, script: list[tuple[str, int]]) -> None:
        super().__init__("adversary", slots=1 << 20)
        self.script = script
        self.calls = 0
        self.served = 0  # tokens really produced and read

    async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
        kind, length = self.script[self.calls % len(self.script)]
        self.calls += 1
        await asyncio.sleep(0)
        out = request.sampling.max_tokens or length
        prompt = len(request.messages[-1].content.split())
        self.served += prompt + out
        if kind == "fail":
            raise ag.TransientBackendError("503 after serving")
        usage = {
            "honest": ag.Usage(prompt, out),
            "under": ag.Usage(0, 1),
            "over": ag.Usage(prompt * 4, out * 4),
            "unknown": None,
        }[kind]
        return ag.Completion(" ".join(["w"] * out), usage, finish_reason="length")


@settings(max_examples=60, deadline=None)
@given(
    limit=st.none() | st.integers(50, 3000),
    script=st.lists(
        st.tuples(
            st.sampled_from(["honest", "under", "over", "unknown", "fail"]), st.integers(1, 400)
        ),
        min_size=1,
        max_size=6,
    ),
    max_tokens=st.none() | st.integers(1, 80),
)
def test_a_run_is_charged_at_least_what_it_used_and_stops_at_its_budget(
    limit: int | None, script: list[tuple[str, int]], max_tokens: int | None
) -> None:
    backend = Adversary(script)
    graph = three_proposers(backend, sampling=ag.Sampling(max_tokens=max_tokens))
    result = asyncio.run(graph.arun("q", budget=ag.Budget(tokens=limit)))
    kinds = {kind for kind, _ in script}
    # A backend that under-reports can hide its use; no other can. Only a failed attempt
    # with nothing to bound it (no max_tokens, no budget) is charged its prompt alone.
    unbounded_failure = "fail" in kinds and max_tokens is None and limit is None
    if "under" not in kinds and not unbounded_failure:
        assert result.tokens >= backend.served
    if limit is None:
        assert result.overrun is None
    elif "over" in kinds or "under" in kinds:
        # Reported usage can pass the limit; then the overrun is on the result.
        assert result.tokens <= limit or result.overrun is not None
    else:
        assert result.tokens <= limit
    for rec in result.trace:
        if rec.error is not None and rec.error != "cancelled" and "BudgetExceeded" not in rec.error:
            assert rec.charged_tokens > 0  # failed attempts are paid for
    for err in result.failed.values():
        assert isinstance(err, (ag.BudgetExceeded, ag.UpstreamFailed, ag.TransientBackendError))


def proposers_without_max_tokens(backend: ag.ModelBackend, n: int = 3) -> ag.Graph:
    nodes = {f"p{i}": ag.NodeSpec(role="ask", model="m") for i in range(n)}
    nodes["out"] = ag.NodeSpec(role="ask", model="m", inputs=tuple(nodes))
    spec = ag.GraphSpec(models={"m": ag.ModelSpec(backend="scripted")}, nodes=nodes, output="out")
    return ag.Graph(spec, backends={"m": backend})


async def test_the_cache_key_does_not_depend_on_budget_state(tmp_path: Path) -> None:
    # Under a token budget a call without max_tokens is capped; the answer, which ended on
    # its own, is filed under the request as the role built it, so a second run hits.
    backend = ag.ScriptedBackend("Answer: 4")
    graph = proposers_without_max_tokens(backend)
    graph.cache = ag.CallCache(tmp_path / "calls.sqlite")
    budget = ag.Budget(tokens=2000)
    first = await graph.arun("2+2?", budget=budget)
    again = await graph.arun("2+2?", budget=budget)
    assert first.ok and not any(r.cached for r in first.trace)
    assert all(r.cached for r in again.trace) and again.tokens == 0
    # And without a budget the same entries serve.
    free = await graph.arun("2+2?")
    assert all(r.cached for r in free.trace)


async def test_an_answer_cut_by_the_cap_is_not_served_to_an_uncapped_request(
    tmp_path: Path,
) -> None:
    backend = ag.ScriptedBackend(" ".join(["word"] * 1000))
    graph = proposers_without_max_tokens(backend, n=1)
    graph.cache = ag.CallCache(tmp_path / "calls.sqlite")
    capped = await graph.arun("q", budget=ag.Budget(tokens=1500))
    assert capped.trace[0].finish_reason == "length"
    again = await graph.arun("q", budget=ag.Budget(tokens=1500))
    assert again.trace[0].cached  # the same cap: filed under the capped request
    free = await graph.arun("q")
    assert not free.trace[0].cached  # a whole answer is not the cut one


async def test_parallel_calls_without_max_tokens_share_the_budget_fairly() -> None:
    # Each capped call used to reserve all that was left: of 3 parallel proposers under
    # 2,000 tokens, two were refused after 47 tokens had been spent.
    backend = ag.ScriptedBackend("Answer: 4 " + "pad " * 40, latency_s=0.01)
    result = await proposers_without_max_tokens(backend).arun("q", budget=ag.Budget(tokens=2000))
    assert result.ok and not result.failed
    caps = [r.request.sampling.max_tokens for r in result.trace if r.node != "out"]
    assert len(caps) == 3 and all(c is not None and c < 2000 / 3 for c in caps)


async def test_calls_queued_for_a_slot_hold_no_budget() -> None:
    # One slot: only one call runs at a time, so only one reservation is ever held; three
    # reservations at once would not fit.
    backend = ag.ScriptedBackend("Answer: 1", latency_s=0.01, slots=1)
    graph = three_proposers(backend, sampling=ag.Sampling(max_tokens=50))
    held = prompt_token_bound(backend_request("q")) + 50
    result = await graph.arun("q", budget=ag.Budget(tokens=2 * held))
    assert [n for n, e in result.failed.items()] == []
    assert result.ok


def backend_request(text: str) -> ag.CompletionRequest:
    return ag.CompletionRequest((ag.ChatMessage("user", text),), ag.Sampling())


async def test_an_infinite_money_budget_is_no_limit() -> None:
    price = ag.Price(input_per_mtok=1.0, output_per_mtok=2.0)
    backend = ag.ScriptedBackend("Answer: 1", price=price)
    graph = proposers_without_max_tokens(backend)
    result = await graph.arun("q", budget=ag.Budget(cost_usd=float("inf")))
    assert result.ok and not result.failed and result.cost > 0


class BrokenStore(ag.CallCache):
    def store(self, key: str, backend_id: str, done: ag.Completion) -> None:
        raise OSError("disk full")


async def test_a_failing_cache_store_keeps_the_paid_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = three_proposers(ag.ScriptedBackend("Answer: 4"))
    graph.cache = BrokenStore(tmp_path / "calls.sqlite")
    with caplog.at_level("WARNING", logger="agentgraph"):
        result = await graph.arun("q")
    assert result.ok and not result.failed
    assert "could not store" in caplog.text and "disk full" in caplog.text


class ThreadSpy(ag.CallCache):
    threads: set[int]

    def lookup(self, key: str) -> ag.Completion | None:
        import threading

        self.threads.add(threading.get_ident())
        return super().lookup(key)


async def test_sqlite_work_runs_off_the_event_loop(tmp_path: Path) -> None:
    import threading

    cache = ThreadSpy(tmp_path / "calls.sqlite")
    cache.threads = set()
    graph = three_proposers(ag.ScriptedBackend("Answer: 4"))
    graph.cache = cache
    await graph.arun("q")
    assert cache.threads and threading.get_ident() not in cache.threads


async def test_identical_calls_in_flight_run_once(tmp_path: Path) -> None:
    backend = ag.ScriptedBackend("Answer: 4", latency_s=0.2)
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role="ask", model="m")},
        output="p",
    )
    graphs = [ag.Graph(spec, backends={"m": backend}, cache=cache) for _ in range(4)]
    results = await asyncio.gather(*(g.arun("q") for g in graphs))
    assert len(backend.calls) == 1
    assert sorted(r.trace[0].cached for r in results) == [False, True, True, True]
    assert {r.answer for r in results} == {"Answer: 4"}


async def test_cache_hits_keep_their_true_tokens_cost_and_latency(tmp_path: Path) -> None:
    price = ag.Price(input_per_mtok=1.0, output_per_mtok=1.0)
    backend = ag.ScriptedBackend("Answer: 4", price=price, latency_s=0.05)
    graph = three_proposers(backend)
    graph.cache = ag.CallCache(tmp_path / "calls.sqlite")
    first = await graph.arun("q")
    again = await graph.arun("q")
    for old, hit in zip(first.trace, again.trace, strict=True):
        assert hit.cached and hit.charged_tokens == 0 and hit.charged_cost == 0
        assert (hit.prompt_tokens, hit.completion_tokens) == (
            old.prompt_tokens,
            old.completion_tokens,
        )
        assert hit.cost == pytest.approx(old.cost)
        assert hit.latency_s == pytest.approx(old.latency_s, abs=1e-3)
        assert hit.elapsed_s < hit.latency_s
    assert again.tokens == 0 and again.cost == 0
    assert again.uncached_tokens == first.tokens and again.uncached_cost == pytest.approx(
        first.cost
    )
    assert again.uncached_latency_s >= 0.1  # two calls of 0.05 s on the critical path
    assert again.latency_s < again.uncached_latency_s


def test_seeds_of_distinct_samples_are_distinct_draws() -> None:
    assert ag.sample_seed(7, 0) == 7
    assert ag.sample_seed(1, 1) != ag.sample_seed(2, 0)
    seeds = {ag.sample_seed(s, i) for s in range(20) for i in range(20)}
    assert len(seeds) == 400 and all(0 <= x < 2**31 for x in seeds)
