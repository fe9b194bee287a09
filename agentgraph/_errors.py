"""The one exception tree of agentgraph.

::

    AgentGraphError
    ├── GraphValidationError(ValueError)      bad graph/YAML: .source .path .line .column
    ├── TaskError(ValueError)                 bad task set, reference or task file:
    │                                         .source .line .field
    ├── ModelNotFound(FileNotFoundError)      a model file or pkg: reference does not resolve
    ├── MissingDependency(ImportError)        an optional extra is not installed
    ├── SandboxError(RuntimeError)            the code sandbox cannot be set up here
    ├── CacheFileError(ValueError)            a call cache file is missing, damaged or not a
    │                                         cache: .path
    ├── BackendError                          a model call failed: .backend .node
    │   ├── TransientBackendError             worth retrying (overload, dropped connection)
    │   │   └── BackendTimeout(TimeoutError)  one call ran past its time limit
    │   ├── EmptyCompletion                   the model returned no text
    │   └── ReplayMiss(KeyError)              a replay backend has no record for a request
    ├── BudgetExceeded                        a call would overflow a hard budget:
    │                                         .kind .spent .limit .node
    ├── NodeTimeout(TimeoutError)             a node (all its attempts) ran past its limit: .node
    ├── UpstreamFailed                        every input of a node failed: .node .failed
    └── RunFailed                             raised by RunResult.raise_for_status(): .result

Every subclass also inherits the matching builtin, so ``except ValueError`` and
friends keep working for callers that do not know agentgraph.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "AgentGraphError",
    "BackendError",
    "BackendTimeout",
    "BudgetExceeded",
    "CacheFileError",
    "EmptyCompletion",
    "GraphValidationError",
    "MissingDependency",
    "ModelNotFound",
    "NodeTimeout",
    "ReplayMiss",
    "RunFailed",
    "SandboxError",
    "TaskError",
    "TransientBackendError",
    "UpstreamFailed",
]


def did_you_mean(value: str, valid: Iterable[str], n: int = 1) -> str:
    """``"; did you mean 'x'?"`` (up to ``n`` close matches), or ``""``: the one wording
    every error that names a wrong value uses."""
    close = difflib.get_close_matches(value, list(valid), n=n)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


class AgentGraphError(Exception):
    """Root of every error raised by agentgraph."""


class GraphValidationError(AgentGraphError, ValueError):
    """A graph, node or model definition is invalid.

    ``path`` is the field path inside the document (``("nodes", "b", "model")``);
    ``source``, ``line`` and ``column`` (1-based) locate it in a YAML file when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Sequence[str | int] = (),
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.path = tuple(path)
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self._render())

    @property
    def field(self) -> str:
        """The dotted field path, e.g. ``nodes.b.inputs[1]``."""
        return format_path(self.path)

    def _render(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source
            if self.line is not None:
                where += f":{self.line}:{self.column or 1}"
            where += ": "
        field = f"{self.field}: " if self.path else ""
        return f"{where}{field}{self.message}"


class TaskError(AgentGraphError, ValueError):
    """A task set, task reference or task file is invalid. ``source`` (a file or set
    name), ``line`` (1-based, in a file) and ``field`` locate the problem when known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source, self.line, self.field = source, line, field
        where = source or ""
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class ModelNotFound(AgentGraphError, FileNotFoundError):
    """A model file, or a ``pkg:<distribution>/<file>`` reference, does not resolve."""


class MissingDependency(AgentGraphError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class SandboxError(AgentGraphError, RuntimeError):
    """The sandbox for generated code cannot be set up here (not Linux; an interpreter the
    unprivileged user cannot read); never raised for what the program itself does."""


class CacheFileError(AgentGraphError, ValueError):
    """A call cache file cannot be used: it is missing (where it must exist), unreadable,
    damaged, truncated, or not an agentgraph call cache. ``path`` names the file; the
    message says what was found and how to start afresh (``rebuild=True``)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class BackendError(AgentGraphError):
    """A model backend call failed."""

    def __init__(self, message: str, *, backend: str | None = None, node: str | None = None):
        super().__init__(message)
        self.backend = backend
        self.node = node


class TransientBackendError(BackendError):
    """A failure that may succeed when retried (overload, rate limit, lost connection).
    ``retry_after_s`` is the server's own hint (``Retry-After``), honoured up to the retry
    policy's ``max_backoff_s``."""

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        node: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, backend=backend, node=node)
        self.retry_after_s = retry_after_s


