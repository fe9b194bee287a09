"""The ``agentgraph`` command line.

agentgraph run GRAPH.yaml "question" [--timeout S] [--trace FILE] [--json]
               [--cache FILE | --replay FILE] [--rebuild-cache]
agentgraph eval GRAPH.yaml [GRAPH.yaml ...] --tasks SET [--budget K=V,...] [--out FILE] ...
agentgraph tune SPACE.yaml --tasks SET [--test SET] [--searcher reinforce|random|grid|tpe] ...
agentgraph estimate GRAPH.yaml ["question"] [--profiles FILE]
agentgraph profile GRAPH.yaml|MODEL.gguf [--model NAME] [--repeats N] [--profiles FILE]
agentgraph show GRAPH.yaml [--yaml]
agentgraph schema

A bad invocation exits with status 2 and one line on stderr, before anything runs or is
written: arguments, input files and the folders of output files are all checked first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

from ._cliargs import (
    cache_arguments,
    count,
    input_file,
    open_cache,
    output_file,
    profile_target,
    profiles_in,
    profiles_out,
    profiles_problem,
    seconds,
)
from ._errors import AgentGraphError, GraphValidationError, TaskError
from ._estimate import ProfileStore, ameasure_profile
from ._evaluate import TaskOutcome
from ._graph import load
from ._model import ModelBackend
from ._registry import backends as backend_registry
from ._result import NodeResult, RunResult
from ._spec import Budget, ModelSpec
from ._yaml import load_spec

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line: the usage block argparse prints first would bury the one that matters.
        text = " ".join(message.split())
        self.exit(2, f"agentgraph: error: {text} (see: {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="agentgraph", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a graph on one question")
    p_run.add_argument("graph", type=input_file("graph file"), help="graph YAML file")
    p_run.add_argument("question")
    p_run.add_argument("--timeout", type=seconds, default=None, help="limit for the whole run (s)")
    p_run.add_argument(
        "--trace",
        metavar="FILE",
        type=output_file("trace file"),
        help="write the call trace as JSON lines",
    )
    p_run.add_argument("--json", action="store_true", help="print the result as JSON")
    cache = p_run.add_mutually_exclusive_group()
    cache_arguments(p_run, group=cache)
    cache.add_argument(
        "--replay",
        metavar="FILE",
        type=input_file("replay cache"),
        help="answer only from this call cache (a miss fails the node)",
    )
    _add_eval_parser(sub)
    p_est = sub.add_parser("estimate", help="dry-run estimate of tokens, cost and latency")
    p_est.add_argument("graph", type=input_file("graph file"))
    p_est.add_argument("question", nargs="?", default="")
    p_est.add_argument("--profiles", metavar="FILE", type=profiles_in, help="latency profile store")
    p_prof = sub.add_parser("profile", help="measure and store the latency profile of models")
    p_prof.add_argument(
        "target", type=profile_target, help="a graph file, or a GGUF model path or pkg: reference"
    )
    p_prof.add_argument("--model", action="append", help="only this model (repeatable)")
    p_prof.add_argument("--repeats", type=count(1), default=2, help="runs of each probe (>= 1)")
    p_prof.add_argument(
        "--profiles", metavar="FILE", type=profiles_out, help="latency profile store"
    )
    p_show = sub.add_parser("show", help="validate a graph and print its structure")
    p_show.add_argument("graph", type=input_file("graph file"))
    p_show.add_argument("--yaml", action="store_true", help="print the normalized YAML")
    sub.add_parser("schema", help="print the JSON Schema of graph files")
    plugins = _plugin_commands()
    for command in plugins.values():
        command.configure(sub.add_parser(command.name, help=command.help))
    try:
        args = parser.parse_args(argv)
        _check_defaults(parser, args)
    except SystemExit as exc:  # argparse's exit: a bad invocation (2), or --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "show":
            return _show(args)
        if args.command == "estimate":
            return _estimate(args)
        if args.command == "eval":
            return asyncio.run(_eval(args))
        if args.command in plugins:
            return plugins[args.command].run(args)
        if args.command == "profile":
            return asyncio.run(_profile(args))
        from . import schema_json

        print(schema_json())
        return 0
    except (AgentGraphError, OSError) as exc:
        # OSError: a file that changed under us after the checks (a disk filling up, a
        # folder removed); its message names the file.
        print(f"agentgraph: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _check_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that need more than one argument, or a default that is not on the line."""

    def error(message: str) -> NoReturn:
        parser.exit(2, f"agentgraph: error: {message} (see: agentgraph {args.command} --help)\n")

    if getattr(args, "rebuild_cache", False) and not (
        getattr(args, "cache", None) or getattr(args, "replay", None)
    ):
        error("--rebuild-cache applies to the cache of --cache FILE, and none is given")
    if args.command in ("estimate", "profile") and args.profiles is None:
        default = str(ProfileStore().path)
        # Only a store that is there can be wrong: the first profile creates the default
        # one, folders included.
        exists = Path(default).exists()
        problem = profiles_problem(
            default, must_exist=False, output=exists and args.command == "profile"
        )
        if problem is not None:
            error(
                f"default profile store {default!r} {problem}; "
                "choose another with --profiles FILE or $AGENTGRAPH_PROFILES"
            )


