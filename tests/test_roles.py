"""The roles of agentgraph.roles on scripted models: prompts sent, parsing, the typed
message fields, routing and aggregation; roles run alone on a hand-built NodeContext;
plus the cascade example on the real local model."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from agentgraph.roles import Proposer, Router, Verifier
from agentgraph.roles._prompts import VARIANTS, default_prompt

import agentgraph as ag
from agentgraph import _registry

N = ag.NodeSpec
TASKS = ("text", "math", "multiple_choice", "code")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Q = "What is 3 + 4?"


def graph_of(
    nodes: dict[str, ag.NodeSpec], output: str, *, task: str = "text", **backends: Any
) -> ag.Graph:
    models = {name: ag.ModelSpec(backend="scripted") for name in backends}
    spec = ag.GraphSpec(models=models, nodes=nodes, output=output, task=task)  # type: ignore[arg-type]
    return ag.Graph(spec, backends=backends)


def keyed(replies: dict[str, str]) -> Callable[[ag.CompletionRequest], str]:
    """A responder replying by the first key found in the request's messages."""

    def respond(req: ag.CompletionRequest) -> str:
        sent = "\n".join(m.content for m in req.messages)
        return next(v for k, v in replies.items() if k in sent)

    return respond


def sent(result: ag.RunResult, node: str) -> tuple[str | None, str]:
    """The system and user messages of the node's (first) model call."""
    (req, *_) = [r.request for r in result.trace if r.node == node]
    system = next((m.content for m in req.messages if m.role == "system"), None)
    return system, req.messages[-1].content


def msg(result: ag.RunResult, node: str) -> ag.Message:
    return result.nodes[node].message


def data(result: ag.RunResult, node: str) -> dict[str, Any]:
    return dict(msg(result, node).data)


TYPED = ("candidate", "critique", "verdict", "score", "decision", "parse_error")


def typed(message: ag.Message) -> dict[str, Any]:
    """The typed role fields of ``message`` that are set, so that a comparison also
    catches a field set by mistake."""
    return {k: getattr(message, k) for k in TYPED if getattr(message, k) is not None}


def broken() -> ag.ScriptedBackend:
    return ag.ScriptedBackend("x", failures=[ValueError("boom")])


class Note(ag.Role):
    """A model-free role whose message has text but no answer."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"

    async def run(self, ctx: ag.NodeContext, inputs: Sequence[ag.Message]) -> ag.Message:
        return ag.Message(self.node, "note", text="just a note")


# ------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("task", "needle", "reply", "answer"),
    [
        ("math", "'Answer: <number>'", "So it is 1,000.", "1000"),
        ("multiple_choice", "'Answer: <letter>'", "I pick (b).", "B"),
        ("code", "```python", "Sure:\n```python\nprint(7)\n```", "print(7)"),
        ("text", "briefly", "  Seven.  ", "Seven."),
    ],
)
async def test_default_prompts_and_parsing_follow_the_graph_task(
    task: str, needle: str, reply: str, answer: str
) -> None:
    graph = graph_of(
        {"p": N(role="proposer", model="m")}, "p", task=task, m=ag.ScriptedBackend(reply)
    )
    result = await graph.arun(Q)
    system, user = sent(result, "p")
    assert user == Q
    assert system is not None and needle in system
    others = {"'Answer: <number>'", "'Answer: <letter>'", "```python"} - {needle}
    assert not any(o in system for o in others)
    assert result.answer == answer
    assert typed(msg(result, "p")) == {}


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("role", sorted(VARIANTS))
def test_default_prompts_use_only_their_roles_placeholders(role: str, constrained: bool) -> None:
    cls = _registry.roles.get(role)
    assert cls is not None
    for task in TASKS:
        for variant in VARIANTS[role]:  # type: ignore[index]
            kind: ag.TaskKind = task  # type: ignore[assignment]
            prompt = default_prompt(role, kind, variant, constrained=constrained)  # type: ignore[arg-type]
            for template in (prompt.system, prompt.user):
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
                assert fields <= cls.placeholders, (role, task, variant)
    with pytest.raises(
        ValueError, match="unknown prompt variant 'nope' for 'router'; valid: 'plain'"
    ):
        default_prompt("router", "text", "nope")


async def test_yaml_prompt_overrides_replace_the_defaults() -> None:
    text = """
