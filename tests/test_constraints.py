"""Constrained output: the request's constraint, the backend's declared kinds, and the
roles that ask for JSON replies where they need parseable output."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import jsonschema
import pydantic
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


# ------------------------------------------------------------------ executor and context


class SchemaBackend(ag.BackendBase):
    """Applies JSON schemas, as far as a test can: every constrained reply it returns is
    checked against the request's schema, so a scripted reply that breaks it fails the
    test rather than pass for one the model could have given. ``cut`` replies are
    returned as a model stopped by max_tokens would (not checked)."""

    def __init__(
        self,
        replies: Callable[[ag.CompletionRequest], str] | str,
        *,
        constraints: frozenset[str] = frozenset({"json_schema"}),
        cut: bool = False,
    ) -> None:
        super().__init__("schema:test", slots=8, constraints=constraints)
        self._replies = replies if callable(replies) else (lambda _r, text=replies: text)
        self._cut = cut
        self.calls: list[ag.CompletionRequest] = []

    async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
        self.calls.append(request)
        text = self._replies(request)
        constraint = request.constraint
        if constraint is not None and not self._cut:
            assert constraint.kind in self.constraints
            assert constraint.json_schema is not None
            jsonschema.validate(json.loads(text), constraint.json_schema)
        finish = "length" if self._cut else "stop"
        return ag.Completion(text, ag.Usage(10, len(text.split())), finish_reason=finish)


class AskParams(pydantic.BaseModel):
    kind: Literal["json_schema", "grammar"] | None = None


class Ask(ag.Role):
    """Calls its model under the constraint in its params (a grammar or a schema)."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "required"
    Params = AskParams

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        assert isinstance(self.params, AskParams)
        kind = self.params.kind
        constraint = (
            None
            if kind is None
            else ag.OutputConstraint(grammar='root ::= "A"')
            if kind == "grammar"
            else ag.OutputConstraint(json_schema=SCHEMA)
        )
        done = await ctx.complete([ag.ChatMessage("user", ctx.question)], constraint=constraint)
        return ag.Message(self.node, "ask", text=done.text, data={"kinds": ctx.constraints})


def one_node(backend: ag.ModelBackend, **params: Any) -> ag.Graph:
    ag.register_role("ask", Ask)
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"a": ag.NodeSpec(role="ask", model="m", params=params)},
        output="a",
    )
    return ag.Graph(spec, backends={"m": backend})


async def test_the_constraint_reaches_the_backend_the_trace_and_the_cache(
    tmp_path: Path,
) -> None:
    backend = SchemaBackend('{"answer": "A"}')
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    graph = ag.Graph(
        one_node(backend, kind="json_schema").spec, backends={"m": backend}, cache=cache
    )
    first = await graph.arun("q")
    assert first.ok and first.output.text == '{"answer": "A"}'
    assert first.output.data["kinds"] == {"json_schema"}
    (sent,) = backend.calls
    assert sent.constraint == ag.OutputConstraint(json_schema=SCHEMA)
    (record,) = first.trace
    assert record.request.constraint == sent.constraint and not record.cached
    again = await graph.arun("q")
    assert again.trace.records[0].cached and len(backend.calls) == 1
    # The same call without the constraint is another call, keyed apart.
    plain = ag.Graph(one_node(backend).spec, backends={"m": backend}, cache=cache)
    other = await plain.arun("q")
    assert not other.trace.records[0].cached and backend.calls[-1].constraint is None
    assert other.trace.records[0].request.key() != record.request.key()


async def test_a_constraint_the_backend_cannot_apply_fails_the_node_naming_it() -> None:
    backend = SchemaBackend("A")
    result = await one_node(backend, kind="grammar").arun("q")
    error = result.nodes["a"].message.error
    assert isinstance(error, ag.BackendError) and error.node == "a"
    assert error.backend == "schema:test"
    text = str(error)
    assert "'grammar'" in text and "'a'" in text and "'schema:test'" in text
    assert "supports: 'json_schema'" in text
    assert backend.calls == []  # refused before it was sent, and not retried

    unconstrained = await one_node(ag.ScriptedBackend("x"), kind="json_schema").arun("q")
    error = unconstrained.nodes["a"].message.error
    assert isinstance(error, ag.BackendError) and "supports: none" in str(error)


async def test_a_hand_built_context_applies_and_checks_constraints() -> None:
    backend = SchemaBackend('{"answer": "B"}')
    ctx = ag.NodeContext("q", backend=backend)
    assert ctx.constraints == {"json_schema"}
    assert ag.NodeContext("q").constraints == frozenset()
    constraint = ag.OutputConstraint(json_schema=SCHEMA)
    done = await ctx.complete([ag.ChatMessage("user", "q")], constraint=constraint)
    assert done.text == '{"answer": "B"}' and backend.calls[0].constraint == constraint
    with pytest.raises(ag.BackendError, match="'grammar' output constraint"):
        await ctx.complete(
            [ag.ChatMessage("user", "q")], constraint=ag.OutputConstraint(grammar='root ::= "A"')
        )


async def test_backends_without_the_property_count_as_applying_none() -> None:
    class Bare:  # a third-party backend written before constraints existed
        id = "bare"
        slots = 1
        resource = "bare"
        price = ag.Price()

        async def aopen(self) -> None:
            return None

        async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
            return ag.Completion("x")

        async def aclose(self) -> None:
            return None

    bare = Bare()
    assert isinstance(bare, ag.ModelBackend)
    assert ag.NodeContext("q", backend=bare).constraints == frozenset()
    result = await one_node(bare, kind="json_schema").arun("q")
    assert isinstance(result.nodes["a"].message.error, ag.BackendError)
    assert (await one_node(bare).arun("q")).ok
