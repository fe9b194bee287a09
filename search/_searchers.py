"""Searchers over a graph space, behind one ask/tell interface.

::

    searcher = Reinforce(space, Objective(SearchBudget(cost_usd=0.002)), seed=0)
    while searcher.evaluations < 400:
        samples = searcher.ask(8)                      # graphs to try
        results = [evaluate(s.spec, minibatch) for s in samples]   # same tasks for all
        searcher.tell(samples, results)                # learn; dual ascent on the budget
        save(searcher.state())                         # JSON-able; restore(space, state)

``tell`` computes each result's reward with the objective's current multipliers, lets the
searcher learn from it, records the best feasible graph and the search curve, then takes
the objective's dual ascent step. A searcher restored from ``state()`` (taken between
``tell`` and the next ``ask``) asks exactly what the one that was never stopped asks.

The space is seen through the :class:`SearchSpace` protocol only, so the searchers are
independent of how a space is declared.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._objective import Evaluation, Objective, SearchError

if TYPE_CHECKING:
    from typing import Self

    from agentgraph import GraphSpec

__all__ = [
    "Best",
    "Candidate",
    "CurvePoint",
    "GridSearch",
    "RandomSearch",
    "SampleLike",
    "SearchSpace",
    "Searcher",
    "Tracker",
    "restore",
]

FloatArray = NDArray[np.float64]
Params = dict[str, FloatArray]
D = TypeVar("D", bound=Hashable)
D_co = TypeVar("D_co", bound=Hashable, covariant=True)

STATE_FORMAT = 1
# Bit generators a state may name: looked up in this table, never by getattr on a string.
_BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
    "MT19937": np.random.MT19937,
}


class SampleLike(Protocol[D_co]):
    """A graph drawn from a space: its decision vector, its spec, and its log-probability."""

    @property
    def decisions(self) -> D_co: ...
    @property
    def spec(self) -> GraphSpec: ...
    @property
    def log_prob(self) -> float: ...


class SearchSpace(Protocol[D]):
    """What the searchers need of a space: a distribution over decision vectors ``D``
    parameterized by named blocks of logits, with exact log-probabilities and gradients."""

    def init_params(self) -> Mapping[str, FloatArray]: ...
    def sample(self, rng: np.random.Generator, params: Params) -> SampleLike[D]: ...
    def log_prob(self, decisions: D, params: Params) -> float: ...
    def grad_log_prob(self, decisions: D, params: Params) -> Mapping[str, FloatArray]: ...
    def entropy(self, params: Params) -> float: ...
    def grad_entropy(self, params: Params) -> Mapping[str, FloatArray]: ...
    def size(self) -> int: ...
    def enumerate(self) -> Iterable[D]: ...
    def decisions_to_spec(self, decisions: D) -> GraphSpec: ...


@dataclass(frozen=True, slots=True)
class Candidate(Generic[D]):
    """A graph a searcher chose by other means than sampling the space (enumeration,
    TPE); ``log_prob`` is under the space's initial distribution."""

    decisions: D
    spec: GraphSpec
    log_prob: float


def _candidate(space: SearchSpace[D], decisions: D, params: Params) -> Candidate[D]:
    return Candidate(
        decisions, space.decisions_to_spec(decisions), space.log_prob(decisions, params)
    )


# --- best feasible graph and search curve -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Best(Generic[D]):
    """The best feasible graph so far: its evaluations pooled (figures are means over every
    task it was run on), ``index`` the evaluation (1-based) after which it became the best,
    ``seen`` how many times it was evaluated."""

    decisions: D
    evaluation: Evaluation
    index: int
    seen: int = 1


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """After ``evaluations`` evaluations that spent ``tokens`` tokens in all: the pooled
    score of the best feasible graph so far (``None`` until a feasible graph was seen)."""

    evaluations: int
    tokens: float
    best_score: float | None


# Pooled sums per graph: [0] evaluations, [1] tasks, [2:7] the task-weighted sums of the
# figures (n * x), [7] failed tasks, [8] the sum of n^2, and for each budgeted figure the
# sums of n^2 * x ([9:13]) and n^2 * x^2 ([13:17]), for the spread between evaluations.
_Sums = list[float]
_FIGURES = ("score", "latency_s", "latency_p95_s", "cost_usd", "tokens")
_COSTS = _FIGURES[1:]