task: math
models:
  m: {backend: scripted, options: {responses: ["Answer: 3"]}}
nodes:
  p: {role: proposer, model: m, system: "", prompt: "Q={question}"}
  c:
    role: critic
    model: m
    inputs: [p]
    system: Be harsh.
    prompt: "Judge {answer} for {question}; full reply: {response}"
output: c
"""
    result = await ag.loads(text).arun(Q)
    p = next(r for r in result.trace if r.node == "p").request.messages
    assert [(m.role, m.content) for m in p] == [("user", f"Q={Q}")]  # system "" sends none
    assert sent(result, "c") == ("Be harsh.", f"Judge 3 for {Q}; full reply: Answer: 3")


def test_unknown_placeholders_list_the_roles_own() -> None:
    text = """
models:
  m: {backend: scripted}
nodes:
  p: {role: proposer, model: m}
  c: {role: critic, model: m, inputs: [p], prompt: "Judge {candidates}"}
output: c
"""
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text)
    assert info.value.field == "nodes.c.prompt" and info.value.line == 6
    assert "{answer}, {others}, {question}, {response}" in str(info.value)


# ---------------------------------------------------------- proposer, critic


async def test_proposer_shows_only_the_answers_of_its_inputs() -> None:
    ag.register_role("note", Note)
    nodes = {
        "a": N(role="proposer", model="m"),
        "b": N(role="proposer", model="bad"),
        "note": N(role="note"),
        "p": N(role="proposer", model="m", inputs=("a", "b", "note")),
    }
    backend = ag.ScriptedBackend(keyed({"Other answers": "Answer: 42", "": "Answer: 41"}))
    result = await graph_of(nodes, "p", m=backend, bad=broken()).arun("q")
    assert sent(result, "p")[1] == "q\n\nOther answers to consider:\n1. 41"
    assert result.answer == "42"


async def test_parse_failures_are_recorded_not_raised() -> None:
    nodes = {"p": N(role="proposer", model="m")}
    result = await graph_of(nodes, "p", task="math", m=ag.ScriptedBackend("no idea")).arun(Q)
    assert result.ok and result.answer == "no idea"
    assert msg(result, "p").parse_error == (
        "expected a number (a last line 'Answer: <number>'); saw 'no idea'"
    )
    assert msg(result, "p").data == {}


async def test_propose_critique_revise() -> None:
    nodes = {
        "draft": N(role="proposer", model="m"),
        "critique": N(role="critic", model="m", inputs=("draft",)),
        "revise": N(role="proposer", model="m", inputs=("critique",)),
    }
    backend = ag.ScriptedBackend(
        keyed(
            {
                "You review answers": "3 + 4 is 7, not 8.",
                "Write an improved answer": "Answer: 7",
                "": "I think 3 + 4 = 8",
            }
        )
    )
    result = await graph_of(nodes, "revise", task="math", m=backend).arun(Q)
    system, user = sent(result, "critique")
    assert system is not None and "Check each calculation" in system
    assert user == f"Question: {Q}\n\nProposed answer: 8\n\nWhat is wrong with it, if anything?"
    critique = msg(result, "critique")
    assert critique.answer == "8"  # the criticised candidate, passed on
    assert typed(critique) == {"critique": "3 + 4 is 7, not 8.", "candidate": "draft"}
    assert critique.origin == "draft" and critique.data == {}
    assert sent(result, "revise")[1] == (
        f"{Q}\n\nPrevious answer:\n1. 8\n\nCritique:\n- on answer 1: 3 + 4 is 7, not 8.\n\n"
        "Write an improved answer."
    )
    assert result.answer == "7"


async def test_critic_judges_its_first_successful_input_and_compares_the_rest() -> None:
    nodes = {
        "a": N(role="proposer", model="bad"),
        "b": N(role="proposer", model="m"),
        "c": N(role="proposer", model="m2"),
        "crit": N(role="critic", model="m", inputs=("a", "b", "c")),
    }
    m = ag.ScriptedBackend(keyed({"You review": "fine", "": "Answer: 5"}))
    result = await graph_of(
        nodes, "crit", task="math", m=m, m2=ag.ScriptedBackend("Answer: 6"), bad=broken()
    ).arun(Q)
    assert sent(result, "crit")[1] == (
        f"Question: {Q}\n\nProposed answer: 5\n\nOther answers, for comparison:\n1. 6\n\n"
        "What is wrong with it, if anything?"
    )
    assert msg(result, "crit").candidate == "b"


async def test_synthesizer_reads_critiques_tied_to_their_answers() -> None:
    nodes = {
        "a": N(role="proposer", model="a"),
        "b": N(role="proposer", model="b"),
        "crit_b": N(role="critic", model="c", inputs=("b",)),
        "final": N(role="synthesizer", model="c", inputs=("a", "b", "crit_b")),
    }
    c = ag.ScriptedBackend(keyed({"Candidate answers": "Answer: 7", "": "8 is off by one."}))
    result = await graph_of(
        nodes,
        "final",
        task="math",
        a=ag.ScriptedBackend("Answer: 7"),
        b=ag.ScriptedBackend("Answer: 8"),
        c=c,
    ).arun(Q)
    # b's answer is shown once though both b and its critic carry it
    assert sent(result, "final")[1] == (
        f"Question: {Q}\n\nCandidate answers:\n1. 7\n2. 8\n\nCritiques:\n"
        "- on answer 2: 8 is off by one.\n\nWrite the best final answer."
    )
    assert result.answer == "7"


# ------------------------------------------------------------------ verifier


@pytest.mark.parametrize(
    ("reply", "verdict", "score", "error"),
    [
        ("Verdict: correct\nScore: 0.9", True, 0.9, False),
        ("Verdict: incorrect\nScore: 2/10", False, 0.2, False),
        ("Yes, that is right.", True, 1.0, False),
        ("I like turtles", False, 0.0, True),
    ],
)
async def test_verifier_judges_and_passes_the_answer_on(
    reply: str, verdict: bool, score: float, error: bool
) -> None:
    nodes = {"p": N(role="proposer", model="p"), "v": N(role="verifier", model="v", inputs=("p",))}
    result = await graph_of(
        nodes, "v", task="math", p=ag.ScriptedBackend("Answer: 7"), v=ag.ScriptedBackend(reply)
    ).arun(Q)
    assert result.ok and result.answer == "7"
    got = msg(result, "v")
    assert (got.verdict, got.score, got.candidate) == (verdict, score, "p")
    assert (got.parse_error is not None) is error
    assert got.data == {}
    system, user = sent(result, "v")
    assert system is not None and "Verdict: correct or incorrect" in system
    assert user == f"Question: {Q}\n\nProposed answer: 7\n\nIs it correct?"


async def test_verifier_shows_code_as_a_code_block() -> None:
    nodes = {"p": N(role="proposer", model="p"), "v": N(role="verifier", model="v", inputs=("p",))}
    reply = "```python\ndef add(a, b):\n    return a + b\n```"
    result = await graph_of(
        nodes, "v", task="code", p=ag.ScriptedBackend(reply), v=ag.ScriptedBackend("Score: 1")
    ).arun("Write add.")
    assert (
        "Proposed code:\n```python\ndef add(a, b):\n    return a + b\n```" in sent(result, "v")[1]
    )


# -------------------------------------------------------------------- router


def cascade(threshold: float = 0.7, check: str = "verifier") -> dict[str, ag.NodeSpec]:
    params = {"threshold": threshold, "pass": ["final"], "fail": ["escalate"]}
    return {
        "draft": N(role="proposer", model="small"),
        "check": N(role=check, model="small", inputs=("draft",)),
        "gate": N(role="router", inputs=("check",), params=params),
        "escalate": N(role="proposer", model="big", inputs=("gate",)),
        "final": N(role="select", inputs=("gate", "escalate")),
    }


def small_model(score: float) -> ag.ScriptedBackend:
    return ag.ScriptedBackend(keyed({"You check whether": f"Score: {score}", "": "Answer: 8"}))


async def test_router_accepts_a_high_score_and_skips_the_escalation() -> None:
    big = ag.ScriptedBackend("Answer: 7")
    result = await graph_of(cascade(), "final", task="math", small=small_model(0.9), big=big).arun(
        Q
    )
    assert result.ok and result.answer == "8"
    assert result.skipped == ["escalate"] and big.calls == []
    gate = msg(result, "gate")
    assert gate.routes == frozenset({"final"})
    assert typed(gate) == {"score": 0.9, "decision": "pass", "candidate": "draft"}
    assert gate.data == {"threshold": 0.7}
    assert typed(msg(result, "final")) == {"candidate": "draft"}
    assert data(result, "final") == {"winner": "gate"}


async def test_router_escalates_a_low_score() -> None:
    big = ag.ScriptedBackend("Answer: 7")
    result = await graph_of(cascade(), "final", task="math", small=small_model(0.2), big=big).arun(
        Q
    )
    assert result.ok and result.answer == "7"
    assert result.skipped == []
    assert msg(result, "gate").decision == "fail"
    assert msg(result, "gate").text == "score 0.20 < threshold 0.7: fail"
    assert sent(result, "escalate")[1] == Q  # the router's message is no answer to show
    assert data(result, "final")["winner"] == "escalate"


async def test_router_passes_at_the_threshold_and_takes_the_best_score() -> None:
    nodes = cascade(threshold=0.5)
    nodes["check2"] = N(role="verifier", model="sure", inputs=("draft",))
    nodes["gate"] = nodes["gate"].model_copy(update={"inputs": ("check", "check2")})
    sure = ag.ScriptedBackend("Score: 0.5")
    graph = graph_of(nodes, "final", small=small_model(0.1), sure=sure, big=ag.ScriptedBackend("7"))
    result = await graph.arun(Q)
    gate = msg(result, "gate")
    assert (gate.decision, gate.score, gate.candidate) == ("pass", 0.5, "draft")


async def test_router_without_scores_escalates_and_says_why() -> None:
    graph = graph_of(
        cascade(check="proposer"), "final", small=small_model(1), big=ag.ScriptedBackend("7")
    )
    result = await graph.arun(Q)
    assert result.answer == "7"
    gate = msg(result, "gate")
    assert typed(gate) == {  # no score is passed on: later nodes must not trust a made-up one
        "decision": "fail",
        "candidate": "check",
        "parse_error": "expected a score on an input (a verifier); inputs: 'check'",
    }
    assert gate.text == "score 0.00 < threshold 0.7: fail"


class ModelRouter(Router):
    """The router with a model required, which the core accepts today."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "required"


