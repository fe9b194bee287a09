"""A simulated environment with a known optimum: graphs scored without running a model.

:class:`SimEnv` evaluates a :class:`agentgraph.GraphSpec` by the rules below, exactly
(:meth:`SimEnv.expected`: enumeration over every node's outcome distribution, no Monte
Carlo) and noisily (:meth:`SimEnv.evaluate`: one sampled outcome per task, by the same
rules, written as a plain simulation of the roles, so each checks the other). The search
benchmark finds the best graph under a budget by enumeration (:meth:`SimEnv.optimum`)
and lets the searchers see only noisy minibatches.

Tasks and models
----------------
- ``n_tasks`` tasks with difficulties ``d_t ~ Normal(difficulty_mean, difficulty_sd)``,
  drawn once from ``seed``. A graph's score is the mean over tasks (or over the sampled
  tasks) of "the output node's answer is correct".
- Each model name of a spec's ``models`` needs a :class:`ModelProfile` of that name. A
  fresh answer of model ``m`` to task ``t`` is correct with ``p = sigmoid(a_m - d_t)``;
  a wrong one is the task's one *attractor* wrong answer with probability ``attractor``
  (``w``; shared by every model), else a *unique* wrong answer that equals no other.
- Correlation: the fresh answers of one model on one task all share one draw with
  probability ``rho_m`` (the profile's ``rho``, else the env's), else they are drawn
  independently. A shared unique wrong answer is one answer, carried by all of them.
  Everything else (revisions, verdicts, routing) is drawn independently given its inputs.

Roles (every rule follows the role's own input handling: candidates are the successful
inputs with an answer, router messages left out, one per originating node, input order)
-----------------------------------------------------------------------------------
- ``proposer`` / ``synthesizer`` without candidate inputs (no inputs, or only router
  inputs, which gate it): a fresh answer of its model (above).
- ``proposer`` / ``synthesizer`` with candidates (a reviser, a debater, a synthesizer):
  the plurality of its candidates' answers (ties to the first seen), then revised: a
  wrong answer is fixed (made correct) with probability ``f``, a correct one broken
  with probability ``g`` (then it is the attractor with probability ``w``, else a new
  unique answer); a wrong one not fixed stays as it was. ``f`` and ``g`` are the means
  of the profiles' ``fix_rate`` / ``break_rate`` over this node's model and the models
  of its critic inputs (a critique-revise round: critic and reviser both count).
- ``critic``: passes on the answer of its first candidate input (the others are shown
  to it but change nothing); its only effect is on the ``f``/``g`` of the node reading it.
- ``verifier``: passes on its first candidate's answer with a verdict, score 1 (accept)
  or 0: accepts a correct answer with probability ``tpr``, a wrong one with ``fpr``
  (profile values; by default from the ability ``a``: ``tpr = sigmoid(a + 1.5)``,
  ``fpr = sigmoid(-a - 0.5)``).
- ``vote``: plurality over its candidates' answers, ties to the first seen.
- ``best_of``: the first input with the highest score (verifier verdicts; an input
  without a score ranks below 0), passing that score on.
- ``router``, mode ``score``: reads the highest score among its inputs (first of
  equals) and carries that input's answer; passes when ``score >= threshold`` (no score:
  0), so with 0/1 verdicts any ``threshold`` in (0, 1] means "some verifier accepted".
  Mode ``difficulty``: its model calls the task easy with probability ``sigmoid(a_r -
  d_t)`` (the chance it would answer it itself), independently of the answers; it
  carries its first candidate's answer. Edges to successors not routed to are off; a
  node whose inputs are all off or skipped is skipped (as in the executor).
- ``select``: passes on the last (``prefer: first``: first) input that ran.
- ``first_finish`` and roles registered elsewhere are not simulated.

Shapes and exact engines
------------------------
Any DAG of the roles above, except (refused with :class:`UnsupportedGraph` naming the
node): a critic, verifier or vote reading a router (router messages are not candidates:
the role would find no answer); a proposer or synthesizer reading a router and answers
at once; select, best_of or router reading a router that has no answer inputs;
``first_finish`` and other roles; a node without the model, input or profile it needs;
whatever the role's own checks refuse. Given the correlated draws (each model's mode
enumerated: independent, shared correct, shared attractor, shared unique) and the router
decisions (enumerated; a skipped router counts once), everything left is independent,
and the expectation is an exact sum:

- ``tree`` engine, when every answer is read by one node at most (width-k chains into an
  aggregator, critique-revise rounds, verifiers into best_of, cascades): each node's
  distribution over (answer, score) follows from its inputs' alone (a vote's by a
  dynamic programme over its inputs in order). Milliseconds per graph.
- ``joint`` engine, otherwise (debate rounds, a draft read by its critic and by the
  aggregator): the joint distribution of all messages still to be read, unique answers
  and origins named by first appearance so that equivalent situations merge. Exponential
  in how many messages are pending at once: a two-round debate of five into five
  verifiers and best_of takes up to a second.

Cost and time (deterministic given which nodes run)
-----------------------------------------------------
- Every message has a size in tokens: a model node's is its model's
  ``completion_tokens`` (a critic's and verifier's plus the size of the answer they pass
  on); a node without a model passes on the largest of its running inputs.
- A model call's prompt is the model's ``prompt_tokens`` plus the sizes of the inputs it
  reads (router inputs carry no answer); tokens = prompt + completion; cost by the
  spec's ``price`` when the spec sets one, else the profile's (else free); latency of a
  call = ``overhead_s + prompt / prefill_tok_s + completion / decode_tok_s``. Sampling
  settings (temperature, max_tokens, seeds) change nothing here.
- Latency is the finish time of the output node in a list schedule: a node is ready
  when all its inputs have finished; a model runs ``slots`` calls at once (the spec's
  ``slots``, else the profile's; ``None``: unlimited; each model name its own
  resource, even when two names would share a backend in a real run); waiting calls
  start by the executor's priority (most model nodes on the way to the output first,
  then graph order). Nodes without a model take no time; skipped nodes cost nothing.
- Only routers make cost and latency vary: a graph with routers has one schedule per
  combination of decisions, weighted by its probability on each task.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from agentgraph.roles import (
    BestOf,
    Critic,
    MajorityVote,
    Proposer,
    Router,
    Select,
    Synthesizer,
    Verifier,
)

from agentgraph import GraphSpec, GraphValidationError, NodeSpec, Price, Role, TaskOutcome

__all__ = [
    "Metrics",
    "ModelProfile",
    "Optimum",
    "SimEnv",
    "SimOutcome",
    "UnsupportedGraph",
]

Array = npt.NDArray[np.float64]

# Answer labels in the exact computation. Unique wrong answers all carry U (no two equal
# each other); W_j (>= _W) is the shared unique wrong answer of correlation group j.
_C, _A, _U, _NONE, _W = 0, 1, 2, -1, 3
_NO_SCORE = -1  # a message without a verifier score (ranks below a verdict of 0)

_ROLES: dict[str, type[Role]] = {
    "proposer": Proposer,
    "synthesizer": Synthesizer,
    "critic": Critic,
    "verifier": Verifier,
    "vote": MajorityVote,
    "best_of": BestOf,
    "select": Select,
    "router": Router,
}
_WRITERS = ("proposer", "synthesizer")
_READS_ROUTERS = ("select", "best_of", "router")  # roles that take a router's answer


def _sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class UnsupportedGraph(ValueError):
    """The simulator has no rule for this graph; ``node`` names the node at fault."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a model is in the simulation: ability (on the difficulty scale), token use
    and speed per call, price, slots, and its behaviour as judge and reviser (``None``:
    derived from the ability, see the module docstring)."""

    ability: float
    prompt_tokens: int = 300
    completion_tokens: int = 150
    overhead_s: float = 0.2
    prefill_tok_s: float = 2000.0
    decode_tok_s: float = 50.0
    price: Price | None = None
    slots: int | None = 1
    tpr: float | None = None
    fpr: float | None = None
    fix_rate: float | None = None
    break_rate: float | None = None
    rho: float | None = None

    def __post_init__(self) -> None:
        for name in ("tpr", "fpr", "fix_rate", "break_rate", "rho"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"ModelProfile.{name} must be in [0, 1], not {value!r}")
        if self.slots is not None and self.slots < 1:
            raise ValueError(f"ModelProfile.slots must be >= 1 or None, not {self.slots!r}")
        if min(self.prefill_tok_s, self.decode_tok_s) <= 0:
            raise ValueError("ModelProfile token rates must be > 0")

    @property
    def judge(self) -> tuple[float, float]:
        """(true-positive rate, false-positive rate) as a verifier."""
        tpr = self.tpr if self.tpr is not None else float(_sigmoid(self.ability + 1.5))
        fpr = self.fpr if self.fpr is not None else float(_sigmoid(-self.ability - 0.5))
        return tpr, fpr

    @property
    def revision(self) -> tuple[float, float]:
        """(fix rate, break rate) when revising; defaults ``0.5 * sigmoid(a)`` and
        ``0.25 * sigmoid(-a)``."""
        f = self.fix_rate if self.fix_rate is not None else 0.5 * float(_sigmoid(self.ability))
        g = (
            self.break_rate
            if self.break_rate is not None
            else 0.25 * float(_sigmoid(-self.ability))
        )
        return f, g

    def call_latency(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            self.overhead_s
            + prompt_tokens / self.prefill_tok_s
            + completion_tokens / self.decode_tok_s
        )


@dataclass(frozen=True, slots=True)
class Metrics:
    """Expected figures per task: score (probability of a correct final answer), mean
    latency, its 95th percentile (the smallest latency reached with probability >= 0.95),
    mean cost and mean tokens."""

    score: float
    latency_s: float
    cost_usd: float
    tokens: float
    latency_p95_s: float = 0.0

    def within(
        self,
        *,
        latency_s: float | None = None,
        cost_usd: float | None = None,
        tokens: float | None = None,
        latency_p95_s: float | None = None,
    ) -> bool:
        """Whether every given limit holds (a relative 1e-9 of slack absorbs rounding)."""
        limits = {
            "latency_s": latency_s,
            "cost_usd": cost_usd,
            "tokens": tokens,
            "latency_p95_s": latency_p95_s,
        }
        return all(
            getattr(self, k) <= v * (1 + 1e-9) + 1e-12 for k, v in limits.items() if v is not None
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "score": self.score,
            "latency_s": self.latency_s,
            "latency_p95_s": self.latency_p95_s,
            "cost_usd": self.cost_usd,
            "tokens": self.tokens,
        }


@dataclass(frozen=True, slots=True)
class SimOutcome:
    """One task run by one graph in the simulation. ``answer`` is ``correct``,
    ``attractor``, ``unique`` or ``none`` (no answer: the output node was skipped or
    carries none)."""

    task_id: int
    correct: bool
    answer: Literal["correct", "attractor", "unique", "none"]
    latency_s: float
    cost_usd: float
    tokens: int

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0

    def to_task_outcome(self, graph: str = "graph", settings: str = "") -> TaskOutcome:
        """As the evaluation harness reports a task (nothing cached), so that
        ``agentgraph.search.Evaluation.from_outcomes`` summarizes simulated minibatches."""
        return TaskOutcome(
            graph=graph,
            task_id=str(self.task_id),
            status="ok",
            score=self.score,
            answer=self.answer,
            extracted=self.answer,
            reason=None,
            tokens=self.tokens,
            cost=self.cost_usd,
            latency_s=self.latency_s,
            wall_s=self.latency_s,
            uncached_tokens=self.tokens,
            uncached_cost=self.cost_usd,
            uncached_latency_s=self.latency_s,
            trace_id="",
            settings=settings,
            task_hash="",
        )


@dataclass(frozen=True, slots=True)
class Optimum:
    """The best expected score among the candidates within a budget: ``spec`` and
    ``metrics`` are None when none is feasible. Ties go to the first candidate seen."""

    spec: GraphSpec | None
    metrics: Metrics | None
    evaluated: int
    feasible: int
    unsupported: int


# --- the static plan of a graph -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    role: str
    model: str | None
    inputs: tuple[str, ...]
    reads: frozenset[str]  # inputs whose answer (and score) this node reads
    is_router: bool
    source: bool  # a writer that draws a fresh answer
    routes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # decision -> targets
    decisions: tuple[str, ...] = ()  # a router's outcomes, first = the one kept when skipped
    threshold: float = 0.5
    mode: str = ""  # router: "score" | "difficulty"
    prefer_last: bool = True  # select


@dataclass(frozen=True, slots=True)
class _World:
    """One combination of router decisions, with what runs and what that costs."""

    decisions: tuple[str, ...]  # per router, in graph order
    active: frozenset[str]
    on: frozenset[tuple[str, str]]  # (src, dst) edges that deliver a message
    latency_s: float
    cost_usd: float
    tokens: int


@dataclass(frozen=True, slots=True)
class _Plan:
    order: tuple[str, ...]
    nodes: Mapping[str, _Node]
    output: str
    routers: tuple[str, ...]
    groups: tuple[str, ...]  # models with two or more fresh-answer nodes
    tree: bool  # answers flow along a tree: the factorized engine applies
    below: Mapping[str, tuple[int, ...]]  # node -> groups its answer depends on
    worlds: tuple[_World, ...]
    world_index: Mapping[tuple[str, ...], int]
    profiles: Mapping[str, ModelProfile]
    judge: Mapping[str, tuple[float, float]]  # each profile's resolved (tpr, fpr)
    revision: Mapping[str, tuple[float, float]]  # and (fix, break) rates


@dataclass(frozen=True, slots=True)
class _Exact:
    right: Array  # [world, task]: P(the answer is correct and the routers decide so)
    total: Array  # [world, task]: P(the routers decide so)


S = TypeVar("S", bound=Hashable)
Key = tuple[int, int]  # (label, score)
Prob = Array | float  # per task, or the same for every task
Dist = dict[Key, Prob]


def _fold(
    parts: Sequence[Dist], init: S, step: Callable[[S, Key, int], S]
) -> dict[S, Array | float]:
    """Distribution of a state folded over independent inputs in order:
    ``step(state, outcome, input_index)``. Equal states merge, which keeps a vote's
    dynamic programme small."""
    acc: dict[S, Array | float] = {init: 1.0}
    for i, dist in enumerate(parts):
        new: dict[S, Array | float] = {}
        for state, ps in acc.items():
            for key, pk in dist.items():
                nxt = step(state, key, i)
                v = ps * pk
                new[nxt] = new[nxt] + v if nxt in new else v
        acc = new
    return acc


def _add(dist: Dist, key: Key, value: Prob) -> None:
    dist[key] = dist[key] + value if key in dist else value


VoteState = tuple[bool, tuple[tuple[int, int], ...]]  # (first answer unique, named counts)


def _vote_step(state: VoteState, key: Key, _i: int) -> VoteState:
    first_unique, named = state
    label = key[0]
    if label == _U:  # unique answers never pile up: only "was the first one unique" counts
        return (True, named) if not first_unique and not named else state
    for j, (lab, count) in enumerate(named):
        if lab == label:
            return first_unique, (*named[:j], (lab, count + 1), *named[j + 1 :])
    return first_unique, (*named, (label, 1))


def _vote_winner(state: VoteState) -> int:
    first_unique, named = state
    top = max((c for _, c in named), default=0)
    if first_unique and top <= 1:
        return _U
    return next(lab for lab, c in named if c == top)


def _vote(parts: Sequence[Dist]) -> dict[int, Array | float]:
    """Distribution of the plurality answer of independent inputs, ties to the first."""
    labels: dict[int, Array | float] = {}
    start: VoteState = (False, ())
    for state, p in _fold(parts, start, _vote_step).items():
        lab = _vote_winner(state)
        labels[lab] = labels[lab] + p if lab in labels else p
    return labels


# --- the environment ------------------------------------------------------------------


class SimEnv:
    """Simulated tasks and models; see the module docstring for every rule."""

    def __init__(
        self,
        profiles: Mapping[str, ModelProfile],
        *,
        n_tasks: int = 200,
        seed: int = 0,
        difficulty_mean: float = 0.0,
        difficulty_sd: float = 1.0,
        attractor: float = 0.3,
        rho: float = 0.3,
    ) -> None:
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, not {n_tasks!r}")
        if not 0.0 <= attractor <= 1.0 or not 0.0 <= rho <= 1.0:
            raise ValueError("attractor and rho must be in [0, 1]")
        self.profiles: dict[str, ModelProfile] = dict(profiles)
        self.n_tasks = n_tasks
        self.seed = seed
        self.attractor = attractor
        self.rho = rho
        self.difficulty_mean = difficulty_mean
        self.difficulty_sd = difficulty_sd
        # Drawn once: the same tasks for every graph and every evaluation.
        self.difficulty: Array = np.random.default_rng(seed).normal(
            difficulty_mean, difficulty_sd, n_tasks
        )
        self._plans: dict[str, _Plan] = {}
        self._pc: dict[str, Array] = {}
        self._tables: dict[str, _Exact] = {}

    # -- public API

    def p_correct(self, model: str) -> Array:
        """Per task, the probability that a fresh answer of ``model`` is correct."""
        return self._p(model).copy()

    def _p(self, model: str) -> Array:
        found = self._pc.get(model)
        if found is None:
            found = np.asarray(_sigmoid(self.profile(model).ability - self.difficulty))
            self._pc[model] = found
        return found

    def profile(self, model: str) -> ModelProfile:
        try:
            return self.profiles[model]
        except KeyError:
            valid = ", ".join(repr(m) for m in self.profiles) or "(none)"
            raise UnsupportedGraph(
                f"model {model!r} has no profile in the environment; profiles: {valid}"
            ) from None

    def describe(self) -> dict[str, Any]:
        """The environment's settings, for a benchmark's JSON."""
        return {
            "n_tasks": self.n_tasks,
            "seed": self.seed,
            "difficulty_mean": self.difficulty_mean,
            "difficulty_sd": self.difficulty_sd,
            "attractor": self.attractor,
            "rho": self.rho,
            "profiles": {
                name: {
                    "ability": p.ability,
                    "prompt_tokens": p.prompt_tokens,
                    "completion_tokens": p.completion_tokens,
                    "overhead_s": p.overhead_s,
                    "prefill_tok_s": p.prefill_tok_s,
                    "decode_tok_s": p.decode_tok_s,
                    "price": p.price.model_dump() if p.price is not None else None,
                    "slots": p.slots,
                    "tpr_fpr": list(p.judge),
                    "fix_break": list(p.revision),
                    "rho": p.rho if p.rho is not None else self.rho,
                }
                for name, p in self.profiles.items()
            },
        }

    def expected(
        self, spec: GraphSpec, *, engine: Literal["auto", "tree", "joint"] = "auto"
    ) -> Metrics:
        """Exact expected figures of ``spec`` over the N tasks (cached per spec).

        Two exact engines: ``tree`` (when every answer is read by one node at most, each
        node's answer distribution is computed on its own: fast) and ``joint`` (any graph:
        the joint distribution of the messages still to be read; slower, exponential in
        how many are read at once). ``auto`` takes ``tree`` where it applies; the others
        are for checking one against the other."""
        plan = self._plan(spec)
        if engine == "auto":
            return self._exact(plan, self._exact_table(spec))
        if engine == "tree" and not plan.tree:
            raise ValueError("the tree engine needs every answer to be read by one node at most")
        return self._exact(plan, self._table(plan, engine))

    def _exact_table(self, spec: GraphSpec) -> _Exact:
        key = spec.fingerprint()
        found = self._tables.get(key)
        if found is None:
            found = self._table(self._plan(spec))
            self._tables[key] = found
        return found

    def evaluate(
        self,
        spec: GraphSpec,
        task_ids: Sequence[int] | npt.NDArray[np.integer[Any]],
        rng: np.random.Generator,
        *,
        method: Literal["simulate", "exact"] = "simulate",
    ) -> list[SimOutcome]:
        """One sampled outcome per task in ``task_ids`` (indices into the N tasks; a task
        may repeat, each draw independent).

        ``simulate`` runs the roles' rules node by node (a check on the exact computation,
        tens of microseconds per node and task); ``exact`` draws each task's router
        decisions and correctness from their exact joint probabilities (the same
        distribution per task, a few microseconds per task), for searches that need many
        evaluations. Its ``answer`` is then ``correct`` or ``unique`` (standing for any
        wrong answer: which one is not in the table)."""
        plan = self._plan(spec)
        ids = [int(t) for t in task_ids]
        for t in ids:
            if not 0 <= t < self.n_tasks:
                raise IndexError(f"task id {t} is not in 0..{self.n_tasks - 1}")
        if method == "simulate":
            return [self._sample(plan, t, rng) for t in ids]
        if method != "exact":
            raise ValueError(f"method must be 'simulate' or 'exact', not {method!r}")
        table = self._exact_table(spec)
        idx = np.asarray(ids, dtype=np.int64)
        # One uniform per task picks the world and, within its share, correctness: the
        # world w takes [cum_{w-1}, cum_w) and its correct part the first right[w] of it.
        u = rng.random(len(ids))
        cum = np.cumsum(table.total[:, idx], axis=0)
        w = np.minimum((u[None, :] >= cum).sum(axis=0), len(plan.worlds) - 1)
        start = np.where(w > 0, cum[np.maximum(w - 1, 0), np.arange(len(ids))], 0.0)
        correct = u - start < table.right[w, idx]
        out = []
        for t, wi, ok in zip(ids, w.tolist(), correct.tolist(), strict=True):
            world = plan.worlds[wi]
            out.append(
                SimOutcome(
                    task_id=t,
                    correct=bool(ok),
                    answer="correct" if ok else "unique",
                    latency_s=world.latency_s,
                    cost_usd=world.cost_usd,
                    tokens=world.tokens,
                )
            )
        return out

    def optimum(
        self,
        specs: Iterable[GraphSpec],
        *,
        latency_s: float | None = None,
        cost_usd: float | None = None,
        tokens: float | None = None,
        latency_p95_s: float | None = None,
        skip_unsupported: bool = False,
    ) -> Optimum:
        """The best expected score among ``specs`` whose expected figures keep within the
        given limits (mean latency, mean cost, mean tokens, p95 latency per task)."""
        best: tuple[GraphSpec, Metrics] | None = None
        evaluated = feasible = unsupported = 0
        for spec in specs:
            try:
                m = self.expected(spec)
            except UnsupportedGraph:
                if not skip_unsupported:
                    raise
                unsupported += 1
                continue
            evaluated += 1
            if not m.within(
                latency_s=latency_s, cost_usd=cost_usd, tokens=tokens, latency_p95_s=latency_p95_s
            ):
                continue
            feasible += 1
            if best is None or m.score > best[1].score:
                best = (spec, m)
        return Optimum(
            spec=best[0] if best else None,
            metrics=best[1] if best else None,
            evaluated=evaluated,
            feasible=feasible,
            unsupported=unsupported,
        )

    # -- plan: shape checks, worlds, schedules

    def _plan(self, spec: GraphSpec) -> _Plan:
        key = spec.fingerprint()
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(spec)
            self._plans[key] = plan
        return plan

    def _build_plan(self, spec: GraphSpec) -> _Plan:
        order = tuple(spec.topological_order())
        succs: dict[str, list[str]] = {n: [] for n in order}
        for name in order:
            for src in spec.nodes[name].inputs:
                succs[src].append(name)
        nodes: dict[str, _Node] = {}
        readers: set[str] = set()
        tree = True  # every answer read by one node at most: the fast exact engine applies
        for name in order:
            node = self._check_node(spec, name, spec.nodes[name], succs[name], nodes)
            tree = tree and not (node.reads & readers)
            readers |= node.reads
            nodes[name] = node
        profiles = {m: self.profile(m) for m in spec.models if m in self.profiles}
        sources: dict[str, int] = {}
        for n in nodes.values():
            if n.source and n.model is not None:
                sources[n.model] = sources.get(n.model, 0) + 1
        groups = tuple(m for m in spec.models if sources.get(m, 0) >= 2 and self._rho(m) > 0.0)
        # Which groups' draws each node's answer depends on (through the answers it reads):
        # a node's distribution is computed once per combination of those groups' modes.
        below: dict[str, tuple[int, ...]] = {}
        for name in order:
            n = nodes[name]
            deps = {j for src in n.reads for j in below[src]}
            if n.source and n.model in groups:
                deps.add(groups.index(n.model))
            below[name] = tuple(sorted(deps))
        routers = tuple(n for n in order if nodes[n].is_router)
        worlds = []
        for decisions in itertools.product(*(nodes[r].decisions for r in routers)):
            world = self._world(spec, order, nodes, succs, routers, decisions)
            if world is not None:
                worlds.append(world)
        return _Plan(
            order=order,
            nodes=nodes,
            output=spec.output,
            routers=routers,
            groups=groups,
            tree=tree,
            below=below,
            worlds=tuple(worlds),
            world_index={w.decisions: i for i, w in enumerate(worlds)},
            profiles=profiles,
            judge={m: p.judge for m, p in profiles.items()},
            revision={m: p.revision for m, p in profiles.items()},
        )

    def _check_node(
        self,
        spec: GraphSpec,
        name: str,
        node: NodeSpec,
        successors: Sequence[str],
        done: Mapping[str, _Node],
    ) -> _Node:
        role_cls = _ROLES.get(node.role)
        if role_cls is None:
            raise UnsupportedGraph(
                f"node {name!r}: role {node.role!r} is not simulated; simulated roles: "
                + ", ".join(sorted(_ROLES)),
                node=name,
            )
        try:  # the role's own checks: params, prompts, inputs, a router's successors
            role = role_cls(name, node)
            role.check_successors(tuple(successors))
        except GraphValidationError as exc:
            raise UnsupportedGraph(f"node {name!r}: {exc}", node=name) from None
        uses = role_cls.model_use
        if uses == "required" and node.model is None:
            raise UnsupportedGraph(f"node {name!r}: role {node.role!r} needs a model", node=name)
        if uses == "none" and node.model is not None:
            raise UnsupportedGraph(f"node {name!r}: role {node.role!r} calls no model", node=name)
        if node.model is not None and node.model not in self.profiles:
            raise UnsupportedGraph(
                f"node {name!r}: model {node.model!r} has no profile in the environment; "
                f"profiles: {', '.join(repr(m) for m in self.profiles) or '(none)'}",
                node=name,
            )
        from_routers = [s for s in node.inputs if done[s].is_router]
        answers = [s for s in node.inputs if not done[s].is_router]
        if node.role in _READS_ROUTERS:
            reads = frozenset(node.inputs)
            for src in from_routers:
                if not any(not done[s].is_router for s in done[src].inputs):
                    raise UnsupportedGraph(
                        f"node {name!r} reads the answer of router {src!r}, which carries "
                        "none (it has no answer inputs)",
                        node=name,
                    )
        else:
            if from_routers and answers:
                raise UnsupportedGraph(
                    f"node {name!r} ({node.role}) reads router {from_routers[0]!r} and "
                    f"answers ({answers[0]!r}); the simulator gates only proposers and "
                    "synthesizers, with routers as their only inputs",
                    node=name,
                )
            if from_routers and node.role not in _WRITERS:
                raise UnsupportedGraph(
                    f"node {name!r} ({node.role}) finds no answer in router "
                    f"{from_routers[0]!r}: router messages are not candidates",
                    node=name,
                )
            reads = frozenset(answers)
        is_router = node.role == "router"
        if not is_router:
            select_last = True
            if node.role == "select":
                select_last = getattr(role.params, "prefer", "last") == "last"
            return _Node(
                name=name,
                role=node.role,
                model=node.model,
                inputs=node.inputs,
                reads=reads,
                is_router=False,
                source=node.role in _WRITERS and not reads,
                prefer_last=select_last,
            )
        assert isinstance(role, Router)
        r = role.routing
        outcomes = ("pass", "fail") if r.mode == "score" else ("easy", "hard")
        return _Node(
            name=name,
            role=node.role,
            model=node.model,
            inputs=node.inputs,
            reads=reads,
            is_router=True,
            source=False,
            routes={o: frozenset(r.targets(o)) for o in outcomes},
            decisions=outcomes,
            threshold=r.threshold,
            mode=r.mode,
        )

    def _rho(self, model: str) -> float:
        p = self.profiles[model].rho
        return self.rho if p is None else p

    def _world(
        self,
        spec: GraphSpec,
        order: Sequence[str],
        nodes: Mapping[str, _Node],
        succs: Mapping[str, Sequence[str]],
        routers: Sequence[str],
        decisions: Sequence[str],
    ) -> _World | None:
        decided = dict(zip(routers, decisions, strict=True))
        active: set[str] = set()
        on: set[tuple[str, str]] = set()
        for name in order:
            node = nodes[name]
            for src in node.inputs:
                s = nodes[src]
                if src in active and (not s.is_router or name in s.routes[decided[src]]):
                    on.add((src, name))
            if not node.inputs or any((src, name) in on for src in node.inputs):
                active.add(name)
            elif node.is_router and decided[name] != node.decisions[0]:
                return None  # a skipped router decides nothing: keep one world for it
        # Message sizes, prompts and call durations in this world.
        size: dict[str, float] = {}
        duration: dict[str, float] = {}
        cost = 0.0
        tokens = 0
        for name in order:
            if name not in active:
                continue
            node = nodes[name]
            shown = [s for s in node.inputs if (s, name) in on]
            if node.model is None:
                size[name] = max((size[s] for s in shown), default=0.0)
                duration[name] = 0.0
                continue
            prof = self.profiles[node.model]
            read = [s for s in shown if s in node.reads]
            prompt = prof.prompt_tokens + sum(size[s] for s in read)
            completion = prof.completion_tokens
            size[name] = completion + (
                size[read[0]] if node.role in ("critic", "verifier") and read else 0.0
            )
            duration[name] = prof.call_latency(prompt, completion)
            price = self._price(spec, node.model)
            cost += price.cost(int(prompt), int(completion))
            tokens += int(prompt) + int(completion)
        finish = self._schedule(spec, order, nodes, succs, active, duration)
        return _World(
            decisions=tuple(decisions),
            active=frozenset(active),
            on=frozenset(on),
            latency_s=finish[spec.output],
            cost_usd=cost,
            tokens=tokens,
        )

    def _price(self, spec: GraphSpec, model: str) -> Price:
        ms = spec.models[model]
        if "price" in ms.model_fields_set:
            return ms.price
        prof = self.profiles[model].price
        return prof if prof is not None else Price()

    def _schedule(
        self,
        spec: GraphSpec,
        order: Sequence[str],
        nodes: Mapping[str, _Node],
        succs: Mapping[str, Sequence[str]],
        active: set[str],
        duration: Mapping[str, float],
    ) -> dict[str, float]:
        """Finish time of every node under the list schedule of the module docstring."""
        index = {n: i for i, n in enumerate(order)}
        # The executor's priority: model nodes from here to the output, over the whole graph.
        work: dict[str, int] = {}
        for name in reversed(order):
            own = 1 if nodes[name].model is not None else 0
            work[name] = own + max((work[s] for s in succs[name]), default=0)
        slots: dict[str, float] = {}
        for m in spec.models:
            if m in self.profiles:
                n = spec.models[m].slots or self.profiles[m].slots
                slots[m] = math.inf if n is None else float(n)
        waiting_for = {n: len(nodes[n].inputs) for n in order}
        events: list[tuple[float, int, int, str]] = []  # (time, 0 done | 1 ready, index, node)
        for name in order:
            if waiting_for[name] == 0:
                heapq.heappush(events, (0.0, 1, index[name], name))
        queues: dict[str, list[tuple[int, int, str]]] = {m: [] for m in slots}
        finish: dict[str, float] = {}
        while events:
            now = events[0][0]
            while events and events[0][0] <= now:
                _, kind, _, name = heapq.heappop(events)
                model = nodes[name].model
                if kind == 0:
                    finish[name] = now
                    if model is not None and name in active:
                        slots[model] += 1
                    for s in succs[name]:
                        waiting_for[s] -= 1
                        if waiting_for[s] == 0:
                            heapq.heappush(events, (now, 1, index[s], s))
                elif model is not None and name in active:
                    heapq.heappush(queues[model], (-work[name], index[name], name))
                else:  # skipped, or no model: done at once
                    heapq.heappush(events, (now, 0, index[name], name))
            for model, queue in queues.items():
                while queue and slots[model] > 0:
                    _, i, name = heapq.heappop(queue)
                    slots[model] -= 1
                    heapq.heappush(events, (now + duration[name], 0, i, name))
        return finish

    # -- exact expectation

    def _configs(self, plan: _Plan) -> list[tuple[tuple[int, ...], Array]]:
        """Every combination of the correlation groups' modes (0 independent, 1 shared
        correct, 2 shared attractor, 3 shared unique), with its probability per task.
        Within one combination every fresh answer is independent or fixed."""
        w = self.attractor
        per_group: list[list[tuple[int, Array]]] = []
        for m in plan.groups:
            rho, p = self._rho(m), self._p(m)
            options = [
                (0, np.full_like(p, 1.0 - rho)),
                (1, rho * p),
                (2, rho * (1.0 - p) * w),
                (3, rho * (1.0 - p) * (1.0 - w)),
            ]
            # Modes that cannot happen whatever the task is are left out: fewer configs.
            scalar = (1.0 - rho, rho, rho * w, rho * (1.0 - w))
            per_group.append([o for o, s in zip(options, scalar, strict=True) if s > 0.0])
        configs = []
        for combo in itertools.product(*per_group):
            weight = np.ones(self.n_tasks)
            for _, arr in combo:
                weight = weight * arr
            configs.append((tuple(mode for mode, _ in combo), weight))
        return configs

    def _fresh(self, plan: _Plan, model: str, modes: tuple[int, ...]) -> Dist:
        mode = modes[plan.groups.index(model)] if model in plan.groups else 0
        if mode == 1:  # the shared draw: fixed, so a plain number, not an array per task
            return {(_C, _NO_SCORE): 1.0}
        if mode == 2:
            return {(_A, _NO_SCORE): 1.0}
        if mode == 3:
            return {(_W + plan.groups.index(model), _NO_SCORE): 1.0}
        p = self._p(model)
        w = self.attractor
        dist: Dist = {(_C, _NO_SCORE): p}
        if w > 0.0:
            dist[(_A, _NO_SCORE)] = (1.0 - p) * w
        if w < 1.0:
            dist[(_U, _NO_SCORE)] = (1.0 - p) * (1.0 - w)
        return dist

    def _revise(self, labels: Mapping[int, Array | float], f: float, g: float) -> Dist:
        w = self.attractor
        out: Dist = {}
        for label, p in labels.items():
            if label == _C:
                # Terms that are exactly 0 are left out: fewer states downstream.
                _add(out, (_C, _NO_SCORE), p * (1.0 - g))
                if g > 0.0 and w > 0.0:
                    _add(out, (_A, _NO_SCORE), p * g * w)
                if g > 0.0 and w < 1.0:
                    _add(out, (_U, _NO_SCORE), p * g * (1.0 - w))
            else:
                if f > 0.0:
                    _add(out, (_C, _NO_SCORE), p * f)
                _add(out, (label, _NO_SCORE), p * (1.0 - f))
        return out

    def _node_dist(
        self,
        plan: _Plan,
        world: _World,
        node: _Node,
        ins: Sequence[str],
        dists: Mapping[str, Dist],
        modes: tuple[int, ...],
    ) -> Dist:
        """A running node's outcome distribution, given its inputs' (independent) ones."""
        parts = [dists[s] for s in ins]
        dist: Dist = {}
        if node.source:
            assert node.model is not None
            return self._fresh(plan, node.model, modes)
        if node.role in _WRITERS:
            assert node.model is not None
            judges = [node.model] + [m for s in ins if (m := _critic_model(plan, s))]
            f = sum(plan.revision[m][0] for m in judges) / len(judges)
            g = sum(plan.revision[m][1] for m in judges) / len(judges)
            return self._revise(_vote(parts), f, g)
        if node.role == "vote":
            for lab, p in _vote(parts).items():
                _add(dist, (lab, _NO_SCORE), p)
        elif node.role in ("critic", "verifier"):
            # The first candidate's answer is passed on; the others are folded in only for
            # their probability mass (they change nothing).
            first = _fold(parts, _NONE, lambda s, k, _i: k[0] if s == _NONE else s)
            tpr, fpr = plan.judge[node.model] if node.model else (1.0, 0.0)
            for lab, p in first.items():
                if node.role == "critic":
                    _add(dist, (lab, _NO_SCORE), p)
                else:
                    yes = tpr if lab == _C else fpr
                    _add(dist, (lab, 1), p * yes)
                    _add(dist, (lab, 0), p * (1.0 - yes))
        elif node.role == "best_of":
            # Strictly higher replaces: the first of equals stays (no score: -1 > -2).
            best = _fold(parts, (_NONE, -2), lambda s, k, _i: k if k[1] > s[1] else s)
            for key, p in best.items():
                _add(dist, key, p)
        elif node.role == "select":
            last = node.prefer_last
            chosen = _fold(parts, _NONE, lambda s, k, _i: k[0] if last or s == _NONE else s)
            for lab, p in chosen.items():
                _add(dist, (lab, _NO_SCORE), p)
        else:
            dist = self._router_dist(plan, world, node, ins, parts)
        return dist

    def _router_dist(
        self, plan: _Plan, world: _World, node: _Node, ins: Sequence[str], parts: Sequence[Dist]
    ) -> Dist:
        """The router's outcome restricted to this world's decision (so it carries the
        decision's probability)."""
        from_router = [plan.nodes[s].is_router for s in ins]

        def step(s: tuple[int, int, int], k: Key, i: int) -> tuple[int, int, int]:
            rank, lab, first = s  # best score so far and its answer; first candidate
            if k[1] != _NO_SCORE and k[1] > rank:
                rank, lab = k[1], k[0]
            if first == _NONE and not from_router[i]:
                first = k[0]
            return rank, lab, first

        decision = world.decisions[plan.routers.index(node.name)]
        easy: Prob = 1.0
        if node.mode == "difficulty":
            assert node.model is not None
            easy = self._p(node.model)
        dist: Dist = {}
        for (rank, lab, first), p in _fold(parts, (_NO_SCORE, _NONE, _NONE), step).items():
            if node.mode == "score":
                scored = rank != _NO_SCORE
                verdict = "pass" if (rank if scored else 0) >= node.threshold else "fail"
                if verdict == decision:
                    _add(dist, (lab, rank) if scored else (first, _NO_SCORE), p)
            else:
                _add(dist, (first, _NO_SCORE), p * (easy if decision == "easy" else 1.0 - easy))
        return dist or {(_NONE, _NO_SCORE): 0.0}

    def _exact_world(
        self,
        plan: _Plan,
        world: _World,
        modes: tuple[int, ...],
        memo: dict[tuple[str, tuple[int, ...]], Dist],
    ) -> tuple[Prob, Prob]:
        """(P(correct and this world), P(this world)) per task, given the groups' modes.
        ``memo`` keeps this world's node distributions across the groups' modes."""
        dists: dict[str, Dist] = {}
        read: set[str] = set()
        for name in plan.order:
            if name in world.active:
                node = plan.nodes[name]
                ins = [s for s in node.inputs if (s, name) in world.on and s in node.reads]
                read.update(ins)
                key = (name, tuple(modes[j] for j in plan.below[name]))
                found = memo.get(key)
                if found is None:
                    found = self._node_dist(plan, world, node, ins, dists, modes)
                    memo[key] = found
                dists[name] = found
        # Nodes nobody reads (the output; a router read only for its decision) are the roots
        # of the factor tree: the world's probability is the product of their masses.
        mass: Prob = 1.0
        for name in world.active:
            if name not in read and name != plan.output:
                mass = mass * sum(dists[name].values(), 0.0)
        if plan.output not in world.active:
            return 0.0, mass
        out = dists[plan.output]
        right = sum((p for (lab, _), p in out.items() if lab == _C), 0.0)
        return right * mass, sum(out.values(), 0.0) * mass

    # -- exact expectation, any DAG: the joint distribution of the messages still needed

    def _joint_world(self, plan: _Plan, world: _World, modes: tuple[int, ...]) -> tuple[Prob, Prob]:
        """(P(correct and this world), P(this world)) per task, for any graph: a
        distribution over the tuple of messages still to be read (answer, origin, score),
        unique answers numbered by first appearance and origins likewise, so that
        equivalent tuples merge. A node's random part (a fresh draw, a revision, a
        verdict) depends only on its own deterministic part, so it is drawn when the node
        is first read: a debate round then branches over the new answers only after the
        old ones, all read, are dropped."""
        index = {n: i for i, n in enumerate(plan.order)}
        last: dict[str, int] = {}  # the last step that reads each node in this world
        for name in plan.order:
            for src in plan.nodes[name].inputs:
                if (src, name) in world.on:
                    last[src] = index[name]
        live: list[str] = []
        pending: dict[str, str] = {}  # live node -> "fresh" | "revise" | "verdict"
        states: dict[tuple[_Entry, ...], Prob] = {(): 1.0}
        for name in plan.order:
            if name not in world.active:
                continue
            node = plan.nodes[name]
            ins = [s for s in node.inputs if (s, name) in world.on]
            # Inputs read last here whose random part is a plain number per outcome (a
            # verdict, a revision) are drawn inside this node's step: their outcomes never
            # multiply the stored states (five verifiers into best_of: 32 times fewer).
            inner: dict[str, Callable[[_Entry, int], list[tuple[_Entry, Prob]]]] = {}
            for src in ins:
                if src not in pending:
                    continue
                kind = pending.pop(src)
                draw = self._random_part(plan, world, src, kind, modes)
                # (A fresh draw's chances differ per task: drawn into the states instead.)
                if last[src] == index[name] and src != plan.output and kind != "fresh":
                    inner[src] = draw
                else:
                    states = self._resolve(live, states, src, draw)
            at = [live.index(s) for s in ins]
            live.append(name)
            keep = [
                i for i, n in enumerate(live) if n == plan.output or last.get(n, -1) > index[name]
            ]
            new: dict[tuple[_Entry, ...], Prob] = {}
            for state, p in states.items():
                msgs = [state[i] for i in at]
                coef: dict[tuple[_Entry, ...], Prob] = {}
                for drawn, q0 in _combinations(msgs, ins, inner):
                    for entry, q in self._decide(plan, world, node, index[name], ins, drawn):
                        full = (*state, entry)
                        nxt = _canon(tuple(full[i] for i in keep))
                        v = q0 * q
                        coef[nxt] = coef[nxt] + v if nxt in coef else v
                for nxt, c in coef.items():
                    v = p * c
                    new[nxt] = new[nxt] + v if nxt in new else v
            states = new
            if node.role in _WRITERS:
                pending[name] = "fresh" if node.source else "revise"
            elif node.role == "verifier":
                pending[name] = "verdict"
            live = [live[i] for i in keep]
            pending = {n: k for n, k in pending.items() if n in live}
        if plan.output not in world.active:
            return 0.0, sum(states.values(), 0.0)
        if plan.output in pending:
            draw = self._random_part(plan, world, plan.output, pending[plan.output], modes)
            states = self._resolve(live, states, plan.output, draw)
        out = live.index(plan.output)
        right = sum((p for st, p in states.items() if st[out][0] == _C), 0.0)
        return right, sum(states.values(), 0.0)

    def _decide(
        self,
        plan: _Plan,
        world: _World,
        node: _Node,
        me: int,
        ins: Sequence[str],
        msgs: Sequence[_Entry],
    ) -> list[tuple[_Entry, Prob]]:
        """A node's deterministic part given its inputs' messages (a router's decision is
        checked against the world: an outcome of another world has probability 0)."""
        from_router = [plan.nodes[s].is_router for s in ins]
        cands: list[_Entry] = []
        seen: set[int] = set()
        for m, r in zip(msgs, from_router, strict=True):
            if not r and m[0] != _NONE and m[1] not in seen:
                seen.add(m[1])
                cands.append(m)
        role = node.role
        if role in _WRITERS:
            if node.source:
                return [((_FRESH, me, _NO_SCORE), 1.0)]
            return [((_plurality_of(cands), me, _NO_SCORE), 1.0)]
        if role in ("critic", "verifier"):
            return [((cands[0][0], cands[0][1], _NO_SCORE), 1.0)]
        if role == "vote":
            top = _plurality_of(cands)
            winner = next(m for m in cands if m[0] == top)
            return [((top, winner[1], _NO_SCORE), 1.0)]
        if role == "best_of":
            pool = [m for m in msgs if m[0] != _NONE]
            best = pool[0]
            for m in pool[1:]:
                if m[2] > best[2]:
                    best = m
            return [(best, 1.0)]
        if role == "select":
            chosen = msgs[-1] if node.prefer_last else msgs[0]
            return [((chosen[0], chosen[1], _NO_SCORE), 1.0)]
        decision = world.decisions[plan.routers.index(node.name)]
        carried: _Entry | None = cands[0] if cands else None
        if node.mode == "difficulty":
            assert node.model is not None
            easy = self._p(node.model)
            q: Prob = easy if decision == "easy" else 1.0 - easy
            score = _NO_SCORE
        else:
            q = 1.0
            scored = [m for m in msgs if m[2] != _NO_SCORE]
            score = _NO_SCORE
            if scored:
                carried = scored[0]
                for m in scored[1:]:
                    if m[2] > carried[2]:
                        carried = m
                score = carried[2]
            verdict = "pass" if max(score, 0) >= node.threshold else "fail"
            if verdict != decision:
                return []
        if carried is None:
            return [((_NONE, me, score), q)]
        return [((carried[0], carried[1], score), q)]

    def _random_part(
        self, plan: _Plan, world: _World, name: str, kind: str, modes: tuple[int, ...]
    ) -> Callable[[_Entry, int], list[tuple[_Entry, Prob]]]:
        """The random part of a node's message: ``draw(entry, fresh_id)`` lists the
        messages it may become, with their probabilities (a new unique answer is
        ``fresh_id``)."""
        node = plan.nodes[name]
        assert node.model is not None
        w = self.attractor
        if kind == "verdict":
            tpr, fpr = plan.judge[node.model]

            def verdict(e: _Entry, _fresh: int) -> list[tuple[_Entry, Prob]]:
                yes = tpr if e[0] == _C else fpr
                return [((e[0], e[1], 1), yes), ((e[0], e[1], 0), 1.0 - yes)]

            return verdict
        if kind == "revise":
            judges = [node.model] + [
                m for s in node.inputs if (s, name) in world.on and (m := _critic_model(plan, s))
            ]
            f = sum(plan.revision[m][0] for m in judges) / len(judges)
            g = sum(plan.revision[m][1] for m in judges) / len(judges)

            def revise(e: _Entry, fresh: int) -> list[tuple[_Entry, Prob]]:
                if e[0] == _C:
                    return [
                        ((_C, e[1], e[2]), 1.0 - g),
                        ((_A, e[1], e[2]), g * w),
                        ((fresh, e[1], e[2]), g * (1.0 - w)),
                    ]
                return [((_C, e[1], e[2]), f), (e, 1.0 - f)]

            return revise
        dist = self._fresh(plan, node.model, modes)

        def draw(e: _Entry, fresh: int) -> list[tuple[_Entry, Prob]]:
            return [((fresh if lab == _U else lab, e[1], e[2]), q) for (lab, _), q in dist.items()]

        return draw

    def _resolve(
        self,
        live: Sequence[str],
        states: Mapping[tuple[_Entry, ...], Prob],
        name: str,
        draw: Callable[[_Entry, int], list[tuple[_Entry, Prob]]],
    ) -> dict[tuple[_Entry, ...], Prob]:
        """Draw the random part of a live node's message in every state."""
        at = live.index(name)
        new: dict[tuple[_Entry, ...], Prob] = {}
        for state, p in states.items():
            for entry, q in draw(state[at], _FRESH):
                if isinstance(q, float) and q == 0.0:
                    continue  # impossible: fewer states
                nxt = _canon((*state[:at], entry, *state[at + 1 :]))
                v = p * q
                new[nxt] = new[nxt] + v if nxt in new else v
        return new

    def _table(self, plan: _Plan, engine: str = "auto") -> _Exact:
        """P(correct and world w) and P(world w) for every world and task, exactly."""
        right = np.zeros((len(plan.worlds), self.n_tasks))
        total = np.zeros((len(plan.worlds), self.n_tasks))
        configs = self._configs(plan)
        joint = engine == "joint" or (engine == "auto" and not plan.tree)
        for i, world in enumerate(plan.worlds):
            memo: dict[tuple[str, tuple[int, ...]], Dist] = {}
            for modes, weight in configs:
                if joint:
                    r, t = self._joint_world(plan, world, modes)
                else:
                    r, t = self._exact_world(plan, world, modes, memo)
                right[i] += weight * r
                total[i] += weight * t
        # Each task's worlds add up to 1 but for rounding; make it exact so that one world
        # gives its figures unchanged.
        norm = total.sum(axis=0)
        return _Exact(right=right / norm, total=total / norm)

    def _exact(self, plan: _Plan, table: _Exact) -> Metrics:
        lat = np.array([w.latency_s for w in plan.worlds])
        cost = np.array([w.cost_usd for w in plan.worlds])
        tok = np.array([w.tokens for w in plan.worlds], dtype=np.float64)
        share = table.total.mean(axis=1)
        return Metrics(
            score=float(table.right.sum(axis=0).mean()),
            latency_s=float(share @ lat),
            cost_usd=float(share @ cost),
            tokens=float(share @ tok),
            latency_p95_s=_quantile(lat, share, 0.95),
        )

    # -- noisy evaluation: a direct simulation of the roles

    def _sample(self, plan: _Plan, t: int, rng: np.random.Generator) -> SimOutcome:
        w = self.attractor
        fresh_ids = itertools.count(2)  # answers: 0 correct, 1 attractor, >= 2 unique

        def draw(model: str) -> int:
            if rng.random() < self._p(model)[t]:
                return 0
            return 1 if rng.random() < w else next(fresh_ids)

        shared: dict[str, int] = {}
        for m in plan.profiles:
            if rng.random() < self._rho(m):
                shared[m] = draw(m)

        msgs: dict[str, _Msg] = {}
        decisions: dict[str, str] = {}
        for name in plan.order:
            node = plan.nodes[name]
            ins = []
            for src in node.inputs:
                msg = msgs[src]
                if msg.routes is not None and name not in msg.routes:
                    msg = _SKIPPED
                ins.append(msg)
            if ins and all(m.skipped for m in ins):
                msgs[name] = _SKIPPED
                continue
            ok = [m for m in ins if not m.skipped]
            cands = _candidates(ok)
            if node.role in _WRITERS:
                assert node.model is not None
                if not cands:
                    answer = shared[node.model] if node.model in shared else draw(node.model)
                else:
                    answer = _plurality(cands)
                    judges = [node.model] + [m.model for m in ok if m.role == "critic" and m.model]
                    f = sum(plan.revision[j][0] for j in judges) / len(judges)
                    g = sum(plan.revision[j][1] for j in judges) / len(judges)
                    if answer == 0:
                        if rng.random() < g:
                            answer = 1 if rng.random() < w else next(fresh_ids)
                    elif rng.random() < f:
                        answer = 0
                msgs[name] = _Msg(name, node.role, node.model, answer, name)
            elif node.role in ("critic", "verifier"):
                target = cands[0]
                score = None
                if node.role == "verifier":
                    assert node.model is not None
                    tpr, fpr = plan.judge[node.model]
                    score = 1.0 if rng.random() < (tpr if target.answer == 0 else fpr) else 0.0
                msgs[name] = _Msg(name, node.role, node.model, target.answer, target.origin, score)
            elif node.role == "vote":
                top = _plurality(cands)
                winner = next(m for m in cands if m.answer == top)
                msgs[name] = _Msg(name, node.role, None, top, winner.origin)
            elif node.role == "best_of":
                pool = [m for m in ok if m.answer is not None]
                best = max(pool, key=lambda m: -1.0 if m.score is None else m.score)
                msgs[name] = _Msg(name, node.role, None, best.answer, best.origin, best.score)
            elif node.role == "select":
                chosen = ok[-1] if node.prefer_last else ok[0]
                msgs[name] = _Msg(name, node.role, None, chosen.answer, chosen.origin)
            else:  # router
                carried = cands[0] if cands else None
                score = None
                if node.mode == "score":
                    scored = [m for m in ok if m.score is not None]
                    if scored:
                        carried = max(scored, key=lambda m: m.score or 0.0)
                        score = carried.score
                    decision = "pass" if (score or 0.0) >= node.threshold else "fail"
                else:
                    assert node.model is not None
                    easy = self._p(node.model)[t]
                    decision = "easy" if rng.random() < easy else "hard"
                decisions[name] = decision
                msgs[name] = _Msg(
                    name,
                    node.role,
                    node.model,
                    carried.answer if carried else None,
                    carried.origin if carried else name,
                    score,
                    routes=node.routes[decision],
                )
        key = tuple(decisions.get(r, plan.nodes[r].decisions[0]) for r in plan.routers)
        world = plan.worlds[plan.world_index[key]]
        final = msgs[plan.output]
        kind: Literal["correct", "attractor", "unique", "none"] = "none"
        if not final.skipped and final.answer is not None:
            kind = ("correct", "attractor")[final.answer] if final.answer < 2 else "unique"
        return SimOutcome(
            task_id=t,
            correct=kind == "correct",
            answer=kind,
            latency_s=world.latency_s,
            cost_usd=world.cost_usd,
            tokens=world.tokens,
        )


_Entry = tuple[int, int, int]  # a message in the joint engine: (answer, origin, score)
_UNIQUE = 1000  # unique wrong answers in the joint engine: 1000, 1001, ... by first appearance
_FRESH = 10**9  # a unique answer just drawn, numbered by the next _canon


def _canon(state: tuple[_Entry, ...]) -> tuple[_Entry, ...]:
    """Number unique answers (from _UNIQUE) and origins (from -1 down) by first
    appearance: tuples that differ only in those names are the same situation."""
    answers: dict[int, int] = {}
    origins: dict[int, int] = {}
    out = []
    for answer, origin, score in state:
        if answer >= _UNIQUE:
            answer = answers.setdefault(answer, _UNIQUE + len(answers))
        out.append((answer, origins.setdefault(origin, -1 - len(origins)), score))
    return tuple(out)


def _combinations(
    msgs: Sequence[_Entry],
    names: Sequence[str],
    inner: Mapping[str, Callable[[_Entry, int], list[tuple[_Entry, Prob]]]],
) -> Iterator[tuple[list[_Entry], Prob]]:
    """Every combination of the random parts of the inputs in ``inner`` (the others as
    they are), with its probability; new unique answers are distinct per input."""
    options: list[list[tuple[_Entry, Prob]]] = []
    for k, (m, n) in enumerate(zip(msgs, names, strict=True)):
        options.append(inner[n](m, _FRESH + k) if n in inner else [(m, 1.0)])
    for combo in itertools.product(*options):
        q: Prob = 1.0
        for _, qi in combo:
            q = q * qi
        yield [m for m, _ in combo], q


def _plurality_of(cands: Sequence[_Entry]) -> int:
    counts: dict[int, int] = {}
    for m in cands:
        counts[m[0]] = counts.get(m[0], 0) + 1
    return max(counts, key=counts.__getitem__)  # first seen among equals


def _critic_model(plan: _Plan, name: str) -> str | None:
    node = plan.nodes[name]
    return node.model if node.role == "critic" else None


@dataclass(slots=True)  # not frozen: a frozen dataclass is slow to build, many per task
class _Msg:
    node: str
    role: str
    model: str | None
    answer: int | None
    origin: str
    score: float | None = None
    routes: frozenset[str] | None = None
    skipped: bool = False


_SKIPPED = _Msg("", "", None, None, "", skipped=True)


def _candidates(ok: Sequence[_Msg]) -> list[_Msg]:
    """As the roles' ``candidates``: answers, not router messages, one per origin."""
    seen: set[str] = set()
    out = []
    for m in ok:
        if m.answer is not None and m.routes is None and m.origin not in seen:
            seen.add(m.origin)
            out.append(m)
    return out


def _plurality(cands: Sequence[_Msg]) -> int:
    counts: dict[int, int] = {}
    for m in cands:
        assert m.answer is not None
        counts[m.answer] = counts.get(m.answer, 0) + 1
    return max(counts, key=counts.__getitem__)  # first seen among equals


def _quantile(values: Array, weights: Array, q: float) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, q * cum[-1] - 1e-12))
    return float(values[order][min(i, len(values) - 1)])
