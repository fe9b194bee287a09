"""Agent-REINFORCE: a feedback model's JSON update applied inside a trust region, the
numeric REINFORCE step when the reply is unusable, the pool profile, exact state, and
whole searches. Mechanics are tested with scripted feedback models (plain async functions,
or a scripted model in a pool); one search asks the real SmolLM2."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentgraph.search import load_space, loads_space
from agentgraph.search._agent import AgentReinforce, extract_json_object, feedback_from_model
from agentgraph.search._objective import Evaluation, Objective, SearchBudget, SearchError
from agentgraph.search._reinforce import Reinforce
from agentgraph.search._space import GraphSpace
from agentgraph.search._tune import atune

import agentgraph as ag

from .conftest import SMOL_REF

ROOT = Path(__file__).resolve().parent.parent

# The space of tests/test_tune.py: "good" answers right, "bad" wrong.
SPACE = """
schema: agentgraph-space/v1
name: toy
task: math
models:
  good: {backend: scripted, options: {responses: "Answer: 4"}}
  bad: {backend: scripted, options: {responses: "Answer: 5"}}
defaults:
  sampling: {max_tokens: 8}
budget: {latency_s: 30}
layered:
  width: [1, 2, 3]
  rounds: [0]
  aggregator: [vote]
  models:
    proposer: [good, bad]
