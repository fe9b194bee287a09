"""The model protocol: requests, completions, and what a backend declares.

A backend turns a :class:`CompletionRequest` into a :class:`Completion`. Requests and
completions are plain slotted records (frozen dataclasses cost microseconds per call on
the executor's hot path); treat them as read-only. It declares how
many calls it can serve at once (``slots``) and which shared ``resource`` those slots
belong to: backends that share one loaded model share its slots, and which kinds of
:class:`OutputConstraint` it can apply (``constraints``). The executor owns scheduling; a
backend only answers calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ._spec import Price, Sampling

__all__ = [
    "BackendBase",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ModelBackend",
    "OutputConstraint",
    "Usage",
    "sample_seed",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


ConstraintKind = Literal["json_schema", "grammar"]
CONSTRAINT_KINDS: frozenset[str] = frozenset({"json_schema", "grammar"})


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """A shape the model's reply must take, applied while decoding: a JSON schema, or a
    llama.cpp GBNF grammar. Exactly one is set. Backends declare which kinds they apply
    (``BackendBase.constraints``); the executor refuses a request whose backend cannot
    apply its constraint rather than send it unconstrained.

    Equal constraints (a schema's key order aside) hash equal and share a cache key."""

    json_schema: Mapping[str, Any] | None = None
    grammar: str | None = None
    # Computed once: the cache key and the executor's sample bookkeeping both read it.
    _canonical: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if (self.json_schema is None) == (self.grammar is None):
            raise ValueError(
                "OutputConstraint needs exactly one of json_schema or grammar, got "
                f"json_schema={self.json_schema!r}, grammar={self.grammar!r}"
            )
        if self.grammar is not None:
            if not isinstance(self.grammar, str) or not self.grammar.strip():
                raise ValueError(
                    f"OutputConstraint grammar must be a non-empty GBNF text, got {self.grammar!r}"
                )
            canonical = self.grammar
        else:
            if not isinstance(self.json_schema, Mapping):
                raise ValueError(
                    "OutputConstraint json_schema must be a mapping (a JSON schema object), "
                    f"got {self.json_schema!r}"
                )
            try:
                canonical = json.dumps(
                    self.json_schema, sort_keys=True, separators=(",", ":"), allow_nan=False
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"OutputConstraint json_schema is not plain JSON ({exc}): {self.json_schema!r}"
                ) from None
        object.__setattr__(self, "_canonical", canonical)

    @property
    def kind(self) -> ConstraintKind:
        """``"json_schema"`` or ``"grammar"``: what a backend must support to apply it."""
        return "json_schema" if self.json_schema is not None else "grammar"

    def canonical(self) -> str:
        """The constraint as text that two equal constraints share: canonical JSON of the
        schema (sorted keys, no spaces), or the grammar itself. Part of the cache key."""
        return self._canonical

    def __hash__(self) -> int:  # a schema is a dict, unhashable; its canonical text is not
        return hash((self.kind, self._canonical))


@dataclass(slots=True)
class CompletionRequest:
    """One model call: the chat messages, fully resolved sampling, which sample this is
    (``sample_index`` separates repeated samples of the same prompt), and an optional
    ``constraint`` on the reply's shape."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = field(default_factory=Sampling)
    sample_index: int = 0
    constraint: OutputConstraint | None = None

    def key(self) -> str:
        """Content hash of the request (backend identity is added by whoever caches)."""
        payload: dict[str, Any] = {
            "messages": [[m.role, m.content] for m in self.messages],
            "sampling": self.sampling.model_dump(mode="json"),
            "sample_index": self.sample_index,
        }
        # Only when set, so the keys of unconstrained calls (every cache written before
        # constraints existed) stay what they were.
        if self.constraint is not None:
            payload["constraint"] = [self.constraint.kind, self.constraint.canonical()]
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


def constraints_of(backend: ModelBackend) -> frozenset[str]:
    """The constraint kinds ``backend`` applies; none for a backend that declares none."""
    supported: frozenset[str] = getattr(backend, "constraints", frozenset())
    return supported


class BackendBase:
    """What every backend declares: identity, concurrency, price and the output constraint
    kinds it applies (``constraints``, a subset of ``{"json_schema", "grammar"}``; empty by
    default). Subclasses implement ``complete`` and, when they hold connections or loaded
    weights, ``aopen``/``aclose``. ``resource`` defaults to the backend itself (slots of its
    own).

    ``constraints`` is not part of :class:`ModelBackend`, so third-party backends written
    before it still satisfy the protocol; readers use :func:`constraints_of`."""

    def __init__(
        self,
        id: str,
        *,
        slots: int,
        price: Price | None = None,
        resource: Hashable | None = None,
        constraints: frozenset[str] = frozenset(),
    ) -> None:
        unknown = set(constraints) - CONSTRAINT_KINDS
        if unknown:
            raise ValueError(
                f"backend {id!r} declares unknown constraint kinds {sorted(unknown)!r}; "
                f"valid kinds: {sorted(CONSTRAINT_KINDS)!r}"
            )
        self._id = id
        self._slots = slots
        self._price = price or Price()
        self._resource = resource if resource is not None else self
        self._constraints = frozenset(constraints)

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

    @property
    def constraints(self) -> frozenset[str]:
        """The :class:`OutputConstraint` kinds this backend applies while decoding."""
        return self._constraints

    async def aopen(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} slots={self._slots}>"
