"""What a search maximizes: task score under latency, cost and token budgets.

A sampled graph is run on a minibatch of tasks; its :class:`Evaluation` holds the mean
score and the mean (and p95) cost figures per task. A :class:`SearchBudget` bounds any
subset of those figures. The budget is a set of constraints, not a weighted sum: each
constraint ``k`` has a Lagrange multiplier ``lambda_k >= 0`` that the search learns by
dual ascent, so no one has to guess how many points of accuracy a second is worth.

With the normalized violation of constraint ``k``, for ``x = value_k / limit_k``::

    v_k = x - 1       when x <= 1   (the slack, in [-1, 0])
    v_k = log(x)      when x > 1    (the overrun, on a log scale)

(continuous, with the same slope at the limit; a graph 30 times over budget weighs 3.4,
not 29, so a few far-off samples cannot swamp the score differences that matter and
throw the search into the cheapest corner), the reward a searcher maximizes is the
Lagrangian::

    reward = score - sum_k lambda_k * v_k

and after each batch the multipliers take a projected gradient step on the dual::

    lambda_k <- max(0, lambda_k + eta * mean_i v_k(i))

A multiplier grows while its constraint is violated on average and shrinks back to 0
once the batch keeps within the limit. Feasibility of a single graph is the plain test
``value_k <= limit_k`` for every ``k``, independent of the multipliers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from agentgraph import AgentGraphError
from agentgraph._errors import did_you_mean

if TYPE_CHECKING:
    from agentgraph import TaskOutcome

__all__ = [
    "METRICS",
    "Evaluation",
    "Objective",
    "SearchBudget",
    "SearchError",
    "pareto_front",
]

# The figures a budget can bound; each is a field of Evaluation and of SearchBudget.
METRICS = ("latency_s", "latency_p95_s", "cost_usd", "tokens")


class SearchError(AgentGraphError, ValueError):
    """A search setting or state cannot be used: a bad budget, a space too large to
    enumerate, a searcher state from another searcher or space."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One sampled graph on one minibatch of tasks. Figures are per task: ``score`` the
    mean score, ``latency_s`` the mean latency, ``latency_p95_s`` its 95th percentile,
    ``cost_usd`` and ``tokens`` the mean spend (as if nothing had been cached: a search
    compares graphs by what they really cost). ``failed`` counts tasks that produced no
    answer (failed runs or budget refusals; they score 0 and still count)."""

    score: float
    latency_s: float = 0.0
    latency_p95_s: float = 0.0
    cost_usd: float = 0.0
    tokens: float = 0.0
    n_tasks: int = 1
    failed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value):
                raise SearchError(f"Evaluation.{f.name} must be a finite number, not {value!r}")
            if f.name != "score" and value < 0:
                raise SearchError(f"Evaluation.{f.name} must be >= 0, not {value!r}")
        if self.n_tasks < 1:
            raise SearchError(f"Evaluation.n_tasks must be >= 1, not {self.n_tasks!r}")

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[TaskOutcome]) -> Evaluation:
        """Summarize one graph's outcomes on a minibatch (skipped tasks left out)."""
        scored = [o for o in outcomes if o.status != "skipped"]
        if not scored:
            raise SearchError(
                f"no scored task among {len(outcomes)} outcomes: a minibatch needs tasks "
                "with a gold answer or tests"
            )
        # Cache hits at their original time: a graph is judged by what it really takes.
        latencies = [o.uncached_latency_s for o in scored]
        return cls(
            score=float(np.mean([o.score for o in scored])),
            latency_s=float(np.mean(latencies)),
            latency_p95_s=float(np.percentile(latencies, 95)),
            cost_usd=float(np.mean([o.uncached_cost for o in scored])),
            tokens=float(np.mean([o.uncached_tokens for o in scored])),
            n_tasks=len(scored),
            failed=sum(o.status in ("failed", "budget") for o in scored),
        )

    @property
    def total_tokens(self) -> float:
        return self.tokens * self.n_tasks

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, slots=True)
class SearchBudget:
    """Limits on per-task figures of a graph (any subset; ``None`` = unbounded):
    mean latency, p95 latency, mean cost and mean tokens per task."""

    latency_s: float | None = None
    latency_p95_s: float | None = None
    cost_usd: float | None = None
    tokens: float | None = None

    def __post_init__(self) -> None:
        for name in METRICS:
            limit = getattr(self, name)
            if limit is not None and not (math.isfinite(limit) and limit > 0):
                raise SearchError(f"budget {name} must be a positive number, not {limit!r}")

    @classmethod
    def parse(cls, text: str) -> SearchBudget:
        """``"latency_s=2.5,cost_usd=0.001"`` (the ``--budget`` option); ``""`` = none."""
        limits: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep:
                raise SearchError(f"budget item {item!r} is not NAME=VALUE (in {text!r})")
            if name not in METRICS:
                raise SearchError(
                    f"unknown budget {name!r} in {text!r}{did_you_mean(name, METRICS)}; "
                    f"valid: {', '.join(METRICS)}"
                )
            if name in limits:
                raise SearchError(f"budget {name!r} given twice in {text!r}")
            try:
                limits[name] = float(value)
            except ValueError:
                raise SearchError(
                    f"budget {name} must be a number, not {value.strip()!r} (in {text!r})"
                ) from None
        return cls(**limits)

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> SearchBudget:
        unknown = sorted(set(data) - set(METRICS))
        if unknown:
            raise SearchError(
                f"unknown budget {unknown[0]!r}{did_you_mean(unknown[0], METRICS)}; "
                f"valid: {', '.join(METRICS)}"
            )
        return cls(**data)

    @property
    def limits(self) -> dict[str, float]:
        """The bounded figures, name -> limit, in METRICS order."""
        return {n: v for n in METRICS if (v := getattr(self, n)) is not None}

    def violations(self, evaluation: Evaluation) -> dict[str, float]:
        """Normalized violation of each bounded figure (<= 0: met; see the module
        docstring): the relative slack below the limit, the log of the ratio above it."""
        out = {}
        for n, limit in self.limits.items():
            x = getattr(evaluation, n) / limit
            out[n] = x - 1.0 if x <= 1.0 else math.log(x)
        return out

    def flags(self, evaluation: Evaluation) -> dict[str, bool]:
        """Whether each bounded figure is within its limit."""
        return {n: getattr(evaluation, n) <= limit for n, limit in self.limits.items()}

    def feasible(self, evaluation: Evaluation) -> bool:
        return all(self.flags(evaluation).values())

    def __str__(self) -> str:
        return ",".join(f"{n}={v:g}" for n, v in self.limits.items()) or "none"


