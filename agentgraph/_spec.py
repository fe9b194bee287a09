"""The graph schema (``agentgraph/v1``): frozen, validated pydantic models.

A :class:`GraphSpec` that exists is valid: every reference resolves, the graph is a DAG
and every node contributes to the output. Unset fields mean "inherit": sampling settings
merge node over graph defaults by the fields a document actually sets, so an explicit
``seed: null`` on a node overrides a default seed while an absent one inherits it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, NoReturn, Self, TypeVar

import networkx as nx
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ._errors import GraphValidationError, did_you_mean

__all__ = [
    "SCHEMA_VERSION",
    "Budget",
    "Defaults",
    "GraphSpec",
    "LatencyProfile",
    "ModelSpec",
    "NodeSpec",
    "Price",
    "RetryPolicy",
    "Sampling",
    "TaskKind",
    "TimeoutPolicy",
]

SCHEMA_VERSION = "agentgraph/v1"
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # whole names only: fullmatch

TaskKind = Literal["text", "math", "multiple_choice", "code"]
"""What kind of answer the graph produces; roles choose default prompts and parsers by it."""


def _not_bool_or_str(value: Any) -> Any:
    # Pydantic's lax mode reads True as 1 and "48" as 48: in a graph file that hides a
    # mistake (YAML's yes/no/on/off are booleans too), so a number must be written as one.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value!r}")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got the string {value!r}")
    return value


_NUMBER = BeforeValidator(_not_bool_or_str)
Int = Annotated[int, _NUMBER]
"""An integer (an integral float such as ``3.0`` is read as 3); never a boolean or string."""
Float = Annotated[float, _NUMBER, Field(allow_inf_nan=False)]
"""A finite number (an integer is read as a float); never a boolean, string, NaN or
infinity: a limit of ``.inf`` would be no limit, and NaN compares false to everything."""
NonNegFloat = Annotated[Float, Field(ge=0)]
PosFloat = Annotated[Float, Field(gt=0)]


def _not_nan(value: float) -> float:
    if math.isnan(value):
        raise ValueError("expected a number, got NaN (null means no limit)")
    return value


Limit = Annotated[float, _NUMBER, AfterValidator(_not_nan)]
"""A budget limit: as :data:`Float`, but ``.inf`` is allowed and means no limit, as
``null`` does (the ledger treats them alike)."""
StrictBool = Annotated[bool, Field(strict=True)]
"""``true`` or ``false`` only (not 1, 0 or the string 'yes')."""


K = TypeVar("K")
V = TypeVar("V")


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError("specs are immutable; make a changed copy with model_copy(update=...)")


class FrozenDict(dict[K, V]):
    """The dicts inside a spec: reading works as for any dict, changing raises TypeError
    (a spec is shared by every graph built from it)."""

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[V]):
    """The lists inside a spec's free-form ``options`` and ``params``, read-only likewise."""

    __setitem__ = __delitem__ = append = extend = insert = remove = pop = clear = _refuse
    sort = reverse = _refuse
    __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(_freeze(v) for v in value)
    return value


def _frozen_dict(value: dict[str, Any]) -> dict[str, Any]:
    return _freeze(value)  # type: ignore[no-any-return]


