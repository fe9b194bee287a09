"""``Graph``: a validated spec bound to roles and backends, ready to run.

The three forms of a graph convert losslessly: YAML text, :class:`GraphSpec`, and a
``networkx.DiGraph`` whose nodes carry their NodeSpec fields as attributes and whose edges
carry ``index``, the position of the source in the target's ``inputs``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import networkx as nx
import pydantic

from ._cache import CallCache
from ._errors import GraphValidationError
from ._estimate import DryRunBackend, Estimate, ProfileStore, summarize
from ._executor import CompiledNode, execute
from ._model import ModelBackend
from ._registry import backends as backend_registry
from ._registry import roles as role_registry
from ._result import RunResult, TraceRecord
from ._spec import Budget, GraphSpec, NodeSpec
from ._yaml import Positions, dump_spec, parse, read_text, relocate, spec_from_data

__all__ = ["Graph", "from_networkx", "load", "loads", "to_networkx"]


class Graph:
    """A runnable graph. ``backends`` overrides the backend of models by name (for tests,
    or to share loaded models between graphs); ``base_dir`` anchors relative model paths."""

    def __init__(
        self,
        spec: GraphSpec,
        *,
        backends: Mapping[str, ModelBackend] | None = None,
        base_dir: str | Path | None = None,
        cache: CallCache | None = None,
    ) -> None:
        self._spec = spec
        self.cache = cache
        self._opened: asyncio.AbstractEventLoop | None = None
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._backends = _build_backends(spec, dict(backends or {}), self._base_dir)
        self._order = spec.topological_order()
        self._nodes = _compile(spec, self._backends, self._order)

    @property
    def spec(self) -> GraphSpec:
        return self._spec

    @property
    def backends(self) -> Mapping[str, ModelBackend]:
        return dict(self._backends)

    @classmethod
    def from_networkx(cls, g: nx.DiGraph, **kwargs: Any) -> Graph:
        return cls(from_networkx(g), **kwargs)

    def to_networkx(self) -> nx.DiGraph:
        return to_networkx(self._spec)

    def to_yaml(self) -> str:
        return dump_spec(self._spec)

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
        self._opened = None
        await asyncio.gather(*(b.aclose() for b in self._backends.values()))

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
        timeout_s: float | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """Run the graph on one question. Node failures do not raise: see
        ``RunResult.failed`` and ``RunResult.raise_for_status()``. ``timeout_s`` bounds the
        whole run; nodes still running then are cancelled and reported as failed.
        ``budget`` replaces the graph's own budget for this run."""
        return await execute(
            self._nodes,
            self._order,
            self._spec.output,
            question,
            task=self._spec.task,
            timeout_s=timeout_s,
            cache=self.cache,
            budget=budget if budget is not None else self._spec.budget,
            opening=self.aopen(),
        )

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
        self, question: str, *, timeout_s: float | None = None, budget: Budget | None = None
    ) -> RunResult:
        """Synchronous shell around :meth:`arun` (not for use inside a running loop)."""

        async def main() -> RunResult:
            try:
                return await self.arun(question, timeout_s=timeout_s, budget=budget)
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


def _build_backends(
    spec: GraphSpec, given: dict[str, ModelBackend], base_dir: Path
) -> dict[str, ModelBackend]:
    out: dict[str, ModelBackend] = {}
    for name, model in spec.models.items():
        if name in given:
            out[name] = given.pop(name)
            continue
        factory = backend_registry.get(model.backend)
        if factory is None:
            valid = ", ".join(repr(b) for b in backend_registry.names())
            raise GraphValidationError(
                f"unknown backend {model.backend!r}; valid backends: {valid}",
                path=("models", name, "backend"),
            )
        out[name] = factory(name, model, base_dir)
    if given:
        extra = next(iter(given))
        raise GraphValidationError(
            f"a backend was given for {extra!r}, which the graph does not declare; "
            f"declared models: {', '.join(repr(m) for m in spec.models) or '(none)'}"
        )
    return out