"""

TOWARD_GOOD = '{"models.proposer": {"good": 1.0, "bad": 0.0}}'


def toy() -> GraphSpace:
    return loads_space(SPACE)


def supergraph() -> GraphSpace:
    """Categoricals and Bernoullis (its models are never loaded here)."""
    return load_space(ROOT / "examples/spaces/supergraph.yaml")


class Scripted:
    """A feedback model that answers from a list (the last reply repeats), keeping the
    prompts it was given."""

    def __init__(self, *replies: str) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.replies[min(len(self.prompts), len(self.replies)) - 1]


def results(n: int) -> list[Evaluation]:
    return [
        Evaluation(score=i / n, latency_s=1.0 + i, latency_p95_s=2.0 + i, tokens=10.0 * i,
                   n_tasks=4, failed=i % 2)
        for i in range(n)
    ]  # fmt: skip


def tv(p: Any, q: Any) -> float:
    if isinstance(p, dict):
        return 0.5 * sum(abs(p[k] - q[k]) for k in p)
    return abs(float(p) - float(q))


# --- the model's update, in a trust region -------------------------------------------------


async def test_a_valid_update_moves_toward_the_proposal_within_the_trust_region() -> None:
    space = supergraph()
    far = {"nodes.final.model": {"small": 1.0, "big": 0.0}, "nodes.draft_b.include": 0.95}
    near = {"nodes.final.role": {"vote": 0.5, "synthesizer": 0.3, "best_of": 0.2}}
    searcher = AgentReinforce(space, seed=1, feedback=Scripted(json.dumps({**far, **near})))
    before, params = space.probabilities(searcher.params), searcher.params
    samples = searcher.ask(4)
    await searcher.atell(samples, results(4))
    after = space.probabilities(searcher.params)

    for name in far:  # far proposals: moved exactly trust_region, toward them
        assert tv(before[name], after[name]) == pytest.approx(0.2, abs=1e-9)
    assert after["nodes.final.model"]["small"] == pytest.approx(0.7, abs=1e-9)
    assert after["nodes.draft_b.include"] == pytest.approx(0.7, abs=1e-9)
    for option, p in near["nodes.final.role"].items():  # within the region: taken as is
        assert after["nodes.final.role"][option] == pytest.approx(p, abs=1e-9)
    for name, block in params.items():  # decisions not named keep their logits exactly
        if name not in far and name not in near:
            assert np.array_equal(searcher.params[name], block)
    assert (searcher.llm_updates, searcher.fallbacks, searcher.iteration) == (1, 0, 1)
    assert searcher.evaluations == 4 and searcher.best is not None


async def test_the_prompt_shows_the_distribution_the_batch_and_the_best_so_far() -> None:
    space = toy()
    feedback = Scripted(TOWARD_GOOD)
    objective = Objective(SearchBudget(latency_s=2.0), multipliers={"latency_s": 0.25})
    searcher = AgentReinforce(space, objective, seed=2, feedback=feedback)
    for _ in range(2):
        samples = searcher.ask(3)
        await searcher.atell(samples, results(3))
    first, second = feedback.prompts
    assert "math tasks" in first and "latency_s <= 2" in first and "latency_s=0.25" in first
    assert '"models.proposer": {"good": 0.5, "bad": 0.5}' in first
    assert "models.proposer=" in first and "width=" in first and "1/4" in first
    assert "Best feasible graph so far" not in first  # nothing was feasible-and-told yet
    assert "Best feasible graph so far: " in second
    lines = [ln for ln in first.splitlines() if ln.startswith("width=")]
    rewards = [float(ln.split(" | ")[1]) for ln in lines]
    assert len(lines) == 3 and rewards == sorted(rewards, reverse=True)  # best reward first
    assert [ln.split(" | ")[7] for ln in lines] == ["no", "yes", "yes"]  # over 2 s: infeasible


# --- unusable replies: the numeric step ----------------------------------------------------


async def _raises(prompt: str) -> str:
    raise RuntimeError("the judge fell over")


async def _hangs(prompt: str) -> str:
    await asyncio.sleep(30)
    return "{}"


GARBAGE = {
    "prose": ("Use the big model more, it seemed better.", "no JSON object"),
    "unknown decision": (
        '{"nodes.final.modle": {"small": 0.9, "big": 0.1}}',
        "unknown decision; valid decisions: ",
    ),
    "out of range": ('{"nodes.draft_b.include": 1.7}', "between 0 and 1, got 1.7"),
    "unknown option": (
        '{"nodes.final.model": {"small": 0.5, "huge": 0.5}}',
        "model.huge: unknown option",
    ),
    "wrong shape": ('{"nodes.final.model": 0.5}', "expected a mapping of option"),
    "empty": ("{}", "names no decision"),
}


@pytest.mark.parametrize("case", [*GARBAGE, "raises", "times out", "no feedback"])
async def test_an_unusable_reply_falls_back_to_the_numeric_step(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    space = supergraph()
    objective = Objective(SearchBudget(latency_s=2.5))
    if case in GARBAGE:
        feedback: Any = Scripted(GARBAGE[case][0])
        reason = GARBAGE[case][1]
    else:
        feedback, reason = {
            "raises": (_raises, "RuntimeError: the judge fell over"),
            "times out": (_hangs, "no reply within 0.05 s"),
            "no feedback": (None, "no feedback model configured"),
        }[case]
    agent = AgentReinforce(
        space, objective, seed=4, feedback=feedback, feedback_timeout_s=0.05, lr=0.3
    )
    plain = Reinforce(space, Objective(SearchBudget(latency_s=2.5)), seed=4, lr=0.3)
    batch = results(4)
    with caplog.at_level(logging.WARNING, logger="agentgraph.search"):
        for _ in range(2):  # the second step also uses the same Adam state
            a, p = agent.ask(4), plain.ask(4)
            assert [s.decisions for s in a] == [s.decisions for s in p]
            await agent.atell(a, batch)
            plain.tell(p, batch)
    for name, block in plain.params.items():
        assert np.array_equal(agent.params[name], block), name
    assert agent.objective.multipliers == plain.objective.multipliers
    assert (agent.llm_updates, agent.fallbacks) == (0, 2)
    warnings = [r for r in caplog.records if r.name == "agentgraph.search"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert all("numeric REINFORCE step" in r.getMessage() for r in warnings)
    assert reason in warnings[0].getMessage()


def test_a_plain_tell_takes_the_numeric_step_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    space = toy()
    agent = AgentReinforce(space, seed=5, feedback=Scripted(TOWARD_GOOD))
    plain = Reinforce(space, seed=5)
    with caplog.at_level(logging.WARNING, logger="agentgraph.search"):
        agent.tell(agent.ask(3), results(3))
    plain.tell(plain.ask(3), results(3))
    assert all(np.array_equal(agent.params[k], v) for k, v in plain.params.items())
    assert (agent.llm_updates, agent.fallbacks) == (0, 1)
    assert "cannot wait on the feedback model" in caplog.records[0].getMessage()


async def test_atell_checks_its_arguments_before_asking_the_model() -> None:
    feedback = Scripted(TOWARD_GOOD)
    searcher = AgentReinforce(toy(), feedback=feedback)
    with pytest.raises(SearchError, match="2 samples but 1 results"):
        await searcher.atell(searcher.ask(2), results(1))
    assert feedback.prompts == []


def test_settings_are_checked() -> None:
    for bad in ({"trust_region": 0.0}, {"trust_region": 1.5}, {"profile_mix": 0.0},
                {"profile_temperature": 0.0}, {"feedback_timeout_s": 0.0}):  # fmt: skip
        with pytest.raises(SearchError, match=next(iter(bad))):
            AgentReinforce(toy(), **bad)


# --- reading the reply ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        TOWARD_GOOD,
        f"Here is the update:\n```json\n{TOWARD_GOOD}\n```\nThe good model won.",
        f"Based on {{the table}}, I propose {TOWARD_GOOD} because it scored best.",
        f"```\n{TOWARD_GOOD}```",
    ],
)
async def test_the_first_json_object_is_found_in_prose_and_fences(reply: str) -> None:
    assert extract_json_object(reply) == json.loads(TOWARD_GOOD)
    searcher = AgentReinforce(toy(), seed=6, feedback=Scripted(reply))
    await searcher.atell(searcher.ask(2), results(2))
    assert searcher.llm_updates == 1
    probs = searcher.space.probabilities(searcher.params)["models.proposer"]
    assert probs["good"] == pytest.approx(0.7)


def test_text_without_an_object_has_no_json() -> None:
    assert extract_json_object("no braces at all") is None
    assert extract_json_object("[1, 2] then {broken: json}") is None
    assert extract_json_object('{"a": [1, {"b": 2}]} {"c": 3}') == {"a": [1, {"b": 2}]}


# --- profiling the pool --------------------------------------------------------------------


async def test_aprepare_favours_the_better_model_within_the_budget() -> None:
    space = toy()
    seen: list[str] = []

    async def evaluate(spec: ag.GraphSpec) -> Evaluation:
        (model,) = spec.models
        seen.append(model)
        return Evaluation(score=0.9 if model == "good" else 0.3, latency_s=1.0, n_tasks=4)

    searcher = AgentReinforce(space, Objective(SearchBudget(latency_s=30)), seed=0)
    await searcher.aprepare(evaluate)
    p = space.probabilities(searcher.params)
    assert seen == ["good", "bad"]
    assert p["models.proposer"]["good"] > 0.9 and p["models.proposer"]["bad"] >= 0.05 - 1e-9
    assert p["width"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 1 / 3})  # not a model
    assert searcher.evaluations == 0 and searcher.iteration == 0  # profiling is not counted
    assert set(searcher.profile) == {"good", "bad"}

    # Over the budget, the better score loses: multipliers start at 0, the profile does not.
    async def slow_good(spec: ag.GraphSpec) -> Evaluation:
        good = "good" in spec.models
        return Evaluation(score=0.9 if good else 0.6, latency_s=90.0 if good else 1.0)

    other = AgentReinforce(space, Objective(SearchBudget(latency_s=30)), seed=0)
    await other.aprepare(slow_good)
    assert space.probabilities(other.params)["models.proposer"]["bad"] > 0.9


async def test_the_profile_is_shown_in_the_first_prompt_only() -> None:
    feedback = Scripted(TOWARD_GOOD)
    searcher = AgentReinforce(toy(), seed=0, feedback=feedback)

    async def evaluate(spec: ag.GraphSpec) -> Evaluation:
        return Evaluation(score=1.0 if "good" in spec.models else 0.0)

    await searcher.aprepare(evaluate)
    for _ in range(2):
        await searcher.atell(searcher.ask(2), results(2))
    first, second = feedback.prompts
    assert "Each model alone" in first and "\ngood | 1 | 1 |" in first
    assert "Each model alone" not in second


# --- state ---------------------------------------------------------------------------------


async def test_a_restored_searcher_continues_exactly() -> None:
    space = supergraph()
    replies = ('{"nodes.final.model": {"small": 0.9, "big": 0.1}}', "no idea", TOWARD_GOOD)

    async def evaluate(spec: ag.GraphSpec) -> Evaluation:
        return Evaluation(score=0.5 if "small" in spec.models else 0.7, cost_usd=1e-4)

    feedback = Scripted(*replies)
    objective = Objective(SearchBudget(cost_usd=5e-5))
    searcher = AgentReinforce(space, objective, seed=8, feedback=feedback, lr=0.2)
    await searcher.aprepare(evaluate)
    for _ in range(3):
        await searcher.atell(searcher.ask(4), results(4))
    assert (searcher.llm_updates, searcher.fallbacks) == (1, 2)
    state = json.loads(json.dumps(searcher.state()))
    restored = AgentReinforce.from_state(space, state, feedback=feedback)
    assert restored.state() == state
    assert restored.feedback is feedback
    assert (restored.llm_updates, restored.fallbacks) == (1, 2)
    assert restored.profile == searcher.profile
    assert restored.objective.multipliers == searcher.objective.multipliers
    assert [s.decisions for s in restored.ask(5)] == [s.decisions for s in searcher.ask(5)]
    assert AgentReinforce.from_state(space, state).feedback is None


# --- a whole search ------------------------------------------------------------------------


def tasks(n: int = 12) -> ag.TaskSet:
    items = tuple(ag.Task(f"t{i}", f"What is {i} + 4 - {i}?", answer="4") for i in range(n))
    return ag.TaskSet("toy", "math", items, scorer="numeric")


async def test_atune_runs_an_agent_search(tmp_path: Path) -> None:
    space = toy()
    feedback = Scripted(TOWARD_GOOD, "not sure", TOWARD_GOOD)
    searcher = AgentReinforce(
        space, Objective(SearchBudget(latency_s=30)), seed=3, feedback=feedback
    )
    result = await atune(
        space, searcher, tasks(), evals=12, batch=3, minibatch_size=4,
        store=tmp_path / "s.sqlite",
    )  # fmt: skip
    assert result.evaluations == 12 and result.iterations == 4
    assert searcher.llm_updates == 3 and searcher.fallbacks == 1
    assert result.best_evaluation is not None and result.best_evaluation.score == 1.0
    assert "Each model alone" in feedback.prompts[0]
    p = space.probabilities(searcher.params)["models.proposer"]
    assert p["good"] > 0.9


def last_agent_state(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM states ORDER BY iteration DESC LIMIT 1").fetchone()
    agent: dict[str, Any] = json.loads(row[0])["agent"]
    return agent


async def test_a_search_resumed_by_atune_keeps_asking_the_feedback_model(tmp_path: Path) -> None:
    space = toy()

    def searcher() -> AgentReinforce:
        objective = Objective(SearchBudget(latency_s=30))
        return AgentReinforce(space, objective, seed=3, feedback=Scripted(TOWARD_GOOD))

    for evals in (3, 7, 12):  # stopped after one iteration, then after three, then done
        await atune(
            space, searcher(), tasks(), evals=evals, batch=3, minibatch_size=4,
            store=tmp_path / "s.sqlite",
        )  # fmt: skip
    agent = last_agent_state(tmp_path / "s.sqlite")
    assert (agent["llm_updates"], agent["fallbacks"]) == (4, 0)


async def test_feedback_from_a_pool_model_goes_through_the_call_cache() -> None:
    cache = ag.CallCache(":memory:")
    fenced = f"Sure.\n```json\n{TOWARD_GOOD}\n```"
    pool = ag.ModelPool(
        {"judge": ag.ModelSpec(backend="scripted", options={"responses": fenced})}, cache=cache
    )
    feedback = feedback_from_model(pool, "judge", max_tokens=64)
    try:
        assert await feedback("What next? {not a placeholder}") == fenced
        assert await feedback("What next? {not a placeholder}") == fenced
        backend = pool.backend("judge")
        assert isinstance(backend, ag.ScriptedBackend)
        (call,) = backend.calls  # the second was a cache hit
        assert call.messages[-1].content == "What next? {not a placeholder}"
        assert call.sampling.temperature == 0.0 and call.sampling.max_tokens == 64
        assert cache.hits == 1
    finally:
        await pool.aclose()
        cache.close()
    with pytest.raises(ag.GraphValidationError, match="'jduge' is not in the pool"):
        feedback_from_model(pool, "jduge")


async def test_a_failing_pool_model_is_a_fallback(caplog: pytest.LogCaptureFixture) -> None:
    pool = ag.ModelPool({"judge": ag.ModelSpec(backend="scripted", options={"responses": ""})})
    searcher = AgentReinforce(toy(), feedback=feedback_from_model(pool, "judge"))
    with caplog.at_level(logging.WARNING, logger="agentgraph.search"):
        await searcher.atell(searcher.ask(2), results(2))
    await pool.aclose()
    assert searcher.fallbacks == 1 and "RunFailed" in caplog.records[0].getMessage()


@pytest.mark.slow
async def test_a_search_with_smollm2_as_feedback_model_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 135M model often answers with something unusable: every iteration must still be
    either the model's update or a logged numeric step."""
    space = toy()
    judge = ag.ModelSpec(backend="llama_cpp", path=SMOL_REF, options={"n_ctx": 2048})
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    pool = ag.ModelPool({"smol": judge}, cache=cache)
    searcher = AgentReinforce(
        space, Objective(SearchBudget(latency_s=30)), seed=1,
        feedback=feedback_from_model(pool, "smol", max_tokens=96),
    )  # fmt: skip
    try:
        with caplog.at_level(logging.WARNING, logger="agentgraph.search"):
            result = await atune(
                space, searcher, tasks(), evals=6, batch=3, minibatch_size=3,
                store=tmp_path / "s.sqlite",
            )  # fmt: skip
    finally:
        await pool.aclose()
        cache.close()
    assert result.iterations == 2
    assert searcher.llm_updates + searcher.fallbacks == 2
    logged = [r for r in caplog.records if "numeric REINFORCE step" in r.getMessage()]
    assert len(logged) == searcher.fallbacks
