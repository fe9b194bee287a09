"""Helpers shared by the roles: reading inputs, asking the model, recording parse errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from agentgraph import (
    ChatMessage,
    GraphValidationError,
    Message,
    NodeSpec,
    OutputConstraint,
    Role,
    TaskKind,
)

from ._constrain import read_answer
from ._parse import extract_answer
from ._prompts import LLMRole, default_prompt

if TYPE_CHECKING:
    from agentgraph import NodeContext


def chat(system: str, user: str) -> list[ChatMessage]:
    msgs = [ChatMessage("system", system)] if system else []
    msgs.append(ChatMessage("user", user))
    return msgs


def origin(msg: Message) -> str:
    """The node whose answer ``msg`` carries: critics, verifiers, routers and aggregators
    pass another node's answer on and name it in ``Message.candidate``."""
    return msg.origin


def candidates(inputs: Sequence[Message]) -> list[Message]:
    """Successful inputs that carry an answer, one per originating node, in input order.
    Router messages are left out: they carry a decision, not an answer of their own."""
    seen: set[str] = set()
    out = []
    for msg in inputs:
        if msg.ok and msg.answer is not None and msg.routes is None and origin(msg) not in seen:
            seen.add(origin(msg))
            out.append(msg)
    return out


def require_candidates(role: Role, inputs: Sequence[Message], purpose: str) -> list[Message]:
    """:func:`candidates`, raising (so the node fails, naming its inputs) when empty."""
    found = candidates(inputs)
    if not found:
        names = ", ".join(f"{m.node!r} ({'ok' if m.ok else 'not ok'})" for m in inputs)
        raise ValueError(f"node {role.node!r} found no answer {purpose} among its inputs: {names}")
    return found


def score_of(msg: Message) -> float | None:
    """A verifier's ``Message.score``, if ``msg`` carries one."""
    return msg.score


def format_answers(msgs: Sequence[Message], task: TaskKind) -> str:
    if task == "code":
        return "\n\n".join(
            f"Answer {i}:\n```python\n{m.content.strip()}\n```" for i, m in enumerate(msgs, 1)
        )
    return "\n".join(f"{i}. {m.content.strip()}" for i, m in enumerate(msgs, 1))


def format_critiques(inputs: Sequence[Message], shown: Sequence[Message]) -> str:
    """Critiques from critic inputs, each tied to the number of the answer it is about."""
    numbers = {origin(m): i for i, m in enumerate(shown, 1)}
    lines = []
    for msg in inputs:
        critique = msg.critique if msg.ok else None
        if critique is not None and critique.strip():
            n = numbers.get(origin(msg))
            lines.append(f"- on answer {n}: {critique.strip()}" if n else f"- {critique.strip()}")
    return "\n".join(lines)


async def ask(
    role: Role,
    ctx: NodeContext,
    name: LLMRole,
    variant: str,
    values: Mapping[str, str],
    constraint: OutputConstraint | None = None,
) -> str:
    """Render the node's templates (its own, else the task kind's defaults, asking for the
    JSON fields when the reply is constrained) and call its model once, under
    ``constraint`` if given; returns the reply text."""
    default = default_prompt(name, ctx.task, variant, constrained=constraint is not None)
    spec = role.spec
    system = spec.system if spec.system is not None else default.system
    user = spec.prompt if spec.prompt is not None else default.user
    messages = chat(role.render(system, **values), role.render(user, **values))
    done = await ctx.complete(messages, constraint=constraint)
    return done.text


def answer_message(
    role: Role,
    task: TaskKind,
    text: str,
    choices: Sequence[str] | None = None,
    constraint: OutputConstraint | None = None,
) -> Message:
    """The node's message with the answer extracted for ``task`` (a multiple-choice
    answer also by an option's text, given the ``choices``); an unreadable answer falls
    back to the parser's best guess and is noted in ``Message.parse_error``. A reply
    decoded under ``constraint`` is read as its JSON object and rendered back as text."""
    if constraint is not None:
        text, parsed = read_answer(text, task, choices, constraint)
    else:
        parsed = extract_answer(text, task, choices)
    return Message(
        role.node, role.spec.role, text=text, answer=parsed.value, parse_error=parsed.error
    )


def require_inputs(node: str, spec: NodeSpec, what: str) -> None:
    if not spec.inputs:
        raise GraphValidationError(
            f"role {spec.role!r} {what}; give node {node!r} at least one input",
            path=("nodes", node, "inputs"),
        )


def reject_prompts(node: str, spec: NodeSpec) -> None:
    """Model-free roles would silently ignore a prompt: say so instead."""
    for name in ("prompt", "system"):
        if getattr(spec, name) is not None:
            raise GraphValidationError(
                f"role {spec.role!r} calls no model, so {name!r} has no effect; remove it",
                path=("nodes", node, name),
            )


class Aggregator(Role):
    """Base of the model-free roles that pick or combine the answers of their inputs."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "none"
    placeholders: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, node: str, spec: NodeSpec) -> None:
        reject_prompts(node, spec)
        super().__init__(node, spec)
        require_inputs(node, spec, "chooses among the answers of its inputs")

    def passing_on(
        self,
        chosen: Message,
        *,
        score: float | None = None,
        parse_error: str | None = None,
        **data: Any,
    ) -> Message:
        """This node's message carrying ``chosen``'s answer (``candidate`` names the node
        it came from); ``data`` holds free-form extras, ``winner`` (the input chosen) by
        default."""
        data.setdefault("winner", chosen.node)
        return Message(
            self.node,
            self.spec.role,
            text=chosen.text,
            answer=chosen.answer,
            data=data,
            candidate=origin(chosen),
            score=score,
            parse_error=parse_error,
        )
