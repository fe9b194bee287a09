"""``agentgraph tune``: the search from the command line. The core's CLI finds this command
through the ``agentgraph.commands`` entry point, so the core never imports the search."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agentgraph import CallCache, TaskSet, dumps_spec, load_tasks
from agentgraph._cliargs import (
    cache_arguments,
    count,
    input_file,
    open_cache,
    output_dir,
    output_file,
    seconds,
)

from ._agent import AgentReinforce, feedback_from_model
from ._objective import Objective, SearchBudget, SearchError
from ._reinforce import Reinforce
from ._searchers import GridSearch, RandomSearch, Searcher
from ._space import GraphSpace
from ._tpe import TpeSearch
from ._tune import Iteration, TuneResult, atune

__all__ = ["TUNE"]

SEARCHERS: dict[str, type[Searcher[Any]]] = {
    "reinforce": Reinforce,
    "agent": AgentReinforce,
    "random": RandomSearch,
    "grid": GridSearch,
    "tpe": TpeSearch,
}


class _Tune:
    name = "tune"
    help = "search a graph space for the best graph on a task set, within a budget"

    def configure(self, p: argparse.ArgumentParser) -> None:
        p.description = (
            "Sample graphs from a search space, evaluate each batch on the same minibatch of "
            "training tasks, and learn which graphs score best within the budget. Every "
            "sample and evaluation is stored as it happens: the same command with --resume "
            "continues it."
        )
        p.add_argument("space", type=input_file("space file"), help="search space YAML file")
        p.add_argument("--tasks", required=True, metavar="SET", help="training tasks")
        p.add_argument(
            "--val",
            metavar="SET",
            help="validation tasks: the best graphs of the search are evaluated on them "
            "and the best there is chosen",
        )
        p.add_argument(
            "--finalists", type=count(1), default=5, help="graphs evaluated on --val (default 5)"
        )
        p.add_argument("--test", metavar="SET", help="held-out tasks for the final report")
        p.add_argument("--searcher", choices=sorted(SEARCHERS), default="reinforce")
        p.add_argument(
            "--feedback-model",
            metavar="NAME",
            help="the space's model that proposes updates for --searcher agent",
        )
        p.add_argument("--evals", type=count(1), default=16, help="graphs to evaluate in all")
        p.add_argument("--batch", type=count(1), default=8, help="graphs per iteration")
        p.add_argument("--minibatch", type=count(1), default=8, help="tasks per evaluation")
        p.add_argument(
            "--budget",
            metavar="K=V,...",
            help="per-task limits (latency_s, latency_p95_s, cost_usd, tokens); "
            "default: the space's budget",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--store",
            metavar="FILE",
            type=output_file("search store"),
            help="search store (default: SPACE.search.sqlite)",
        )
        p.add_argument("--resume", action="store_true", help="continue the search the store holds")
        cache_arguments(p)
        p.add_argument("--timeout", type=seconds, default=None, help="time limit per task (s)")
        p.add_argument(
            "--parallel",
            type=count(1),
            default=1,
            help="graphs evaluated at once (default 1: side by side they share model "
            "slots and measure slower)",
        )
        p.add_argument(
            "--out",
            metavar="FILE",
            type=output_file("graph file"),
            help="write the best graph as YAML",
        )
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument(
            "--plots",
            metavar="DIR",
            type=output_dir("plots folder"),
            help="write curve.png and front.png there (needs matplotlib: extra 'plot')",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(self, args: argparse.Namespace) -> int:
        return asyncio.run(_tune(args))


TUNE = _Tune()


async def _tune(args: argparse.Namespace) -> int:
    from ._spacefile import load_space

    space = load_space(args.space)
    tasks = load_tasks(args.tasks)
    val = load_tasks(args.val) if args.val else None
    test = load_tasks(args.test) if args.test else None
    if args.plots:
        from ._plots import check_matplotlib

        check_matplotlib()
    budget = (
        SearchBudget.parse(args.budget)
        if args.budget
        else SearchBudget.from_dict(space.budget.limits if space.budget else {})
    )
    store = args.store or str(Path(args.space).with_suffix(".search.sqlite"))
    if args.searcher == "agent" and args.feedback_model not in space.models:
        raise SearchError(
            f"--searcher agent needs --feedback-model NAME, a model of the space; "
            f"got {args.feedback_model!r}, models: {', '.join(space.models)}"
        )
    # Opened last: every check that could refuse the command has passed, so a refused
    # command never leaves a new cache file behind.
    cache = open_cache(args.cache, rebuild=args.rebuild_cache)
    feedback_pool = None
    if args.searcher == "agent":
        feedback_pool = space.model_pool(cache=cache)
        feedback = feedback_from_model(feedback_pool, args.feedback_model)
        searcher: Searcher[Any] = AgentReinforce(
            space, Objective(budget), seed=args.seed, feedback=feedback
        )
    else:
        searcher = SEARCHERS[args.searcher](space, Objective(budget), seed=args.seed)
    try:
        with _Progress(args.evals, disable=args.no_progress or not sys.stderr.isatty()) as bar:
            result = await atune(
                space,
                searcher,
                tasks,
                evals=args.evals,
                store=store,
                batch=args.batch,
                minibatch_size=args.minibatch,
                cache=cache,
                timeout_s=args.timeout,
                resume=args.resume,
                val=val,
                finalists=args.finalists,
                parallel=args.parallel,
                on_iteration=bar.update,
            )
        held_out = await _held_out(space, result, test, cache) if test is not None else None
    finally:
        if feedback_pool is not None:
            await feedback_pool.aclose()
        if cache is not None:
            cache.close()  # folds the write-ahead log back into the one file
    if args.plots:
        from ._plots import write_plots

        write_plots(result, Path(args.plots))
    if args.out and result.best is not None:
        Path(args.out).write_text(dumps_spec(result.best), encoding="utf-8")
    if args.json:
        print(json.dumps(_as_json(result, held_out), indent=2))
    else:
        _print(result, held_out, store, args.out)
    return 0 if result.best is not None else 1


async def _held_out(
    space: GraphSpace, result: TuneResult, tasks: TaskSet, cache: CallCache | None
) -> dict[str, Any]:
    """The chosen graph against each single-model graph (one proposer) on held-out tasks."""
    from agentgraph import compare

    if result.best is None:
        return {}
    pool = space.model_pool(cache=cache)
    reports = {}
    try:
        graphs = {"tuned": result.best}
        graphs.update({f"single:{m}": spec for m, spec in space.single_model_specs().items()})
        for label, spec in graphs.items():
            graph = pool.graph(spec)
            try:
                reports[label] = await graph.aevaluate(tasks, label=label)
            finally:
                await graph.aclose()
    finally:
        await pool.aclose()
    singles = [r for k, r in reports.items() if k != "tuned"]
    best_single = max(singles, key=lambda r: r.score)
    diff = compare(best_single, reports["tuned"])
    return {
        "tasks": tasks.name,
        "reports": [r.to_dict() for r in reports.values()],
        "tuned_minus_best_single": {"diff": diff.diff, "ci95": list(diff.ci95), "n": diff.n},
        "best_single": best_single.graph,
    }


def _as_json(result: TuneResult, held_out: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "best": dumps_spec(result.best) if result.best is not None else None,
        "best_evaluation": result.best_evaluation.to_dict() if result.best_evaluation else None,
        "front": [{"graph": s.name, **e.to_dict()} for s, e in result.front],
        "curve": [
            {"evaluations": p.evaluations, "tokens": p.tokens, "best_score": p.best_score}
            for p in result.curve
        ],
        "multipliers": result.multipliers,
        "evaluations": result.evaluations,
        "iterations": result.iterations,
        "cache_saved": result.cache_saved,
        "validation": [{"graph": s.name, **e.to_dict()} for s, e in result.validation],
        "held_out": held_out,
    }


def _print(
    result: TuneResult, held_out: dict[str, Any] | None, store: str, out: str | None
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{result.evaluations} graphs evaluated in {result.iterations} iterations; cache saved "
        f"{result.cache_saved:.0%} of tokens; multipliers "
        + (", ".join(f"{k}={v:.3f}" for k, v in result.multipliers.items()) or "none")
    )
    table = Table(
        "graph", "score", "latency_s", "p95_s", "cost_usd", "tokens", title="Pareto front"
    )
    for spec, e in result.front:
        table.add_row(
            spec.name or "-", f"{e.score:.3f}", f"{e.latency_s:.2f}", f"{e.latency_p95_s:.2f}",
            f"{e.cost_usd:.6f}", f"{e.tokens:.0f}",
        )  # fmt: skip
    console.print(table)
    if result.validation:
        val = Table("finalist", "score", "latency_s", "cost_usd", title="on validation tasks")
        for spec, e in result.validation:
            val.add_row(
                spec.name or "-", f"{e.score:.3f}", f"{e.latency_s:.2f}", f"{e.cost_usd:.6f}"
            )
        console.print(val)
    if result.best is None:
        console.print("no sampled graph met the budget")
    else:
        console.print(f"best feasible: {result.best.name}" + (f" -> {out}" if out else ""))
    if held_out:
        for r in held_out["reports"]:
            lo, hi = r["ci95"]
            console.print(f"held out {r['graph']}: {r['score']:.3f} [{lo:.3f}, {hi:.3f}]")
        d = held_out["tuned_minus_best_single"]
        console.print(
            f"tuned - {held_out['best_single']}: {d['diff']:+.3f} "
            f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] over {d['n']} tasks"
        )
    console.print(f"store: {store} (the same command with --resume continues it)")


class _Progress:
    """Iteration, evaluations, best feasible score, multipliers, tokens, cache savings."""

    def __init__(self, total: int, *, disable: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("iteration {task.fields[it]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            disable=disable,
        )
        self._bar = self._progress.add_task("tune", total=total, it=0, status="")

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, it: Iteration) -> None:
        best = "-" if it.best_score is None else f"{it.best_score:.3f}"
        lams = " ".join(f"{k}={v:.2f}" for k, v in it.multipliers.items())
        status = f"best {best}  {lams}  {it.tokens:.0f} tok  cache {it.cache_saved:.0%}"
        self._progress.update(
            self._bar, completed=it.evaluations, it=it.index + 1, status=status.strip()
        )