class Objective:
    """The reward of an evaluation under a budget, with Lagrange multipliers learned by
    projected dual ascent (step ``eta``; see the module docstring for the formulas).

    ``multipliers`` are meant to be printed and stored; ``state()`` / ``from_state()``
    round-trip them with the budget and step through JSON."""

    def __init__(
        self,
        budget: SearchBudget | None = None,
        *,
        eta: float = 0.5,
        multipliers: Mapping[str, float] | None = None,
    ) -> None:
        if not (math.isfinite(eta) and eta > 0):
            raise SearchError(f"dual step eta must be a positive number, not {eta!r}")
        self.budget = budget if budget is not None else SearchBudget()
        self.eta = eta
        self._lambda = dict.fromkeys(self.budget.limits, 0.0)
        for name, value in (multipliers or {}).items():
            if name not in self._lambda:
                raise SearchError(
                    f"multiplier {name!r} has no constraint in budget {self.budget}; "
                    f"bounded: {', '.join(self._lambda) or 'none'}"
                )
            if not (math.isfinite(value) and value >= 0):
                raise SearchError(f"multiplier {name} must be >= 0, not {value!r}")
            self._lambda[name] = float(value)

    @property
    def multipliers(self) -> dict[str, float]:
        """Constraint name -> current lambda (a copy)."""
        return dict(self._lambda)

    def violations(self, evaluation: Evaluation) -> dict[str, float]:
        return self.budget.violations(evaluation)

    def flags(self, evaluation: Evaluation) -> dict[str, bool]:
        return self.budget.flags(evaluation)

    def feasible(self, evaluation: Evaluation) -> bool:
        return self.budget.feasible(evaluation)

    def reward(self, evaluation: Evaluation) -> float:
        """``score - sum_k lambda_k * (value_k / limit_k - 1)`` at the current lambdas."""
        penalty = sum(self._lambda[n] * v for n, v in self.violations(evaluation).items())
        return evaluation.score - penalty

    def update(self, evaluations: Sequence[Evaluation]) -> dict[str, float]:
        """One dual ascent step on a batch: ``lambda_k <- max(0, lambda_k + eta *
        mean violation_k)``. Returns the new multipliers."""
        if evaluations:
            for name in self._lambda:
                mean_v = float(np.mean([self.violations(e)[name] for e in evaluations]))
                self._lambda[name] = max(0.0, self._lambda[name] + self.eta * mean_v)
        return self.multipliers

    def state(self) -> dict[str, Any]:
        return {
            "budget": {n: getattr(self.budget, n) for n in METRICS},
            "eta": self.eta,
            "multipliers": self.multipliers,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Objective:
        return cls(
            SearchBudget.from_dict(state["budget"]),
            eta=float(state["eta"]),
            multipliers=state["multipliers"],
        )

    def __repr__(self) -> str:
        lams = ", ".join(f"{n}={v:.4g}" for n, v in self._lambda.items())
        return f"Objective(budget={self.budget}, eta={self.eta:g}, multipliers={{{lams}}})"


def pareto_front(evaluations: Sequence[Evaluation]) -> list[int]:
    """Indexes of the non-dominated evaluations over (score: max, mean latency: min, mean
    cost: min), best score first. One dominates another when it is at least as good in all
    three and better in one; equal points are all kept (neither dominates)."""
    if not evaluations:
        return []
    # Minimize all three columns: negate the score.
    pts = np.array([(-e.score, e.latency_s, e.cost_usd) for e in evaluations], dtype=float)
    keep = []
    for i, p in enumerate(pts):
        dominated = np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (pts[i, 0], pts[i, 1], pts[i, 2], i))
