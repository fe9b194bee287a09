"""The simulated environment of the search benchmark (benchmarks/_simenv.py): exact
expectations against hand-computed closed forms, Monte Carlo of the noisy evaluation
against the exact one, latency/cost/token accounting, and refused shapes."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from agentgraph import GraphSpec

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    name = "_simenv"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "_simenv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


sim = _load()
SimEnv = sim.SimEnv
ModelProfile = sim.ModelProfile
UnsupportedGraph = sim.UnsupportedGraph


def sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def graph(nodes: Mapping[str, Any], output: str, **models: Any) -> GraphSpec:
    declared = {m: {"backend": "scripted", **extra} for m, extra in models.items()}
    for m in ("s", "m", "l"):
        declared.setdefault(m, {"backend": "scripted"})
    return GraphSpec.model_validate({"models": declared, "nodes": nodes, "output": output})


def proposers(models: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {f"p{i}": {"role": "proposer", "model": m} for i, m in enumerate(models)}


def vote_of(models: Sequence[str]) -> GraphSpec:
    nodes = proposers(models)
    nodes["out"] = {"role": "vote", "inputs": list(nodes)}
    return graph(nodes, "out")


def env(rho: float = 0.0, attractor: float = 0.0, n_tasks: int = 60, **profiles: Any) -> Any:
    base = {
        "s": ModelProfile(ability=-0.5),
        "m": ModelProfile(ability=0.5),
        "l": ModelProfile(ability=1.5),
    }
    base.update(profiles)
    return SimEnv(base, n_tasks=n_tasks, seed=3, rho=rho, attractor=attractor)


# --- exact expectation: closed forms ----------------------------------------------------


def test_single_proposer_is_the_mean_sigmoid() -> None:
    e = env()
    p = sigmoid(-0.5 - e.difficulty)
    got = e.expected(graph({"a": {"role": "proposer", "model": "s"}}, "a"))
    assert got.score == pytest.approx(p.mean(), abs=1e-12)
    np.testing.assert_allclose(e.p_correct("s"), p)


def test_vote_of_three_independent_samples_with_unique_wrong_answers() -> None:
    e = env(rho=0.0, attractor=0.0)
    p = e.p_correct("m")
    # Two or three right; or one right that comes first (then every answer has one vote
    # and the tie goes to the first). A right answer behind a unique one loses the tie.
    closed = p**3 + 3 * p**2 * (1 - p) + p * (1 - p) ** 2
    assert e.expected(vote_of(["m", "m", "m"])).score == pytest.approx(closed.mean(), abs=1e-12)


def test_vote_with_every_wrong_answer_the_attractor_is_a_majority() -> None:
    e = env(rho=0.0, attractor=1.0)
    p = e.p_correct("m")
    closed = p**3 + 3 * p**2 * (1 - p)
    assert e.expected(vote_of(["m", "m", "m"])).score == pytest.approx(closed.mean(), abs=1e-12)


def test_vote_of_two_is_its_first_input_and_mixed_models_follow_input_order() -> None:
    e = env(rho=0.0, attractor=0.4)
    ps, pl = e.p_correct("s"), e.p_correct("l")
    # Two inputs: agreement wins, otherwise a 1-1 tie goes to the first.
    assert e.expected(vote_of(["s", "l"])).score == pytest.approx(ps.mean(), abs=1e-12)
    # [s, l, l]: l right twice wins; s right alone needs one other right vote or to be
    # first among three different answers (the two l answers wrong and not equal, i.e.
    # not both the attractor).
    w = 0.4
    q = 1 - pl
    closed = pl**2 + ps * 2 * pl * q + ps * (q**2 - (q * w) ** 2)
    assert e.expected(vote_of(["s", "l", "l"])).score == pytest.approx(closed.mean(), abs=1e-12)


def test_full_correlation_makes_a_vote_one_sample() -> None:
    e = env(rho=1.0, attractor=0.3)
    one = e.expected(graph({"a": {"role": "proposer", "model": "m"}}, "a")).score
    assert e.expected(vote_of(["m"] * 5)).score == pytest.approx(one, abs=1e-12)


def test_partial_correlation_mixes_one_sample_and_independent_votes() -> None:
    rho = 0.35
    e = env(rho=rho, attractor=0.0)
    p = e.p_correct("m")
    indep = p**3 + 3 * p**2 * (1 - p) + p * (1 - p) ** 2
    closed = rho * p + (1 - rho) * indep
    assert e.expected(vote_of(["m"] * 3)).score == pytest.approx(closed.mean(), abs=1e-12)


def test_a_perfect_verifier_makes_best_of_one_minus_all_wrong() -> None:
    e = env(rho=0.0, judge=ModelProfile(ability=0.0, tpr=1.0, fpr=0.0))
    models = ["s", "m", "m", "l"]
    nodes = proposers(models)
    for i in range(len(models)):
        nodes[f"v{i}"] = {"role": "verifier", "model": "judge", "inputs": [f"p{i}"]}
    nodes["out"] = {"role": "best_of", "inputs": [f"v{i}" for i in range(len(models))]}
    spec = graph(nodes, "out", judge={})
    all_wrong = np.prod([1 - e.p_correct(m) for m in models], axis=0)
    assert e.expected(spec).score == pytest.approx((1 - all_wrong).mean(), abs=1e-12)
    same = graph(
        {
            **proposers(["m"] * 3),
            **{
                f"v{i}": {"role": "verifier", "model": "judge", "inputs": [f"p{i}"]}
                for i in range(3)
            },
            "out": {"role": "best_of", "inputs": ["v0", "v1", "v2"]},
        },
        "out",
        judge={},
    )
    p = e.p_correct("m")
    assert e.expected(same).score == pytest.approx((1 - (1 - p) ** 3).mean(), abs=1e-12)


def test_best_of_with_a_noisy_verifier_takes_the_first_accepted() -> None:
    tpr, fpr = 0.8, 0.3
    e = env(rho=0.0, judge=ModelProfile(ability=0.0, tpr=tpr, fpr=fpr))
    nodes = {
        **proposers(["s", "l"]),
        "v0": {"role": "verifier", "model": "judge", "inputs": ["p0"]},
        "v1": {"role": "verifier", "model": "judge", "inputs": ["p1"]},
        "out": {"role": "best_of", "inputs": ["v0", "v1"]},
    }
    ps, pl = e.p_correct("s"), e.p_correct("l")
    acc0 = ps * tpr + (1 - ps) * fpr  # the first is accepted: it wins
    # Otherwise the second wins if accepted; if both are rejected the first wins.
    closed = ps * tpr + (1 - acc0) * pl * tpr + ps * (1 - tpr) * (1 - (pl * tpr + (1 - pl) * fpr))
    got = e.expected(graph(nodes, "out", judge={})).score
    assert got == pytest.approx(closed.mean(), abs=1e-12)


def test_critique_revise_fixes_and_breaks_at_the_mean_rates() -> None:
    e = env(
        s=ModelProfile(ability=-0.5, fix_rate=0.2, break_rate=0.1),
        l=ModelProfile(ability=1.5, fix_rate=0.6, break_rate=0.02),
    )
    nodes = {
        "draft": {"role": "proposer", "model": "s"},
        "crit": {"role": "critic", "model": "l", "inputs": ["draft"]},
        "rev": {"role": "proposer", "model": "s", "inputs": ["crit"]},
    }
    p = e.p_correct("s")
    f, g = (0.2 + 0.6) / 2, (0.1 + 0.02) / 2  # reviser s and critic l
    one = p * (1 - g) + (1 - p) * f
    assert e.expected(graph(nodes, "rev")).score == pytest.approx(one.mean(), abs=1e-12)
    nodes |= {
        "crit2": {"role": "critic", "model": "s", "inputs": ["rev"]},
        "rev2": {"role": "proposer", "model": "s", "inputs": ["crit2"]},
    }
    two = one * (1 - 0.1) + (1 - one) * 0.2  # second round all on s
    assert e.expected(graph(nodes, "rev2")).score == pytest.approx(two.mean(), abs=1e-12)


def test_synthesizer_is_a_vote_then_a_revision_by_its_model() -> None:
    e = env(rho=0.0, attractor=0.0, l=ModelProfile(ability=1.5, fix_rate=0.5, break_rate=0.05))
    nodes = proposers(["m", "m", "m"])
    nodes["out"] = {"role": "synthesizer", "model": "l", "inputs": ["p0", "p1", "p2"]}
    p = e.p_correct("m")
    v = p**3 + 3 * p**2 * (1 - p) + p * (1 - p) ** 2
    closed = v * (1 - 0.05) + (1 - v) * 0.5
    assert e.expected(graph(nodes, "out")).score == pytest.approx(closed.mean(), abs=1e-12)


def cascade(threshold: float = 0.7) -> GraphSpec:
    return graph(
        {
            "draft": {"role": "proposer", "model": "s"},
            "check": {"role": "verifier", "model": "m", "inputs": ["draft"]},
            "gate": {
                "role": "router",
                "inputs": ["check"],
                "params": {"threshold": threshold, "pass": ["final"], "fail": ["escalate"]},
            },
            "escalate": {"role": "proposer", "model": "l", "inputs": ["gate"]},
            "final": {"role": "select", "inputs": ["gate", "escalate"]},
        },
        "final",
        s={"price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        l={"price": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
    )


def test_router_cascade_escalates_what_the_verifier_rejects() -> None:
    e = env(rho=0.5, m=ModelProfile(ability=0.5, tpr=0.9, fpr=0.2))
    ps, pl = e.p_correct("s"), e.p_correct("l")
    reject = ps * 0.1 + (1 - ps) * 0.8
    closed = ps * 0.9 + reject * pl
    got = e.expected(cascade())
    assert got.score == pytest.approx(closed.mean(), abs=1e-12)
    # Time and money: draft + check always; the big call when rejected.
    draft = 0.2 + 300 / 2000 + 150 / 50
    check = 0.2 + (300 + 150) / 2000 + 150 / 50
    esc = draft  # the escalated proposer reads no answer: the router message carries none
    assert got.latency_s == pytest.approx(draft + check + reject.mean() * esc, abs=1e-9)
    assert got.latency_p95_s == pytest.approx(draft + check + esc)
    cost_s = (300 * 1.0 + 150 * 2.0) / 1e6
    cost_l = (300 * 10.0 + 150 * 30.0) / 1e6
    assert got.cost_usd == pytest.approx(cost_s + reject.mean() * cost_l, rel=1e-12)
    assert got.tokens == pytest.approx(450 + 600 + reject.mean() * 450, rel=1e-12)
    # Threshold 0: every score passes, the big model never runs.
    always = e.expected(cascade(threshold=0.0))
    assert always.score == pytest.approx(ps.mean(), abs=1e-12)
    assert always.cost_usd == pytest.approx(cost_s)


def triage() -> GraphSpec:
    return graph(
        {
            "triage": {
                "role": "router",
                "model": "m",
                "params": {"mode": "difficulty", "easy": ["cheap"], "hard": ["big"]},
            },
            "cheap": {"role": "proposer", "model": "s", "inputs": ["triage"]},
            "big": {"role": "proposer", "model": "l", "inputs": ["triage"]},
            "final": {"role": "select", "inputs": ["cheap", "big"]},
        },
        "final",
    )


def test_difficulty_router_sends_what_its_model_finds_hard_to_the_big_model() -> None:
    spec = triage()
    e = env()
    easy = e.p_correct("m")
    closed = easy * e.p_correct("s") + (1 - easy) * e.p_correct("l")
    assert e.expected(spec).score == pytest.approx(closed.mean(), abs=1e-12)


# --- noisy evaluation matches the exact expectation ----------------------------------------


def _mc_specs() -> Iterator[tuple[str, GraphSpec]]:
    chains: dict[str, Any] = {}
    for i, m in enumerate(["s", "m", "s", "l"]):
        chains[f"p{i}"] = {"role": "proposer", "model": m}
        chains[f"c{i}"] = {"role": "critic", "model": "l", "inputs": [f"p{i}"]}
        chains[f"r{i}"] = {"role": "proposer", "model": m, "inputs": [f"c{i}"]}
    yield (
        "critique-revise x4 -> vote",
        graph(chains | {"out": {"role": "vote", "inputs": [f"r{i}" for i in range(4)]}}, "out"),
    )
    nested = proposers(["s", "s", "m", "m", "s"])
    nested |= {
        "v1": {"role": "vote", "inputs": ["p0", "p1", "p2"]},
        "out": {"role": "synthesizer", "model": "m", "inputs": ["v1", "p3", "p4"]},
    }
    yield "vote -> synthesizer (shared draws meet)", graph(nested, "out")
    bo = proposers(["s", "m", "s"])
    bo |= {f"v{i}": {"role": "verifier", "model": "m", "inputs": [f"p{i}"]} for i in range(3)}
    bo |= {"out": {"role": "best_of", "inputs": ["v0", "v1", "v2"]}}
    yield "verifiers -> best_of", graph(bo, "out")
    yield "cascade", cascade()
    deep = {
        "a": {"role": "proposer", "model": "s"},
        "b": {"role": "proposer", "model": "s"},
        "va": {"role": "verifier", "model": "m", "inputs": ["a"]},
        "vb": {"role": "verifier", "model": "s", "inputs": ["b"]},
        "best": {"role": "best_of", "inputs": ["va", "vb"]},
        "check": {"role": "verifier", "model": "l", "inputs": ["best"]},
        "gate": {
            "role": "router",
            "inputs": ["check"],
            "params": {"threshold": 0.5, "pass": ["final"], "fail": ["x", "y"]},
        },
        "x": {"role": "proposer", "model": "m", "inputs": ["gate"]},
        "y": {"role": "proposer", "model": "m", "inputs": ["gate"]},
        "z": {"role": "synthesizer", "model": "l", "inputs": ["x", "y"]},
        "final": {"role": "select", "inputs": ["gate", "z"], "params": {"prefer": "first"}},
    }
    yield "best_of -> router -> synthesized escalation", graph(deep, "final")
    yield "difficulty router", triage()


def debate(models: Sequence[str], rounds: int) -> GraphSpec:
    """Each agent reads its own answer first, then the others' (as the layered space)."""
    nodes = proposers(models)
    prev = list(nodes)
    for r in range(1, rounds + 1):
        layer = []
        for i, own in enumerate(prev):
            inputs = [own, *(q for q in prev if q != own)]
            nodes[f"d{r}_{i}"] = {"role": "proposer", "model": models[i], "inputs": inputs}
            layer.append(f"d{r}_{i}")
        prev = layer
    return graph(nodes | {"out": {"role": "vote", "inputs": prev}}, "out")


