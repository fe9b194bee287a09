"""Constrained output: the request's constraint, the backend's declared kinds, and the
roles that ask for JSON replies where they need parseable output."""

from __future__ import annotations

import pytest

import agentgraph as ag

# Keys computed before constraints existed: an unconstrained request must keep them, or
# every call cache written so far would miss.
PINNED_KEYS = [
    (
        ag.CompletionRequest((ag.ChatMessage("user", "What is 2+2?"),)),
        "8eb9edf1dfab009797fd37dc1bf9ba95bafd2bff4b394ebaba56fce14d5ef59d",
    ),
    (
        ag.CompletionRequest(
            (ag.ChatMessage("system", "s"), ag.ChatMessage("user", "q")),
            ag.Sampling(temperature=0.5, max_tokens=64),
            3,
        ),
        "c7a5b126406b6f86fb337167ab4da83775c1dcc11b1f96abe5e16db1baecd70e",
    ),
]

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["A", "B"]}}}


@pytest.mark.parametrize(("req", "key"), PINNED_KEYS)
def test_unconstrained_keys_are_unchanged(req: ag.CompletionRequest, key: str) -> None:
    assert req.constraint is None
    assert req.key() == key


def test_constraint_changes_the_key_and_schema_order_does_not() -> None:
    base = PINNED_KEYS[0][0]
    msgs = base.messages
    a = ag.CompletionRequest(msgs, constraint=ag.OutputConstraint(json_schema=SCHEMA))
    reordered = dict(reversed(list(SCHEMA.items())))
    b = ag.CompletionRequest(msgs, constraint=ag.OutputConstraint(json_schema=reordered))
    g = ag.CompletionRequest(msgs, constraint=ag.OutputConstraint(grammar='root ::= "A"'))
    g2 = ag.CompletionRequest(msgs, constraint=ag.OutputConstraint(grammar='root ::= "B"'))
    keys = {base.key(), a.key(), g.key(), g2.key()}
    assert len(keys) == 4
    assert a.key() == b.key()


def test_constraint_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one of json_schema or grammar"):
        ag.OutputConstraint()
    with pytest.raises(ValueError, match="exactly one of json_schema or grammar"):
        ag.OutputConstraint(json_schema=SCHEMA, grammar='root ::= "A"')
    with pytest.raises(ValueError, match="must be a mapping"):
        ag.OutputConstraint(json_schema=["not", "a", "schema"])  # type: ignore[arg-type]
    assert ag.OutputConstraint(json_schema=SCHEMA).kind == "json_schema"
    assert ag.OutputConstraint(grammar='root ::= "A"').kind == "grammar"


def test_backends_declare_constraint_kinds() -> None:
    assert ag.BackendBase("x", slots=1).constraints == frozenset()
    both = ag.BackendBase("x", slots=1, constraints=frozenset({"json_schema", "grammar"}))
    assert both.constraints == {"json_schema", "grammar"}
    with pytest.raises(ValueError, match=r"unknown constraint kinds \['regex'\].*valid kinds"):
        ag.BackendBase("x", slots=1, constraints=frozenset({"regex"}))