def _compile(
    spec: GraphSpec, backends: Mapping[str, ModelBackend], order: list[str]
) -> dict[str, CompiledNode]:
    succs: dict[str, list[str]] = {n: [] for n in order}
    for name in order:
        for src in spec.nodes[name].inputs:
            succs[src].append(name)
    # Critical-path priority: model work (1 per model node) from a node to the output.
    work: dict[str, float] = {}
    for name in reversed(order):
        own = 1.0 if spec.nodes[name].model is not None else 0.0
        work[name] = own + max((work[s] for s in succs[name]), default=0.0)
    d = spec.defaults
    compiled: dict[str, CompiledNode] = {}
    for name in order:
        node = spec.nodes[name]
        role_cls = role_registry.get(node.role)
        if role_cls is None:
            valid = ", ".join(repr(r) for r in role_registry.names())
            raise GraphValidationError(
                f"unknown role {node.role!r}; valid roles: {valid}", path=("nodes", name, "role")
            )
        if role_cls.model_use == "required" and node.model is None:
            raise GraphValidationError(
                f"role {node.role!r} needs a model; declared models: "
                f"{', '.join(repr(m) for m in spec.models) or '(none)'}",
                path=("nodes", name),
            )
        if role_cls.model_use == "none" and node.model is not None:
            raise GraphValidationError(
                f"role {node.role!r} calls no model; remove 'model'", path=("nodes", name, "model")
            )
        role = role_cls(name, node)
        role.check_successors(tuple(succs[name]))
        compiled[name] = CompiledNode(
            name=name,
            spec=node,
            role=role,
            model=node.model,
            backend=backends[node.model] if node.model is not None else None,
            sampling=node.sampling.over(d.sampling),
            retry=node.retry.over(d.retry) if node.retry is not None else d.retry,
            timeout=node.timeout.over(d.timeout) if node.timeout is not None else d.timeout,
            preds=node.inputs,
            succs=tuple(succs[name]),
            join_any=role_cls.join == "any",
            cache=node.cache if node.cache is not None else d.cache,
            priority=-work[name],
        )
    return compiled


def load(path: str | Path, **kwargs: Any) -> Graph:
    """Load a YAML graph file; relative model paths resolve against its folder."""
    kwargs.setdefault("base_dir", Path(path).parent)
    return loads(read_text(path), source=str(path), **kwargs)


def loads(text: str, *, source: str = "<string>", **kwargs: Any) -> Graph:
    """Build a graph from YAML text."""
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


def to_networkx(spec: GraphSpec) -> nx.DiGraph:
    g = nx.DiGraph()
    g.graph.update({k: getattr(spec, k) for k in _set_fields(spec) if k != "nodes"})
    for name, node in spec.nodes.items():
        g.add_node(name, **{k: getattr(node, k) for k in _set_fields(node) if k != "inputs"})
    for name, node in spec.nodes.items():
        for i, src in enumerate(node.inputs):
            g.add_edge(src, name, index=i)
    return g


def from_networkx(g: nx.DiGraph) -> GraphSpec:
    """The inverse of :func:`to_networkx`. Edges without ``index`` come after indexed ones,
    in edge order, so a graph edited by hand or by the search stays valid."""
    nodes: dict[str, NodeSpec | dict[str, Any]] = {}
    for name, attrs in g.nodes(data=True):
        in_edges = list(g.in_edges(name, data=True))
        ranked = sorted(
            range(len(in_edges)),
            key=lambda i: (in_edges[i][2].get("index", math.inf), i),
        )
        fields = dict(attrs)
        if in_edges:
            fields["inputs"] = tuple(in_edges[i][0] for i in ranked)
        nodes[str(name)] = fields
    data = {**g.graph, "nodes": nodes}
    try:
        return GraphSpec.model_validate(data)
    except pydantic.ValidationError:
        return spec_from_data(data, source="<networkx graph>")


def _set_fields(model: pydantic.BaseModel) -> list[str]:
    names = type(model).model_fields
    return [n for n in names if n in model.model_fields_set]