def _shared_specs() -> Iterator[tuple[str, GraphSpec]]:
    """Graphs where an answer is read by several nodes: the joint engine's."""
    yield "debate 3x2 -> vote", debate(["m", "m", "s"], 2)
    sg = {
        "a": {"role": "proposer", "model": "s"},
        "b": {"role": "proposer", "model": "m"},
        "crit": {"role": "critic", "model": "l", "inputs": ["a", "b"]},
        "rev": {"role": "synthesizer", "model": "m", "inputs": ["a", "crit"]},
        "check": {"role": "verifier", "model": "s", "inputs": ["rev"]},
        "out": {"role": "best_of", "inputs": ["a", "check", "b", "rev"]},
    }
    yield "supergraph: shared draft, critic, verifier -> best_of", graph(sg, "out")
    dup = {
        "a": {"role": "proposer", "model": "s"},
        "crit": {"role": "critic", "model": "l", "inputs": ["a"]},
        "b": {"role": "proposer", "model": "m"},
        "c": {"role": "proposer", "model": "s"},
        "out": {"role": "vote", "inputs": ["crit", "b", "a", "c"]},
    }
    yield "vote counting a draft and its critic once", graph(dup, "out")
    casc = {
        "a": {"role": "proposer", "model": "s"},
        "b": {"role": "proposer", "model": "s"},
        "v": {"role": "vote", "inputs": ["a", "b"]},
        "check": {"role": "verifier", "model": "m", "inputs": ["v"]},
        "gate": {
            "role": "router",
            "inputs": ["check"],
            "params": {"threshold": 0.5, "pass": ["final"], "fail": ["big"]},
        },
        "big": {"role": "proposer", "model": "l", "inputs": ["gate"]},
        "syn": {"role": "synthesizer", "model": "l", "inputs": ["big", "a"]},
        "final": {"role": "select", "inputs": ["gate", "syn"]},
    }
    yield "cascade whose escalation rereads a draft", graph(casc, "final")


