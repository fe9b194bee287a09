"""Roles: what a node does with its inputs.

A role is constructed once per node when a graph is built (so bad parameters or prompt
placeholders fail at load time, located in the YAML file) and its ``run`` is awaited once
per execution with the messages of the node's predecessors, failed ones included.
"""

from __future__ import annotations

import abc
import difflib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pydantic

from ._errors import GraphValidationError
from ._spec import NodeSpec

if TYPE_CHECKING:
    from ._executor import NodeContext

__all__ = ["Message", "Role"]


@dataclass(slots=True)
class Message:
    """The output of one node. ``answer`` is the extracted final answer when the role has
    one; ``error`` is set when the node failed, ``skipped`` when a router turned it off.
    ``routes``, set by routers, names the successors that should run; the others see this
    message as skipped. Several successors read the same message: treat it as read-only."""

    node: str
    role: str
    text: str = ""
    answer: str | None = None
    error: BaseException | None = None
    skipped: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    routes: frozenset[str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.skipped

    @property
    def content(self) -> str:
        """What a successor should read: the extracted answer if any, else the text."""
        return self.answer if self.answer is not None else self.text


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
                err = exc.errors()[0]
                loc = tuple(err["loc"])
                names = [f.alias or n for n, f in self.Params.model_fields.items()]
                message = str(err["msg"])
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(str(loc[0]), names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    message = f"unknown param {loc[0]!r}{hint}"
                raise GraphValidationError(
                    f"{message}; valid params: {', '.join(names)}",
                    path=("nodes", node, "params", *loc),
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
