"""The dataflow executor: scheduling, slots, retries, timeouts, cancellation, isolation."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import pytest

import agentgraph as ag

# The loop's clock is fast-forwarded (looptime): sleeps take no real time and every timing
# below is exact, so the bounds hold on a busy machine too.
pytestmark = pytest.mark.looptime


class SleepParams(pydantic.BaseModel):
    delay: float = 0.0
    fail: bool = False


class Sleep(ag.Role):
    """A model-free role that takes ``delay`` seconds (or fails)."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"
    Params = SleepParams

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        assert isinstance(self.params, SleepParams)
        await asyncio.sleep(self.params.delay)
        if self.params.fail:
            raise RuntimeError(f"{self.node} broke")
        return ag.Message(self.node, "sleep", text=self.node)


@pytest.fixture(autouse=True)
def _sleep_role() -> None:
    ag.register_role("sleep", Sleep)


def sleep_node(delay: float, *inputs: str, fail: bool = False) -> ag.NodeSpec:
    return ag.NodeSpec(role="sleep", inputs=inputs, params={"delay": delay, "fail": fail})


def graph_of(nodes: dict[str, ag.NodeSpec], output: str, **backends: ag.ModelBackend) -> ag.Graph:
    models = {name: ag.ModelSpec(backend="scripted") for name in backends}
    return ag.Graph(ag.GraphSpec(models=models, nodes=nodes, output=output), backends=backends)


def by_prompt(mapping: dict[str, str]) -> Any:
    """A responder answering by which key occurs in the last message."""

    def respond(req: ag.CompletionRequest) -> str:
        last = req.messages[-1].content
        return next(v for k, v in mapping.items() if k in last)

    return respond


async def test_a_node_starts_when_its_own_predecessors_finish() -> None:
    # Chain A is slow then fast, chain B fast then slow: a superstep executor would start
    # b2 only when a1 finishes; dataflow starts it right after b1.
    graph = graph_of(
        {
            "a1": sleep_node(0.20),
            "a2": sleep_node(0.02, "a1"),
            "b1": sleep_node(0.02),
            "b2": sleep_node(0.20, "b1"),
            "out": sleep_node(0.0, "a2", "b2"),
        },
        "out",
    )
    result = await graph.arun("q")
    assert result.ok
    nodes = result.nodes
    assert nodes["b2"].started_s == pytest.approx(0.02)
    assert nodes["a2"].started_s >= nodes["a1"].finished_s
    assert nodes["out"].started_s >= max(nodes["a2"].finished_s, nodes["b2"].finished_s)
    assert result.latency_s == pytest.approx(0.22) == result.wall_s


async def test_slots_limit_concurrent_calls_per_backend() -> None:
    def run_with(slots: int) -> ag.Graph:
        backend = ag.ScriptedBackend("Answer: 1", latency_s=0.05, slots=slots)
        nodes = {f"p{i}": ag.NodeSpec(role="proposer", model="m") for i in range(4)}
        nodes["out"] = ag.NodeSpec(role="synthesizer", model="m", inputs=tuple(nodes))
        return graph_of(nodes, "out", m=backend)

    serial = await run_with(1).arun("q")
    calls = sorted((r.started_s, r.started_s + r.latency_s) for r in serial.trace)
    assert len(calls) == 5
    assert all(end <= nxt + 1e-3 for (_, end), (nxt, _) in itertools.pairwise(calls))
    assert sum(r.queued_s for r in serial.trace) > 0.1
    parallel = await run_with(4).arun("q")
    starts = sorted(r.started_s for r in parallel.trace if r.node != "out")
    assert starts[-1] == starts[0]  # all four proposers ran at once
    assert parallel.wall_s < serial.wall_s * 0.7


async def test_waiting_calls_are_served_by_critical_path_priority() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=0.02, slots=1)
    nodes = {
        "blocker": ag.NodeSpec(role="proposer", model="m"),  # takes the free slot first
        "short": ag.NodeSpec(role="proposer", model="m"),
        "long": ag.NodeSpec(role="proposer", model="m"),
        "long2": ag.NodeSpec(role="proposer", model="m", inputs=("long",)),
        "long3": ag.NodeSpec(role="proposer", model="m", inputs=("long2",)),
        "out": ag.NodeSpec(role="synthesizer", model="m", inputs=("blocker", "short", "long3")),
    }
    result = await graph_of(nodes, "out", m=backend).arun("q")
    order = [r.node for r in sorted(result.trace, key=lambda r: r.started_s)]
    assert order.index("long") < order.index("short")