def test_the_two_exact_engines_agree_on_trees() -> None:
    e = env(rho=0.4, attractor=0.35, n_tasks=40)
    for label, spec in [*_mc_specs(), ("vote s,l,l", vote_of(["s", "l", "l"]))]:
        tree, joint = e.expected(spec, engine="tree"), e.expected(spec, engine="joint")
        assert joint.score == pytest.approx(tree.score, abs=1e-12), label
        assert joint.latency_s == pytest.approx(tree.latency_s, abs=1e-9), label
        assert joint.cost_usd == pytest.approx(tree.cost_usd, abs=1e-15), label
    with pytest.raises(ValueError, match="tree engine"):
        e.expected(next(_shared_specs())[1], engine="tree")


def test_a_debate_that_revises_nothing_is_a_vote() -> None:
    # Three agents that never fix or break: each keeps its answer unless the other two
    # agree, so after the round the majority (if any) holds everywhere, else each its own;
    # a vote then ends as a plain vote of the first answers.
    e = env(rho=0.0, attractor=0.0, m=ModelProfile(ability=0.5, fix_rate=0.0, break_rate=0.0))
    spec = debate(["m", "m", "m"], 2)
    p = e.p_correct("m")
    closed = p**3 + 3 * p**2 * (1 - p) + p * (1 - p) ** 2
    assert e.expected(spec).score == pytest.approx(closed.mean(), abs=1e-12)


