"""The model protocol: requests, completions, and what a backend declares.

A backend turns a :class:`CompletionRequest` into a :class:`Completion`. Requests and
completions are plain slotted records (frozen dataclasses cost microseconds per call on
the executor's hot path); treat them as read-only. It declares how
many calls it can serve at once (``slots``) and which shared ``resource`` those slots
belong to: backends that share one loaded model share its slots. The executor owns
scheduling; a backend only answers calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ._spec import Price, Sampling

__all__ = [
    "BackendBase",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ModelBackend",
    "Usage",
    "sample_seed",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(slots=True)
class CompletionRequest:
    """One model call: the chat messages, fully resolved sampling, and which sample this is
    (``sample_index`` separates repeated samples of the same prompt)."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = field(default_factory=Sampling)
    sample_index: int = 0

    def key(self) -> str:
        """Content hash of the request (backend identity is added by whoever caches)."""
        payload = {
            "messages": [[m.role, m.content] for m in self.messages],
            "sampling": self.sampling.model_dump(mode="json"),
            "sample_index": self.sample_index,
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    """A model's answer. ``usage`` is None when the backend cannot tell what the call used
    (a server that reports no usage): the budget ledger then charges the call's whole
    reservation. ``latency_s`` is the model time of the call; for a cache hit, the time it
    took when it was made."""

    text: str
    usage: Usage | None = field(default_factory=Usage)
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None


def sample_seed(seed: int, sample_index: int) -> int:
    """The seed a backend sends for sample ``sample_index`` of a call seeded ``seed``.

    Sample 0 keeps the user's seed; later samples get a hash of both, so (seed 1, sample 1)
    and (seed 2, sample 0) are different draws, as their cache keys say. Fits in 31 bits,
    which every backend accepts."""
    if sample_index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{sample_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@runtime_checkable
class ModelBackend(Protocol):
    """What the runtime needs from a model backend."""

    @property
    def id(self) -> str:
        """Stable identity of the model behind this backend (kind + file hash or name)."""
        ...

    @property
    def slots(self) -> int:
        """How many calls may run at once on ``resource``."""
        ...

    @property
    def resource(self) -> Hashable:
        """Backends with equal ``resource`` share one pool of ``slots``."""
        ...

    @property
    def price(self) -> Price: ...

    async def aopen(self) -> None:
        """Load or connect ahead of the first call (idempotent)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


class BackendBase:
    """What every backend declares: identity, concurrency and price. Subclasses implement
    ``complete`` and, when they hold connections or loaded weights, ``aopen``/``aclose``.
    ``resource`` defaults to the backend itself (slots of its own)."""

    def __init__(
        self,
        id: str,
        *,
        slots: int,
        price: Price | None = None,
        resource: Hashable | None = None,
    ) -> None:
        self._id = id
        self._slots = slots
        self._price = price or Price()
        self._resource = resource if resource is not None else self

    @property
    def id(self) -> str:
        return self._id

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def resource(self) -> Hashable:
        return self._resource

    @property
    def price(self) -> Price:
        return self._price

    async def aopen(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} slots={self._slots}>"
