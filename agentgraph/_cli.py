"""The ``agentgraph`` command line.

agentgraph run GRAPH.yaml "question" [--timeout S] [--trace FILE] [--json]
agentgraph show GRAPH.yaml [--yaml]
agentgraph schema
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ._errors import AgentGraphError
from ._graph import load
from ._result import RunResult
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
        from . import schema_json

        print(schema_json())
        return 0
    except AgentGraphError as exc:
        print(f"agentgraph: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    graph = load(args.graph)
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


def _show(args: argparse.Namespace) -> int:
    spec = load_spec(args.graph)
    if args.yaml:
        from ._yaml import dump_spec

        print(dump_spec(spec), end="")
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


def _as_json(result: RunResult) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "ok": result.ok,
        "latency_s": result.latency_s,
        "wall_s": result.wall_s,
        "tokens": result.tokens,
        "cost": result.cost,
        "failed": {n: f"{type(e).__name__}: {e}" for n, e in result.failed.items()},
        "nodes": {
            n: {
                "role": r.role,
                "model": r.model,
                "status": r.status,
                "latency_s": r.latency_s,
                "tokens": r.tokens,
                "cost": r.cost,
                "text": r.message.text,
            }
            for n, r in result.nodes.items()
        },
    }


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
