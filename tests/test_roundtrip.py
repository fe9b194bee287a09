"""YAML <-> GraphSpec <-> networkx.DiGraph round trips are the identity."""

from __future__ import annotations

from typing import Any

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

import agentgraph as ag

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True)
text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\x85")
    | st.sampled_from("\n\t {}:#'\""),
    max_size=40,
)
floats = st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def samplings(draw: st.DrawFn) -> ag.Sampling:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["temperature"] = draw(floats)
    if draw(st.booleans()):
        fields["max_tokens"] = draw(st.integers(1, 4096))
    if draw(st.booleans()):
        fields["seed"] = draw(st.none() | st.integers(-(2**31), 2**31))
    if draw(st.booleans()):
        fields["stop"] = tuple(draw(st.lists(text, max_size=3)))
    if draw(st.booleans()):
        fields["top_p"] = draw(st.floats(0.01, 1).map(lambda x: round(x, 3)))
    return ag.Sampling(**fields)


@st.composite
def specs(draw: st.DrawFn) -> ag.GraphSpec:
    model_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    models = {
        m: ag.ModelSpec(
            backend=draw(st.sampled_from(["llama_cpp", "scripted", "openai"])),
            **({"path": draw(text)} if draw(st.booleans()) else {}),
            **({"options": {"n_ctx": draw(st.integers(64, 8192))}} if draw(st.booleans()) else {}),
            **({"price": ag.Price(input_per_mtok=draw(floats))} if draw(st.booleans()) else {}),
        )
        for m in model_names
    }
    node_names = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    nodes: dict[str, ag.NodeSpec] = {}
    has_succ: set[str] = set()
    for i, name in enumerate(node_names):
        earlier = node_names[:i]
        inputs = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        )
        if i == len(node_names) - 1:  # the output: every dangling node feeds it
            inputs += [n for n in earlier if n not in has_succ and n not in inputs]
        has_succ.update(inputs)
        fields: dict[str, Any] = {"role": draw(st.sampled_from(["proposer", "synthesizer", "x"]))}
        if inputs:
            fields["inputs"] = tuple(inputs)
        if draw(st.booleans()):
            fields["model"] = draw(st.sampled_from(model_names))
        if draw(st.booleans()):
            fields["prompt"] = draw(text)
        if draw(st.booleans()):
            fields["sampling"] = draw(samplings())
        if draw(st.booleans()):
            fields["retry"] = ag.RetryPolicy(max_attempts=draw(st.integers(1, 9)))
        if draw(st.booleans()):
            fields["params"] = {"k": draw(st.integers() | text)}
        nodes[name] = ag.NodeSpec(**fields)
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["budget"] = ag.Budget(tokens=draw(st.integers(1, 10**6)))
    if draw(st.booleans()):
        extra["description"] = draw(text)
    if draw(st.booleans()):
        extra["defaults"] = ag.Defaults(sampling=draw(samplings()))
    return ag.GraphSpec(
        name=draw(names), models=models, nodes=nodes, output=node_names[-1], **extra
    )


@settings(max_examples=100, deadline=None)
@given(specs())
def test_yaml_round_trip_is_identity(spec: ag.GraphSpec) -> None:
    text = ag.dumps_spec(spec)
    back = ag.loads_spec(text)
    assert back == spec
    # the dump always states the schema version; everything else set stays set
    assert back.model_fields_set - {"schema_"} == spec.model_fields_set - {"schema_"}
    assert ag.dumps_spec(back) == text


@settings(max_examples=100, deadline=None)
@given(specs())
def test_networkx_round_trip_is_identity(spec: ag.GraphSpec) -> None:
    g = ag.spec_to_networkx(spec)
    assert isinstance(g, nx.DiGraph)
    assert nx.is_directed_acyclic_graph(g)
    assert set(g.nodes) == set(spec.nodes)
    back = ag.spec_from_networkx(g)
    assert back == spec
    assert ag.dumps_spec(back) == ag.dumps_spec(spec)


def test_networkx_edits_become_specs() -> None:
    spec = ag.loads_spec(
        "nodes:\n  a: {role: proposer}\n  b: {role: proposer}\n"
        "  c: {role: synthesizer, inputs: [b, a]}\noutput: c\n"
    )
    g = ag.spec_to_networkx(spec)
    assert [g.edges[e]["index"] for e in [("b", "c"), ("a", "c")]] == [0, 1]
    g.add_node("d", role="proposer")
    g.add_edge("d", "c")  # no index: goes after the indexed inputs
    edited = ag.spec_from_networkx(g)
    assert edited.nodes["c"].inputs == ("b", "a", "d")
    g.add_edge("c", "a")
    try:
        ag.spec_from_networkx(g)
    except ag.GraphValidationError as exc:
        assert "cycle" in str(exc)
    else:
        raise AssertionError("a cycle was accepted")
