"""Constrained output: the request's constraint, the backend's declared kinds, and the
roles that ask for JSON replies where they need parseable output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import jsonschema
import pydantic
import pytest
from agentgraph.roles import Proposer, Router, Verifier
from agentgraph.roles._parse import parse_json_reply
from hypothesis import given, settings
from hypothesis import strategies as st

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
    with pytest.raises(ValueError, match="grammar must be a non-empty GBNF text, got ' '"):
        ag.OutputConstraint(grammar=" ")
    with pytest.raises(ValueError, match="json_schema is not plain JSON"):
        ag.OutputConstraint(json_schema={"maximum": float("nan")})
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
        latency_s: float = 0.0,
    ) -> None:
        super().__init__("schema:test", slots=8, constraints=constraints)
        self._replies = replies if callable(replies) else (lambda _r, text=replies: text)
        self._cut = cut
        self._latency = latency_s
        self.calls: list[ag.CompletionRequest] = []

    async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
        self.calls.append(request)
        if self._latency:
            await asyncio.sleep(self._latency)
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
    # A written trace keeps the constraint, so it reads back (and replays) under its key.
    first.trace.to_jsonl(tmp_path / "trace.jsonl")
    (back,) = ag.read_trace(tmp_path / "trace.jsonl")
    assert back.request.constraint == sent.constraint
    assert back.request.key() == record.request.key()


async def test_repeats_are_counted_per_constraint_and_in_flight_calls_shared(
    tmp_path: Path,
) -> None:
    ag.register_role("ask", Ask)
    backend = SchemaBackend('{"answer": "A"}')
    nodes = {
        "c1": ag.NodeSpec(role="ask", model="m", params={"kind": "json_schema"}),
        "c2": ag.NodeSpec(role="ask", model="m", params={"kind": "json_schema"}),
        "plain": ag.NodeSpec(role="ask", model="m"),
        "out": ag.NodeSpec(role="select", inputs=("c1", "c2", "plain")),
    }
    spec = ag.GraphSpec(models={"m": ag.ModelSpec(backend="scripted")}, nodes=nodes, output="out")
    result = await ag.Graph(spec, backends={"m": backend}).arun("q")
    indexes = {
        r.node: (r.request.sample_index, r.request.constraint is not None) for r in result.trace
    }
    # Two equal constrained calls are two samples; the unconstrained one is another call.
    assert sorted(indexes.values()) == [(0, False), (0, True), (1, True)]

    # Across runs sharing a cache, the same constrained calls in flight run once.
    slow = SchemaBackend('{"answer": "A"}', latency_s=0.05)
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    graph = ag.Graph(one_node(slow, kind="json_schema").spec, backends={"m": slow}, cache=cache)
    first, second = await asyncio.gather(graph.arun("q"), graph.arun("q"))
    assert first.ok and second.ok and len(slow.calls) == 1
    assert sorted(r.trace.records[0].cached for r in (first, second)) == [False, True]


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


# ------------------------------------------------------------------------------ roles

Q = "Which is largest? A) 2 B) 9 C) 4 D) 1"
CHOICES = ("2", "9", "4", "1")


def role_graph(
    nodes: dict[str, ag.NodeSpec],
    output: str,
    backend: ag.ModelBackend,
    task: ag.TaskKind = "multiple_choice",
) -> ag.Graph:
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")}, nodes=nodes, output=output, task=task
    )
    return ag.Graph(spec, backends={"m": backend})


def system_of(req: ag.CompletionRequest) -> str:
    return next(m.content for m in req.messages if m.role == "system")


def schema_of(req: ag.CompletionRequest) -> Mapping[str, Any]:
    assert req.constraint is not None and req.constraint.json_schema is not None
    return req.constraint.json_schema


async def test_a_multiple_choice_proposer_answers_in_json_rendered_as_text() -> None:
    backend = SchemaBackend('{"reasoning": "9 is the biggest.", "answer": "B"}')
    sampling = ag.Sampling(max_tokens=200)
    graph = role_graph(
        {"p": ag.NodeSpec(role="proposer", model="m", sampling=sampling)}, "p", backend
    )
    result = await graph.arun(Q, choices=CHOICES)
    out = result.nodes["p"].message
    assert (out.answer, out.parse_error) == ("B", None)
    assert out.text == "9 is the biggest.\n\nAnswer: B"
    (req,) = backend.calls
    schema = schema_of(req)
    assert list(schema["properties"]) == ["reasoning", "answer"]  # reasons before answering
    assert schema["properties"]["answer"] == {"enum": ["A", "B", "C", "D"]}
    assert schema["properties"]["reasoning"]["maxLength"] == 2 * (200 - 40)
    assert schema["additionalProperties"] is False
    assert '"reasoning"' in system_of(req) and "'Answer: <letter>'" not in system_of(req)


async def test_a_math_proposer_answer_is_read_in_canonical_form() -> None:
    backend = SchemaBackend('{"reasoning": "Ten hundreds.", "answer": "$1,000.00\\n"}')
    graph = role_graph({"p": ag.NodeSpec(role="proposer", model="m")}, "p", backend, "math")
    out = (await graph.arun("What is 10 * 100?")).nodes["p"].message
    assert (out.answer, out.parse_error) == ("1000", None)
    assert out.text == "Ten hundreds.\n\nAnswer: $1,000.00"
    schema = schema_of(backend.calls[0])
    assert schema["properties"]["answer"]["type"] == "string"
    assert "maxLength" not in schema["properties"]["reasoning"]  # no max_tokens, no bound


@pytest.mark.parametrize(
    ("max_tokens", "length"), [(4096, 1000), (540, 1000), (300, 520), (60, 40), (20, 16)]
)
async def test_reasoning_is_bounded_so_the_object_closes(max_tokens: int, length: int) -> None:
    backend = SchemaBackend('{"reasoning": "", "answer": "7"}')
    spec = ag.NodeSpec(role="proposer", model="m", sampling=ag.Sampling(max_tokens=max_tokens))
    out = (await role_graph({"p": spec}, "p", backend, "math").arun("3 + 4?")).nodes["p"]
    assert out.message.text == "Answer: 7"
    assert schema_of(backend.calls[0])["properties"]["reasoning"]["maxLength"] == length


@pytest.mark.parametrize("task", ["code", "text"])
async def test_code_and_text_answers_stay_unconstrained(task: ag.TaskKind) -> None:
    backend = SchemaBackend("```python\nprint(7)\n```")
    spec = ag.NodeSpec(role="proposer", model="m", params={"constrained": True})
    result = await role_graph({"p": spec}, "p", backend, task).arun("Print 7.")
    assert result.ok and backend.calls[0].constraint is None


async def test_constrained_false_keeps_the_text_format_on_a_capable_backend() -> None:
    backend = SchemaBackend("It is 9.\nAnswer: B")
    spec = ag.NodeSpec(role="proposer", model="m", params={"constrained": False})
    out = (await role_graph({"p": spec}, "p", backend).arun(Q)).nodes["p"].message
    (req,) = backend.calls
    assert req.constraint is None and "'Answer: <letter>'" in system_of(req)
    assert (out.answer, out.text, out.parse_error) == ("B", "It is 9.\nAnswer: B", None)


async def test_auto_stays_unconstrained_on_a_backend_without_json_schemas() -> None:
    backend = ag.ScriptedBackend("It is 9.\nAnswer: B")
    result = await role_graph({"p": ag.NodeSpec(role="proposer", model="m")}, "p", backend).arun(Q)
    assert result.answer == "B" and backend.calls[0].constraint is None
    grammar_only = SchemaBackend("It is 9.\nAnswer: B", constraints=frozenset({"grammar"}))
    graph = role_graph({"p": ag.NodeSpec(role="proposer", model="m")}, "p", grammar_only)
    assert (await graph.arun(Q)).answer == "B" and grammar_only.calls[0].constraint is None


async def test_constrained_true_fails_on_a_backend_that_cannot_apply_it() -> None:
    backend = ag.ScriptedBackend("Answer: B")
    nodes = {
        "p": ag.NodeSpec(role="proposer", model="m"),
        "v": ag.NodeSpec(role="verifier", model="m", inputs=("p",), params={"constrained": True}),
    }
    result = await role_graph(nodes, "v", backend).arun(Q)
    assert result.nodes["p"].message.answer == "B"  # auto: unconstrained, and it ran
    error = result.nodes["v"].message.error
    assert isinstance(error, ag.BackendError) and error.node == "v"
    assert "'json_schema' output constraint" in str(error) and "supports: none" in str(error)
    assert len(backend.calls) == 1  # the verifier's call was refused, not sent


def test_constrained_must_be_a_boolean_and_is_located() -> None:
    with pytest.raises(ag.GraphValidationError) as info:
        role_graph(
            {"p": ag.NodeSpec(role="proposer", model="m", params={"constrained": "maybe"})},
            "p",
            ag.ScriptedBackend("x"),
        )
    assert info.value.field == "nodes.p.params.constrained"
    with pytest.raises(ag.GraphValidationError, match="unknown param 'constraned'"):
        role_graph(
            {"p": ag.NodeSpec(role="proposer", model="m", params={"constraned": True})},
            "p",
            ag.ScriptedBackend("x"),
        )


async def test_a_cut_reply_falls_back_to_the_text_parser_and_says_so() -> None:
    backend = SchemaBackend('{"reasoning": "9 is the biggest, so the answer is (b', cut=True)
    out = await role_graph({"p": ag.NodeSpec(role="proposer", model="m")}, "p", backend).arun(Q)
    msg = out.nodes["p"].message
    assert msg.answer == "B"  # the text parser still finds it in the raw reply
    assert msg.text == '{"reasoning": "9 is the biggest, so the answer is (b'
    assert msg.parse_error is not None
    assert msg.parse_error.startswith("constrained reply unreadable as JSON: expected a JSON")

    verifier = SchemaBackend('{"reasoning": "The answer looks wrong', cut=True)
    nodes = {"v": ag.NodeSpec(role="verifier", model="m", inputs=("d",)), "d": DRAFT}
    out = await role_graph(nodes, "v", verifier, "math").arun("3 + 4?")
    judged = out.nodes["v"].message
    assert (judged.verdict, judged.score) == (False, 0.0)  # the keyword "wrong": incorrect
    assert judged.parse_error is not None and "unreadable as JSON" in judged.parse_error


DRAFT = ag.NodeSpec(role="proposer", model="m", params={"constrained": False})


def by_role(draft: str, judge: str) -> Callable[[ag.CompletionRequest], str]:
    """The draft's reply for the unconstrained proposer, ``judge`` for the other call."""
    return lambda req: judge if req.constraint is not None else draft


