from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from agentgraph import Message, NodeContext, Role

from ._common import chat, extract_answer, format_candidates

SYSTEM = (
    "You are a careful problem solver. Think briefly, then give the final answer "
    "on its own last line as 'Answer: <answer>'."
)
PROMPT = "{question}"
PROMPT_WITH_CONTEXT = "{question}\n\nOther attempts to consider:\n{context}"


class Proposer(Role):
    """Answers the question. If the node has inputs, their answers are shown as context
    (``{context}`` in a custom prompt)."""

    placeholders: ClassVar[frozenset[str]] = frozenset({"question", "context"})

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        context = format_candidates(inputs)
        template = self.spec.prompt or (PROMPT_WITH_CONTEXT if context else PROMPT)
        user = self.render(template, question=ctx.question, context=context)
        system = self.render(self.spec.system or SYSTEM, question=ctx.question, context=context)
        done = await ctx.complete(chat(system, user))
        return Message(self.node, self.spec.role, text=done.text, answer=extract_answer(done.text))