def _run(args: argparse.Namespace) -> int:
    graph = load(args.graph)
    # Opened once the graph is known to be good: a refused command leaves no new file.
    graph.cache = cache = open_cache(
        args.cache or args.replay,
        mode="replay" if args.replay else "read_write",
        rebuild=args.rebuild_cache,
    )
    try:
        result = graph.run(args.question, timeout_s=args.timeout)
    finally:
        if cache is not None:
            cache.close()  # folds the write-ahead log back into the one file
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


class Command(Protocol):
    """A subcommand another package adds (``agentgraph tune`` comes from the search
    package) through the ``agentgraph.commands`` entry-point group."""

    name: str
    help: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _plugin_commands() -> dict[str, Command]:
    from importlib.metadata import entry_points

    commands: dict[str, Command] = {}
    for ep in entry_points(group="agentgraph.commands"):
        command = ep.load()
        commands[command.name] = command
    return commands


def _add_eval_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate graphs on a task set",
        description="Run each graph on every task of a task set, score the final answers and "
        "report score (95%% bootstrap interval), tokens, cost and latency; with several "
        "graphs, their paired differences against the first. Results are appended to --out "
        "as tasks finish: the same command run again skips the finished tasks.",
    )
    p.add_argument(
        "graphs", nargs="+", metavar="GRAPH", type=input_file("graph file"), help="graph YAML files"
    )
    p.add_argument(
        "--tasks",
        required=True,
        metavar="SET",
        help="task set: a benchmark (gsm8k, math500, arc_easy, arc_challenge, mmlu, "
        "mmlu/SUBJECT, humaneval, mbpp) or a .jsonl/.csv file, with an optional split "
        "(train, val, test, all) and slice: gsm8k:test[:50], my.jsonl:val[10:20]",
    )
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="TASK_FIELD=COLUMN",
        help="map a task field (id, question, answer, choices, tests, entry_point) to a "
        "column of a task file (repeatable)",
    )
    p.add_argument(
        "--kind",
        choices=["math", "multiple_choice", "code", "text"],
        help="task kind of a task file (default: multiple_choice when it has choices, "
        "else text; built-in sets bring their own)",
    )
    p.add_argument(
        "--budget",
        metavar="K=V,...",
        help="budget per task: tokens=N, cost_usd=X, latency_s=S (a task over it scores 0)",
    )
    p.add_argument("--timeout", type=seconds, default=None, help="time limit per task (s)")
    p.add_argument(
        "--concurrency",
        type=count(1),
        default=None,
        help="tasks run at once (default: the slots of the graph's scarcest model)",
    )
    cache_arguments(p)
    p.add_argument(
        "--out",
        metavar="FILE",
        type=output_file("results file"),
        help="results, one JSON line per task and graph (resumable)",
    )
    p.add_argument(
        "--trace",
        metavar="FILE",
        type=output_file("trace file"),
        help="append every model call as a JSON line",
    )
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_budget(text: str | None) -> Budget | None:
    if not text:
        return None
    valid = ("tokens", "cost_usd", "latency_s")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in valid:
            raise TaskError(
                f"bad --budget item {part!r}; expected K=V with K one of {', '.join(valid)}"
            )
        try:
            values[key] = float(value)
        except ValueError:
            raise TaskError(f"bad --budget value {value!r} for {key}: not a number") from None
        if not math.isfinite(values[key]):  # the Budget's own checks say which range
            raise TaskError(f"bad --budget value {value!r} for {key}: give a finite number")
    try:
        return Budget.model_validate(values)
    except ValueError as exc:
        raise TaskError(f"bad --budget {text!r}: {exc}") from None


