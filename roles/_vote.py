from __future__ import annotations

from collections.abc import Sequence

from agentgraph import Message, NodeContext

from ._common import Aggregator, require_candidates
from ._parse import normalize_answer


class MajorityVote(Aggregator):
    """Self-consistency: the most common answer among its successful inputs, compared
    after normalising by task kind ("1,000" = "1000", "(b)" = "B", and with the options
    known "the kilometer" = "B" when B is "kilometer"). Ties go to the answer seen first
    in input order. ``data["votes"]`` counts each normalised answer."""

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        voters = require_candidates(self, inputs, "to vote on")
        keys = [normalize_answer(m.content, ctx.task, ctx.choices) for m in voters]
        votes: dict[str, int] = {}
        for key in keys:
            votes[key] = votes.get(key, 0) + 1
        top = max(votes, key=votes.__getitem__)  # dicts keep first-seen order: ties go first
        winner = voters[keys.index(top)]
        return self.passing_on(winner, votes=votes, agreement=votes[top] / len(voters))
