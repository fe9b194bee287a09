"""A probabilistic graph: a distribution over concrete :class:`~agentgraph.GraphSpec` s.

A space is a fixed list of *decisions* (:class:`Site`), each a categorical (softmax over a
block of logits) or a Bernoulli (one logit: the probability of "yes"). A decision may be
asked only when earlier decisions took given values (the model of a critic is asked only
when there are critique rounds). A sample is drawn decision by decision, in order; its
*decision vector* holds, for every site, the option index taken, or -1 where the site was
not asked. The graph is a deterministic function of that vector (``decisions_to_spec``),
and the vector's probability is the product of the asked decisions' probabilities, so
``log_prob`` is exact whatever the graph builder does with the choices afterwards
(several vectors may give the same graph; they stay distinct outcomes).

Entropy: decisions are independent once asked, so by the chain rule the entropy of the
decision vector is exactly ``sum_s P(s is asked) * H(s)``, where ``H(s)`` is the entropy of
site ``s``'s own distribution. ``P(s is asked)`` is a product of marginals: the condition
of a site is a conjunction over earlier sites, and unfolding the conditions of those sites
in turn gives a set of (site, allowed options) pairs over distinct, independently drawn
sites. :meth:`GraphSpace.entropy` returns that exact joint entropy (of the decision
vector, not of the graphs, which may coincide), and :meth:`GraphSpace.grad_entropy` its
gradient, through both the ``H(s)`` and the ``P(s is asked)`` factors.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agentgraph import (
    AgentGraphError,
    CallCache,
    Defaults,
    GraphSpec,
    GraphValidationError,
    ModelPool,
    ModelSpec,
    NodeSpec,
    TaskKind,
)
from agentgraph._spec import options_hint

if TYPE_CHECKING:
    from ._spacefile import SpaceBudget

__all__ = [
    "Decisions",
    "GraphSpace",
    "Params",
    "Sample",
    "Site",
    "SpaceError",
]

FloatArray = NDArray[np.float64]
Params = dict[str, FloatArray]
"""Named blocks of logits: one block per decision site, named like the site."""
Decisions = tuple[int, ...]
"""One option index per site, -1 where the site was not asked."""
Condition = tuple[int, frozenset[int]]
"""(earlier site index, option indexes it must have taken)."""
Build = Callable[[Decisions], tuple[dict[str, NodeSpec], str]]
Path_ = tuple[str | int, ...]
Coerce = Callable[[Any, Path_], Any]

_FLOOR = 1e-6  # probabilities read back from text are kept off 0 and 1: logits stay finite


class SpaceError(AgentGraphError, ValueError):
    """Decisions or parameters that do not belong to this space (wrong length, an option
    out of range, a decision given where it is not asked, a missing logit block)."""


@dataclass(frozen=True, eq=False, slots=True)
class Site:
    """One decision: ``labels`` are its options (``(False, True)`` for a Bernoulli),
    ``init`` its initial logits, ``when`` the conditions under which it is asked, ``path``
    where the space file declares it."""

    name: str
    labels: tuple[Any, ...]
    bernoulli: bool
    when: tuple[Condition, ...]
    init: FloatArray
    path: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """A graph drawn from a space: its decision vector, its spec and the exact
    log-probability of the decision vector under the parameters it was drawn from."""

    decisions: Decisions
    spec: GraphSpec
    log_prob: float


# --- building sites (for the space file's reader) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Knob:
    """What a graph builder reads: a site's option, or a value the file fixed (a single
    option, a probability of 0 or 1); ``when`` says when a fixed value counts as taken."""

    index: int | None
    labels: tuple[Any, ...]
    value: Any = None
    when: tuple[Condition, ...] = ()

    def read(self, d: Decisions) -> Any:
        if self.index is None:
            return self.value
        return self.labels[d[self.index]] if d[self.index] >= 0 else None


When = Sequence[tuple[Knob, Any]]


class Sites:
    """The sites of a space, in order, as the file's reader declares them."""

    def __init__(self) -> None:
        self.sites: list[Site] = []

    def _conditions(self, when: When) -> tuple[Condition, ...] | None:
        """The conditions on sites, or None when the fixed values rule the site out."""
        out: list[Condition] = []
        for knob, allowed in when:
            if knob.index is None:
                if knob.value not in allowed:
                    return None
                out.extend(knob.when)
            else:
                taken = frozenset(i for i, label in enumerate(knob.labels) if label in allowed)
                if not taken:
                    return None
                out.append((knob.index, taken))
        return tuple(out)

    def _add(self, site: Site) -> Knob:
        site.init.flags.writeable = False  # shared by every init_params() copy
        self.sites.append(site)
        return Knob(len(self.sites) - 1, site.labels)

    def categorical(
        self, name: str, path: Path_, options: Mapping[Any, float], when: When = ()
    ) -> Knob:
        conds, labels = self._conditions(when), tuple(options)
        if conds is None:
            return Knob(None, labels)
        if len(labels) == 1:
            return Knob(None, labels, labels[0], conds)
        init = np.log(np.array(list(options.values()), dtype=np.float64))
        return self._add(Site(name, labels, False, conds, init, path))

    def bernoulli(self, name: str, path: Path_, p: float, when: When = ()) -> Knob:
        conds = self._conditions(when)
        if conds is None:
            return Knob(None, (False, True), False)
        if p in (0.0, 1.0):
            return Knob(None, (False, True), p == 1.0, conds)
        init = np.array([math.log(p) - math.log1p(-p)])
        return self._add(Site(name, (False, True), True, conds, init, path))


