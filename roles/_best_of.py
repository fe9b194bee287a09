from __future__ import annotations

from collections.abc import Sequence

from agentgraph import Message, NodeContext

from ._common import Aggregator, score_of


class BestOf(Aggregator):
    """Best-of-N: its inputs are verifiers, each passing on the answer it judged; the
    answer with the highest ``score`` wins (the first among equals) and its score is
    this node's ``score``. Inputs without a score rank last; when none has one, the first
    wins and ``parse_error`` says so. ``data["scores"]`` maps each input to its score."""

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        pool = [m for m in inputs if m.ok and m.answer is not None]
        if not pool:
            names = ", ".join(repr(m.node) for m in inputs)
            raise ValueError(f"node {self.node!r} found no answer among its inputs: {names}")
        scores = {m.node: score_of(m) for m in pool}

        def rank(m: Message) -> float:
            score = scores[m.node]
            return -1.0 if score is None else score

        best = max(pool, key=rank)
        error = None
        if all(s is None for s in scores.values()):
            names = ", ".join(repr(n) for n in scores)
            error = f"expected a score on an input (a verifier); inputs: {names}"
        return self.passing_on(best, score=scores[best.node], parse_error=error, scores=scores)
