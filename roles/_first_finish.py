from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from agentgraph import Message, NodeContext

from ._common import Aggregator


class FirstFinish(Aggregator):
    """Hedged requests: runs as soon as one input succeeds and passes its answer on;
    inputs still running then are cancelled when nothing else needs them."""

    join: ClassVar[Literal["all", "any"]] = "any"

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        # Inputs that had not finished are seen as skipped; if several finished before
        # this node started, input order breaks the tie.
        winner = next((m for m in inputs if m.ok), None)
        if winner is None:
            raise ValueError(f"node {self.node!r} started without a successful input")
        return self.passing_on(winner)
