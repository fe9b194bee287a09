"""Roles: what a node does with its inputs, and what it sees while it runs.

A role is constructed once per node when a graph is built (so bad parameters or prompt
placeholders fail at load time, located in the YAML file) and its ``run`` is awaited once
per execution with the messages of the node's predecessors, failed ones included.
"""

from __future__ import annotations

import abc
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pydantic

from ._errors import BackendError, GraphValidationError, validation_error
from ._model import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelBackend,
    OutputConstraint,
    constraints_of,
)
from ._spec import NodeSpec, Sampling, TaskKind

__all__ = ["Message", "NodeContext", "Role"]


@dataclass(slots=True)
class Message:
    """The output of one node. Several successors read the same message: treat it as
    read-only.

    - ``answer``: the extracted final answer, when the role has one; ``content`` is what
      a successor should read (the answer, else the text).
    - ``error``: set when the node failed; ``skipped``: a router turned it off, or it lost
      a ``first_finish`` race (``lost_race``).
    - ``candidate``: the node whose answer this message carries (critics, verifiers,
      routers and aggregators pass another node's answer on); None means this node's own.
    - ``critique`` (critics), ``verdict`` and ``score`` in [0, 1] (verifiers),
      ``decision`` (routers: the outcome taken) and ``routes`` (the successors that run;
      the others see this message as skipped).
    - ``parse_error``: what a role could not read in its model's reply (it fell back).
    - ``data``: anything else a role wants to pass on (e.g. vote counts).
    """

    node: str
    role: str
    text: str = ""
    answer: str | None = None
    error: BaseException | None = None
    skipped: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    routes: frozenset[str] | None = None
    candidate: str | None = None
    critique: str | None = None
    verdict: bool | None = None
    score: float | None = None
    decision: str | None = None
    parse_error: str | None = None
    lost_race: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped

    @property
    def content(self) -> str:
        """What a successor should read: the extracted answer if any, else the text."""
        return self.answer if self.answer is not None else self.text

    @property
    def origin(self) -> str:
        """The node whose answer this message carries."""
        return self.candidate if self.candidate is not None else self.node


Call = Callable[
    ["NodeContext", Sequence[ChatMessage], "Sampling | None", int, "OutputConstraint | None"],
    Awaitable[Completion],
]
"""The executor's side of :meth:`NodeContext.complete`: (context, messages, sampling,
sample index, constraint) -> completion."""


def check_constraint(constraint: OutputConstraint, backend: ModelBackend, node: str) -> None:
    """Refuse a constraint the backend cannot apply: sent anyway, the reply would come back
    unconstrained and the role would parse it as if it were not."""
    supported = constraints_of(backend)
    if constraint.kind not in supported:
        kinds = ", ".join(repr(k) for k in sorted(supported)) or "none"
        raise BackendError(
            f"node {node!r} asks for a {constraint.kind!r} output constraint, which backend "
            f"{backend.id!r} cannot apply (it supports: {kinds}); use a backend that "
            "applies it, or (built-in roles) set the node's param constrained: false",
            backend=backend.id,
            node=node,
        )


