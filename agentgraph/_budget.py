"""The budget ledger of one run: reserve when a call gets its slot, settle when it returns.

A call reserves an upper bound of what it can use — its prompt's UTF-8 bytes plus a chat
template allowance (no byte-level or byte-fallback tokenizer makes more tokens than bytes)
plus ``max_tokens`` — and is refused with :class:`BudgetExceeded` if settled spend, the
reservations of calls in flight and its own would pass a limit. Reservations are taken only
once the call holds a backend slot, so calls queued behind a busy model hold nothing.

Settling charges what the call really used; the whole reservation when the backend could not
tell (no usage reported) or the attempt failed (a failed call may still have been served).
Without a budget and without ``max_tokens`` a reply of unknown usage is charged its bytes; a
failed attempt there is charged its prompt bound only, as nothing bounds what it produced.
A backend can use more than it was asked for (answering past ``max_tokens``,
over-reporting): then the spend passes the limit, the ledger records the ``overrun`` and
refuses every call after it.

Under a token or money budget a call without ``max_tokens`` is capped to a fair share of
what is left: the room divided by the model nodes still to run, so parallel calls do not
race for the whole budget. Cache hits bypass the ledger: they cost nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ._errors import BudgetExceeded
from ._model import CompletionRequest, Usage
from ._spec import Budget, Price

__all__ = ["Ledger", "Reservation", "prompt_token_bound"]

_PER_REQUEST = 48  # BOS, default system prompts some chat templates inject, generation cue
_PER_MESSAGE = 8  # role headers and separators of the chat template


def prompt_token_bound(request: CompletionRequest) -> int:
    return _PER_REQUEST + sum(_PER_MESSAGE + len(m.content.encode()) for m in request.messages)


@dataclass(slots=True)
class Reservation:
    prompt: int  # 0: not worked out yet (no budget to check it against)
    completion: int
    cost: float
    price: Price
    request: CompletionRequest

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


def _limit(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Ledger:
    """Spend of one run, checked against its budget (if any: without one it only counts)."""

    def __init__(self, budget: Budget | None) -> None:
        b = budget or Budget()
        self.token_limit = _limit(b.tokens)
        self.cost_limit = _limit(b.cost_usd)
        self.tokens = 0
        self.cost = 0.0
        self._held_tokens = 0
        self._held_cost = 0.0
        self.overrun: BudgetExceeded | None = None

    @property
    def active(self) -> bool:
        return self.token_limit is not None or self.cost_limit is not None

    def reserve(
        self, node: str, request: CompletionRequest, price: Price, share: int = 1
    ) -> tuple[Reservation, CompletionRequest]:
        """Hold the most this call can use; the request comes back with ``max_tokens``
        filled in when the budget had to cap it (to ``1/share`` of the room left)."""
        out = request.sampling.max_tokens
        if not self.active:  # nothing to check: the bound is worked out only if needed
            return Reservation(0, out or 0, 0.0, price, request), request
        prompt = prompt_token_bound(request)
        if self.overrun is not None:
            o = self.overrun
            raise BudgetExceeded(o.kind, spent=o.spent, limit=o.limit, node=node)
        spent_tokens = self.tokens + self._held_tokens
        spent_cost = self.cost + self._held_cost
        if out is None:
            room: list[float] = []
            if self.token_limit is not None:
                room.append(self.token_limit - spent_tokens - prompt)
            if self.cost_limit is not None and price.output_per_mtok > 0:
                left = self.cost_limit - spent_cost - price.cost(prompt, 0)
                room.append(left * 1e6 / price.output_per_mtok)
            if room:
                out = max(int(min(room) / max(share, 1)), 1)  # no room: the check refuses
                capped = request.sampling.model_copy(update={"max_tokens": out})
                request = replace(request, sampling=capped)
        held = Reservation(prompt, out or 0, price.cost(prompt, out or 0), price, request)
        checks = (
            ("tokens", spent_tokens, held.tokens, self.token_limit),
            ("cost", spent_cost, held.cost, self.cost_limit),
        )
        for kind, spent, need, limit in checks:
            if limit is not None and spent + need > limit:
                raise BudgetExceeded(kind, spent=spent, limit=limit, needed=need, node=node)
        self._held_tokens += held.tokens
        self._held_cost += held.cost
        return held, request

    def settle(
        self, held: Reservation, usage: Usage | None, reply: str | None = None
    ) -> tuple[Usage, float]:
        """Release a reservation and charge ``usage``, or the whole reservation when it is
        None (usage unknown, or the attempt failed). A reservation without a completion
        bound (no ``max_tokens``, no budget to cap it) stands for the ``reply``'s bytes, a
        bound on its tokens as the prompt's bytes are on the prompt's. Returns what was
        charged."""
        if self.active:
            self._held_tokens -= held.tokens
            self._held_cost -= held.cost
        if usage is not None:
            charged = usage
        else:
            prompt = held.prompt or prompt_token_bound(held.request)
            if held.completion == 0 and reply is not None:
                charged = Usage(prompt, len(reply.encode()))
            else:
                charged = Usage(prompt, held.completion)
        cost = held.price.cost(charged.prompt_tokens, charged.completion_tokens)
        self.tokens += charged.total_tokens
        self.cost += cost
        if self.overrun is None:
            for kind, spent, limit in (
                ("tokens", self.tokens, self.token_limit),
                ("cost", self.cost, self.cost_limit),
            ):
                if limit is not None and spent > limit:
                    self.overrun = BudgetExceeded(kind, spent=spent, limit=limit)
                    break
        return charged, cost