async def _eval(args: argparse.Namespace) -> int:
    from ._datasets import load_tasks
    from ._evaluate import compare, reports_table

    fields = {}
    for item in args.field:
        key, sep, column = item.partition("=")
        if not sep:
            raise TaskError(f"bad --field {item!r}; expected TASK_FIELD=COLUMN")
        fields[key.strip()] = column.strip()
    tasks = load_tasks(args.tasks, fields=fields or None, kind=args.kind)
    budget = _parse_budget(args.budget)
    graphs = [load(path) for path in args.graphs]
    # Opened once the graphs are known to be good: a refused command leaves no new file.
    cache = open_cache(args.cache, rebuild=args.rebuild_cache)
    for graph in graphs:
        graph.cache = cache
    try:
        labels = _labels(args.graphs)
        reports = []
        with _EvalProgress(disable=args.no_progress or not sys.stderr.isatty()) as progress:
            for label, graph in zip(labels, graphs, strict=True):
                try:
                    reports.append(
                        await graph.aevaluate(
                            tasks,
                            label=label,
                            budget=budget,
                            timeout_s=args.timeout,
                            concurrency=args.concurrency,
                            out=args.out,
                            trace=args.trace,
                            on_outcome=progress.track(label, len(tasks)),
                            seed=args.seed,
                        )
                    )
                finally:
                    await graph.aclose()
    finally:
        if cache is not None:
            cache.close()
    comparisons = [compare(reports[0], r, seed=args.seed) for r in reports[1:]]
    if args.json:
        data = {
            "tasks": tasks.name,
            "reports": [r.to_dict() for r in reports],
            "comparisons": [
                {"a": c.a, "b": c.b, "n": c.n, "diff": c.diff, "ci95": list(c.ci95)}
                for c in comparisons
            ],
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{tasks.name}: {len(tasks)} tasks ({tasks.kind}, scored by {tasks.scorer_name})")
    print(_format(reports_table(reports)))
    for c in comparisons:
        lo, hi = c.ci95
        print(f"{c.b} - {c.a}: {c.diff:+.3f} [{lo:+.3f}, {hi:+.3f}] over {c.n} paired tasks")
    for r in reports:
        for status in ("failed", "budget"):
            for task_id, reason in r.by_status(status).items():
                print(f"{status}: {r.graph}: {task_id}: {reason}", file=sys.stderr)
    return 0


def _labels(paths: Sequence[str]) -> list[str]:
    """Graph labels: file stems, made unique with the parent folder when they clash."""
    stems = [Path(p).stem for p in paths]
    return [
        s if stems.count(s) == 1 else f"{Path(p).parent.name}/{s}#{i}"
        for i, (s, p) in enumerate(zip(stems, paths, strict=True))
    ]


class _EvalProgress:
    """One rich progress bar per graph: done/total, running score, tokens, cost, ETA."""

    def __init__(self, *, disable: bool, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "score {task.fields[score]:.3f}  {task.fields[tokens]} tok  "
                "${task.fields[cost]:.4f}"
            ),
            TimeRemainingColumn(),
            console=console if console is not None else Console(stderr=True),
            disable=disable,
        )

    def __enter__(self) -> _EvalProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track(self, label: str, total: int) -> Callable[[TaskOutcome], None]:
        bar = self._progress.add_task(label, total=total, score=0.0, tokens=0, cost=0.0)
        seen = {"n": 0, "score": 0.0, "tokens": 0, "cost": 0.0}

        def update(o: TaskOutcome) -> None:
            if o.status != "skipped":
                seen["n"] += 1
                seen["score"] += o.score
            seen["tokens"] += o.tokens
            seen["cost"] += o.cost
            self._progress.update(
                bar,
                advance=1,
                score=seen["score"] / max(seen["n"], 1),
                tokens=seen["tokens"],
                cost=seen["cost"],
            )

        return update


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
