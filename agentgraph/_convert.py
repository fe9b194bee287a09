"""``GraphSpec`` <-> ``networkx.DiGraph``, losslessly."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import pydantic

from ._spec import GraphSpec, NodeSpec
from ._yaml import spec_from_data

__all__ = ["spec_from_networkx", "spec_to_networkx"]


def spec_to_networkx(spec: GraphSpec) -> nx.DiGraph:
    """The spec as a ``networkx.DiGraph``: nodes carry their NodeSpec fields (those set),
    edges carry ``index``, the position of the source in the target's ``inputs``, and the
    graph carries the other GraphSpec fields."""
    g = nx.DiGraph()
    g.graph.update({k: getattr(spec, k) for k in _set_fields(spec) if k != "nodes"})
    for name, node in spec.nodes.items():
        g.add_node(name, **{k: getattr(node, k) for k in _set_fields(node) if k != "inputs"})
    for name, node in spec.nodes.items():
        for i, src in enumerate(node.inputs):
            g.add_edge(src, name, index=i)
    return g


def spec_from_networkx(g: nx.DiGraph) -> GraphSpec:
    """The inverse of :func:`spec_to_networkx`. Edges without ``index`` come after indexed ones,
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
