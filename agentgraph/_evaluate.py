"""Evaluate a graph on a task set: run every task, score the final answers, report.

Tasks run concurrently: by default as many at once as the graph's scarcest model has slots
(one for a local model), so a task's latency is its own and not time spent queueing behind
another task. Each finished task is appended to the results file as one
JSON line and flushed, so a killed evaluation loses no finished task; running it again
skips the tasks already in the file for the same graph and settings and reports the same
figures. A task that fails or runs out of budget scores 0 and is reported as such.

Scores come with a 95% percentile-bootstrap confidence interval (resampling tasks, a fixed
seed, so a report is reproducible); two reports over the same tasks compare by paired
bootstrap of the per-task differences.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._errors import BudgetExceeded, TaskError
from ._result import RunResult
from ._spec import Budget
from ._tasks import Task, TaskSet

if TYPE_CHECKING:
    from ._graph import Graph

__all__ = ["Comparison", "EvalReport", "TaskOutcome", "aevaluate", "compare", "read_outcomes"]

Status = Literal["ok", "failed", "budget", "skipped"]
_RESAMPLES = 2000


@dataclass(slots=True)  # built per task on the harness's hot path: treat as read-only
class TaskOutcome:
    """One task run by one graph. ``status``: ``ok`` (it ran and was scored, rightly or
    not), ``failed`` (no answer: the run failed), ``budget`` (it ran out of budget) — both
    score 0 — or ``skipped`` (the task cannot be scored: no gold answer or tests; left out
    of the score). Tokens and cost are what was spent (cache hits are free), ``uncached_*``
    what it would have cost and taken without the cache (a search compares graphs by it).
    ``latency_s`` is the run's critical path, ``wall_s`` its elapsed time; both include
    waiting for a model slot held by another task's run when more tasks run at once than
    the models have slots."""

    graph: str
    task_id: str
    status: Status
    score: float
    answer: str | None
    extracted: str | None
    reason: str | None
    tokens: int
    cost: float
    latency_s: float
    wall_s: float
    uncached_tokens: int
    uncached_cost: float
    uncached_latency_s: float
    trace_id: str
    settings: str  # which graph and settings produced it: the resume key, with task_id
    task_hash: str  # and what the task said: an edited task is run again

    def to_dict(self) -> dict[str, Any]:
        # Flat fields: dataclasses.asdict's recursive copy costs more than the JSON encoding.
        return {f: getattr(self, f) for f in _OUTCOME_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskOutcome:
        return cls(**{f: data[f] for f in _OUTCOME_FIELDS})


_OUTCOME_FIELDS = tuple(TaskOutcome.__dataclass_fields__)


@dataclass(frozen=True)
class EvalReport:
    """A graph's results on a task set (in the set's order)."""

    graph: str
    tasks: str
    outcomes: tuple[TaskOutcome, ...]
    seed: int = 0
    scored: tuple[TaskOutcome, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scored", tuple(o for o in self.outcomes if o.status != "skipped"))

    @property
    def n(self) -> int:
        return len(self.scored)

    @property
    def score(self) -> float:
        return _mean([o.score for o in self.scored])

    @property
    def ci95(self) -> tuple[float, float]:
        return bootstrap_ci([o.score for o in self.scored], seed=self.seed)

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outcomes)

    @property
    def cost(self) -> float:
        return sum(o.cost for o in self.outcomes)

    @property
    def uncached_tokens(self) -> int:
        return sum(o.uncached_tokens for o in self.outcomes)

    @property
    def uncached_cost(self) -> float:
        return sum(o.uncached_cost for o in self.outcomes)

    @property
    def latency_p50(self) -> float:
        return _percentile([o.latency_s for o in self.scored], 50)

    @property
    def latency_p95(self) -> float:
        return _percentile([o.latency_s for o in self.scored], 95)

    def by_status(self, status: Status) -> dict[str, str]:
        """Task id -> reason, for the tasks of one status."""
        return {o.task_id: o.reason or "" for o in self.outcomes if o.status == status}

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {
            "graph": self.graph,
            "tasks": self.tasks,
            "n": self.n,
            "score": self.score,
            "ci95": [lo, hi],
            "tokens": self.tokens,
            "cost": self.cost,
            "uncached_tokens": self.uncached_tokens,
            "uncached_cost": self.uncached_cost,
            "latency_p50": self.latency_p50,
            "latency_p95": self.latency_p95,
            "failed": self.by_status("failed"),
            "budget": self.by_status("budget"),
            "skipped": self.by_status("skipped"),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """``b`` minus ``a`` over the tasks both scored: mean difference and its paired 95%
    bootstrap interval."""

    a: str
    b: str
    n: int
    diff: float
    ci95: tuple[float, float]


def compare(a: EvalReport, b: EvalReport, *, seed: int = 0) -> Comparison:
    scores_b = {o.task_id: o.score for o in b.scored}
    pairs = [(o.score, scores_b[o.task_id]) for o in a.scored if o.task_id in scores_b]
    diffs = [y - x for x, y in pairs]
    return Comparison(a.graph, b.graph, len(diffs), _mean(diffs), bootstrap_ci(diffs, seed=seed))


def bootstrap_ci(values: Sequence[float], *, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (nan, nan for no values)."""
    if not values:
        return math.nan, math.nan
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(_RESAMPLES)
    for start in range(0, _RESAMPLES, 200):  # chunks keep memory small for large sets
        idx = rng.integers(0, len(data), size=(min(200, _RESAMPLES - start), len(data)))
        means[start : start + len(idx)] = data[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    import numpy as np

    return float(np.percentile(values, q))


def read_outcomes(path: str | Path) -> list[TaskOutcome]:
    """The outcomes in a results file. A last line cut short (the writer was killed
    mid-line) is ignored; any other damaged line is an error naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"cannot read results file: {exc}", source=str(p)) from None
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(TaskOutcome.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines):  # no newline after it: a write cut short
                break
            raise TaskError(f"not a result line ({exc})", source=str(p), line=i) from None
    return out


class _ResultsFile:
    """Append-only JSON lines; each line is written whole and flushed at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a+b")
        self._f.seek(0, os.SEEK_END)
        end = self._f.tell()
        if end:  # drop a line cut short by a kill, so the next one starts clean
            self._f.seek(max(0, end - 65536))
            tail = self._f.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                self._f.truncate(end - len(tail) + cut + 1 if cut >= 0 else end - len(tail))
        self._f.seek(0, os.SEEK_END)

    def write(self, outcome: TaskOutcome) -> None:
        self.write_line(outcome.to_dict())

    def write_line(self, data: Mapping[str, Any]) -> None:
        self._f.write((json.dumps(data, ensure_ascii=False) + "\n").encode())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def settings_key(
    graph: Graph, tasks: TaskSet, budget: Budget | None, timeout_s: float | None
) -> str:
    """What makes two evaluations of a task the same: the graph, the kind and scorer, the
    budget and the time limit."""
    parts = [
        graph.spec.fingerprint(),
        tasks.kind,
        tasks.scorer_name,
        budget.model_dump_json() if budget is not None else "",
        repr(timeout_s),
    ]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=8).hexdigest()