async def test_a_verifier_judges_in_json_rendered_as_verdict_and_score_lines() -> None:
    reply = '{"reasoning": "3 + 4 is 7, not 8.", "verdict": "incorrect", "score": 0.1}'
    backend = SchemaBackend(by_role("3 + 4 = 8\nAnswer: 8", reply))
    nodes = {"v": ag.NodeSpec(role="verifier", model="m", inputs=("d",)), "d": DRAFT}
    out = (await role_graph(nodes, "v", backend, "math").arun("3 + 4?")).nodes["v"].message
    assert (out.verdict, out.score, out.answer, out.candidate) == (False, 0.1, "8", "d")
    assert out.parse_error is None
    assert out.text == "3 + 4 is 7, not 8.\nVerdict: incorrect\nScore: 0.1"
    req = next(r for r in backend.calls if r.constraint is not None)
    schema = schema_of(req)
    assert list(schema["properties"]) == ["reasoning", "verdict", "score"]
    assert schema["properties"]["verdict"] == {"enum": ["correct", "incorrect"]}
    assert '"verdict"' in system_of(req) and "Verdict: correct or incorrect" not in system_of(req)


async def test_a_verifier_score_is_read_whatever_the_backend_let_through() -> None:
    # A backend may not enforce numeric bounds (llama.cpp grammars do not): clamp.
    class Loose(SchemaBackend):
        async def complete(self, request: ag.CompletionRequest) -> ag.Completion:
            return ag.Completion('{"reasoning": "", "verdict": "correct", "score": 3}')

    ctx = ag.NodeContext("q", node="v", task="math", backend=Loose(""))
    spec = ag.NodeSpec(role="verifier", model="m", inputs=("d",))
    draft = ag.Message("d", "proposer", text="7", answer="7")
    out = await Verifier("v", spec).run(ctx, [draft])
    assert (out.verdict, out.score, out.text) == (True, 1.0, "Verdict: correct\nScore: 1")


