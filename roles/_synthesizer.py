from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, Role

from ._common import answer_message, ask, candidates, format_answers, format_critiques
from ._constrain import ConstrainedParams, answer_constraint


class Synthesizer(Role):
    """Reads the candidate answers of its inputs (failed ones left out) and the critiques
    of critic inputs, and writes one final answer, constrained on multiple-choice and math
    tasks as a proposer's is."""

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "candidates", "critiques"})
    Params = ConstrainedParams

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        shown = candidates(inputs)
        critiques = format_critiques(inputs, shown)
        values = {
            "question": ctx.question,
            "candidates": format_answers(shown, ctx.task),
            "critiques": critiques,
        }
        constraint = answer_constraint(self, ctx)
        variant = "critiques" if critiques else "plain"
        text = await ask(self, ctx, "synthesizer", variant, values, constraint)
        return answer_message(self, ctx.task, text, ctx.choices, constraint)
