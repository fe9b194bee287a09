from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentgraph import Message, NodeContext

from ._common import Aggregator, score_of


class BestOf(Aggregator):
    """Best-of-N: its inputs are verifiers, each passing on the answer it judged; the
    answer with the highest ``data["score"]`` wins (the first among equals). Inputs
    without a score rank last. ``data["scores"]`` maps each input to its score."""

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
        data: dict[str, Any] = {"scores": scores, "score": scores[best.node]}
        if all(s is None for s in scores.values()):
            data["parse_error"] = (
                f"expected data['score'] on an input (a verifier); inputs: "
                f"{', '.join(repr(n) for n in scores)}"
            )
        return self.passing_on(best, **data)
