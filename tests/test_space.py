"""The search space: space files and their located errors, exact probabilities (checked by
enumeration, by a chi-square test of sample frequencies and by finite differences), and
every sample a graph that builds, round-trips and runs."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from agentgraph.search import GraphSpace, SpaceError, load_space, loads_space
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgraph as ag

SPACES = Path(__file__).resolve().parent.parent / "examples" / "spaces"

POOL = """schema: agentgraph-space/v1
models:
  small: {backend: scripted}
  big: {backend: scripted}
"""

SMALL_LAYERED = (
    POOL
    + """layered:
  width: {1: 0.5, 2: 0.3, 3: 0.2}
  rounds: [0, 1]
  refine: [debate, critique]
  aggregator: [vote, best_of]
  cascade: {include: 0.4, verifier: small, escalate: big}
  models: {proposer: small, critic: [small, big], verifier: small}
"""
)

SMALL_SUPERGRAPH = (
    POOL
    + """supergraph:
  nodes:
    a: {role: proposer, model: small}
    b: {role: [proposer, critic], include: 0.5, model: small, inputs: {a: 0.5}}
    c: {role: [vote, synthesizer], model: small, inputs: {a: 0.5, b: 0.5}}
"""
)

# Chi-square critical values at significance 0.001 (computed from the regularized
# incomplete gamma function), by degrees of freedom.
CHI2_999 = {35: 66.619, 39: 72.055}

REPLY = ["Answer: 4\nVerdict: correct\nScore: 0.9", "Answer: 4\nVerdict: incorrect\nScore: 0.2"]


def example(name: str) -> GraphSpace:
    return load_space(SPACES / f"{name}.yaml")


def random_params(space: GraphSpace, rng: np.random.Generator, scale: float = 1.0) -> Any:
    return {k: rng.normal(0.0, scale, v.shape) for k, v in space.init_params().items()}


def check_graph(spec: ag.GraphSpec) -> None:
    """A DAG in which every node leads to the output, that round-trips through YAML."""
    g = ag.spec_to_networkx(spec)
    assert nx.is_directed_acyclic_graph(g)
    assert set(g.nodes) == nx.ancestors(g, spec.output) | {spec.output}
    assert ag.loads_spec(ag.dumps_spec(spec)) == spec
    assert set(spec.models) == {n.model for n in spec.nodes.values() if n.model is not None}


def run_scripted(spec: ag.GraphSpec) -> ag.RunResult:
    backends = {m: ag.ScriptedBackend(REPLY, name=m) for m in spec.models}
    return ag.Graph(spec, backends=backends).run("What is 2 + 2?")


def test_public_names_resolve() -> None:
    import agentgraph.search as search

    space_names = {"GraphSpace", "Sample", "SpaceBudget", "SpaceError", "load_space"}
    assert space_names | {"loads_space", "Decisions", "Params", "Site", "SPACE_SCHEMA"} <= set(
        search.__all__
    )
    for name in search.__all__:
        assert getattr(search, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        search.nope  # noqa: B018


# --- the example spaces -------------------------------------------------------------------


def test_layered_example_loads() -> None:
    space = example("layered")
    assert space.form == "layered" and space.task == "math"
    assert list(space.models) == ["small", "big"]
    assert space.budget is not None and space.budget.limits == {"latency_s": 30, "cost_usd": 1e-4}
    assert space.size() == 650 == sum(1 for _ in space.enumerate())
    probs = space.probabilities(space.init_params())
    assert probs["width"] == pytest.approx({"1": 0.4, "2": 0.2, "3": 0.3, "5": 0.1})
    assert probs["cascade.include"] == pytest.approx(0.3)
    assert "models.synthesizer" in probs and "models.critic" not in probs  # fixed: one option
    p = space.init_params()
    assert math.fsum(math.exp(space.log_prob(d, p)) for d in space.enumerate()) == pytest.approx(
        1.0, abs=1e-12
    )


def test_supergraph_example_loads() -> None:
    space = example("supergraph")
    assert space.form == "supergraph"
    assert space.size() == 85008 == sum(1 for _ in space.enumerate())
    probs = space.probabilities(space.init_params())
    assert probs["nodes.critic.inputs.draft_a"] == pytest.approx(0.6)
    assert probs["nodes.final.role"] == pytest.approx(
        {"vote": 0.4, "synthesizer": 0.3, "best_of": 0.3}
    )
    assert "nodes.draft_a.include" not in probs  # certain: not a decision


@pytest.mark.parametrize("name", ["layered", "supergraph"])
def test_example_samples_are_runnable_graph_files(name: str, tmp_path: Path) -> None:
    space = example(name)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        sample = space.sample(rng, space.init_params())
        check_graph(sample.spec)
        seen.add(sample.spec.name)
        path = tmp_path / f"{sample.spec.name}.yaml"
        path.write_text(ag.dumps_spec(sample.spec))
        assert ag.load(path).spec == sample.spec  # what `agentgraph run FILE` builds
    assert len(seen) > 5


def test_layered_graph_shapes() -> None:
    space = loads_space(SMALL_LAYERED)
    names = [s.name for s in space.sites]
    assert names == ["width", "rounds", "refine", "aggregator", "cascade.include", "models.critic"]
    choice = {"width": 2, "rounds": 1, "refine": 1, "aggregator": 1, "cascade.include": 1}
    d = space.decisions_from_choices([choice.get(n, 1) for n in names])
    assert space.describe(d) == {
        "width": 3,
        "rounds": 1,
        "refine": "critique",
        "aggregator": "best_of",
        "cascade.include": True,
        "models.critic": "big",
    }
    spec = space.decisions_to_spec(d)
    assert spec.nodes["revise1_2"].inputs == ("critic1_2",)
    assert spec.nodes["critic1_2"].model == "big"
    assert spec.nodes["best_of"].inputs == ("verify_1", "verify_2", "verify_3")
    assert spec.nodes["gate"].params["fail"] == ["escalate"]
    assert spec.nodes["escalate"].model == "big" and spec.output == "final"
    assert set(spec.models) == {"small", "big"}
    # Width 1 asks no aggregator; no rounds ask no refinement and no critic model.
    d1 = space.decisions_from_choices([0, 0, 1, 1, 0, 1])
    assert d1 == (0, 0, -1, -1, 0, -1)
    assert list(space.decisions_to_spec(d1).nodes) == ["propose_1"]
    debate = space.decisions_to_spec(space.decisions_from_choices([1, 1, 0, 0, 0, 0]))
    assert debate.nodes["debate1_2"].inputs == ("propose_2", "propose_1")
    assert debate.nodes["vote"].inputs == ("debate1_1", "debate1_2")


def test_sample_names_and_specs_follow_decisions() -> None:
    space = loads_space(SMALL_LAYERED)
    specs = {d: space.decisions_to_spec(d) for d in space.enumerate()}
    assert len({s.name for s in specs.values()}) == len(specs) == space.size()
    for d, spec in specs.items():
        assert spec.name.startswith("space-") and len(spec.name) == len("space-") + 10
        assert space.decisions_to_spec(d) == spec


# --- located errors -----------------------------------------------------------------------


BAD = {
    "unknown field": (
        POOL + "layered:\n  widht: [1, 2]\n",
        "s.yaml:6:3: layered.widht: unknown field 'widht'; valid fields: width,",
    ),
    "bad bernoulli": (
        POOL + "supergraph:\n  nodes:\n    a: {role: proposer, include: 1.5}\n",
        "s.yaml:7:34: supergraph.nodes.a.include: expected a probability between 0 and 1, got 1.5",
    ),
    "probabilities do not sum to 1": (
        POOL + "layered:\n  width: {1: 0.5, 2: 0.6}\n",
        "s.yaml:6:3: layered.width: the probabilities sum to 1.1, not 1",
    ),
    "zero probability": (
        POOL + "layered:\n  aggregator: {vote: 0, synthesizer: 1}\n",
        "s.yaml:6:22: layered.aggregator.vote: probability 0: remove the option instead",
    ),
    "unknown model": (
        POOL + "layered:\n  models:\n    proposer: [small, bigg]\n",
        "s.yaml:7:23: layered.models.proposer[1]: unknown model 'bigg'; valid models: 'small', "
        "'big'; did you mean 'big'?",
    ),
    "unknown role": (
        POOL + "supergraph:\n  nodes:\n    a: {role: [proposer, critc]}\n",
        "s.yaml:7:26: supergraph.nodes.a.role[1]: unknown role 'critc'; valid roles: 'proposer',",
    ),
    "router in a supergraph": (
        POOL + "supergraph:\n  nodes:\n    a: {role: router}\n",
        "s.yaml:7:15: supergraph.nodes.a.role: a supergraph cannot hold a router",
    ),
    "backward edge": (
        POOL + "supergraph:\n  nodes:\n    a: {role: proposer}\n    b: {role: proposer, "
        "inputs: {c: 0.5}}\n    c: {role: vote, inputs: [a, b]}\n",
        "s.yaml:8:37: supergraph.nodes.b.inputs.c: backward edge 'c' -> 'b': 'c' comes after "
        "'b' in the node order",
    ),
    "unknown aggregator": (
        POOL + "layered:\n  aggregator: [vote, best-of]\n",
        "s.yaml:6:22: layered.aggregator[1]: unknown aggregator 'best-of'; valid aggregators: "
        "'vote', 'synthesizer', 'best_of', 'first_finish'; did you mean 'best_of'?",
    ),
    "bad width": (
        POOL + "layered:\n  width: [0, 1]\n",
        "s.yaml:6:11: layered.width[0]: a width must be an integer >= 1, got 0",
    ),
    "prompt placeholder": (
        POOL + "layered:\n  roles:\n    proposer: {prompt: '{questoin}'}\n",
        "s.yaml:7:24: layered.roles.proposer.prompt: as role 'proposer': unknown placeholder "
        "{questoin}",
    ),
    "no anchor": (
        POOL + "supergraph:\n  nodes:\n    a: {role: proposer, include: 0.5}\n"
        "    b: {role: vote, inputs: {a: 0.5}}\n",
        "s.yaml:8:15: supergraph.nodes.b.role: the output node 'b' may be a 'vote', which "
        "needs an input",
    ),
    "output not last": (
        POOL + "supergraph:\n  nodes:\n    a: {role: proposer}\n    b: {role: proposer}\n"
        "  output: a\n",
        "s.yaml:9:11: supergraph.output: the output node 'a' must come last",
    ),
    "both forms": (
        POOL + "layered: {}\nsupergraph:\n  nodes: {a: {role: proposer}}\n",
        "s.yaml:6:1: supergraph: a space holds exactly one of 'layered' and 'supergraph'",
    ),
    "a graph file": (
        "schema: agentgraph/v1\nmodels: {a: {backend: scripted}}\nlayered: {}\n",
        "s.yaml:1:9: schema: Input should be 'agentgraph-space/v1' (got 'agentgraph/v1')",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_space_files_are_located(case: str) -> None:
    text, expected = BAD[case]
    with pytest.raises(ag.GraphValidationError) as info:
        loads_space(text, source="s.yaml")
    assert str(info.value).startswith(expected), str(info.value)
    assert info.value.source == "s.yaml" and info.value.line is not None


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(ag.GraphValidationError, match="space file not found"):
        load_space(tmp_path / "nope.yaml")


def test_unreadable_space_files_are_located_errors(tmp_path: Path) -> None:
    binary = tmp_path / "space.yaml"
    binary.write_bytes(b"models:\n  m: \xff\xfe\n")
    with pytest.raises(ag.GraphValidationError, match="not UTF-8 text") as info:
        load_space(binary)
    assert info.value.source == str(binary) and info.value.line == 2
    with pytest.raises(ag.GraphValidationError, match="is a directory, not a space file"):
        load_space(tmp_path)


# --- exact probabilities ------------------------------------------------------------------


@pytest.mark.parametrize("text", [SMALL_LAYERED, SMALL_SUPERGRAPH], ids=["layered", "supergraph"])
def test_enumeration_is_exact(text: str) -> None:
    space = loads_space(text)
    params = random_params(space, np.random.default_rng(3), scale=2.0)
    vectors = list(space.enumerate())
    assert len(vectors) == len(set(vectors)) == space.size()
    probs = np.array([math.exp(space.log_prob(d, params)) for d in vectors])
    assert math.fsum(probs) == pytest.approx(1.0, abs=1e-12)
    # The entropy is that of the decision vector, exactly.
    assert space.entropy(params) == pytest.approx(float(-(probs * np.log(probs)).sum()), rel=1e-9)


@pytest.mark.parametrize(
    ("text", "df"), [(SMALL_LAYERED, 39), (SMALL_SUPERGRAPH, 35)], ids=["layered", "supergraph"]
)
def test_sample_frequencies_match_log_prob(text: str, df: int) -> None:
    space = loads_space(text)
    params = random_params(space, np.random.default_rng(5), scale=0.5)
    vectors = list(space.enumerate())
    assert len(vectors) - 1 == df
    n = 10_000
    rng = np.random.default_rng(11)
    counts = Counter(space.sample(rng, params).decisions for _ in range(n))
    expected = np.array([n * math.exp(space.log_prob(d, params)) for d in vectors])
    assert expected.min() >= 5  # the chi-square approximation holds
    observed = np.array([counts[d] for d in vectors])
    assert observed.sum() == n  # every sample is a vector of the enumeration
    statistic = float(((observed - expected) ** 2 / expected).sum())
    assert statistic < CHI2_999[df]


def flat(probs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in probs.items():
        out.update({f"{k}={o}": p for o, p in v.items()} if isinstance(v, dict) else {k: v})
    return out


def numeric_gradient(f: Any, params: dict[str, Any], eps: float = 1e-6) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for i in range(v.size):
            up = {**params, k: v.copy()}
            down = {**params, k: v.copy()}
            up[k].flat[i] += eps
            down[k].flat[i] -= eps
            g.flat[i] = (f(up) - f(down)) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize("name", ["layered", "supergraph"])
def test_gradients_match_finite_differences(name: str) -> None:
    space = example(name)
    rng = np.random.default_rng(7)
    params = random_params(space, rng)
    for _ in range(3):
        d = space.sample(rng, params).decisions
        exact = space.grad_log_prob(d, params)
        numeric = numeric_gradient(lambda p, d=d: space.log_prob(d, p), params)
        for k in params:
            np.testing.assert_allclose(exact[k], numeric[k], atol=1e-6)
    exact = space.grad_entropy(params)
    numeric = numeric_gradient(space.entropy, params)
    for k in params:
        np.testing.assert_allclose(exact[k], numeric[k], atol=1e-6)


def test_probabilities_round_trip() -> None:
    space = example("layered")
    params = random_params(space, np.random.default_rng(2), scale=2.0)
    probs = space.probabilities(params)
    back = space.params_from_probabilities(probs)
    assert flat(space.probabilities(back)) == pytest.approx(flat(probs), rel=1e-9)
    for k, v in params.items():  # logits are determined up to a shift per softmax block
        shift = v - back[k]
        np.testing.assert_allclose(shift, shift.mean() if v.size > 1 else 0.0, atol=1e-9)
    # A partial update (as an LLM might return it) keeps the other blocks.
    partial = space.params_from_probabilities({"cascade.include": 0.9}, base=params)
    assert space.probabilities(partial)["cascade.include"] == pytest.approx(0.9)
    np.testing.assert_array_equal(partial["width"], params["width"])
    # Weights are normalized; 0 and 1 are kept off the edges so that logits stay finite.
    edge = space.params_from_probabilities(
        {"width": {"1": 2, "2": 2, "3": 0, "5": 0}, "cascade.include": 1.0}, base=params
    )
    assert all(np.isfinite(v).all() for v in edge.values())
    assert space.probabilities(edge)["width"]["1"] == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"widht": {}}, "widht: unknown decision; valid decisions: 'width',"),
        ({"width": {"1": 1.0}}, "width: no probability for option(s) '2', '3', '5'"),
        ({"width": {"1": 1, "2": 0, "3": 0, "4": 0}}, "width.4: unknown option; valid options:"),
        ({"width": {"1": 1, "2": -1, "3": 0, "5": 0}}, "width.2: expected a probability >= 0"),
        ({"cascade.include": 1.5}, "cascade.include: expected a probability between 0 and 1"),
    ],
)
def test_bad_probabilities_name_the_decision(update: dict[str, Any], message: str) -> None:
    space = example("layered")
    with pytest.raises(ag.GraphValidationError) as info:
        space.params_from_probabilities(update, base=space.init_params())
    assert str(info.value).startswith(message)
    # Without a base, every decision needs its probabilities.
    with pytest.raises(ag.GraphValidationError, match=r"^width: no probabilities for 'width',"):
        space.params_from_probabilities({"cascade.include": 0.5})


def test_decision_vectors_are_checked() -> None:
    space = loads_space(SMALL_LAYERED)
    params = space.init_params()
    with pytest.raises(SpaceError, match="tuple of 6 ints"):
        space.log_prob((0, 0), params)
    with pytest.raises(SpaceError, match="decision 'refine' is 0; it is not asked here"):
        space.log_prob((0, 0, 0, -1, 0, -1), params)
    with pytest.raises(SpaceError, match="decision 'width' is 3; it is asked here"):
        space.decisions_to_spec((3, 0, -1, -1, 0, -1))
    with pytest.raises(SpaceError, match="params have no block 'width'"):
        space.log_prob((0, 0, -1, -1, 0, -1), {k: v for k, v in params.items() if k != "width"})


def test_mode_and_choices() -> None:
    space = loads_space(SMALL_LAYERED)
    params = space.init_params()
    assert space.describe(space.mode(params)) == {"width": 1, "rounds": 0, "cascade.include": False}
    assert space.choices() == [
        ("width", 3),
        ("rounds", 2),
        ("refine", 2),
        ("aggregator", 2),
        ("cascade.include", 2),
        ("models.critic", 2),
    ]
    for d in space.enumerate():
        assert space.decisions_from_choices([max(c, 0) for c in d]) == d


# --- supergraph repair --------------------------------------------------------------------


def test_supergraph_repair_is_deterministic_and_documented() -> None:
    space = loads_space(SMALL_SUPERGRAPH)
    names = [s.name for s in space.sites]

    def spec(**taken: int) -> ag.GraphSpec:
        choices = [taken.get(n.replace(".", "_"), 0) for n in names]
        return space.decisions_to_spec(space.decisions_from_choices(choices))

    # b is a critic whose only input (a) was left out: b is dropped; c (a vote) then has no
    # input and reads the nodes that feed no other: a.
    g = spec(nodes_b_include=1, nodes_b_role=1, nodes_b_inputs_a=0, nodes_c_inputs_a=0)
    assert list(g.nodes) == ["a", "c"] and g.nodes["c"].inputs == ("a",)
    # b kept as a proposer (it needs no input) but not read by c: b is pruned.
    g = spec(nodes_b_include=1, nodes_c_inputs_a=1, nodes_c_inputs_b=0)
    assert list(g.nodes) == ["a", "c"]
    # Every choice taken: a -> b (critic) -> c (synthesizer), and a -> c.
    g = spec(**{n.replace(".", "_"): 1 for n in names})
    assert {n: s.inputs for n, s in g.nodes.items()} == {"a": (), "b": ("a",), "c": ("a", "b")}
    assert g.nodes["c"].model == "small" and g.nodes["b"].role == "critic"


# --- every sample is a valid, runnable graph ----------------------------------------------


@pytest.mark.parametrize("name", ["layered", "supergraph"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_sample_builds_and_runs(name: str, data: st.DataObject) -> None:
    space = example(name)
    params = {
        k: np.array(
            data.draw(st.lists(st.floats(-4, 4), min_size=v.size, max_size=v.size)),
            dtype=np.float64,
        ).reshape(v.shape)
        for k, v in space.init_params().items()
    }
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    sample = space.sample(rng, params)
    assert sample.log_prob == pytest.approx(space.log_prob(sample.decisions, params))
    assert sample.log_prob <= 0.0
    check_graph(sample.spec)
    result = run_scripted(sample.spec)
    assert result.ok, result.failed
    assert result.answer == "4"


async def test_a_sample_runs_on_the_real_model(tmp_path: Path) -> None:
    """A sampled graph file, written out and loaded as `agentgraph run` loads it, answers
    on SmolLM2: one proposer, then the cascade's verifier and router."""
    space = example("layered")
    wanted = {"width": 1, "rounds": 0, "cascade.include": True, "models.proposer": "small"}
    choices = [s.labels.index(wanted[s.name]) if s.name in wanted else 0 for s in space.sites]
    spec = space.decisions_to_spec(space.decisions_from_choices(choices))
    assert {"propose_1", "check", "gate", "final"} <= set(spec.nodes)
    path = tmp_path / f"{spec.name}.yaml"
    path.write_text(ag.dumps_spec(spec))
    async with ag.load(path) as graph:
        result = await graph.arun("What is 3 + 4?", timeout_s=600)
    assert result.ok, result.failed
    assert result.answer and result.tokens > 0