@pytest.mark.parametrize(
    ("label", "spec"), [pytest.param(*c, id=c[0]) for c in [*_mc_specs(), *_shared_specs()]]
)
def test_monte_carlo_of_evaluate_matches_expected(label: str, spec: GraphSpec) -> None:
    e = env(rho=0.4, attractor=0.35, n_tasks=40)
    exact = e.expected(spec)
    tasks = np.tile(np.arange(e.n_tasks), 300)  # every task equally often
    for method, seed in (("simulate", 11), ("exact", 12)):
        outs = e.evaluate(spec, tasks, np.random.default_rng(seed), method=method)
        for field, want in (
            ("score", exact.score),
            ("latency_s", exact.latency_s),
            ("cost_usd", exact.cost_usd),
            ("tokens", exact.tokens),
        ):
            xs = np.array([getattr(o, field) for o in outs], dtype=np.float64)
            se = xs.std(ddof=1) / np.sqrt(len(xs))
            assert abs(xs.mean() - want) <= 4 * se + 1e-9, (label, method, field)


def test_evaluate_returns_task_outcomes_for_the_search_objective() -> None:
    e = env()
    spec = vote_of(["s", "m", "l"])
    outs = e.evaluate(spec, [0, 5, 5], np.random.default_rng(0))
    assert [o.task_id for o in outs] == [0, 5, 5]
    row = outs[1].to_task_outcome("g")
    assert row.status == "ok" and row.task_id == "5" and row.score == outs[1].score
    assert row.uncached_latency_s == outs[1].latency_s and row.uncached_cost == outs[1].cost_usd
    with pytest.raises(IndexError, match="task id 60"):
        e.evaluate(spec, [60], np.random.default_rng(0))
    assert json.loads(json.dumps(e.describe()))["profiles"]["m"]["ability"] == 0.5