def difficulty_graph(reply: str, role: str = "router_llm") -> tuple[ag.Graph, ag.ScriptedBackend]:
    ag.register_role("router_llm", ModelRouter)
    params = {"mode": "difficulty", "easy": ["small"], "hard": ["big"]}
    nodes = {
        "gate": N(role=role, model="m", params=params),
        "small": N(role="proposer", model="m", inputs=("gate",)),
        "big": N(role="proposer", model="m", inputs=("gate",)),
        "final": N(role="select", inputs=("small", "big")),
    }
    backend = ag.ScriptedBackend(keyed({"easy or hard": reply, "": "Answer: 1"}))
    return graph_of(nodes, "final", task="math", m=backend), backend


@pytest.mark.parametrize(
    ("reply", "skipped", "error"),
    [("Easy.", "big", False), ("Difficulty: hard", "small", False), ("Hmm?", "small", True)],
)
async def test_difficulty_router_asks_the_model(reply: str, skipped: str, error: bool) -> None:
    graph, _ = difficulty_graph(reply)
    result = await graph.arun(Q)
    assert result.ok and result.skipped == [skipped]
    gate = msg(result, "gate")
    assert gate.decision == {"big": "easy", "small": "hard"}[skipped]
    assert (gate.parse_error is not None) is error
    assert gate.score is None and gate.candidate is None and gate.data == {}
    system, user = sent(result, "gate")
    assert system is not None and system.endswith("Reply with one word: easy or hard.")
    assert user == f"Question: {Q}\n\nIs this question easy or hard?"


