from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, Role

from ._common import answer_message, ask, candidates, format_answers, format_critiques
from ._constrain import ConstrainedParams, answer_constraint


class Proposer(Role):
    """Answers the question. With inputs, their answers are shown as context
    (``{context}``); with critic inputs it revises the criticised answer, seeing the
    critiques (``{critiques}``). Router messages and inputs without an answer are left out.
    On multiple-choice and math tasks the reply is constrained to ``{"reasoning",
    "answer"}`` (param ``constrained``, see ``agentgraph.roles``) and its ``text`` reads
    "<reasoning>\\n\\nAnswer: <answer>".
    """

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "context", "critiques"})
    Params = ConstrainedParams

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        shown = candidates(inputs)
        context = format_answers(shown, ctx.task)
        critiques = format_critiques(inputs, shown)
        variant = "revise" if critiques else "context" if context else "plain"
        values = {"question": ctx.question, "context": context, "critiques": critiques}
        constraint = answer_constraint(self, ctx)
        text = await ask(self, ctx, "proposer", variant, values, constraint)
        return answer_message(self, ctx.task, text, ctx.choices, constraint)
