"""From a validated spec to what the executor runs: backends built through the backend
registry, roles instantiated through the role registry, effective policies resolved, and
critical-path priorities computed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ._errors import GraphValidationError
from ._executor import CompiledNode
from ._model import ModelBackend
from ._registry import backends as backend_registry
from ._registry import roles as role_registry
from ._spec import GraphSpec, ModelSpec

__all__ = ["build_backend", "compile_nodes"]


def build_backend(name: str, model: ModelSpec, base_dir: Path) -> ModelBackend:
    factory = backend_registry.get(model.backend)
    if factory is None:
        valid = ", ".join(repr(b) for b in backend_registry.names())
        raise GraphValidationError(
            f"unknown backend {model.backend!r}; valid backends: {valid}",
            path=("models", name, "backend"),
        )
    return factory(name, model, base_dir)


def compile_nodes(
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