async def test_the_registered_router_takes_a_model_in_difficulty_mode() -> None:
    graph, _ = difficulty_graph("easy", role="router")
    assert (await graph.arun(Q)).skipped == ["big"]


ROUTED = """\
task: math
models:
  m: {backend: scripted, options: {responses: ["Answer: 1"]}}
nodes:
  draft: {role: proposer, model: m}
  check: {role: verifier, model: m, inputs: [draft]}
  gate:
    role: router
    inputs: [check]
    params: {threshold: 0.7, pass: [final], fail: [escalate]}
  escalate: {role: proposer, model: m, inputs: [gate]}
  final: {role: select, inputs: [gate, escalate]}
output: final
"""
PARAMS = "    params: {threshold: 0.7, pass: [final], fail: [escalate]}\n"


@pytest.mark.parametrize(
    ("new", "field", "needles"),
    [
        (
            "    params: {threshold: 1.5, pass: [final], fail: [escalate]}\n",
            "nodes.gate.params.threshold",
            ["less than or equal to 1"],
        ),
        (
            "    params: {pass: [final], fail: [escalate], colour: red}\n",
            "nodes.gate.params.colour",
            ["unknown param 'colour'", "valid params: mode, threshold, pass, fail, easy, hard"],
        ),
        (
            "    params: {mode: fuzzy, pass: [final], fail: [escalate]}\n",
            "nodes.gate.params.mode",
            ["'score' or 'difficulty'"],
        ),
        (
            "    params: {pass: [final], easy: [escalate]}\n",
            "nodes.gate.params.easy",
            ["'easy' does not apply to mode 'score'; it takes: threshold, pass, fail"],
        ),
        ("    params: {threshold: 0.7}\n", "nodes.gate.params", ["activates no successor"]),
        (
            "    params: {pass: [gate], fail: [escalate]}\n",
            "nodes.gate.params.pass[0]",
            ["cannot activate itself"],
        ),
        (
            "    params: {pass: [check], fail: [escalate]}\n",
            "nodes.gate.params.pass[0]",
            ["'check' is an input of 'gate', not a successor"],
        ),
        (
            "    params: {pass: [final, final], fail: [escalate]}\n",
            "nodes.gate.params.pass[1]",
            ["'final' is listed twice"],
        ),
        (
            "    params: {mode: difficulty, easy: [final], hard: [escalate]}\n",
            "nodes.gate.model",
            ["mode 'difficulty' asks a model", "set 'model'"],
        ),
        (PARAMS + "    model: m\n", "nodes.gate.model", ["calls no model"]),
        (PARAMS + "    prompt: '{question}'\n", "nodes.gate.prompt", ["calls no model"]),
    ],
)
def test_bad_router_params_are_located(new: str, field: str, needles: list[str]) -> None:
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(ROUTED.replace(PARAMS, new), source="g.yaml")
    err = info.value
    assert err.field == field
    assert err.source == "g.yaml" and err.line is not None and 7 <= err.line <= 11
    for needle in needles:
        assert needle in str(err)


