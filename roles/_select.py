from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pydantic

from agentgraph import Message, NodeContext

from ._common import Aggregator


class SelectParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    prefer: Literal["last", "first"] = "last"


class Select(Aggregator):
    """Joins the branches of a router: passes on the answer of the last (``prefer:
    first``: first) successful input in input order, so with ``inputs: [cheap, costly]``
    an escalated answer wins over the one it replaced."""

    Params = SelectParams

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        assert isinstance(self.params, SelectParams)
        ok = [m for m in inputs if m.ok]
        if not ok:
            raise ValueError(f"node {self.node!r} has no successful input")
        return self.passing_on(ok[-1] if self.params.prefer == "last" else ok[0])