# --- per-site math -----------------------------------------------------------------------


def _log_probs(site: Site, z: FloatArray) -> FloatArray:
    if site.bernoulli:  # log(1 - sigmoid z), log sigmoid z, without overflow
        return np.array([-np.logaddexp(0.0, z[0]), -np.logaddexp(0.0, -z[0])])
    shifted = z - z.max()
    out: FloatArray = shifted - np.log(np.exp(shifted).sum())
    return out


def _pullback(site: Site, p: FloatArray, g: FloatArray) -> FloatArray:
    """d f / d logits, given g = d f / d probabilities (softmax or sigmoid Jacobian)."""
    if site.bernoulli:
        return np.array([p[0] * p[1] * (g[1] - g[0])])
    out: FloatArray = p * (g - float(p @ g))
    return out


def _entropy(p: FloatArray, logp: FloatArray) -> float:
    return float(-(p * logp).sum())


def _grad_entropy(site: Site, p: FloatArray, logp: FloatArray) -> FloatArray:
    # Closed forms: -p_j (log p_j + H) for a softmax, -z p (1 - p) for a sigmoid.
    if site.bernoulli:
        return np.array([p[0] * p[1] * (logp[0] - logp[1])])
    out: FloatArray = -p * (logp + _entropy(p, logp))
    return out


def _label(value: Any) -> str:
    return str(value)


# --- the space ---------------------------------------------------------------------------