def _add(sums: _Sums, e: Evaluation) -> None:
    n = e.n_tasks
    xs = [getattr(e, f) for f in _FIGURES]
    row = [1, n, *(n * x for x in xs), e.failed, n * n]
    row += [n * n * x for x in xs[1:]] + [n * n * x * x for x in xs[1:]]
    for i, value in enumerate(row):
        sums[i] += value


def _pooled(sums: _Sums) -> Evaluation:
    n = sums[1]
    figures = {f: sums[2 + i] / n for i, f in enumerate(_FIGURES)}
    return Evaluation(**figures, n_tasks=int(n), failed=int(sums[7]))


def _upper(sums: _Sums, z: float) -> Evaluation:
    """The pooled evaluation with each budgeted figure at ``mean + z * se``, the standard
    error estimated from the spread between the graph's evaluations (a figure measured
    once is taken as it is). Graphs whose routers make latency and cost vary from task to
    task are judged feasible only when they keep within the budget with confidence."""
    pooled = _pooled(sums)
    k, n, n2 = sums[0], sums[1], sums[8]
    if k < 2:
        return pooled
    upper = {}
    for i, f in enumerate(_COSTS):
        mean = getattr(pooled, f)
        spread = sums[13 + i] - 2 * mean * sums[9 + i] + mean * mean * n2  # sum n^2 (x-mean)^2
        se = math.sqrt(max(spread, 0.0) * k / (k - 1)) / n
        upper[f] = mean + z * se
    return replace(pooled, **upper)