# --- latency, cost, tokens ------------------------------------------------------------------


def test_calls_on_a_one_slot_model_take_turns_and_unlimited_slots_overlap() -> None:
    call = 0.2 + 300 / 2000 + 150 / 50
    one = env().expected(vote_of(["m", "m", "m"]))
    assert one.latency_s == pytest.approx(3 * call)
    assert one.latency_p95_s == pytest.approx(3 * call)
    many = env(m=ModelProfile(ability=0.5, slots=None)).expected(vote_of(["m", "m", "m"]))
    assert many.latency_s == pytest.approx(call)
    # The spec's slots win over the profile's.
    two = graph(
        {**proposers(["m"] * 3), "out": {"role": "vote", "inputs": ["p0", "p1", "p2"]}},
        "out",
        m={"slots": 2},
    )
    assert env().expected(two).latency_s == pytest.approx(2 * call)
    # Different models run at once; the aggregator takes no time.
    assert env().expected(vote_of(["s", "m", "l"])).latency_s == pytest.approx(call)
    assert one.tokens == 3 * 450 and one.cost_usd == 0.0


def test_waiting_calls_start_by_the_executors_priority() -> None:
    # b and a both wait for the one slot of s; a has more model work ahead (a -> c), so it
    # goes first although b comes first in graph order.
    e = env(l=ModelProfile(ability=1.5, decode_tok_s=10.0))
    spec = graph(
        {
            "b": {"role": "proposer", "model": "s"},
            "a": {"role": "proposer", "model": "s"},
            "c": {"role": "critic", "model": "l", "inputs": ["a"]},
            "out": {"role": "vote", "inputs": ["b", "c"]},
        },
        "out",
    )
    ts = 0.2 + 300 / 2000 + 150 / 50
    tc = 0.2 + 450 / 2000 + 150 / 10
    assert e.expected(spec).latency_s == pytest.approx(ts + max(ts, tc))


