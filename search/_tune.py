"""``atune``: search a graph space for the best graph on a task set, within its budget.

Each iteration asks the searcher for a batch of graphs and evaluates every one of them on
the same minibatch of training tasks (common random numbers: differences between graphs
are not differences between task draws). The graphs take their models from one pool (each
model loaded once) and share one call cache, so calls repeated across samples and
iterations cost nothing the second time (identical calls in flight run once); the
objective still judges a graph by what its calls cost and took when they were made.
Graphs of a batch run one after another by default, each with its tasks in parallel up to
its models' slots: graphs side by side queue for the same models and each looks slower
than it is (``parallel`` trades that bias for wall time).

Everything is recorded in the store (:mod:`._store`) as it happens. The same call again
resumes: the searcher's state after the last finished iteration is restored, the samples
of the unfinished iteration are asked again (and checked against the store: the same
seed makes the same decisions) and the evaluations already recorded are reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentgraph import CallCache, GraphSpec, ModelPool, TaskSet, dumps_spec

from ._objective import Evaluation, SearchError, pareto_front
from ._searchers import CurvePoint, SampleLike, Searcher, SearchSpace, _to_json
from ._space import GraphSpace
from ._store import Asked, SearchStore, StoreError

__all__ = ["Iteration", "TuneResult", "atune"]


@dataclass(frozen=True, slots=True)
class Iteration:
    """What one iteration did, for a progress display."""

    index: int
    evaluations: int
    best_score: float | None
    multipliers: dict[str, float]
    tokens: float
    cache_saved: float  # share of tokens the cache saved so far


@dataclass(frozen=True)
class TuneResult:
    """The best feasible graph (None when no sampled graph met the budget), the Pareto
    front over (score, latency, cost) of every graph evaluated, the search curve and the
    final multipliers. ``cache_saved`` is the share of tokens served from the cache.

    With validation tasks, ``validation`` holds the finalists (the best feasible graphs of
    the search) evaluated on them, and ``best`` is the finalist that scored best there
    within the budget; ``best_evaluation`` is then its validation figures."""

    best: GraphSpec | None
    best_evaluation: Evaluation | None
    front: list[tuple[GraphSpec, Evaluation]]
    curve: list[CurvePoint]
    multipliers: dict[str, float]
    evaluations: int
    iterations: int
    cache_saved: float
    validation: list[tuple[GraphSpec, Evaluation]] = field(default_factory=list)
    graphs: list[tuple[GraphSpec, Evaluation]] = field(default_factory=list)
    """Every graph evaluated, its evaluations pooled, in the order first seen."""


def minibatch(tasks: TaskSet, size: int, seed: int, iteration: int, salt: int = 0) -> TaskSet:
    """The tasks of one iteration: a fixed draw for (seed, iteration, salt), in set order
    (salt 1: the tasks a searcher prepares on)."""
    if size >= len(tasks):
        return tasks
    rng = np.random.default_rng([seed, iteration, salt])
    picked = sorted(rng.choice(len(tasks), size=size, replace=False).tolist())
    return replace(tasks, name=f"{tasks.name}#{iteration}", tasks=tuple(tasks[i] for i in picked))


async def atune(
    space: GraphSpace,
    searcher: Searcher[Any],
    tasks: TaskSet,
    *,
    evals: int,
    store: str | Path,
    batch: int = 8,
    minibatch_size: int = 8,
    cache: CallCache | None = None,
    timeout_s: float | None = None,
    resume: bool = True,
    val: TaskSet | None = None,
    finalists: int = 5,
    parallel: int = 1,
    on_iteration: Callable[[Iteration], None] | None = None,
) -> TuneResult:
    """Evaluate ``evals`` sampled graphs (rounded up to whole batches of ``batch``, each on
    ``minibatch_size`` tasks of ``tasks``) and return the best feasible one. ``store`` is
    the SQLite file that makes the search resumable; ``cache`` the call cache shared by
    every graph; ``timeout_s`` bounds each task's run. With ``resume=False`` a store that
    already holds this search's progress is refused instead of continued.

    ``val``: validation tasks on which the ``finalists`` best feasible graphs of the search
    are evaluated once it ends; the best of them there, within the budget, is the result
    (a graph that led on training minibatches by luck is caught here). They are run anew
    when a finished search is resumed (free with a ``cache``).

    ``parallel``: graphs of a batch evaluated at once (1 by default). Side by side they
    queue for the same model slots, so each measures slower than it runs alone: raise it
    for servers with many slots, where the wall time matters more than that bias."""
    if min(evals, batch, minibatch_size, parallel) < 1:
        raise SearchError("evals, batch, minibatch_size and parallel must be >= 1")
    config = {
        "space": space.name,
        "space_source": str(space.source),
        "tasks": [tasks.name, [t.id for t in tasks]],
        "searcher": searcher.kind,
        "searcher_config": searcher._config(),
        "seed": searcher.seed,
        "budget": searcher.objective.state().get("budget"),
        "batch": batch,
        "minibatch": minibatch_size,
    }
    db = SearchStore(store, config=config)
    last = db.last_state()
    if not resume and (last is not None or db.asked(0)):
        db.close()
        raise StoreError(
            "holds this search's progress already; pass --resume to continue it, or give "
            "another --store to start afresh",
            path=db.path,
        )
    pool = space.model_pool(cache=cache)
    spent = {"tokens": 0.0, "uncached": 0.0}

    async def run(spec: GraphSpec, on: TaskSet) -> Evaluation:
        result, used = await _evaluate(pool, spec, on, timeout_s)
        spent["tokens"] += used[0]
        spent["uncached"] += used[1]
        return result

    limit = asyncio.Semaphore(parallel)
    writing = asyncio.Lock()  # one connection: one write at a time

    async def record(iteration: int, slot: int, spec: GraphSpec, on: TaskSet) -> Evaluation:
        async with limit:
            result = await run(spec, on)
        async with writing:
            await asyncio.to_thread(db.record_evaluation, iteration, slot, result.to_dict())
        return result

    try:
        if last is None:
            prepare_tasks = minibatch(tasks, minibatch_size, searcher.seed, 0, salt=1)
            await searcher.aprepare(lambda spec: run(spec, prepare_tasks))
            await asyncio.to_thread(db.record_state, -1, searcher.state())
            iteration = 0
        else:
            searcher = type(searcher).from_state(space, last[1], **searcher._runtime())
            iteration = last[0] + 1
        while searcher.evaluations < evals:
            # Whole batches only: a search asked for more evaluations later continues
            # exactly as one that was asked for them at the start.
            samples = searcher.ask(batch)
            if not samples:
                break  # a finite searcher (grid) has seen everything
            _check_or_record(db, iteration, samples)
            done = {e.slot: Evaluation.from_dict(e.result) for e in db.evaluations(iteration)}
            batch_tasks = minibatch(tasks, minibatch_size, searcher.seed, iteration)
            todo = [slot for slot in range(len(samples)) if slot not in done]
            new = await asyncio.gather(
                *(record(iteration, i, samples[i].spec, batch_tasks) for i in todo)
            )
            done.update(zip(todo, new, strict=True))
            results = [done[slot] for slot in range(len(samples))]
            await searcher.atell(samples, results)
            await asyncio.to_thread(db.record_state, iteration, searcher.state())
            if on_iteration is not None:
                best = searcher.best
                on_iteration(
                    Iteration(
                        iteration,
                        searcher.evaluations,
                        best.evaluation.score if best is not None else None,
                        dict(searcher.objective.multipliers),
                        spent["uncached"],
                        _saved(spent),
                    )
                )
            iteration += 1
        validation = []
        if val is not None:
            for d, _ in searcher.tracker.ranked(finalists):
                spec = space.decisions_to_spec(d)
                validation.append((spec, await run(spec, val)))
    finally:
        await pool.aclose()
        db.close()
    outcome = _result(space, searcher, iteration, _saved(spent))
    if val is None:
        return outcome
    feasible = [(s, e) for s, e in validation if searcher.objective.feasible(e)]
    chosen = max(feasible, key=lambda se: _rank(se[1]), default=(None, None))
    return replace(outcome, best=chosen[0], best_evaluation=chosen[1], validation=validation)


def _rank(e: Evaluation) -> tuple[float, float, float, float]:
    # Ties to the cheaper graph; max() keeps the first (the search's better) of equals.
    return (e.score, -e.cost_usd, -e.tokens, -e.latency_s)


def _saved(spent: dict[str, float]) -> float:
    return 1.0 - spent["tokens"] / spent["uncached"] if spent["uncached"] else 0.0


def _check_or_record(db: SearchStore, iteration: int, samples: Sequence[SampleLike[Any]]) -> None:
    """A resumed search must ask what the killed one asked: same state, same draws."""
    stored = db.asked(iteration)
    asked = [_to_json(s.decisions) for s in samples]
    if stored:
        if [a.decisions for a in stored] != asked:
            raise SearchError(
                f"{db.path}: iteration {iteration} asked other graphs than the store holds; "
                "the searcher or its settings changed (use another --store)"
            )
        return
    db.record_asked(
        [
            Asked(iteration, slot, d, dumps_spec(s.spec), s.log_prob)
            for slot, (d, s) in enumerate(zip(asked, samples, strict=True))
        ]
    )


async def _evaluate(
    pool: ModelPool, spec: GraphSpec, tasks: TaskSet, timeout_s: float | None
) -> tuple[Evaluation, tuple[int, int]]:
    graph = pool.graph(spec)
    try:
        report = await graph.aevaluate(tasks, label=spec.name, timeout_s=timeout_s)
    finally:
        await graph.aclose()
    return Evaluation.from_outcomes(report.outcomes), (report.tokens, report.uncached_tokens)


def _result(
    space: SearchSpace[Any], searcher: Searcher[Any], iterations: int, saved: float
) -> TuneResult:
    graphs = [(space.decisions_to_spec(d), e) for d, e in searcher.tracker.pooled()]
    front = [graphs[i] for i in pareto_front([e for _, e in graphs])]
    best = searcher.best
    return TuneResult(
        best=space.decisions_to_spec(best.decisions) if best is not None else None,
        best_evaluation=best.evaluation if best is not None else None,
        front=front,
        curve=list(searcher.curve),
        multipliers=dict(searcher.objective.multipliers),
        evaluations=searcher.evaluations,
        iterations=iterations,
        cache_saved=saved,
        graphs=graphs,
    )