class Tracker(Generic[D]):
    """Best feasible graph so far and the search curve, one point per evaluation.

    Evaluations of the same graph are pooled (searchers that learn resample their best
    graphs), and graphs are ranked by a lower confidence bound on their score: the
    Agresti-Coull bound ``p - z * sqrt(p (1 - p) / (n + 4))``, ``p = (successes + 2) /
    (n + 4)``, for a 0/1 score over all ``n`` tasks the graph was run on. A graph seen once
    on a small minibatch therefore does not displace one seen many times on a lucky draw:
    among hundreds of noisy evaluations the highest raw score is mostly luck (the winner's
    curse). Feasibility is judged on upper bounds of the pooled figures (``mean + z * se``,
    from the spread between evaluations: routers make cost and latency vary). Among equal
    bounds the cheaper graph (in money, then tokens, then time) wins; ties beyond that keep
    the first."""

    def __init__(self, z: float = 2.0) -> None:
        self.z = z
        self.evaluations = 0
        self.tokens = 0.0
        self.best: Best[D] | None = None
        self.curve: list[CurvePoint] = []
        self._sums: dict[D, _Sums] = {}
        self._order: dict[D, int] = {}  # graph -> when first seen
        self._feasible: dict[D, tuple[float, ...]] = {}  # graph -> rank, if feasible

    def record(
        self, decisions: D, evaluation: Evaluation, feasible: Callable[[Evaluation], bool]
    ) -> bool:
        """Count one evaluation; returns whether the best feasible graph changed."""
        self.evaluations += 1
        self.tokens += evaluation.total_tokens
        if decisions not in self._sums:
            self._order[decisions] = len(self._sums)
            self._sums[decisions] = [0.0] * 17
        sums = self._sums[decisions]
        _add(sums, evaluation)
        pooled = _pooled(sums)
        rank = self._rank(decisions, pooled) if feasible(_upper(sums, self.z)) else None
        if rank is None:
            self._feasible.pop(decisions, None)
        else:
            self._feasible[decisions] = rank
        old = self.best
        if old is not None and old.decisions != decisions:
            # Only this graph changed: it either overtakes the best or leaves it as it is.
            changed = rank is not None and rank > self._feasible[old.decisions]
            if changed:
                self.best = Best(decisions, pooled, self.evaluations, int(sums[0]))
        else:
            changed = self._update_best()
        score = self.best.evaluation.score if self.best else None
        self.curve.append(CurvePoint(self.evaluations, self.tokens, score))
        return changed

    def _rank(self, decisions: D, e: Evaluation) -> tuple[float, ...]:
        n = e.n_tasks + 4.0
        p = (e.score * e.n_tasks + 2.0) / n
        lcb = p - self.z * math.sqrt(max(p * (1.0 - p), 0.0) / n)
        # Tokens before latency: they repeat exactly from run to run, measured latency does
        # not. The last key (first seen first) makes the order total, so that a tracker
        # restored from its state picks what the incremental updates picked.
        return (lcb, -e.cost_usd, -e.tokens, -e.latency_s, -self._order[decisions])

    def _update_best(self) -> bool:
        old = self.best
        if not self._feasible:
            self.best = None
            return old is not None
        top = max(self._feasible, key=self._feasible.__getitem__)
        sums = self._sums[top]
        if old is not None and old.decisions == top:
            self.best = Best(top, _pooled(sums), old.index, int(sums[0]))
            return False
        self.best = Best(top, _pooled(sums), self.evaluations, int(sums[0]))
        return True

    def ranked(self, k: int) -> list[tuple[D, Evaluation]]:
        """The ``k`` best feasible graphs (best first), with their pooled evaluations."""
        top = sorted(self._feasible, key=self._feasible.__getitem__, reverse=True)[:k]
        return [(d, _pooled(self._sums[d])) for d in top]

    def pooled(self) -> list[tuple[D, Evaluation]]:
        """Every graph evaluated, with its pooled evaluation, in the order first seen."""
        return [(d, _pooled(sums)) for d, sums in self._sums.items()]

    def state(self) -> dict[str, Any]:
        best = self.best
        return {
            "z": self.z,
            "evaluations": self.evaluations,
            "tokens": self.tokens,
            "best_index": None if best is None else best.index,
            "graphs": [[_to_json(d), sums] for d, sums in self._sums.items()],
            "feasible": [_to_json(d) for d in self._feasible],
            "curve": [[p.evaluations, p.tokens, p.best_score] for p in self.curve],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tracker[Any]:
        tracker: Tracker[Any] = cls(float(state["z"]))
        tracker.evaluations = int(state["evaluations"])
        tracker.tokens = float(state["tokens"])
        tracker._sums = {_freeze(d): [float(x) for x in sums] for d, sums in state["graphs"]}
        tracker._order = {d: i for i, d in enumerate(tracker._sums)}
        tracker._feasible = {
            d: tracker._rank(d, _pooled(tracker._sums[d])) for d in map(_freeze, state["feasible"])
        }
        tracker.curve = [CurvePoint(int(e), float(t), b) for e, t, b in state["curve"]]
        tracker._update_best()
        if tracker.best is not None:
            best = tracker.best
            tracker.best = Best(
                best.decisions, best.evaluation, int(state["best_index"]), best.seen
            )
        return tracker


# --- the interface ------------------------------------------------------------------------


class Searcher(ABC, Generic[D]):
    """Ask for graphs, tell their results. Subclasses implement ``_ask`` and ``_learn``,
    and name their own settings and state for ``state()``."""

    kind: ClassVar[str]

    def __init__(
        self, space: SearchSpace[D], objective: Objective | None = None, *, seed: int = 0
    ) -> None:
        self.space = space
        self.objective = objective if objective is not None else Objective()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.tracker: Tracker[D] = Tracker()
        self.iteration = 0  # completed tell() calls
        self._pending = 0

    @property
    def best(self) -> Best[D] | None:
        return self.tracker.best

    @property
    def curve(self) -> list[CurvePoint]:
        return self.tracker.curve

    @property
    def evaluations(self) -> int:
        return self.tracker.evaluations

    def ask(self, n: int) -> list[SampleLike[D]]:
        """``n`` graphs to evaluate (fewer only when a finite search has run out)."""
        if n < 1:
            raise SearchError(f"ask(n) needs n >= 1, not {n!r}")
        samples = self._ask(n)
        self._pending += len(samples)
        return samples

    def tell(self, samples: Sequence[SampleLike[D]], results: Sequence[Evaluation]) -> None:
        """Learn from evaluated samples (same order). Samples asked but not told are
        forgotten."""
        if len(samples) != len(results):
            raise SearchError(f"tell() got {len(samples)} samples but {len(results)} results")
        rewards = np.array([self.objective.reward(r) for r in results], dtype=np.float64)
        self._learn(samples, results, rewards)
        for sample, result in zip(samples, results, strict=True):
            self.tracker.record(sample.decisions, result, self.objective.feasible)
        # Dual ascent after the primal step: this batch's rewards used this batch's lambdas.
        self.objective.update(results)
        self._pending = 0
        self.iteration += 1

    async def aprepare(self, evaluate: Callable[[GraphSpec], Awaitable[Evaluation]]) -> None:
        """Called once before the first iteration of a fresh search, with a function that
        evaluates a graph on a few training tasks: a searcher may look at graphs of its own
        choosing first (Agent-REINFORCE profiles each pool model). These evaluations are
        not counted; what they teach must end up in ``state()``."""

    async def atell(self, samples: Sequence[SampleLike[D]], results: Sequence[Evaluation]) -> None:
        """``tell`` for searchers that must wait on something to learn (a feedback model)."""
        self.tell(samples, results)

    @abstractmethod
    def _ask(self, n: int) -> list[SampleLike[D]]: ...

    def _learn(
        self,
        samples: Sequence[SampleLike[D]],
        results: Sequence[Evaluation],
        rewards: NDArray[np.float64],
    ) -> None:
        """Update the search distribution (nothing, by default)."""

    def _config(self) -> dict[str, Any]:
        """Constructor keywords (besides space, objective, seed) that rebuild this one."""
        return {}

    def _runtime(self) -> dict[str, Any]:
        """``from_state`` keywords that are not state (a feedback model): what a searcher
        restored in place of this one takes over from it."""
        return {}

    def _save(self) -> dict[str, Any]:
        """Searcher-specific state (JSON-able)."""
        return {}

    def _load(self, state: Mapping[str, Any]) -> None:
        """Restore what ``_save`` wrote."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: settings, RNG state, objective (budget,
        multipliers), best and curve, and the searcher's own state. JSON-able."""
        if self._pending:
            raise SearchError(
                f"{self.kind} searcher has {self._pending} asked samples not told yet; "
                "take its state after tell(), between iterations"
            )
        return {
            "format": STATE_FORMAT,
            "searcher": self.kind,
            "seed": self.seed,
            "config": self._config(),
            "iteration": self.iteration,
            "rng": _jsonable_rng(self.rng),
            "objective": self.objective.state(),
            "tracker": self.tracker.state(),
            **self._save(),
        }

    @classmethod
    def from_state(cls, space: SearchSpace[D], state: Mapping[str, Any]) -> Self:
        """The searcher that ``state()`` described, over the same space."""
        if state.get("format") != STATE_FORMAT:
            raise SearchError(
                f"searcher state format {state.get('format')!r} is not {STATE_FORMAT}"
            )
        if state.get("searcher") != cls.kind:
            raise SearchError(
                f"state of searcher {state.get('searcher')!r} given to {cls.__name__} "
                f"({cls.kind!r}); use restore() to pick the class from the state"
            )
        searcher = cls(
            space,
            Objective.from_state(state["objective"]),
            seed=int(state["seed"]),
            **state["config"],
        )
        searcher.rng = _rng_from_state(state["rng"])
        searcher.tracker = Tracker.from_state(state["tracker"])
        searcher.iteration = int(state["iteration"])
        searcher._load(state)
        return searcher

    def __repr__(self) -> str:
        best = f"{self.best.evaluation.score:.4g}" if self.best else "none"
        return (
            f"{type(self).__name__}(iteration={self.iteration}, "
            f"evaluations={self.evaluations}, best_feasible={best}, {self.objective!r})"
        )


def restore(space: SearchSpace[Any], state: Mapping[str, Any]) -> Searcher[Any]:
    """The searcher a ``state()`` came from (its class read from the state)."""
    from ._agent import AgentReinforce
    from ._reinforce import Reinforce
    from ._tpe import TpeSearch

    classes: dict[str, type[Searcher[Any]]] = {
        c.kind: c for c in (Reinforce, AgentReinforce, RandomSearch, GridSearch, TpeSearch)
    }
    kind = state.get("searcher")
    if kind not in classes:
        raise SearchError(f"unknown searcher {kind!r} in state; known: {', '.join(classes)}")
    return classes[kind].from_state(space, state)


# --- baselines ----------------------------------------------------------------------------


class RandomSearch(Searcher[D]):
    """Samples from the space's initial distribution (``init_params``); never learns."""

    kind = "random"

    def __init__(
        self, space: SearchSpace[D], objective: Objective | None = None, *, seed: int = 0
    ) -> None:
        super().__init__(space, objective, seed=seed)
        self._params = _copy_params(space.init_params())

    def _ask(self, n: int) -> list[SampleLike[D]]:
        return [self.space.sample(self.rng, self._params) for _ in range(n)]


class GridSearch(Searcher[D]):
    """Every decision vector once, in the space's enumeration order. Refuses spaces with
    more than ``max_size`` graphs. ``ask`` returns fewer (then none) once all were asked."""

    kind = "grid"

    def __init__(
        self,
        space: SearchSpace[D],
        objective: Objective | None = None,
        *,
        seed: int = 0,
        max_size: int = 10_000,
    ) -> None:
        super().__init__(space, objective, seed=seed)
        size = space.size()
        if size > max_size:
            raise SearchError(
                f"grid search would enumerate all {size} graphs of this space, more than "
                f"max_size={max_size}; use reinforce, random or tpe, or raise max_size"
            )
        self.size = size
        self.max_size = max_size
        self.position = 0  # decision vectors asked so far
        self._params = _copy_params(space.init_params())
        self._order = iter(space.enumerate())

    @property
    def exhausted(self) -> bool:
        return self.position >= self.size

    def _ask(self, n: int) -> list[SampleLike[D]]:
        out: list[SampleLike[D]] = [
            _candidate(self.space, d, self._params) for d in itertools.islice(self._order, n)
        ]
        self.position += len(out)
        return out

    def _config(self) -> dict[str, Any]:
        return {"max_size": self.max_size}

    def _save(self) -> dict[str, Any]:
        return {"position": self.position}

    def _load(self, state: Mapping[str, Any]) -> None:
        self.position = int(state["position"])
        self._order = itertools.islice(self.space.enumerate(), self.position, None)


# --- JSON helpers -------------------------------------------------------------------------


def _copy_params(params: Mapping[str, Any]) -> Params:
    return {k: np.array(v, dtype=np.float64) for k, v in params.items()}


def _params_to_json(params: Params) -> dict[str, Any]:
    # Floats go through repr in json, which round-trips float64 exactly.
    return {k: {"shape": list(v.shape), "values": v.ravel().tolist()} for k, v in params.items()}


def _params_from_json(data: Mapping[str, Any], *, like: Params) -> Params:
    if set(data) != set(like):
        raise SearchError(
            f"state has parameter blocks {sorted(data)} but the space has {sorted(like)}: "
            "the state belongs to another space"
        )
    out: Params = {}
    for k, ref in like.items():
        arr = np.array(data[k]["values"], dtype=np.float64).reshape(data[k]["shape"])
        if arr.shape != ref.shape or not np.all(np.isfinite(arr)):
            raise SearchError(
                f"state's parameter block {k!r} has shape {arr.shape} (space: {ref.shape}) "
                "or non-finite values"
            )
        out[k] = arr
    return out


def _jsonable_rng(rng: np.random.Generator) -> dict[str, Any]:
    state = dict(rng.bit_generator.state)
    if state.get("bit_generator") not in _BIT_GENERATORS:
        raise SearchError(f"cannot save the state of bit generator {state.get('bit_generator')!r}")
    if "state" in state and isinstance(state["state"], dict):
        state["state"] = {
            k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state["state"].items()
        }
    return state


def _rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise SearchError(
            f"unknown bit generator {name!r} in state; known: {', '.join(_BIT_GENERATORS)}"
        )
    bitgen = _BIT_GENERATORS[name]()
    bitgen.state = dict(state)
    return np.random.Generator(bitgen)


def _to_json(value: Any) -> Any:
    """Decisions as JSON: tuples and lists become lists; scalars stay."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise SearchError(f"cannot store a non-finite decision value {value!r}")
        return float(value)
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    raise SearchError(
        f"cannot store decisions containing {type(value).__name__} {value!r}: decisions must "
        "be (nested) tuples of ints, floats, bools, strings or None"
    )


def _freeze(value: Any) -> Any:
    """JSON back to hashable decisions: lists become tuples."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value