def test_prompts_grow_with_the_answers_read_and_prices_come_from_spec_or_profile() -> None:
    from agentgraph import Price

    e = env(l=ModelProfile(ability=1.5, price=Price(input_per_mtok=5.0, output_per_mtok=7.0)))
    nodes = proposers(["s", "m"])
    nodes["syn"] = {"role": "synthesizer", "model": "l", "inputs": ["p0", "p1"]}
    got = e.expected(graph(nodes, "syn", s={"price": {"input_per_mtok": 1.0}}))
    syn_prompt = 300 + 150 + 150
    assert got.tokens == 450 + 450 + syn_prompt + 150
    assert got.cost_usd == pytest.approx((300 * 1.0 + syn_prompt * 5.0 + 150 * 7.0) / 1e6)
    # A critic's message carries the answer it passes on: the reviser reads both.
    cr = graph(
        {
            "d": {"role": "proposer", "model": "s"},
            "c": {"role": "critic", "model": "s", "inputs": ["d"]},
            "r": {"role": "proposer", "model": "s", "inputs": ["c"]},
        },
        "r",
    )
    assert e.expected(cr).tokens == 450 + (450 + 150) + (300 + 300 + 150)

    def call(prompt: int) -> float:
        return 0.2 + prompt / 2000 + 150 / 50

    assert e.expected(cr).latency_s == pytest.approx(call(300) + call(450) + call(600))


