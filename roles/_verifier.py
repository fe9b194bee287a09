from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, NodeSpec, Role

from ._common import ask, origin, require_candidates, require_inputs
from ._constrain import ConstrainedParams, read_verdict, use_constraint, verdict_schema
from ._parse import parse_verdict


class Verifier(Role):
    """Judges the answer of its first successful input and passes it on: ``answer`` is
    the candidate's, ``verdict`` (bool) and ``score`` (float in [0, 1]) the judgement,
    ``candidate`` the judged node. An unreadable reply counts as "incorrect", score 0,
    with ``parse_error`` set. The reply is constrained to ``{"reasoning", "verdict",
    "score"}`` (param ``constrained``, see ``agentgraph.roles``) and its ``text`` reads
    "<reasoning>\\nVerdict: correct\\nScore: 0.9"."""

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "answer", "response"})
    Params = ConstrainedParams

    def __init__(self, node: str, spec: NodeSpec) -> None:
        super().__init__(node, spec)
        require_inputs(node, spec, "judges the answer of its input")

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        target = require_candidates(self, inputs, "to judge")[0]
        values = {
            "question": ctx.question,
            "answer": target.content.strip(),
            "response": target.text.strip(),
        }
        if use_constraint(self, ctx):
            constraint = verdict_schema(ctx.sampling)
            reply = await ask(self, ctx, "verifier", "plain", values, constraint)
            text, parsed = read_verdict(reply, constraint)
        else:
            text = await ask(self, ctx, "verifier", "plain", values)
            parsed = parse_verdict(text)
        return Message(
            self.node,
            self.spec.role,
            text=text,
            answer=target.answer,
            candidate=origin(target),
            verdict=parsed.value.verdict,
            score=parsed.value.score,
            parse_error=parsed.error,
        )