async def test_transient_errors_are_retried_and_counted() -> None:
    backend = ag.ScriptedBackend("Answer: 7", failures=[ag.TransientBackendError("overloaded")] * 2)
    nodes = {"p": ag.NodeSpec(role="proposer", model="m", retry=ag.RetryPolicy(backoff_s=0))}
    result = await graph_of(nodes, "p", m=backend).arun("q")
    assert result.answer == "7"
    (rec,) = result.trace
    assert rec.attempts == 3 and rec.error is None
    assert len(backend.calls) == 3


async def test_other_errors_are_not_retried_and_the_node_fails() -> None:
    backend = ag.ScriptedBackend("x", failures=[ValueError("bad request")])
    nodes = {"p": ag.NodeSpec(role="proposer", model="m", retry=ag.RetryPolicy(backoff_s=0))}
    result = await graph_of(nodes, "p", m=backend).arun("q")
    assert not result.ok and result.answer is None
    assert isinstance(result.failed["p"], ValueError)
    (rec,) = result.trace
    assert rec.attempts == 1 and rec.error == "ValueError: bad request"
    with pytest.raises(ag.RunFailed, match="bad request") as info:
        result.raise_for_status()
    assert info.value.result is result


async def test_retries_give_up_after_max_attempts_with_backoff() -> None:
    backend = ag.ScriptedBackend("x", failures=[ag.TransientBackendError("503")] * 5)
    retry = ag.RetryPolicy(max_attempts=3, backoff_s=0.05, multiplier=2, jitter=0)
    nodes = {"p": ag.NodeSpec(role="proposer", model="m", retry=retry)}
    result = await graph_of(nodes, "p", m=backend).arun("q")
    err = result.failed["p"]
    assert isinstance(err, ag.TransientBackendError) and err.node == "p"
    (rec,) = result.trace
    assert rec.attempts == 3
    assert rec.latency_s == pytest.approx(0.05 + 0.10)  # backoff 0.05 then 0.10


def test_backoff_grows_caps_and_jitters() -> None:
    policy = ag.RetryPolicy(backoff_s=1, multiplier=2, max_backoff_s=3, jitter=0.5)
    assert [policy.delay(a, 0.0) for a in (1, 2, 3, 4)] == [1, 2, 3, 3]
    assert policy.delay(2, 0.999) == pytest.approx(1.001)


async def test_call_timeout_is_transient_and_retried() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=5.0)
    nodes = {
        "p": ag.NodeSpec(
            role="proposer",
            model="m",
            timeout=ag.TimeoutPolicy(call_s=0.05),
            retry=ag.RetryPolicy(max_attempts=2, backoff_s=0),
        )
    }
    result = await graph_of(nodes, "p", m=backend).arun("q")
    err = result.failed["p"]
    assert isinstance(err, ag.BackendTimeout) and isinstance(err, TimeoutError)
    assert result.trace[0].attempts == 2
    assert result.wall_s < 1.0


async def test_node_timeout_bounds_all_attempts() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=5.0)
    nodes = {
        "p": ag.NodeSpec(
            role="proposer", model="m", timeout=ag.TimeoutPolicy(call_s=None, node_s=0.05)
        )
    }
    result = await graph_of(nodes, "p", m=backend).arun("q")
    err = result.failed["p"]
    assert isinstance(err, ag.NodeTimeout) and err.node == "p"
    assert result.wall_s < 1.0


async def test_run_timeout_keeps_finished_nodes() -> None:
    graph = graph_of(
        {"fast": sleep_node(0.01), "slow": sleep_node(5.0), "out": sleep_node(0, "fast", "slow")},
        "out",
    )
    result = await graph.arun("q", timeout_s=0.1)
    assert result.wall_s < 1.0
    assert result.nodes["fast"].status == "ok"
    assert set(result.failed) == {"slow", "out"}
    assert isinstance(result.failed["slow"], ag.NodeTimeout)


