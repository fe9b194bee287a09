"""The budget ledger of one run: reserve before dispatch, settle after.

A call reserves an upper bound of what it can use — its prompt's UTF-8 bytes plus a chat
template allowance (no byte-level or byte-fallback tokenizer makes more tokens than bytes)
plus ``max_tokens`` — and is refused with :class:`BudgetExceeded` if settled spend, the
reservations of calls in flight and its own would pass a limit. So a run never goes over a
hard token or money budget. Under such a budget a call without ``max_tokens`` is capped to
what the budget has left. Cache hits bypass the ledger: they cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ._errors import BudgetExceeded
from ._model import CompletionRequest, Usage
from ._spec import Budget, Price

__all__ = ["Ledger", "prompt_token_bound"]

_PER_REQUEST = 32  # BOS, default system prompts some chat templates inject, generation cue
_PER_MESSAGE = 8  # role headers and separators of the chat template


def prompt_token_bound(request: CompletionRequest) -> int:
    return _PER_REQUEST + sum(_PER_MESSAGE + len(m.content.encode()) for m in request.messages)


@dataclass(slots=True)
class Reservation:
    tokens: int
    cost: float
    price: Price


_UNLIMITED = Reservation(0, 0.0, Price())


class Ledger:
    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget or Budget()
        self.tokens = 0
        self.cost = 0.0
        self._held_tokens = 0
        self._held_cost = 0.0

    @property
    def active(self) -> bool:
        return self.budget.tokens is not None or self.budget.cost_usd is not None

    def reserve(
        self, node: str, request: CompletionRequest, price: Price
    ) -> tuple[Reservation, CompletionRequest]:
        """Hold the most this call can use; the request comes back with ``max_tokens``
        filled in when the budget had to cap it."""
        if not self.active:
            return _UNLIMITED, request
        b = self.budget
        prompt = prompt_token_bound(request)
        out = request.sampling.max_tokens
        if out is None:
            room: list[float] = []
            if b.tokens is not None:
                room.append(b.tokens - self.tokens - self._held_tokens - prompt)
            if b.cost_usd is not None and price.output_per_mtok > 0:
                left = b.cost_usd - self.cost - self._held_cost - price.cost(prompt, 0)
                room.append(left * 1e6 / price.output_per_mtok)
            if room:
                out = max(int(min(room)), 1)  # no room at all: the check below refuses
                capped = request.sampling.model_copy(update={"max_tokens": out})
                request = replace(request, sampling=capped)
        need_tokens = prompt + (out or 0)
        need_cost = price.cost(prompt, out or 0)
        checks = (
            ("tokens", self.tokens + self._held_tokens, need_tokens, b.tokens),
            ("cost", self.cost + self._held_cost, need_cost, b.cost_usd),
        )
        for kind, spent, need, limit in checks:
            if limit is not None and spent + need > limit:
                raise BudgetExceeded(kind, spent=spent, limit=limit, needed=need, node=node)
        self._held_tokens += need_tokens
        self._held_cost += need_cost
        return Reservation(need_tokens, need_cost, price), request

    def settle(self, held: Reservation, usage: Usage | None) -> None:
        """Release a reservation and charge what the call really used (nothing if it
        failed: a failed attempt's usage is unknown)."""
        if held is _UNLIMITED:
            return
        self._held_tokens -= held.tokens
        self._held_cost -= held.cost
        if usage is not None:
            self.tokens += usage.total_tokens
            self.cost += held.price.cost(usage.prompt_tokens, usage.completion_tokens)