@pytest.mark.parametrize(("decision", "runs"), [("easy", "small"), ("hard", "big")])
async def test_a_router_decides_among_its_options_in_json(decision: str, runs: str) -> None:
    def reply(req: ag.CompletionRequest) -> str:
        if req.constraint is not None and "decision" in schema_of(req)["properties"]:
            return json.dumps({"decision": decision})
        return '{"reasoning": "", "answer": "B"}'

    backend = SchemaBackend(reply)
    params = {"mode": "difficulty", "easy": ["small"], "hard": ["big"]}
    nodes = {
        "gate": ag.NodeSpec(role="router", model="m", params=params),
        "small": ag.NodeSpec(role="proposer", model="m", inputs=("gate",)),
        "big": ag.NodeSpec(role="proposer", model="m", inputs=("gate",)),
        "out": ag.NodeSpec(role="select", inputs=("small", "big")),
    }
    result = await role_graph(nodes, "out", backend).arun(Q)
    gate = result.nodes["gate"].message
    assert (gate.decision, gate.text, gate.parse_error) == (decision, decision, None)
    assert gate.routes == frozenset({runs})
    assert result.nodes[runs].message.ok and result.answer == "B"
    req = backend.calls[0]
    assert schema_of(req)["properties"] == {"decision": {"enum": ["easy", "hard"]}}
    assert '{"decision": "easy"}' in system_of(req)  # the braces survive the template