class NodeContext:
    """What a role sees while it runs: the question, its node, and a model call.

    In a run the executor builds it and :meth:`complete` goes through the call cache, the
    budget ledger, the backend's slots, retries, time limits and the trace. Build one
    yourself to unit-test a role; then :meth:`complete` calls ``backend`` directly::

        ctx = NodeContext("What is 2 + 2?", backend=ScriptedBackend("Answer: 4"))
        msg = await Proposer("p", NodeSpec(role="proposer", model="m")).run(ctx, [])
    """

    __slots__ = (
        "_backend",
        "_call",
        "_choices",
        "_node",
        "_question",
        "_sampling",
        "_spec",
        "_task",
    )

    def __init__(
        self,
        question: str,
        *,
        node: str = "node",
        spec: NodeSpec | None = None,
        task: TaskKind = "text",
        choices: Sequence[str] | None = None,
        sampling: Sampling | None = None,
        backend: ModelBackend | None = None,
        call: Call | None = None,
    ) -> None:
        self._question = question
        self._choices = tuple(choices) if choices is not None else None
        self._node = node
        self._spec = spec if spec is not None else NodeSpec(role="role")
        self._task: TaskKind = task
        self._sampling = sampling if sampling is not None else self._spec.sampling
        self._backend = backend
        self._call = call

    @property
    def question(self) -> str:
        return self._question

    @property
    def node(self) -> str:
        return self._node

    @property
    def spec(self) -> NodeSpec:
        return self._spec

    @property
    def sampling(self) -> Sampling:
        """The node's effective sampling settings (its own over the graph defaults)."""
        return self._sampling

    @property
    def task(self) -> TaskKind:
        """The kind of task the graph solves; roles pick default prompts and parsers by it."""
        return self._task

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The options of a multiple-choice question (option A first), when the caller
        gave them; parsers then also recognize an option named by its text."""
        return self._choices

    @property
    def constraints(self) -> frozenset[str]:
        """The :class:`OutputConstraint` kinds this node's backend applies (empty without a
        backend, or for a backend that declares none)."""
        return frozenset() if self._backend is None else constraints_of(self._backend)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        sampling: Sampling | None = None,
        sample_index: int = 0,
        constraint: OutputConstraint | None = None,
    ) -> Completion:
        """Call this node's model with ``messages``; ``sampling`` is layered over the node's
        settings, ``sample_index`` asks for a distinct sample of the same prompt, and
        ``constraint`` restricts the reply's shape. A constraint the backend cannot apply
        (see :attr:`constraints`) raises :class:`BackendError`."""
        if self._call is not None:
            return await self._call(self, messages, sampling, sample_index, constraint)
        if self._backend is None:
            raise BackendError(f"node {self._node!r} has no model", node=self._node)
        if constraint is not None:
            check_constraint(constraint, self._backend, self._node)
        eff = sampling.over(self._sampling) if sampling is not None else self._sampling
        return await self._backend.complete(
            CompletionRequest(tuple(messages), eff, sample_index, constraint)
        )


class Role(abc.ABC):
    """Base class of every role. Subclasses set ``model_use``, the prompt
    ``placeholders`` they fill, and optionally a pydantic ``Params`` model for
    ``node.params``."""

    model_use: ClassVar[Literal["required", "optional", "none"]] = "required"
    """Whether a node of this role must, may or must not name a model."""
    join: ClassVar[Literal["all", "any"]] = "all"
    """``any``: run at the first successful input; inputs still running then are
    cancelled when no other node waits for them."""
    placeholders: ClassVar[frozenset[str]] = frozenset({"question"})
    Params: ClassVar[type[pydantic.BaseModel] | None] = None

    def __init__(self, node: str, spec: NodeSpec) -> None:
        self.node = node
        self.spec = spec
        self.params: pydantic.BaseModel | None = None
        if self.Params is not None:
            try:
                self.params = self.Params.model_validate(spec.params)
            except pydantic.ValidationError as exc:
                raise validation_error(
                    exc, self.Params, path=("nodes", node, "params"), what="param"
                ) from None
        elif spec.params:
            raise GraphValidationError(
                f"role {spec.role!r} takes no params", path=("nodes", node, "params")
            )
        for name in ("prompt", "system"):
            template = getattr(spec, name)
            if template is not None:
                self._check_template(template, ("nodes", node, name))

    def _check_template(self, template: str, path: tuple[str, ...]) -> None:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise GraphValidationError(
                f"bad template ({exc}); write literal braces as '{{{{' and '}}}}'", path=path
            ) from None
        for name in fields:
            if name not in self.placeholders:
                valid = ", ".join("{" + p + "}" for p in sorted(self.placeholders))
                raise GraphValidationError(
                    f"unknown placeholder {{{name}}}; valid placeholders: {valid}", path=path
                )

    def check_successors(self, successors: Sequence[str]) -> None:
        """Called once the graph is known, with this node's successors; raise
        :class:`GraphValidationError` (path ``("nodes", node, ...)``) if they do not fit."""
        return None

    @staticmethod
    def render(template: str, **values: str) -> str:
        return template.format_map(values)

    @abc.abstractmethod
    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        """Produce this node's message from its predecessors' messages."""
