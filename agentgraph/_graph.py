"""``Graph``: a validated spec bound to roles and backends, ready to run; and the loaders
that make one from YAML.

A graph spec, its YAML text and its ``networkx.DiGraph`` convert losslessly (``_yaml``,
``_convert``). Functions that take or return a :class:`GraphSpec` say ``spec`` in their
name (``load_spec``, ``dumps_spec``, ``spec_from_networkx``); those without it deal in
runnable :class:`Graph` objects (``load``, ``loads``, ``Graph.from_networkx``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._cache import CallCache
from ._compile import build_backend, compile_nodes
from ._convert import spec_from_networkx, spec_to_networkx
from ._errors import GraphValidationError
from ._estimate import DryRunBackend, Estimate, ProfileStore, summarize
from ._executor import execute
from ._model import ModelBackend
from ._result import RunResult, TraceRecord
from ._spec import Budget, GraphSpec, TaskKind
from ._yaml import Positions, dumps_spec, parse, read_text, relocate, spec_from_data

if TYPE_CHECKING:
    import networkx as nx

    from ._evaluate import EvalReport
    from ._pool import ModelPool
    from ._tasks import TaskSet

__all__ = ["Graph", "load", "loads"]


class Graph:
    """A runnable graph.

    Backends come, by model name, from ``backends`` (for tests, or to share loaded models),
    else from ``pool`` (a :class:`ModelPool` shared by many graphs: its backends, slot
    limits and cache), else are built from the spec. A graph closes only the backends it
    built. ``cache`` defaults to the pool's; ``base_dir`` anchors relative model paths."""

    def __init__(
        self,
        spec: GraphSpec,
        *,
        backends: Mapping[str, ModelBackend] | None = None,
        pool: ModelPool | None = None,
        base_dir: str | Path | None = None,
        cache: CallCache | None = None,
    ) -> None:
        self._spec = spec
        self.cache = cache if cache is not None or pool is None else pool.cache
        self._opened: asyncio.AbstractEventLoop | None = None
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        given = dict(backends or {})
        undeclared = [name for name in given if name not in spec.models]
        if undeclared:
            raise GraphValidationError(
                f"a backend was given for {undeclared[0]!r}, which the graph does not declare; "
                f"declared models: {', '.join(repr(m) for m in spec.models) or '(none)'}"
            )
        self._backends: dict[str, ModelBackend] = {}
        self._owned: list[ModelBackend] = []
        for name, model in spec.models.items():
            if name in given:
                self._backends[name] = given[name]
            elif pool is not None and name in pool:
                self._backends[name] = pool.backend_for(name, model)
            else:
                self._backends[name] = backend = build_backend(name, model, self._base_dir)
                self._owned.append(backend)
        self._order = spec.topological_order()
        self._nodes = compile_nodes(spec, self._backends, self._order)

    @property
    def spec(self) -> GraphSpec:
        return self._spec

    @property
    def backends(self) -> Mapping[str, ModelBackend]:
        return dict(self._backends)

    @classmethod
    def from_networkx(cls, g: nx.DiGraph, **kwargs: Any) -> Graph:
        return cls(spec_from_networkx(g), **kwargs)

    def to_networkx(self) -> nx.DiGraph:
        return spec_to_networkx(self._spec)

    def to_yaml(self) -> str:
        return dumps_spec(self._spec)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    async def aopen(self) -> None:
        """Load or connect every model the graph uses (also done by the first run in each
        event loop)."""
        loop = asyncio.get_running_loop()
        if self._opened is not loop:
            await asyncio.gather(*(b.aopen() for b in self._used_backends()))
            self._opened = loop

    async def aclose(self) -> None:
        """Close the backends this graph built; those given to it (``backends=``, a pool)
        belong to whoever made them."""
        self._opened = None
        await asyncio.gather(*(b.aclose() for b in self._owned))

    async def __aenter__(self) -> Graph:
        await self.aopen()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def arun(
        self,
        question: str,
        *,
        choices: Sequence[str] | None = None,
        task_kind: TaskKind | None = None,
        timeout_s: float | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """Run the graph on one question. Node failures do not raise: see
        ``RunResult.failed`` and ``RunResult.raise_for_status()``. ``timeout_s`` bounds the
        whole run; nodes still running then are cancelled and reported as failed.
        ``budget`` replaces the graph's own budget for this run. ``choices``: the options
        of a multiple-choice question (the question text lists them too), so roles can
        read an answer that names an option by its text. ``task_kind`` replaces the spec's
        ``task`` for this run (a task set brings its own)."""
        return await execute(
            self._nodes,
            self._order,
            self._spec.output,
            question,
            task=task_kind or self._spec.task,
            choices=tuple(choices) if choices is not None else None,
            timeout_s=timeout_s,
            cache=self.cache,
            budget=budget if budget is not None else self._spec.budget,
            opening=self.aopen(),
        )

    async def aevaluate(self, tasks: TaskSet, **kwargs: Any) -> EvalReport:
        """Run the graph on every task of ``tasks`` and score the answers: see
        :func:`agentgraph.aevaluate` for the options (budget and time limit per task, a
        results file that makes the evaluation resumable, a progress callback)."""
        from ._evaluate import aevaluate

        return await aevaluate(self, tasks, **kwargs)

    async def aestimate(
        self, question: str = "", *, profiles: ProfileStore | None = None
    ) -> Estimate:
        """Tokens, cost and latency of one run, from a dry run of the real roles against
        instant stand-in models, the price tables and the latency profiles (``profile`` in
        the model spec, else the profile store). No model is called."""
        store = profiles if profiles is not None else ProfileStore()
        dry = {
            name: DryRunBackend(b, self._spec.models[name].profile or store.get(b.id))
            for name, b in self._backends.items()
        }
        nodes = {
            name: dataclasses.replace(c, backend=dry[c.model] if c.model else None, cache=False)
            for name, c in self._nodes.items()
        }
        result = await execute(
            nodes,
            self._order,
            self._spec.output,
            question,
            task=self._spec.task,
            follow_routes=False,
        )
        calls: dict[str, list[TraceRecord]] = {}
        for rec in result.trace:
            calls.setdefault(rec.node, []).append(rec)
        return summarize(
            calls,
            {n: dry[c.model] if c.model else None for n, c in self._nodes.items()},
            {n: c.model for n, c in self._nodes.items()},
            self._order,
            {n: c.preds for n, c in self._nodes.items()},
        )

    def estimate(self, question: str = "", *, profiles: ProfileStore | None = None) -> Estimate:
        """Synchronous shell around :meth:`aestimate`."""
        return asyncio.run(self.aestimate(question, profiles=profiles))

    def run(
        self,
        question: str,
        *,
        choices: Sequence[str] | None = None,
        timeout_s: float | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """Synchronous shell around :meth:`arun` (not for use inside a running loop)."""

        async def main() -> RunResult:
            try:
                return await self.arun(
                    question, choices=choices, timeout_s=timeout_s, budget=budget
                )
            finally:
                await self.aclose()

        return asyncio.run(main())

    def _used_backends(self) -> list[ModelBackend]:
        seen: dict[int, ModelBackend] = {}
        for node in self._nodes.values():
            if node.backend is not None:
                seen.setdefault(id(node.backend), node.backend)
        return list(seen.values())

    def __repr__(self) -> str:
        return (
            f"<Graph {self._spec.name!r}: {len(self._nodes)} nodes, output {self._spec.output!r}>"
        )


def load(path: str | Path, **kwargs: Any) -> Graph:
    """Load a YAML graph file; relative model paths resolve against its folder."""
    kwargs.setdefault("base_dir", Path(path).parent)
    return loads(read_text(path), source=str(path), **kwargs)


def loads(text: str, *, source: str = "<string>", **kwargs: Any) -> Graph:
    """Build a graph from YAML text (``kwargs`` as for :class:`Graph`)."""
    data, positions = parse(text, source)
    spec = spec_from_data(data, source=source, positions=positions)
    return _build_located(spec, source, positions, kwargs)


def _build_located(
    spec: GraphSpec, source: str, positions: Positions, kwargs: dict[str, Any]
) -> Graph:
    try:
        return Graph(spec, **kwargs)
    except GraphValidationError as exc:
        if exc.source is not None:
            raise
        raise relocate(exc, source, positions) from None
