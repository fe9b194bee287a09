from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, Role

from ._common import chat, extract_answer, format_candidates

SYSTEM = (
    "You combine the answers of several assistants into one final answer. Prefer the answer "
    "that is best supported; fix mistakes you can see. End with 'Answer: <answer>'."
)
PROMPT = (
    "Question: {question}\n\nCandidate answers:\n{candidates}\n\nWhat is the best final answer?"
)


class Synthesizer(Role):
    """Reads the candidate answers of its inputs (failed inputs are left out) and writes
    one final answer."""

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "candidates"})

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        candidates = format_candidates(inputs)
        values = {"question": ctx.question, "candidates": candidates}
        user = self.render(self.spec.prompt or PROMPT, **values)
        system = self.render(self.spec.system or SYSTEM, **values)
        done = await ctx.complete(chat(system, user))
        return Message(self.node, self.spec.role, text=done.text, answer=extract_answer(done.text))