class GraphSpace:
    """A distribution over graph specs, made by :func:`load_space` from a space file.

    Parameters are logits (:data:`Params`), initially the file's probabilities. Sampling,
    log-probabilities, their gradients (the score function), the entropy and its gradient
    are exact and in closed form, for REINFORCE with Adam; :meth:`probabilities` and
    :meth:`params_from_probabilities` translate parameters to readable probabilities and
    back, for a searcher that reasons in text. ``enumerate`` and ``size`` serve exhaustive
    search of small spaces; ``choices`` and ``decisions_from_choices`` searchers that pick
    every option themselves (TPE). ``sites`` lists the decisions in vector order.
    """

    def __init__(
        self,
        *,
        name: str,
        form: str,
        sites: Sequence[Site],
        build: Build,
        models: Mapping[str, ModelSpec],
        task: TaskKind = "text",
        defaults: Defaults | None = None,
        budget: SpaceBudget | None = None,
        description: str | None = None,
        source: str | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self.name = name
        self.form = form
        """``"layered"`` or ``"supergraph"``."""
        self.sites = tuple(sites)
        self.models = dict(models)
        """The model pool: every model a sample may use."""
        self.task: TaskKind = task
        self.defaults = defaults if defaults is not None else Defaults()
        self.budget = budget
        self.description = description
        self.source = source
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._build = build
        self._index = {s.name: i for i, s in enumerate(self.sites)}
        self._closures = [self._closure(i) for i in range(len(self.sites))]
        self._size: int | None = None
        self._specs: dict[Decisions, GraphSpec] = {}

    def __repr__(self) -> str:
        return f"<GraphSpace {self.name!r} ({self.form}): {len(self.sites)} decisions>"

    def _closure(self, i: int) -> tuple[Condition, ...]:
        """The (site, allowed) pairs that decide whether site ``i`` is asked, conditions of
        conditions included, one pair per site (allowed sets intersected)."""
        merged: dict[int, frozenset[int]] = {}
        todo = list(self.sites[i].when)
        while todo:
            t, allowed = todo.pop()
            if t in merged:
                merged[t] = merged[t] & allowed
            else:
                merged[t] = allowed
                todo.extend(self.sites[t].when)
        return tuple(sorted(merged.items()))

    # --- parameters --------------------------------------------------------------------

    def init_params(self) -> Params:
        """The logits of the probabilities the space file gives (uniform where it gives
        none); a fresh copy each call."""
        return {s.name: s.init.copy() for s in self.sites}

    def _logits(self, params: Mapping[str, FloatArray]) -> list[FloatArray]:
        out = []
        for s in self.sites:
            z = params.get(s.name)
            if z is None:
                raise SpaceError(
                    f"params have no block {s.name!r}; " + options_hint("blocks", params, s.name)
                )
            z = np.asarray(z, dtype=np.float64)
            if z.shape != s.init.shape or not np.all(np.isfinite(z)):
                raise SpaceError(
                    f"params block {s.name!r} has shape {z.shape} (expected {s.init.shape}) "
                    "or non-finite values"
                )
            out.append(z)
        return out

    def probabilities(self, params: Mapping[str, FloatArray]) -> dict[str, Any]:
        """Each decision's distribution when it is asked, readable and JSON-able: a
        Bernoulli as the probability of "yes", a categorical as ``{option: probability}``
        (options as strings)."""
        out: dict[str, Any] = {}
        for s, z in zip(self.sites, self._logits(params), strict=True):
            p = np.exp(_log_probs(s, z))
            if s.bernoulli:
                out[s.name] = float(p[1])
            else:
                out[s.name] = {_label(lab): float(q) for lab, q in zip(s.labels, p, strict=True)}
        return out

    def params_from_probabilities(
        self, probabilities: Mapping[str, Any], *, base: Mapping[str, FloatArray] | None = None
    ) -> Params:
        """Logits from probabilities shaped like :meth:`probabilities`' output (e.g. the
        JSON an LLM returned). Decisions left out keep ``base``'s logits (required when
        some are left out). Categorical weights are normalized; probabilities are kept
        within [1e-6, 1 - 1e-6] so every logit is finite. Errors are
        :class:`~agentgraph.GraphValidationError` s whose path names the decision."""
        unknown = [k for k in probabilities if k not in self._index]
        if unknown:
            raise GraphValidationError(
                f"unknown decision; {options_hint('decisions', self._index, str(unknown[0]))}",
                path=(str(unknown[0]),),
            )
        missing = [s.name for s in self.sites if s.name not in probabilities]
        if missing and base is None:
            raise GraphValidationError(
                f"no probabilities for {', '.join(map(repr, missing))}; give them or pass base=",
                path=(missing[0],),
            )
        out: Params = {}
        if missing and base is not None:
            out = {s.name: z.copy() for s, z in zip(self.sites, self._logits(base), strict=True)}
        for s in self.sites:
            if s.name in probabilities:
                out[s.name] = self._logits_of(s, probabilities[s.name])
        return out

    def _logits_of(self, site: Site, value: Any) -> FloatArray:
        if site.bernoulli:
            p = _number(value, (site.name,), upper=1.0)
            p = min(max(p, _FLOOR), 1 - _FLOOR)
            return np.array([math.log(p) - math.log1p(-p)])
        if not isinstance(value, Mapping):
            raise GraphValidationError(
                f"expected a mapping of option to probability, got {value!r}", path=(site.name,)
            )
        given = {str(k): v for k, v in value.items()}
        labels = [_label(lab) for lab in site.labels]
        extra = [k for k in given if k not in labels]
        if extra:
            raise GraphValidationError(
                f"unknown option; {options_hint('options', labels, extra[0])}",
                path=(site.name, extra[0]),
            )
        absent = [k for k in labels if k not in given]
        if absent:
            raise GraphValidationError(
                f"no probability for option(s) {', '.join(map(repr, absent))}", path=(site.name,)
            )
        w = np.array([_number(given[k], (site.name, k), upper=None) for k in labels])
        if w.sum() <= 0:
            raise GraphValidationError("the probabilities are all 0", path=(site.name,))
        p = np.maximum(w / w.sum(), _FLOOR)
        out: FloatArray = np.log(p / p.sum())
        return out

    # --- decision vectors --------------------------------------------------------------

    @staticmethod
    def _asked(site: Site, d: Sequence[int]) -> bool:
        return all(d[t] in allowed for t, allowed in site.when)

    def _check(self, decisions: Any) -> Decisions:
        if not isinstance(decisions, tuple) or len(decisions) != len(self.sites):
            raise SpaceError(
                f"a decision vector of this space is a tuple of {len(self.sites)} ints, "
                f"not {decisions!r}"
            )
        for s, c in zip(self.sites, decisions, strict=True):
            if not isinstance(c, int | np.integer) or isinstance(c, bool):
                raise SpaceError(f"decision {s.name!r} is {c!r}, not an int")
            if self._asked(s, decisions):
                if not 0 <= c < len(s.labels):
                    raise SpaceError(
                        f"decision {s.name!r} is {c!r}; it is asked here, so it takes an "
                        f"option 0..{len(s.labels) - 1}"
                    )
            elif c != -1:
                raise SpaceError(f"decision {s.name!r} is {c!r}; it is not asked here (-1)")
        return tuple(int(c) for c in decisions)

    def sample(self, rng: np.random.Generator, params: Mapping[str, FloatArray]) -> Sample:
        """Draw a decision vector (one ``rng.random()`` per asked decision) and build its
        graph."""
        d: list[int] = []
        logp = 0.0
        for s, z in zip(self.sites, self._logits(params), strict=True):
            if not self._asked(s, d):
                d.append(-1)
                continue
            lp = _log_probs(s, z)
            cdf = np.cumsum(np.exp(lp))
            c = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
            d.append(c)
            logp += float(lp[c])
        decisions = tuple(d)
        return Sample(decisions, self.decisions_to_spec(decisions), logp)

    def log_prob(self, decisions: Decisions, params: Mapping[str, FloatArray]) -> float:
        """Exact log-probability of the decision vector (a sum over asked decisions)."""
        d = self._check(decisions)
        return float(
            sum(
                _log_probs(s, z)[c]
                for s, z, c in zip(self.sites, self._logits(params), d, strict=True)
                if c >= 0
            )
        )

    def grad_log_prob(self, decisions: Decisions, params: Mapping[str, FloatArray]) -> Params:
        """The score function: d log p(decisions) / d logits, per block (``onehot - p``
        for an asked categorical, ``d - sigmoid(z)`` for an asked Bernoulli, 0 where the
        decision was not asked)."""
        d = self._check(decisions)
        out: Params = {}
        for s, z, c in zip(self.sites, self._logits(params), d, strict=True):
            if c < 0:
                out[s.name] = np.zeros_like(z)
            elif s.bernoulli:
                out[s.name] = np.array([c - math.exp(_log_probs(s, z)[1])])
            else:
                g = -np.exp(_log_probs(s, z))
                g[c] += 1.0
                out[s.name] = g
        return out

    def _stats(
        self, params: Mapping[str, FloatArray]
    ) -> tuple[list[FloatArray], list[FloatArray], list[float], list[list[float]]]:
        logps = [_log_probs(s, z) for s, z in zip(self.sites, self._logits(params), strict=True)]
        ps = [np.exp(lp) for lp in logps]
        hs = [_entropy(p, lp) for p, lp in zip(ps, logps, strict=True)]
        factors = [[float(ps[t][list(a)].sum()) for t, a in cl] for cl in self._closures]
        return ps, logps, hs, factors

    def entropy(self, params: Mapping[str, FloatArray]) -> float:
        """Exact entropy (nats) of the decision vector: ``sum_s P(s asked) * H(s)``."""
        _, _, hs, factors = self._stats(params)
        return float(sum(h * math.prod(f) for h, f in zip(hs, factors, strict=True)))

    def grad_entropy(self, params: Mapping[str, FloatArray]) -> Params:
        """Gradient of :meth:`entropy` with respect to every block of logits."""
        ps, logps, hs, factors = self._stats(params)
        out = {
            s.name: math.prod(f) * _grad_entropy(s, p, lp)
            for s, p, lp, f in zip(self.sites, ps, logps, factors, strict=True)
        }
        for u, closure in enumerate(self._closures):
            for j, (t, allowed) in enumerate(closure):
                others = math.prod(f for k, f in enumerate(factors[u]) if k != j)
                if hs[u] == 0.0 or others == 0.0:
                    continue
                site = self.sites[t]
                indicator = np.zeros(len(site.labels))
                indicator[list(allowed)] = 1.0
                out[site.name] = out[site.name] + hs[u] * others * _pullback(site, ps[t], indicator)
        return out

    def mode(self, params: Mapping[str, FloatArray]) -> Decisions:
        """Each asked decision's most probable option, in order (the greedy graph)."""
        d: list[int] = []
        for s, z in zip(self.sites, self._logits(params), strict=True):
            d.append(int(np.argmax(_log_probs(s, z))) if self._asked(s, d) else -1)
        return tuple(d)

    def enumerate(self) -> Iterator[Decisions]:
        """Every decision vector of the space once, in lexicographic order of sites."""
        d = [-1] * len(self.sites)

        def walk(i: int) -> Iterator[Decisions]:
            if i == len(self.sites):
                yield tuple(d)
                return
            site = self.sites[i]
            if not self._asked(site, d):
                yield from walk(i + 1)
                return
            for c in range(len(site.labels)):
                d[i] = c
                yield from walk(i + 1)
            d[i] = -1

        return walk(0)

    def size(self) -> int:
        """How many decision vectors the space has (exact; several may give one graph).

        Counted site by site, remembering only the values of earlier sites that later
        conditions still read, so spaces too large to enumerate are counted quickly."""
        if self._size is None:
            last_read = [-1] * len(self.sites)
            for j, s in enumerate(self.sites):
                for t, _ in s.when:
                    last_read[t] = max(last_read[t], j)
            states: dict[tuple[tuple[int, int], ...], int] = {(): 1}
            for i, s in enumerate(self.sites):
                grown: dict[tuple[tuple[int, int], ...], int] = defaultdict(int)
                for state, n in states.items():
                    values = dict(state)
                    asked = all(values.get(t, -1) in a for t, a in s.when)
                    options = range(len(s.labels)) if asked else (-1,)
                    if last_read[i] > i:
                        for c in options:
                            grown[(*state, (i, c))] += n
                    else:
                        grown[state] += n * len(options)
                states = defaultdict(int)
                for state, n in grown.items():
                    states[tuple((t, c) for t, c in state if last_read[t] > i)] += n
            self._size = sum(states.values())
        return self._size

    def choices(self) -> list[tuple[str, int]]:
        """(name, number of options) of every decision, in vector order (for searchers
        that pick every option themselves, such as TPE)."""
        return [(s.name, len(s.labels)) for s in self.sites]

    def decisions_from_choices(self, choices: Sequence[int]) -> Decisions:
        """The decision vector that takes ``choices[i]`` wherever decision ``i`` is asked
        (choices for decisions that are not asked are ignored)."""
        if len(choices) != len(self.sites):
            raise SpaceError(f"expected {len(self.sites)} choices, got {len(choices)}")
        d: list[int] = []
        for s, c in zip(self.sites, choices, strict=True):
            if not self._asked(s, d):
                d.append(-1)
            elif 0 <= int(c) < len(s.labels):
                d.append(int(c))
            else:
                raise SpaceError(f"choice {c!r} for {s.name!r} is not in 0..{len(s.labels) - 1}")
        return tuple(d)

    def describe(self, decisions: Decisions) -> dict[str, Any]:
        """The options taken by the asked decisions, by name."""
        d = self._check(decisions)
        return {s.name: s.labels[c] for s, c in zip(self.sites, d, strict=True) if c >= 0}

    def describe_text(self, decisions: Decisions) -> str:
        """:meth:`describe` as one line, ``width=3, cascade.include=yes`` ("" when nothing
        was asked)."""
        return ", ".join(
            f"{k}={'yes' if v is True else 'no' if v is False else v}"
            for k, v in self.describe(decisions).items()
        )

    # --- graphs ------------------------------------------------------------------------

    def decisions_to_spec(self, decisions: Decisions) -> GraphSpec:
        """The graph a decision vector stands for (deterministic; named ``<space>-<hash of
        the decisions>``). It declares only the pool models its nodes use."""
        d = self._check(decisions)
        spec = self._specs.get(d)
        if spec is None:
            nodes, output = self._build(d)
            used = {n.model for n in nodes.values() if n.model is not None}
            digest = hashlib.sha256(",".join(map(str, d)).encode()).hexdigest()[:10]
            chosen = self.describe_text(d)
            spec = GraphSpec(
                name=f"{self.name}-{digest}",
                description=f"sampled from space {self.name!r}: {chosen or 'no decisions'}",
                task=self.task,
                models={m: spec for m, spec in self.models.items() if m in used},
                defaults=self.defaults,
                nodes=nodes,
                output=output,
            )
            if len(self._specs) >= 4096:  # a bounded memo: searches revisit graphs often
                self._specs.clear()
            self._specs[d] = spec
        return spec

    def single_model_specs(self) -> dict[str, GraphSpec]:
        """One graph per pool model: a lone proposer on it, the baseline a tuned graph must
        beat (and what a searcher profiles the pool with). Named ``single-<model>``."""
        return {
            m: GraphSpec(
                name=f"single-{m}",
                description=f"one proposer on {m}",
                task=self.task,
                models={m: model},
                defaults=self.defaults,
                nodes={"answer": NodeSpec(role="proposer", model=m)},
                output="answer",
            )
            for m, model in self.models.items()
        }

    def model_pool(self, *, cache: CallCache | None = None) -> ModelPool:
        """A :class:`~agentgraph.ModelPool` of the space's models (relative model paths
        resolve against the space file's folder), to build many samples on."""
        return ModelPool(self.models, base_dir=self.base_dir, cache=cache)


def _number(value: Any, path: tuple[str | int, ...], *, upper: float | None) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and math.isfinite(value) and value >= 0 and (upper is None or value <= upper):
        return float(value)
    bound = f"between 0 and {upper:g}" if upper is not None else ">= 0"
    raise GraphValidationError(f"expected a probability {bound}, got {value!r}", path=path)