def test_graphs_reject_routes_to_nodes_that_are_not_successors() -> None:
    with pytest.raises(ag.GraphValidationError, match="did you mean 'escalate'") as info:
        ag.loads(ROUTED.replace("fail: [escalate]", "fail: [escalte]"), source="g.yaml")
    assert info.value.field == "nodes.gate.params.fail[0]" and info.value.line == 10


def test_router_checks_its_successors_against_the_graph() -> None:
    spec = N(role="router", inputs=("check",), params={"pass": ["final"], "fail": ["escalte"]})
    router = Router("gate", spec)
    with pytest.raises(ag.GraphValidationError, match="did you mean 'escalate'") as info:
        router.check_successors(["final", "escalate"])
    assert info.value.path == ("nodes", "gate", "params", "fail", 0)
    router = Router("gate", N(role="router", inputs=("check",), params={"pass": ["final"]}))
    with pytest.raises(
        ag.GraphValidationError, match="successor 'escalate' is listed under neither pass nor fail"
    ):
        router.check_successors(["final", "escalate"])
    router.check_successors(["final"])
    with pytest.raises(ag.GraphValidationError, match="reads the scores of its inputs") as info:
        Router("gate", N(role="router", params={"pass": ["final"]}))
    assert info.value.field == "nodes.gate.inputs"