async def aevaluate(
    graph: Graph,
    tasks: TaskSet,
    *,
    label: str | None = None,
    budget: Budget | None = None,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    out: str | Path | None = None,
    trace: str | Path | None = None,
    on_outcome: Callable[[TaskOutcome], None] | None = None,
    seed: int = 0,
) -> EvalReport:
    """Run ``graph`` on every task of ``tasks`` and score the answers.

    The graph runs with the task set's kind (its roles pick prompts and parsers by it).
    ``budget`` and ``timeout_s`` hold per task. ``out``: the results file, appended as tasks
    finish; tasks already there for this graph and these settings are not run again.
    ``trace``: a file that gets every model call as a JSON line, with the ``trace_id`` of
    its task's outcome. ``on_outcome`` is called for each task as it finishes (a progress
    bar); ``seed`` fixes the bootstrap.
    """
    from ._scoring import ascore

    name = label or graph.spec.name or "graph"
    key = settings_key(graph, tasks, budget, timeout_s)
    done: dict[str, TaskOutcome] = {}
    if out is not None:
        wanted = {t.id: _task_hash(t) for t in tasks}
        for o in read_outcomes(out):
            if o.settings == key and wanted.get(o.task_id) == o.task_hash:
                done[o.task_id] = o
    for o in done.values():
        if on_outcome is not None:
            on_outcome(o)
    todo = [t for t in tasks if t.id not in done]
    results = _ResultsFile(Path(out)) if out is not None and todo else None
    traces = _ResultsFile(Path(trace)) if trace is not None and todo else None

    async def one(task: Task) -> TaskOutcome:
        if task.answer is None and task.tests is None:
            return _outcome(name, key, task, None, "skipped", 0.0, None, "no gold answer")
        result = await graph.arun(
            task.prompt,
            choices=task.choices,
            task_kind=tasks.kind,
            timeout_s=timeout_s,
            budget=budget,
        )
        if traces is not None:
            for rec in result.trace:
                traces.write_line({"trace_id": f"{key}/{task.id}", **rec.to_dict()})
        status, reason = _status(result)
        if status != "ok":
            return _outcome(name, key, task, result, status, 0.0, None, reason)
        scored = await ascore(task, _final_text(result), tasks.scorer_name)
        return _outcome(
            name, key, task, result, "ok", scored.score, scored.extracted, scored.reason
        )

    pending = iter(todo)
    fresh: list[TaskOutcome] = []

    async def worker() -> None:
        # A few workers pulling tasks, not a task per item: thousands of waiting
        # coroutines cost memory and collector time for nothing.
        for task in pending:
            outcome = await one(task)
            fresh.append(outcome)
            if results is not None:
                results.write(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

    workers = min(len(todo), concurrency or _default_concurrency(graph))
    try:
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        for f in (results, traces):
            if f is not None:
                f.close()
    by_id = {**done, **{o.task_id: o for o in fresh}}
    return EvalReport(name, tasks.name, tuple(by_id[t.id] for t in tasks), seed)


def _final_text(result: RunResult) -> str | None:
    """What the scorer reads: the output node's reply as written (the scorer finds the
    answer in it by its own rules, not the roles' parsers), or its answer when a model-free
    node made one up without text."""
    out = result.output
    return out.text if out.text.strip() else result.answer


def _status(result: RunResult) -> tuple[Status, str | None]:
    if result.ok:
        return "ok", None
    errors = result.failed
    if result.overrun is not None or any(isinstance(e, BudgetExceeded) for e in errors.values()):
        spent = result.overrun or next(e for e in errors.values() if isinstance(e, BudgetExceeded))
        return "budget", f"{type(spent).__name__}: {spent}"
    if not errors:
        return "failed", "the output node was skipped"
    node, err = next(iter(errors.items()))
    return "failed", f"{node}: {type(err).__name__}: {err}"


def _outcome(
    graph: str,
    key: str,
    task: Task,
    result: RunResult | None,
    status: Status,
    score: float,
    extracted: str | None,
    reason: str | None,
) -> TaskOutcome:
    return TaskOutcome(
        graph=graph,
        task_id=task.id,
        status=status,
        score=score,
        answer=result.answer if result is not None else None,
        extracted=extracted,
        reason=reason,
        tokens=result.tokens if result else 0,
        cost=result.cost if result else 0.0,
        latency_s=result.latency_s if result else 0.0,
        wall_s=result.wall_s if result else 0.0,
        uncached_tokens=result.uncached_tokens if result else 0,
        uncached_cost=result.uncached_cost if result else 0.0,
        uncached_latency_s=result.uncached_latency_s if result else 0.0,
        trace_id=f"{key}/{task.id}",
        settings=key,
        task_hash=_task_hash(task),
    )


def _task_hash(task: Task) -> str:
    parts = (task.question, task.answer, task.choices, task.tests, task.entry_point)
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _default_concurrency(graph: Graph) -> int:
    """As many runs as the graph's scarcest model has slots (at least one, at most 64):
    more would only queue for that model, and the time a run waits behind another task's
    calls would count in its latency. A run keeps its own calls in parallel."""
    slots = [b.slots for b in graph.backends.values()]
    return max(1, min([*slots, 64]))


def reports_table(reports: Iterable[EvalReport]) -> list[list[str]]:
    rows = [["graph", "n", "score", "95% CI", "tokens", "cost", "p50_s", "p95_s", "failed"]]
    for r in reports:
        lo, hi = r.ci95
        bad = len(r.by_status("failed")) + len(r.by_status("budget"))
        rows.append(
            [
                r.graph,
                str(r.n),
                f"{r.score:.3f}",
                f"[{lo:.3f}, {hi:.3f}]",
                str(r.tokens),
                f"{r.cost:.6f}",
                f"{r.latency_p50:.3f}",
                f"{r.latency_p95:.3f}",
                str(bad),
            ]
        )
    return rows