class BackendTimeout(TransientBackendError, TimeoutError):
    """A single model call exceeded its time limit."""


class EmptyCompletion(BackendError):
    """The model produced no text; silence is never passed on as an answer."""


class ReplayMiss(BackendError, KeyError):
    """A replay backend was asked for a request it has no record of."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BudgetExceeded(AgentGraphError):
    """A call was refused (or a run cut) because it would overflow a hard budget.

    ``kind`` is ``"tokens"``, ``"cost"`` or ``"latency"``; ``spent`` is what had been used
    when it happened, ``limit`` the budget, ``needed`` what the refused call reserved."""

    def __init__(
        self,
        kind: str,
        *,
        spent: float,
        limit: float,
        needed: float = 0.0,
        node: str | None = None,
    ) -> None:
        self.kind = kind
        self.spent = spent
        self.limit = limit
        self.needed = needed
        self.node = node
        where = f"node {node!r}: " if node else ""
        extra = f" + {needed:g} needed" if needed else ""
        super().__init__(f"{where}{kind} budget exceeded: {spent:g} spent{extra} > limit {limit:g}")


class NodeTimeout(AgentGraphError, TimeoutError):
    """A node, with all its retries, ran past its time limit."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


class UpstreamFailed(AgentGraphError):
    """A node could not run because every one of its inputs failed."""

    def __init__(self, node: str, failed: Sequence[str]) -> None:
        names = ", ".join(repr(n) for n in failed)
        super().__init__(f"node {node!r}: every input failed ({names})")
        self.node = node
        self.failed = tuple(failed)


class RunFailed(AgentGraphError):
    """Raised by :meth:`RunResult.raise_for_status` when nodes failed; ``.result`` (the
    :class:`RunResult`) keeps everything that did finish."""

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result


def format_path(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(
    exc: pydantic.ValidationError,
    model: type[pydantic.BaseModel],
    *,
    path: Sequence[str | int] = (),
    what: str = "field",
) -> GraphValidationError:
    """One located :class:`GraphValidationError` for a pydantic error of ``model``, placed
    at ``path`` + the field's location. Unknown fields name the valid ones (and the
    closest); our own validators' messages (``ValueError``) are used as they are, since
    they quote a value only when it is safe to."""
    errors = exc.errors()
    # An unknown field is usually the typo behind a "missing field" reported beside it.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, GraphValidationError):
        return GraphValidationError(cause.message, path=(*path, *cause.path))
    kind = err["type"]
    if kind in ("extra_forbidden", "missing"):
        valid = fields_at(model, loc[:-1])
        if kind == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), valid)
            message = f"unknown {what} {loc[-1]!r}; valid {what}s: {', '.join(valid)}{hint}"
        else:
            message = f"missing required {what} {loc[-1]!r}"
    elif kind == "value_error" and cause is not None:
        message = str(cause)
    else:
        value = err.get("input")
        shown = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
        message = f"{err['msg']}{shown}"
    return GraphValidationError(message, path=(*path, *loc))


def fields_at(model: type[pydantic.BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Names (aliases where set) of the fields valid at ``loc`` inside ``model``, required
    ones first."""
    import pydantic

    tp: Any = model
    for part in (*loc, None):
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            fields = tp.model_fields
            if part is None:
                names = sorted(fields, key=lambda n: not fields[n].is_required())
                return [fields[n].alias or n for n in names]
            field = next((f for n, f in fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, Mapping) and part is not None:
            tp = typing.get_args(tp)[1]
        else:
            return []
    return []


def _unwrap(tp: Any) -> Any:
    """Strip ``Optional``/``Annotated`` to the type inside."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
