"""The ``agentgraph`` command line.

agentgraph run GRAPH.yaml "question" [--timeout S] [--trace FILE] [--json]
               [--cache FILE | --replay FILE]
agentgraph estimate GRAPH.yaml ["question"] [--profiles FILE]
agentgraph profile GRAPH.yaml|MODEL.gguf [--model NAME] [--repeats N] [--profiles FILE]
agentgraph show GRAPH.yaml [--yaml]
agentgraph schema
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cache import CallCache
from ._errors import AgentGraphError, GraphValidationError
from ._estimate import ProfileStore, ameasure_profile
from ._graph import load
from ._model import ModelBackend
from ._registry import backends as backend_registry
from ._result import NodeResult, RunResult
from ._spec import ModelSpec
from ._yaml import load_spec

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentgraph", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a graph on one question")
    p_run.add_argument("graph", help="graph YAML file")
    p_run.add_argument("question")
    p_run.add_argument("--timeout", type=float, default=None, help="limit for the whole run (s)")
    p_run.add_argument("--trace", metavar="FILE", help="write the call trace as JSON lines")
    p_run.add_argument("--json", action="store_true", help="print the result as JSON")
    cache = p_run.add_mutually_exclusive_group()
    cache.add_argument("--cache", metavar="FILE", help="SQLite call cache to read and fill")
    cache.add_argument("--replay", metavar="FILE", help="answer only from this call cache")
    p_est = sub.add_parser("estimate", help="dry-run estimate of tokens, cost and latency")
    p_est.add_argument("graph")
    p_est.add_argument("question", nargs="?", default="")
    p_est.add_argument("--profiles", metavar="FILE", help="latency profile store")
    p_prof = sub.add_parser("profile", help="measure and store the latency profile of models")
    p_prof.add_argument("target", help="a graph file, or a GGUF model path or pkg: reference")
    p_prof.add_argument("--model", action="append", help="only this model (repeatable)")
    p_prof.add_argument("--repeats", type=int, default=2)
    p_prof.add_argument("--profiles", metavar="FILE", help="latency profile store")
    p_show = sub.add_parser("show", help="validate a graph and print its structure")
    p_show.add_argument("graph")
    p_show.add_argument("--yaml", action="store_true", help="print the normalized YAML")
    sub.add_parser("schema", help="print the JSON Schema of graph files")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "show":
            return _show(args)
        if args.command == "estimate":
            return _estimate(args)
        if args.command == "profile":
            return asyncio.run(_profile(args))
        from . import schema_json

        print(schema_json())
        return 0
    except AgentGraphError as exc:
        print(f"agentgraph: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cache = None
    if args.cache or args.replay:
        cache = CallCache(args.cache or args.replay, mode="replay" if args.replay else "read_write")
    graph = load(args.graph, cache=cache)
    result = graph.run(args.question, timeout_s=args.timeout)
    if args.trace:
        result.trace.to_jsonl(args.trace)
    if args.json:
        print(json.dumps(_as_json(result), indent=2, ensure_ascii=False))
    else:
        print(result.answer if result.ok else "(no answer)")
        print()
        print(_table(result))
        for node, err in result.failed.items():
            print(f"failed: {node}: {type(err).__name__}: {err}", file=sys.stderr)
    return 0 if result.ok else 1


def _estimate(args: argparse.Namespace) -> int:
    est = load(args.graph).estimate(args.question, profiles=ProfileStore(args.profiles))
    rows = [["node", "model", "calls", "tok_in", "tok_out", "cost", "latency_s"]]
    for n in est.nodes.values():
        latency = "?" if n.latency_s is None else f"{n.latency_s:.3f}"
        rows.append(
            [
                n.node,
                n.model or "-",
                str(n.calls),
                str(n.prompt_tokens),
                str(n.completion_tokens),
                f"{n.cost:.6f}",
                latency,
            ]
        )
    total = "?" if est.latency_s is None else f"{est.latency_s:.3f}"
    rows.append(["(run)", "", "", "", str(est.tokens), f"{est.cost:.6f}", total])
    print(_format(rows))
    if est.unprofiled:
        print(
            f"no latency profile for: {', '.join(est.unprofiled)} "
            "(measure one with: agentgraph profile GRAPH)",
            file=sys.stderr,
        )
    return 0


def _profiled(target: str, only: list[str] | None) -> dict[str, ModelBackend]:
    """The models of a graph file, or one GGUF model given by path or ``pkg:`` reference."""
    if not target.endswith((".yaml", ".yml")):
        factory = backend_registry.get("llama_cpp")
        if factory is None:
            raise GraphValidationError("profiling a GGUF file needs agentgraph.integrations")
        spec = ModelSpec(backend="llama_cpp", path=target)
        return {Path(target).name: factory("model", spec, Path.cwd())}
    backends = load(target).backends
    for name in only or []:
        if name not in backends:
            valid = ", ".join(repr(m) for m in backends)
            raise GraphValidationError(f"unknown model {name!r}; valid models: {valid}")
    return {n: b for n, b in backends.items() if not only or n in only}


async def _profile(args: argparse.Namespace) -> int:
    models = _profiled(args.target, args.model)
    store = ProfileStore(args.profiles)
    rows = [["model", "overhead_s", "prefill_tok_s", "decode_tok_s", "backend"]]
    try:
        for name, backend in models.items():
            prof = await ameasure_profile(backend, repeats=args.repeats)
            store.put(backend.id, prof)
            rows.append(
                [
                    name,
                    f"{prof.overhead_s:.4f}",
                    f"{prof.prefill_tok_s:.1f}",
                    f"{prof.decode_tok_s:.1f}",
                    backend.id,
                ]
            )
    finally:
        await asyncio.gather(*(b.aclose() for b in models.values()))
    print(_format(rows))
    print(f"saved to {store.path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    spec = load_spec(args.graph)
    if args.yaml:
        from ._yaml import dumps_spec

        print(dumps_spec(spec), end="")
        return 0
    print(f"{spec.name}: {len(spec.nodes)} nodes, output {spec.output!r}")
    rows = [["node", "role", "model", "inputs"]]
    for name in spec.topological_order():
        node = spec.nodes[name]
        rows.append([name, node.role, node.model or "-", ", ".join(node.inputs) or "-"])
    print(_format(rows))
    return 0


def _table(result: RunResult) -> str:
    rows = [["node", "role", "model", "status", "latency_s", "tok_in", "tok_out", "cost"]]
    for name, res in result.nodes.items():
        rows.append(
            [
                name,
                res.role,
                res.model or "-",
                res.status,
                f"{res.latency_s:.3f}",
                str(sum(c.prompt_tokens for c in res.calls)),
                str(sum(c.completion_tokens for c in res.calls)),
                f"{res.cost:.6f}",
            ]
        )
    rows.append(
        [
            "(run)",
            "",
            "",
            "ok" if result.ok else "failed",
            f"{result.latency_s:.3f}",
            str(sum(c.prompt_tokens for c in result.trace)),
            str(sum(c.completion_tokens for c in result.trace)),
            f"{result.cost:.6f}",
        ]
    )
    return _format(rows)


def _format(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# Typed message fields, shown when set.
_MESSAGE_FIELDS = (
    "answer",
    "candidate",
    "critique",
    "verdict",
    "score",
    "decision",
    "parse_error",
)


def _as_json(result: RunResult) -> dict[str, Any]:
    def node(r: NodeResult) -> dict[str, Any]:
        msg = r.message
        fields = {f: getattr(msg, f) for f in _MESSAGE_FIELDS if getattr(msg, f) is not None}
        if msg.routes is not None:
            fields["routes"] = sorted(msg.routes)
        if msg.lost_race:
            fields["lost_race"] = True
        return {
            "role": r.role,
            "model": r.model,
            "status": r.status,
            "latency_s": r.latency_s,
            "tokens": r.tokens,
            "cost": r.cost,
            "text": msg.text,
            **fields,
        }

    overrun = result.overrun
    return {
        "answer": result.answer,
        "ok": result.ok,
        "latency_s": result.latency_s,
        "wall_s": result.wall_s,
        "tokens": result.tokens,
        "cost": result.cost,
        "uncached_tokens": result.uncached_tokens,
        "uncached_cost": result.uncached_cost,
        "uncached_latency_s": result.uncached_latency_s,
        "overrun": f"{type(overrun).__name__}: {overrun}" if overrun is not None else None,
        "failed": {n: f"{type(e).__name__}: {e}" for n, e in result.failed.items()},
        "nodes": {n: node(r) for n, r in result.nodes.items()},
    }


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
