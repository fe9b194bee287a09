"""A run always ends: hostile roles and backends, each of which once left ``arun`` waiting
forever. Every run here is wrapped in an outer ``asyncio.timeout`` that the fix must beat."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import pytest

import agentgraph as ag

BOUND_S = 30.0  # the outer bound; with the fixes every run ends long before it


class Params(pydantic.BaseModel):
    returns: Literal["none", "str", "dict", "cancel", "cancelled_future", "swallow", "boom"]


class Boom(BaseException):
    """Not an Exception: stands for a bug that escapes every ``except Exception``."""


class Hostile(ag.Role):
    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"
    Params = Params

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> Any:
        assert isinstance(self.params, Params)
        what = self.params.returns
        if what == "none":
            return None
        if what == "str":
            return "an answer, but not a Message"
        if what == "dict":
            return {"answer": "4"}
        if what == "cancel":
            raise asyncio.CancelledError
        if what == "cancelled_future":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.cancel)
            await fut
        if what == "swallow":
            try:
                await asyncio.sleep(1000)
            except asyncio.CancelledError:
                await asyncio.sleep(1000)  # ignores the first cancellation
        if what == "boom":
            raise Boom("an internal error")
        return ag.Message(self.node, "hostile", text="unreachable")


class Echo(ag.Role):
    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        return ag.Message(self.node, "echo", text="seen", answer="seen")


@pytest.fixture(autouse=True)
def _roles() -> None:
    ag.register_role("hostile", Hostile)
    ag.register_role("echo", Echo)


def chain(kind: str, *, last: bool = False) -> ag.Graph:
    """``src -> bad -> sink`` (or ``src -> bad`` with ``last``)."""
    nodes = {
        "src": ag.NodeSpec(role="echo"),
        "bad": ag.NodeSpec(role="hostile", inputs=("src",), params={"returns": kind}),
    }
    if not last:
        nodes["sink"] = ag.NodeSpec(role="echo", inputs=("bad",))
    return ag.Graph(ag.GraphSpec(nodes=nodes, output="bad" if last else "sink"))


@pytest.mark.parametrize("kind", ["none", "str", "dict"])
async def test_a_role_returning_the_wrong_type_fails_its_node(kind: str) -> None:
    async with asyncio.timeout(BOUND_S):
        result = await chain(kind).arun("q")
    err = result.failed["bad"]
    assert isinstance(err, TypeError)
    assert "role 'hostile' (Hostile) of node 'bad' returned" in str(err)
    assert "not a Message" in str(err)
    # The successor saw a failed input, like any other failure.
    assert isinstance(result.failed["sink"], ag.UpstreamFailed)


@pytest.mark.parametrize("kind", ["none", "str", "dict"])
async def test_a_wrong_type_from_the_output_node_is_a_failed_run(kind: str) -> None:
    async with asyncio.timeout(BOUND_S):
        result = await chain(kind, last=True).arun("q")
    assert result.ok is False and result.answer is None
    with pytest.raises(ag.RunFailed, match="not a Message"):
        result.raise_for_status()


@pytest.mark.parametrize("kind", ["cancel", "cancelled_future"])
async def test_a_stray_cancellation_inside_a_role_fails_only_its_node(kind: str) -> None:
    async with asyncio.timeout(BOUND_S):
        result = await chain(kind).arun("q")
    err = result.failed["bad"]
    assert "raised CancelledError without being cancelled" in str(err)
    assert result.nodes["src"].status == "ok"


@pytest.mark.looptime
async def test_the_run_timeout_bounds_a_role_that_swallows_cancellation() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(BOUND_S):
        result = await chain("swallow").arun("q", timeout_s=2.0)
    # The limit, plus the grace given to cancelled nodes before they are abandoned.
    assert loop.time() - start == pytest.approx(2.0 + 1.0)
    assert isinstance(result.failed["bad"], ag.NodeTimeout)
    assert not result.ok


async def test_an_internal_error_fails_the_run_with_that_exception() -> None:
    with pytest.raises(Boom, match="an internal error"):
        async with asyncio.timeout(BOUND_S):
            await chain("boom").arun("q")


class SlowToOpen(ag.ScriptedBackend):
    async def aopen(self) -> None:
        await asyncio.sleep(1000)  # a model load that takes forever


@pytest.mark.looptime
async def test_the_run_timeout_covers_opening_the_backends() -> None:
    backend = SlowToOpen("Answer: 1")
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role="proposer", model="m")},
        output="p",
    )
    graph = ag.Graph(spec, backends={"m": backend})
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(BOUND_S):
        result = await graph.arun("q", timeout_s=3.0)
    assert loop.time() - start == pytest.approx(3.0)
    assert isinstance(result.failed["p"], ag.NodeTimeout)
    assert backend.calls == []


class Hang(ag.ScriptedBackend):
    async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
        await asyncio.Event().wait()  # never answers
        raise AssertionError


@pytest.mark.looptime
async def test_a_backend_that_never_answers_is_cut_by_the_call_limit() -> None:
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role="proposer", model="m")},
        output="p",
        defaults=ag.Defaults(
            timeout=ag.TimeoutPolicy(call_s=5.0), retry=ag.RetryPolicy(max_attempts=2)
        ),
    )
    async with asyncio.timeout(BOUND_S):
        result = await ag.Graph(spec, backends={"m": Hang()}).arun("q")
    assert isinstance(result.failed["p"], ag.BackendTimeout)
    assert result.trace[0].attempts == 2


async def test_first_finish_with_a_cache_hit_ends_on_the_second_run(tmp_path: Path) -> None:
    # a, b -> first_finish: the second run gets a cache hit for b at once.
    text = """