class _Frozen(BaseModel):
    """Frozen, validated config. Equal (and hashed alike) when they set the same fields to
    the same values: an explicit ``temperature: null`` overrides a default, an unset one
    inherits it, so the two are not equal."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @functools.cached_property
    def _canonical(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        data.pop("schema", None)  # one possible value: whether it was written says nothing
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def fingerprint(self) -> str:
        """A content hash that ignores key order and formatting (sha256, hex)."""
        return hashlib.sha256(self._canonical.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Frozen)
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._canonical))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("_canonical", None)  # the content may have changed
        return copied

    def over(self, base: Self) -> Self:
        """These settings layered over ``base``: fields set here win, unset ones inherit."""
        if not self.model_fields_set:
            return base
        merged = {name: getattr(base, name) for name in base.model_fields_set}
        merged.update({name: getattr(self, name) for name in self.model_fields_set})
        return type(self)(**merged)


class Sampling(_Frozen):
    """Sampling settings; every field is optional and unset fields inherit."""

    temperature: NonNegFloat | None = None
    top_p: Annotated[Float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[Int, Field(ge=0)] | None = None
    min_p: Annotated[Float, Field(ge=0, le=1)] | None = None
    repeat_penalty: PosFloat | None = None
    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    seed: Int | None = None
    stop: tuple[str, ...] | None = None


class Price(_Frozen):
    """US dollars per million tokens."""

    input_per_mtok: NonNegFloat = 0.0
    output_per_mtok: NonNegFloat = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class RetryPolicy(_Frozen):
    """Retries of transient backend errors, with exponential backoff and jitter."""

    max_attempts: Annotated[Int, Field(ge=1)] = 3
    backoff_s: NonNegFloat = 0.25
    multiplier: Annotated[Float, Field(ge=1)] = 2.0
    max_backoff_s: NonNegFloat = 8.0
    jitter: Annotated[Float, Field(ge=0, le=1)] = 0.5

    def delay(self, attempt: int, u: float) -> float:
        """Backoff before attempt ``attempt + 1`` (``attempt`` >= 1); ``u`` uniform in [0, 1)."""
        if self.backoff_s == 0:
            return 0.0
        try:
            grown = self.backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:  # thousands of attempts, or a huge multiplier: the cap holds
            grown = math.inf
        return min(self.max_backoff_s, grown) * (1 - self.jitter * u)


class TimeoutPolicy(_Frozen):
    """``call_s`` limits one model call (then it is retried); ``node_s`` limits a whole node."""

    call_s: PosFloat | None = 120.0
    node_s: PosFloat | None = None


class Budget(_Frozen):
    """Hard limits for one run: critical-path latency, total tokens, total money."""

    latency_s: Annotated[Limit, Field(gt=0)] | None = None
    tokens: Annotated[Int, Field(ge=1)] | None = None
    cost_usd: Annotated[Limit, Field(ge=0)] | None = None


class LatencyProfile(_Frozen):
    """How long a model takes: ``overhead_s + prompt/prefill_tok_s + completion/decode_tok_s``.
    ``completion_tokens`` is the typical answer length seen when it was measured.
    ``batch_speedup``: how many calls' worth of work the model gets through in the time of
    one when its slots are all busy (a local model decoding 8 calls together on 2 cores:
    about 2, not 8); unset, each slot counts as a whole call."""

    overhead_s: NonNegFloat = 0.0
    prefill_tok_s: PosFloat
    decode_tok_s: PosFloat
    completion_tokens: NonNegFloat | None = None
    batch_speedup: PosFloat | None = None

    def predict(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            self.overhead_s
            + prompt_tokens / self.prefill_tok_s
            + completion_tokens / self.decode_tok_s
        )


class ModelSpec(_Frozen):
    """A model as a backend kind plus where to find it.

    ``path`` is a file path (relative paths resolve against the YAML file) or
    ``pkg:<distribution>/<file in package>``; ``model`` is a served model's name.
    ``options`` are validated by the backend itself; ``price`` and ``profile`` feed the
    budget ledger and :meth:`Graph.estimate` (a measured profile from the profile store is
    used when ``profile`` is unset).
    """

    backend: str
    path: str | None = None
    model: str | None = None
    options: Annotated[dict[str, Any], AfterValidator(_frozen_dict)] = Field(
        default_factory=FrozenDict
    )
    price: Price = Price()
    profile: LatencyProfile | None = None
    slots: Annotated[Int, Field(ge=1)] | None = None


class NodeSpec(_Frozen):
    """One role node. ``inputs`` are its predecessors, in the order its role sees them."""

    role: str
    model: str | None = None
    inputs: tuple[str, ...] = ()
    prompt: str | None = None
    system: str | None = None
    sampling: Sampling = Sampling()
    params: Annotated[dict[str, Any], AfterValidator(_frozen_dict)] = Field(
        default_factory=FrozenDict
    )
    retry: RetryPolicy | None = None
    timeout: TimeoutPolicy | None = None
    cache: StrictBool | None = None


class Defaults(_Frozen):
    sampling: Sampling = Sampling()
    retry: RetryPolicy = RetryPolicy()
    timeout: TimeoutPolicy = TimeoutPolicy()
    cache: StrictBool = True
    """Whether nodes use the call cache a run is given (``cache: false`` on a node opts out,
    e.g. to draw fresh samples)."""


class GraphSpec(_Frozen):
    """A whole graph document."""

    schema_: Literal["agentgraph/v1"] = Field(default="agentgraph/v1", alias="schema")
    name: str = "graph"
    description: str | None = None
    task: TaskKind = "text"
    models: Annotated[dict[str, ModelSpec], AfterValidator(_frozen_dict)] = Field(
        default_factory=FrozenDict
    )
    defaults: Defaults = Defaults()
    nodes: Annotated[dict[str, NodeSpec], AfterValidator(_frozen_dict)]
    output: str
    budget: Budget | None = None

    @model_validator(mode="after")
    def _check_references(self) -> GraphSpec:
        check_graph(self)
        return self

    def topological_order(self) -> list[str]:
        return list(nx.topological_sort(_dependency_graph(self.nodes)))


def _dependency_graph(nodes: Mapping[str, NodeSpec]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from((src, name) for name, node in nodes.items() for src in node.inputs)
    return g


def options_hint(kind: str, valid: Iterable[str], value: str) -> str:
    valid = list(valid)
    listed = ", ".join(repr(v) for v in valid) if valid else "(none defined)"
    return f"valid {kind}: {listed}{did_you_mean(value, valid)}"


def check_graph(spec: GraphSpec) -> None:
    """Raise :class:`GraphValidationError` (with the field path) for the first problem."""
    nodes, models = spec.nodes, spec.models
    if not nodes:
        raise GraphValidationError("a graph needs at least one node", path=("nodes",))
    for name in list(nodes) + list(models):
        if not _ID.fullmatch(name):
            where = "nodes" if name in nodes else "models"
            raise GraphValidationError(
                f"invalid name {name!r}: use letters, digits, '_' or '-', not starting "
                "with a digit",
                path=(where, name),
            )
    for name, node in nodes.items():
        if node.model is not None and node.model not in models:
            raise GraphValidationError(
                f"unknown model {node.model!r}; {options_hint('models', models, node.model)}",
                path=("nodes", name, "model"),
            )
        seen: set[str] = set()
        for i, src in enumerate(node.inputs):
            if src == name:
                raise GraphValidationError(
                    f"node {name!r} lists itself as an input", path=("nodes", name, "inputs", i)
                )
            if src not in nodes:
                valid = [n for n in nodes if n != name]
                raise GraphValidationError(
                    f"unknown node {src!r}; {options_hint('nodes', valid, src)}",
                    path=("nodes", name, "inputs", i),
                )
            if src in seen:
                raise GraphValidationError(
                    f"input {src!r} is listed twice", path=("nodes", name, "inputs", i)
                )
            seen.add(src)
    if spec.output not in nodes:
        raise GraphValidationError(
            f"output node {spec.output!r} is not defined; "
            + options_hint("nodes", nodes, spec.output),
            path=("output",),
        )
    cycle = _find_cycle(nodes)
    if cycle:
        loop = " -> ".join([*cycle, cycle[0]])
        src, dst = cycle[0], cycle[1 % len(cycle)]
        raise GraphValidationError(
            f"the graph has a cycle: {loop}",
            path=("nodes", dst, "inputs", nodes[dst].inputs.index(src)),
        )
    # Everything must feed the output: walk inputs back from it.
    feeding = {spec.output}
    todo = [spec.output]
    while todo:
        for src in nodes[todo.pop()].inputs:
            if src not in feeding:
                feeding.add(src)
                todo.append(src)
    for name in nodes:
        if name not in feeding:
            raise GraphValidationError(
                f"node {name!r} does not lead to the output node {spec.output!r}; "
                "connect it or remove it",
                path=("nodes", name),
            )


def _find_cycle(nodes: Mapping[str, NodeSpec]) -> list[str] | None:
    """The nodes of one cycle along the data flow (each feeds the next), or None: the first
    that a depth-first search from the nodes in document order meets, as networkx's
    ``find_cycle`` reports it. Iterative and linear, as graph files can be large."""
    succs: dict[str, list[str]] = {name: [] for name in nodes}
    for name, node in nodes.items():
        for src in node.inputs:
            succs[src].append(name)
    done: set[str] = set()
    for start in nodes:
        if start in done:
            continue
        path, on_path = [start], {start}
        todo = [iter(succs[start])]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                return path[path.index(nxt) :]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                todo.append(iter(succs[nxt]))
    return None
