from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, NodeSpec, Role

from ._common import ask, format_answers, origin, require_candidates, require_inputs


class Critic(Role):
    """Critiques the answer of its first successful input (later inputs are shown for
    comparison, ``{others}``) and passes that answer on: ``answer`` is the criticised
    candidate's, ``critique`` the critique and ``candidate`` the criticised node.
    A proposer or synthesizer reading a critic revises with the critique in view."""

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "answer", "response", "others"})

    def __init__(self, node: str, spec: NodeSpec) -> None:
        super().__init__(node, spec)
        require_inputs(node, spec, "criticises the answer of its input")

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        target, *others = require_candidates(self, inputs, "to criticise")
        values = {
            "question": ctx.question,
            "answer": target.content.strip(),
            "response": target.text.strip(),
            "others": format_answers(others, ctx.task),
        }
        text = await ask(self, ctx, "critic", "others" if others else "plain", values)
        return Message(
            self.node,
            self.spec.role,
            text=text,
            answer=target.answer,
            candidate=origin(target),
            critique=text.strip(),
        )