models:
  m: {backend: scripted}
nodes:
  a: {role: proposer, model: m}
  b: {role: proposer, model: m, sampling: {temperature: 1.0}}
  first: {role: first_finish, inputs: [a, b]}
output: first
"""
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    backend = ag.ScriptedBackend(
        "Answer: 7", latency_s=lambda r: 0.5 if r.sampling.temperature else 0.01
    )
    for _ in range(2):
        graph = ag.loads(text, backends={"m": backend}, cache=cache)
        async with asyncio.timeout(BOUND_S):
            result = await graph.arun("q")
        assert result.answer == "7"
    assert any(r.cached for r in result.trace)


async def test_first_finish_whose_winner_finishes_before_the_loser_starts() -> None:
    # ``fast`` (no model) is declared before ``slow``: it wins before ``slow`` has taken a
    # single step, and ``slow`` must still be accounted for.
    text = """
models:
  m: {backend: scripted}
nodes:
  a: {role: proposer, model: m}
  fast: {role: select, inputs: [a]}
  slow: {role: proposer, model: m, inputs: [a]}
  first: {role: first_finish, inputs: [fast, slow]}
output: first
"""
    backend = ag.ScriptedBackend("Answer: 3", latency_s=0.01)
    async with asyncio.timeout(BOUND_S):
        result = await ag.loads(text, backends={"m": backend}).arun("q")
    assert result.answer == "3"
    assert result.nodes["slow"].message.lost_race
    assert [r.node for r in result.trace if r.error is None] == ["a"]


@pytest.mark.looptime
async def test_first_finish_stops_every_loser_and_returns_with_the_winner() -> None:
    # The slow branch is a chain: slow1 is running and slow2 waits for it. Both lost.
    text = """
models:
  fast: {backend: scripted}
  slow: {backend: scripted}
nodes:
  quick: {role: proposer, model: fast}
  slow1: {role: proposer, model: slow}
  slow2: {role: proposer, model: slow, inputs: [slow1]}
  first: {role: first_finish, inputs: [quick, slow2]}
output: first
"""
    fast = ag.ScriptedBackend("Answer: fast", latency_s=0.05)
    slow = ag.ScriptedBackend("Answer: slow", latency_s=0.6)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(BOUND_S):
        result = await ag.loads(text, backends={"fast": fast, "slow": slow}).arun("q")
    assert result.answer == "fast"
    assert loop.time() - start == pytest.approx(0.05)  # returned with the answer
    assert result.latency_s == pytest.approx(0.05)  # the losers are not on its path
    assert result.nodes["slow1"].message.lost_race and result.nodes["slow2"].message.lost_race
    assert len(slow.calls) == 1  # slow2 never called its model
    (cancelled,) = [r for r in result.trace if r.node == "slow1"]
    assert cancelled.error == "cancelled"