# --------------------------------------------------------------- aggregators


def voters(task: str, *replies: str | None) -> tuple[ag.Graph, list[str]]:
    names = [f"s{i}" for i in range(len(replies))]
    nodes = {n: N(role="proposer", model=n) for n in names}
    nodes["vote"] = N(role="vote", inputs=tuple(names))
    backends = {
        n: broken() if r is None else ag.ScriptedBackend(r)
        for n, r in zip(names, replies, strict=True)
    }
    return graph_of(nodes, "vote", task=task, **backends), names


@pytest.mark.parametrize(
    ("task", "replies", "answer", "votes", "winner"),
    [
        ("math", ["Answer: 7", "3 + 4 = 7.0", "Answer: 8", None], "7", {"7": 2, "8": 1}, "s0"),
        ("math", ["Answer: 8", "Answer: 7", "7", "Answer: 8.00"], "8", {"8": 2, "7": 2}, "s0"),
        ("text", ["Lyon", "Paris.", "paris"], "Paris.", {"lyon": 1, "paris": 2}, "s1"),
        ("multiple_choice", ["Answer: (b)", "C", "b."], "B", {"B": 2, "C": 1}, "s0"),
    ],
)
async def test_vote_takes_the_majority_of_normalized_answers(
    task: str, replies: list[str | None], answer: str, votes: dict[str, int], winner: str
) -> None:
    graph, _ = voters(task, *replies)
    result = await graph.arun(Q)
    assert result.ok and result.answer == answer
    got = data(result, "vote")
    assert got["votes"] == votes and list(got["votes"]) == list(votes)
    assert got["winner"] == winner
    assert got["agreement"] == max(votes.values()) / sum(votes.values())
    assert typed(msg(result, "vote")) == {"candidate": winner}


def judged(*scores: float | None) -> dict[str, Any]:
    """Proposers p<i> answering i, each judged by verifier v<i> with the given score."""
    nodes: dict[str, ag.NodeSpec] = {}
    backends: dict[str, Any] = {}
    for i, score in enumerate(scores):
        nodes[f"p{i}"] = N(role="proposer", model=f"m{i}")
        nodes[f"v{i}"] = N(role="verifier", model=f"m{i}", inputs=(f"p{i}",))
        reply = "Answer: x" if score is None else f"Verdict: correct\nScore: {score}"
        backends[f"m{i}"] = ag.ScriptedBackend(keyed({"You check": reply, "": f"Answer: {i}"}))
    nodes["best"] = N(role="best_of", inputs=tuple(f"v{i}" for i in range(len(scores))))
    return {"nodes": nodes, **backends}


async def test_best_of_takes_the_highest_verifier_score() -> None:
    setup = judged(0.4, 0.9, 0.9, 0.1)
    nodes = setup.pop("nodes")
    setup["m3"] = broken()  # a failed candidate is left out
    result = await graph_of(nodes, "best", task="math", **setup).arun(Q)
    assert result.answer == "1"  # the first of the two 0.9s
    assert typed(msg(result, "best")) == {"score": 0.9, "candidate": "p1"}
    assert data(result, "best") == {"scores": {"v0": 0.4, "v1": 0.9, "v2": 0.9}, "winner": "v1"}


async def test_best_of_without_scores_takes_the_first_and_says_why() -> None:
    nodes = {
        "a": N(role="proposer", model="a"),
        "b": N(role="proposer", model="b"),
        "best": N(role="best_of", inputs=("a", "b")),
    }
    backends: dict[str, Any] = {
        "a": ag.ScriptedBackend("Answer: 1"),
        "b": ag.ScriptedBackend("Answer: 2"),
    }
    result = await graph_of(nodes, "best", **backends).arun(Q)
    assert result.answer == "1"
    assert typed(msg(result, "best")) == {
        "candidate": "a",
        "parse_error": "expected a score on an input (a verifier); inputs: 'a', 'b'",
    }