async def test_cancelling_a_run_cancels_its_nodes() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=5.0)
    nodes = {
        "p": ag.NodeSpec(role="proposer", model="m"),
        "s": sleep_node(5.0),
        "out": sleep_node(0, "p", "s"),
    }
    task = asyncio.create_task(graph_of(nodes, "out", m=backend).arun("q"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_failed_node_is_isolated_and_seen_by_successors() -> None:
    graph = graph_of(
        {
            "good": ag.NodeSpec(role="proposer", model="ok"),
            "bad": ag.NodeSpec(role="proposer", model="broken"),
            "final": ag.NodeSpec(role="synthesizer", model="ok", inputs=("good", "bad")),
        },
        "final",
        ok=ag.ScriptedBackend(by_prompt({"Candidate": "Answer: 42", "": "Answer: 41"})),
        broken=ag.ScriptedBackend("x", failures=[ValueError("boom")]),
    )
    result = await graph.arun("q")
    assert result.ok and result.answer == "42"
    assert list(result.failed) == ["bad"]
    assert result.nodes["bad"].status == "failed"
    final_prompt = next(r for r in result.trace if r.node == "final").request.messages[-1].content
    assert "41" in final_prompt and "boom" not in final_prompt


async def test_node_whose_inputs_all_failed_fails_without_calling_its_model() -> None:
    backend = ag.ScriptedBackend("Answer: 1")
    graph = graph_of(
        {
            "x": sleep_node(0, fail=True),
            "y": sleep_node(0, fail=True),
            "final": ag.NodeSpec(role="synthesizer", model="m", inputs=("x", "y")),
        },
        "final",
        m=backend,
    )
    result = await graph.arun("q")
    err = result.failed["final"]
    assert isinstance(err, ag.UpstreamFailed) and err.failed == ("x", "y")
    assert backend.calls == []
    assert isinstance(result.failed["x"], RuntimeError)


async def test_empty_completion_is_an_error() -> None:
    graph = graph_of(
        {"p": ag.NodeSpec(role="proposer", model="m")}, "p", m=ag.ScriptedBackend("   ")
    )
    result = await graph.arun("q")
    assert isinstance(result.failed["p"], ag.EmptyCompletion)


async def test_trace_records_usage_cost_and_replays(tmp_path: Path) -> None:
    price = ag.Price(input_per_mtok=2.0, output_per_mtok=10.0)
    backend = ag.ScriptedBackend(
        by_prompt({"Candidate": "Answer: 9", "": "two words"}), price=price
    )
    nodes = {
        "a": ag.NodeSpec(role="proposer", model="m", sampling=ag.Sampling(seed=1)),
        "b": ag.NodeSpec(role="synthesizer", model="m", inputs=("a",)),
    }
    result = await graph_of(nodes, "b", m=backend).arun("what?")
    assert [r.node for r in result.trace] == ["a", "b"]
    a = result.trace[0]
    assert a.completion_tokens == 2 and a.prompt_tokens > 0 and not a.cached
    assert a.cost == pytest.approx((a.prompt_tokens * 2 + 2 * 10) / 1e6)
    assert result.cost == pytest.approx(sum(r.cost for r in result.trace))
    assert result.tokens == sum(r.tokens for r in result.trace)
    path = tmp_path / "trace.jsonl"
    result.trace.to_jsonl(path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["sampling"] == {"seed": 1} and lines[0]["output"] == "two words"
    assert lines[0]["request_key"] == a.request.key()

    replay = ag.ReplayBackend.from_trace(path, price=price)
    again = await graph_of(nodes, "b", m=replay).arun("what?")
    assert again.answer == result.answer == "9"
    assert all(r.cached for r in again.trace) and again.cost == 0 and again.tokens == 0
    missed = await graph_of(nodes, "b", m=replay).arun("another question")
    assert isinstance(missed.failed["a"], ag.ReplayMiss)
    assert "no recorded completion" in str(missed.failed["a"])


def test_sync_run_and_yaml_replay_backend(tmp_path: Path) -> None:
    text = (
        "models:\n  m: {backend: scripted, options: {responses: ['Answer: 5'], latency_s: 0.01}}\n"
        "nodes:\n  p: {role: proposer, model: m}\noutput: p\n"
    )
    result = ag.loads(text).run("q")
    assert result.answer == "5" and result.latency_s >= 0.01
    result.trace.to_jsonl(tmp_path / "t.jsonl")
    replayed = ag.loads(
        text.replace(
            "{backend: scripted, options: {responses: ['Answer: 5'], latency_s: 0.01}}",
            "{backend: replay, path: t.jsonl}",
        ),
        base_dir=tmp_path,
    ).run("q")
    assert replayed.answer == "5" and replayed.trace[0].cached


def test_arun_does_not_depend_on_the_sync_shell() -> None:
    graph = graph_of({"p": sleep_node(0)}, "p")

    async def twice() -> list[ag.RunResult]:
        return list(await asyncio.gather(graph.arun("a"), graph.arun("b")))

    results = asyncio.run(twice())
    assert [r.question for r in results] == ["a", "b"] and all(r.ok for r in results)


class RouteParams(pydantic.BaseModel):
    to: list[str]


class Route(ag.Role):
    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"
    Params = RouteParams

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        assert isinstance(self.params, RouteParams)
        return ag.Message(self.node, "route", text="routed", routes=frozenset(self.params.to))


class Race(ag.Role):
    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"
    join: ClassVar[Literal["all", "any"]] = "any"

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        winner = next(m for m in inputs if m.ok)
        return ag.Message(self.node, "race", text=winner.text)


async def test_router_skips_the_successors_it_does_not_pick() -> None:
    ag.register_role("route", Route)
    graph = graph_of(
        {
            "gate": ag.NodeSpec(role="route", params={"to": ["cheap"]}),
            "cheap": sleep_node(0, "gate"),
            "costly": sleep_node(0, "gate"),
            "after_costly": sleep_node(0, "costly"),  # skipping propagates
            "out": sleep_node(0, "cheap", "after_costly"),
        },
        "out",
    )
    result = await graph.arun("q")
    assert result.ok and result.failed == {}
    assert result.skipped == ["costly", "after_costly"]
    assert {n: r.status for n, r in result.nodes.items()}["cheap"] == "ok"


async def test_any_join_starts_at_the_first_answer_and_cancels_the_rest() -> None:
    ag.register_role("race", Race)
    graph = graph_of(
        {
            "fast": sleep_node(0.02),
            "slow": sleep_node(5.0),
            "broken": sleep_node(0, fail=True),
            "first": ag.NodeSpec(role="race", inputs=("broken", "slow", "fast")),
        },
        "first",
    )
    result = await graph.arun("q")
    assert result.answer == "fast"
    assert result.wall_s < 1.0
    assert result.nodes["slow"].status == "skipped"
    assert result.nodes["slow"].message.lost_race
    assert isinstance(result.failed["broken"], RuntimeError)


async def test_any_join_keeps_inputs_that_others_still_need() -> None:
    ag.register_role("race", Race)
    graph = graph_of(
        {
            "fast": sleep_node(0.01),
            "slow": sleep_node(0.1),
            "first": ag.NodeSpec(role="race", inputs=("slow", "fast")),
            "out": sleep_node(0, "first", "slow"),
        },
        "out",
    )
    result = await graph.arun("q")
    assert result.nodes["slow"].status == "ok"
    assert result.nodes["first"].message.text == "fast"
    assert result.nodes["first"].finished_s < result.nodes["slow"].finished_s


async def test_cancelled_calls_give_their_slot_back() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=0.2, slots=1)
    graph = graph_of({"p": ag.NodeSpec(role="proposer", model="m")}, "p", m=backend)
    cut = await graph.arun("q", timeout_s=0.05)
    assert isinstance(cut.failed["p"], ag.NodeTimeout)
    async with asyncio.timeout(2):  # a leaked slot would make this wait forever
        assert (await graph.arun("q")).ok


async def test_call_timeouts_of_many_calls_share_one_timer() -> None:
    backend = ag.ScriptedBackend("Answer: 1", latency_s=lambda r: 5.0 if "slow" in str(r) else 0.01)
    nodes = {
        f"n{i}": ag.NodeSpec(
            role="proposer",
            model="m",
            prompt=("slow {question}" if i % 2 else "{question}"),
            timeout=ag.TimeoutPolicy(call_s=0.1 + i / 100),
            retry=ag.RetryPolicy(max_attempts=1),
        )
        for i in range(6)
    }
    nodes["out"] = ag.NodeSpec(role="synthesizer", model="m", inputs=tuple(nodes))
    result = await graph_of(nodes, "out", m=backend).arun("q")
    assert sorted(result.failed) == ["n1", "n3", "n5"]
    assert all(isinstance(e, ag.BackendTimeout) for e in result.failed.values())
    assert result.ok and result.wall_s < 1.0
    for name in ("n1", "n3", "n5"):
        (rec,) = result.nodes[name].calls
        assert 0.1 <= rec.latency_s < 0.3


async def test_retry_after_hints_are_honoured_up_to_the_backoff_cap() -> None:
    hint = ag.TransientBackendError("429", retry_after_s=0.2)
    capped = ag.TransientBackendError("429", retry_after_s=60.0)
    backend = ag.ScriptedBackend("Answer: 1", failures=[hint, capped])
    retry = ag.RetryPolicy(backoff_s=0.0, max_backoff_s=0.3, jitter=0)
    nodes = {"p": ag.NodeSpec(role="proposer", model="m", retry=retry)}
    result = await graph_of(nodes, "p", m=backend).arun("q")
    assert result.ok and result.trace[0].attempts == 3
    assert 0.5 <= result.trace[0].latency_s < 1.0  # 0.2 s, then 60 s capped to 0.3 s