async def test_a_router_reply_that_is_not_json_is_read_as_text() -> None:
    backend = SchemaBackend("Easy.", cut=True)
    params = {"mode": "difficulty", "easy": ["a"], "hard": ["b"]}
    ctx = ag.NodeContext("q", node="r", backend=backend)
    out = await Router("r", ag.NodeSpec(role="router", model="m", params=params)).run(ctx, [])
    assert out.decision == "easy" and out.routes == frozenset({"a"})
    assert out.parse_error is not None and out.parse_error.startswith("constrained reply")


def test_a_score_router_takes_no_constrained_param() -> None:
    params = {"pass": ["a"], "fail": ["b"], "constrained": True}
    with pytest.raises(ag.GraphValidationError, match="'constrained' does not apply to mode"):
        Router("r", ag.NodeSpec(role="router", inputs=("v",), params=params))


async def test_a_synthesizer_answers_multiple_choice_in_json() -> None:
    def reply(req: ag.CompletionRequest) -> str:
        if "Candidate answers" in req.messages[-1].content:
            return '{"reasoning": "Both say B.", "answer": "B"}'
        return '{"reasoning": "9.", "answer": "B"}'

    backend = SchemaBackend(reply)
    nodes = {
        "p1": ag.NodeSpec(role="proposer", model="m"),
        "p2": ag.NodeSpec(role="proposer", model="m"),
        "s": ag.NodeSpec(role="synthesizer", model="m", inputs=("p1", "p2")),
    }
    result = await role_graph(nodes, "s", backend).arun(Q, choices=CHOICES)
    out = result.nodes["s"].message
    assert (out.answer, out.text, out.parse_error) == ("B", "Both say B.\n\nAnswer: B", None)
    synth = next(r for r in backend.calls if "Candidate answers" in r.messages[-1].content)
    assert "1. B\n2. B" in synth.messages[-1].content  # the proposers' answers, as before
    assert schema_of(synth)["properties"]["answer"] == {"enum": ["A", "B", "C", "D"]}


async def test_a_user_prompt_is_kept_when_constrained() -> None:
    backend = SchemaBackend('{"reasoning": "", "answer": "A"}')
    spec = ag.NodeSpec(role="proposer", model="m", system="Be terse.", prompt="Q: {question}")
    await role_graph({"p": spec}, "p", backend).arun(Q)
    (req,) = backend.calls
    assert [m.content for m in req.messages] == ["Be terse.", f"Q: {Q}"]
    assert req.constraint is not None


@settings(max_examples=50, deadline=None)
@given(st.text(), st.sampled_from(["math", "multiple_choice"]))
def test_constrained_roles_never_fail_on_what_a_backend_returns(text: str, task: str) -> None:
    """Whatever comes back (a backend that did not hold the constraint, a cut reply), the
    roles read it or fall back, and only a reply that is the object goes unnoted."""
    kind: ag.TaskKind = task  # type: ignore[assignment]
    backend = SchemaBackend(text, cut=True)
    draft = ag.Message("d", "proposer", text="x", answer="x")
    params = {"mode": "difficulty", "easy": ["a"], "hard": ["b"]}
    roles: list[tuple[ag.Role, list[ag.Message]]] = [
        (Proposer("p", ag.NodeSpec(role="proposer", model="m")), []),
        (Verifier("v", ag.NodeSpec(role="verifier", model="m", inputs=("d",))), [draft]),
        (Router("r", ag.NodeSpec(role="router", model="m", params=params)), []),
    ]
    loop = asyncio.new_event_loop()  # pytest-asyncio leaks its loop under @given
    try:
        for role, inputs in roles:
            ctx = ag.NodeContext("q", node=role.node, task=kind, backend=backend)
            out = loop.run_until_complete(role.run(ctx, inputs))
            constraint = backend.calls[-1].constraint
            assert constraint is not None and constraint.json_schema is not None
            read = parse_json_reply(text, constraint.json_schema)
            assert (out.parse_error is None) <= (read.value is not None)
            if read.value is None:
                assert out.text == text and out.parse_error is not None
    finally:
        loop.close()
    assert out.decision in ("easy", "hard")