async def test_first_finish_takes_the_first_success_and_cancels_the_rest() -> None:
    nodes = {
        "bad": N(role="proposer", model="bad"),
        "slow": N(role="proposer", model="slow"),
        "fast": N(role="proposer", model="fast"),
        "first": N(role="first_finish", inputs=("bad", "slow", "fast")),
    }
    result = await graph_of(
        nodes,
        "first",
        bad=broken(),
        slow=ag.ScriptedBackend("Answer: slow", latency_s=5.0),
        fast=ag.ScriptedBackend("Answer: fast", latency_s=0.02),
    ).arun(Q)
    assert result.answer == "fast" and result.wall_s < 1.0
    assert data(result, "first") == {"winner": "fast"}
    assert typed(msg(result, "first")) == {"candidate": "fast"}
    assert msg(result, "slow").lost_race
    assert result.nodes["slow"].status == "skipped"
    assert list(result.failed) == ["bad"]


@pytest.mark.parametrize(
    ("prefer", "fail_b", "answer"),
    [("last", False, "b"), ("first", False, "a"), ("last", True, "a")],
)
async def test_select_takes_the_last_or_first_successful_input(
    prefer: str, fail_b: bool, answer: str
) -> None:
    nodes = {
        "a": N(role="proposer", model="a"),
        "b": N(role="proposer", model="b"),
        "sel": N(role="select", inputs=("a", "b"), params={"prefer": prefer}),
    }
    b = broken() if fail_b else ag.ScriptedBackend("Answer: b")
    result = await graph_of(nodes, "sel", a=ag.ScriptedBackend("Answer: a"), b=b).arun(Q)
    assert result.answer == answer and data(result, "sel")["winner"] == answer


@pytest.mark.parametrize(
    ("node", "field", "needle"),
    [
        ("role: vote, inputs: [a], prompt: hi", "nodes.agg.prompt", "calls no model"),
        ("role: vote, inputs: [a], model: m", "nodes.agg.model", "calls no model"),
        ("role: vote, inputs: [a], params: {k: 1}", "nodes.agg.params", "takes no params"),
        (
            "role: select, inputs: [a], params: {prefer: middle}",
            "nodes.agg.params.prefer",
            "'last' or 'first'",
        ),
        (
            "role: select, inputs: [a], params: {prefr: last}",
            "nodes.agg.params.prefr",
            "valid params: prefer",
        ),
        ("role: vote", "nodes.agg.inputs", "'vote' chooses among the answers of its inputs"),
        ("role: best_of", "nodes.agg.inputs", "give node 'agg' at least one input"),
        ("role: verifier, model: m", "nodes.agg.inputs", "judges the answer of its input"),
        ("role: critic, model: m", "nodes.agg.inputs", "criticises the answer of its input"),
    ],
)
def test_bad_aggregator_nodes_are_located(node: str, field: str, needle: str) -> None:
    proposer = "  a: {role: proposer, model: m}\n" if "inputs" in node else ""
    text = (
        f"models:\n  m: {{backend: scripted}}\nnodes:\n{proposer}  agg: {{{node}}}\noutput: agg\n"
    )
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text, source="g.yaml")
    assert info.value.field == field
    assert info.value.line == text.splitlines().index(f"  agg: {{{node}}}") + 1
    assert needle in str(info.value)


# ------------------------------------------------ roles alone, no graph