# --- refused shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "output", "node", "match"),
    [
        (
            {
                "a": {"role": "proposer", "model": "s"},
                "b": {"role": "proposer", "model": "l"},
                "f": {"role": "first_finish", "inputs": ["a", "b"]},
            },
            "f",
            "f",
            "role 'first_finish' is not simulated",
        ),
        (
            {"a": {"role": "proposer", "model": "x"}},
            "a",
            "a",
            "model 'x' has no profile",
        ),
        (
            {"a": {"role": "critic", "model": "s"}},
            "a",
            "a",
            "give node 'a' at least one input",
        ),
        (
            {
                "a": {"role": "proposer", "model": "s"},
                "v": {"role": "verifier", "model": "s", "inputs": ["a"]},
                "g": {"role": "router", "inputs": ["v"], "params": {"pass": ["o"]}},
                "o": {"role": "vote", "inputs": ["g"]},
            },
            "o",
            "o",
            "router messages are not candidates",
        ),
        (
            {
                "a": {"role": "proposer", "model": "s"},
                "v": {"role": "verifier", "model": "s", "inputs": ["a"]},
                "g": {"role": "router", "inputs": ["v"], "params": {"pass": ["o"], "fail": ["b"]}},
                "b": {"role": "proposer", "model": "l", "inputs": ["g", "a"]},
                "o": {"role": "select", "inputs": ["g", "b"]},
            },
            "o",
            "b",
            "gates only proposers and synthesizers",
        ),
        (
            {
                "t": {
                    "role": "router",
                    "model": "m",
                    "params": {"mode": "difficulty", "easy": ["o"], "hard": ["b"]},
                },
                "b": {"role": "proposer", "model": "l", "inputs": ["t"]},
                "o": {"role": "select", "inputs": ["t", "b"]},
            },
            "o",
            "o",
            "carries none",
        ),
    ],
    ids=[
        "first_finish",
        "no-profile",
        "no-input",
        "vote-router",
        "gate-and-answer",
        "select-empty-router",
    ],
)
def test_unsupported_shapes_raise_naming_the_node(
    nodes: dict[str, Any], output: str, node: str, match: str
) -> None:
    spec = graph(nodes, output, x={})
    e = env()
    with pytest.raises(UnsupportedGraph, match=match) as info:
        e.expected(spec)
    assert info.value.node == node
    with pytest.raises(UnsupportedGraph):
        e.evaluate(spec, [0], np.random.default_rng(0))


# --- the known optimum ------------------------------------------------------------------------


def test_optimum_is_the_best_expected_score_within_the_budget() -> None:
    e = env(l=ModelProfile(ability=1.5, decode_tok_s=25.0))
    candidates = [graph({"a": {"role": "proposer", "model": m}}, "a") for m in ("s", "m", "l")] + [
        vote_of(["m", "m", "m"]),
        vote_of(["s", "m", "l"]),
    ]
    metrics = [e.expected(c) for c in candidates]
    free = e.optimum(candidates)
    assert free.evaluated == free.feasible == 5
    assert free.metrics is not None
    assert free.metrics.score == max(m.score for m in metrics)
    limit = metrics[1].latency_s  # one call of m: only s and m alone fit
    tight = e.optimum(iter(candidates), latency_s=limit)
    assert tight.spec == candidates[1] and tight.feasible == 2
    assert e.optimum(candidates, latency_s=0.1).spec is None
    bad = graph({"a": {"role": "proposer", "model": "x"}}, "a", x={})
    with pytest.raises(UnsupportedGraph):
        e.optimum([*candidates, bad])
    skipped = e.optimum([*candidates, bad], skip_unsupported=True)
    assert skipped.unsupported == 1 and skipped.spec == free.spec