async def test_a_proposer_runs_alone_on_a_hand_built_context() -> None:
    backend = ag.ScriptedBackend("2 + 2 makes 4.\nAnswer: 4")
    spec = N(role="proposer", model="m", sampling=ag.Sampling(temperature=0.0, seed=3))
    ctx = ag.NodeContext("What is 2 + 2?", node="p", spec=spec, task="math", backend=backend)
    out = await Proposer("p", spec).run(ctx, [])
    assert (out.node, out.role, out.answer, out.origin) == ("p", "proposer", "4", "p")
    assert typed(out) == {}
    (req,) = backend.calls
    assert [m.role for m in req.messages] == ["system", "user"]
    assert "'Answer: <number>'" in req.messages[0].content  # the math prompt, by ctx.task
    assert req.messages[1].content == "What is 2 + 2?"
    assert (req.sampling.temperature, req.sampling.seed) == (0.0, 3)  # the node's sampling


async def test_a_verifier_runs_alone_on_hand_built_inputs() -> None:
    spec = N(role="verifier", model="m", inputs=("c",))
    backend = ag.ScriptedBackend("Verdict: incorrect\nScore: 0.25")
    ctx = ag.NodeContext(Q, node="v", spec=spec, task="math", backend=backend)
    draft = ag.Message("draft", "proposer", text="3 + 4 = 8", answer="8")
    critic = ag.Message("c", "critic", text="wrong", answer="8", candidate="draft", critique="x")
    out = await Verifier("v", spec).run(ctx, [critic, draft])
    assert out.answer == "8" and out.origin == "draft"  # the judged answer, traced to its node
    assert typed(out) == {"candidate": "draft", "verdict": False, "score": 0.25}
    assert backend.calls[0].messages[-1].content == (
        f"Question: {Q}\n\nProposed answer: 8\n\nIs it correct?"
    )
    # a router in score mode reads the verifier's typed score, no model needed
    router_spec = N(role="router", inputs=("v",), params={"threshold": 0.5, "fail": ["big"]})
    gate = await Router("gate", router_spec).run(ag.NodeContext(Q, node="gate"), [out])
    assert typed(gate) == {"candidate": "draft", "score": 0.25, "decision": "fail"}
    assert gate.routes == frozenset({"big"}) and gate.answer == "8"


async def test_a_context_without_a_model_refuses_to_call_one() -> None:
    spec = N(role="proposer", model="m")
    with pytest.raises(ag.BackendError, match="node 'p' has no model"):
        await Proposer("p", spec).run(ag.NodeContext(Q, node="p", spec=spec), [])


# --------------------------------------------------------- the real model


async def test_cascade_example_on_smollm2_takes_one_consistent_path() -> None:
    spec = ag.load_spec(EXAMPLES / "cascade.yaml")
    for threshold in (spec.nodes["gate"].params["threshold"], 0.0):  # 0.0: always accept
        gate_spec = spec.nodes["gate"].model_copy(
            update={"params": {**spec.nodes["gate"].params, "threshold": threshold}}
        )
        sampling = ag.Sampling(max_tokens=16).over(spec.defaults.sampling)
        short = spec.defaults.model_copy(update={"sampling": sampling})
        variant = spec.model_copy(
            update={"nodes": {**spec.nodes, "gate": gate_spec}, "defaults": short}
        )
        async with ag.Graph(variant, base_dir=EXAMPLES) as graph:
            result = await graph.arun(Q, timeout_s=300)
        assert result.ok, result.failed
        check, gate = msg(result, "check"), msg(result, "gate")
        assert isinstance(check.verdict, bool)
        assert check.score is not None and 0.0 <= check.score <= 1.0
        assert (gate.score, gate.candidate) == (check.score, "draft")
        accepted = check.score >= threshold
        assert gate.decision == ("pass" if accepted else "fail")
        called = [r.node for r in result.trace]
        if accepted:
            assert gate.routes == frozenset({"final"})
            assert result.skipped == ["escalate"] and called == ["draft", "check"]
            assert result.answer == result.nodes["draft"].message.answer
        else:
            assert gate.routes == frozenset({"escalate"})
            assert result.skipped == [] and called == ["draft", "check", "escalate"]
            assert result.answer == result.nodes["escalate"].message.answer
        assert data(result, "final")["winner"] == ("gate" if accepted else "escalate")
        if threshold == 0.0:  # whatever the verifier said, the router must accept
            assert gate.decision == "pass" and result.skipped == ["escalate"]
            assert called == ["draft", "check"]
