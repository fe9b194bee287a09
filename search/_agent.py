"""Agent-REINFORCE: a feedback model reads each batch of sampled graphs with their results
and proposes new probabilities for the search distribution, a "textual gradient"
(arXiv 2511.00086), applied inside a trust region.

::

    pool = ModelPool({"judge": ModelSpec(...)}, cache=cache)
    searcher = AgentReinforce(space, objective, feedback=feedback_from_model(pool, "judge"))
    await atune(space, searcher, tasks, evals=64, store="s.sqlite", cache=cache)

Each ``atell`` shows the feedback model the task kind, the budget and its multipliers,
the current probabilities (:meth:`GraphSpace.probabilities`), the batch's graphs (the
options each took, score, latency, cost, tokens, feasibility, failed tasks) and the best
feasible graph so far, and asks for a JSON object of new probabilities for some or all
decisions. The first JSON object of the reply is read (prose and code fences around it are
fine) and checked by :meth:`GraphSpace.params_from_probabilities`. Each named decision
then moves toward the proposal, at most ``trust_region`` in total-variation distance::

    p_new = p_cur + t * (p_prop - p_cur),   t = min(1, trust_region / TV(p_cur, p_prop))

A reply that cannot be used (no JSON object, an unknown decision or option, a probability
out of range, the feedback model failing or timing out, no feedback model at all) gives
REINFORCE's numeric step instead (:class:`Reinforce`, same Adam state), with a WARNING on
the ``agentgraph.search`` logger that says why. ``llm_updates`` and ``fallbacks`` count
both kinds of step.

``aprepare`` profiles each pool model alone (:meth:`GraphSpace.single_model_specs`) and
starts every per-role model choice at probabilities that favour the models that did well
within the budget; the profile is shown in the first prompt.

The feedback model is not state: ``state()`` stays JSON-able and a searcher restored with
``from_state`` has none until given one (``from_state(space, state, feedback=...)``, or
set ``searcher.feedback``); until then its steps are numeric fallbacks. ``_runtime()``
gives those keywords, for code that restores a searcher in place of a live one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agentgraph import GraphSpec, GraphValidationError, ModelPool, NodeSpec, Sampling

from ._objective import METRICS, Evaluation, Objective, SearchError
from ._reinforce import Reinforce
from ._searchers import Params, SampleLike, SearchSpace
from ._space import Decisions, GraphSpace

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AgentReinforce", "Feedback", "extract_json_object", "feedback_from_model"]

log = logging.getLogger("agentgraph.search")

Feedback = Callable[[str], Awaitable[str]]
"""A feedback model: an async function from a prompt to the model's reply."""

FEEDBACK_SYSTEM = (
    "You tune the search distribution of a graph search. Reply with only a JSON object "
    "of new probabilities, no explanation."
)


def feedback_from_model(
    pool: ModelPool,
    name: str,
    *,
    max_tokens: int = 512,
    timeout_s: float | None = 120.0,
    system: str = FEEDBACK_SYSTEM,
) -> Feedback:
    """A :data:`Feedback` that asks pool model ``name``: one greedy chat call (temperature
    0, so one prompt gets one answer), run as a one-node graph built from ``pool``, so it
    goes through the pool's call cache and shared slots, with the executor's retries and a
    ``timeout_s`` limit. A failed call raises (:class:`~agentgraph.RunFailed`). ``name``
    must be a model the pool has a spec of."""
    if "{" in system or "}" in system:
        raise GraphValidationError(
            f"the feedback system prompt is a template; it cannot contain braces: {system!r}"
        )
    spec = GraphSpec(
        name=f"feedback-{name}",
        description=f"the feedback model of an agent search: {name}",
        task="text",
        models=pool.models([name]),
        nodes={
            "feedback": NodeSpec(
                role="proposer",
                model=name,
                system=system,
                prompt="{question}",
                sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
            )
        },
        output="feedback",
    )

    async def feedback(prompt: str) -> str:
        graph = pool.graph(spec)
        try:
            result = await graph.arun(prompt, timeout_s=timeout_s)
        finally:
            await graph.aclose()
        return result.raise_for_status().output.text

    return feedback


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (which may wrap it in prose or code fences), or
    None when there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            pass
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    return None


class AgentReinforce(Reinforce[Decisions]):
    """REINFORCE whose steps a feedback model proposes in text (see the module docstring).

    ``feedback``: the model to ask (:func:`feedback_from_model`, or any async function of
    a prompt); ``trust_region``: the largest total-variation move of one decision's
    distribution in one step; ``feedback_timeout_s``: how long to wait for a reply.
    ``profile_temperature`` and ``profile_mix`` shape the start that ``aprepare`` gives the
    model choices: ``p ~ (1 - mix) * softmax(reward / temperature) + mix / n``. Other
    keywords (``lr``, ``entropy_coef``, ...) go to :class:`Reinforce`, for the numeric
    fallback step.

    A plain ``tell`` (which cannot wait on a model) takes the numeric step, counted and
    logged as a fallback; searches call ``atell``.
    """

    kind = "agent"
    space: GraphSpace

    def __init__(
        self,
        space: GraphSpace,
        objective: Objective | None = None,
        *,
        seed: int = 0,
        feedback: Feedback | None = None,
        trust_region: float = 0.2,
        feedback_timeout_s: float | None = 600.0,
        profile_temperature: float = 0.1,
        profile_mix: float = 0.1,
        **reinforce: Any,
    ) -> None:
        super().__init__(space, objective, seed=seed, **reinforce)
        timeout_ok = feedback_timeout_s is None or feedback_timeout_s > 0
        if not (0 < trust_region <= 1 and timeout_ok and profile_temperature > 0):
            raise SearchError(
                "Agent-REINFORCE needs 0 < trust_region <= 1, feedback_timeout_s > 0 (or "
                f"None) and profile_temperature > 0; got trust_region={trust_region!r}, "
                f"feedback_timeout_s={feedback_timeout_s!r}, "
                f"profile_temperature={profile_temperature!r}"
            )
        if not 0 < profile_mix <= 1:
            raise SearchError(
                f"profile_mix must be in (0, 1] (no model choice may start at 0), "
                f"not {profile_mix!r}"
            )
        self.feedback = feedback
        self.trust_region = trust_region
        self.feedback_timeout_s = feedback_timeout_s
        self.profile_temperature = profile_temperature
        self.profile_mix = profile_mix
        self.llm_updates = 0  # steps the feedback model proposed
        self.fallbacks = 0  # numeric steps taken instead
        self.profile: dict[str, Evaluation] = {}  # pool model -> alone, from aprepare
        # Between atell's wait on the model and tell's _learn: the new parameters, or why
        # there are none. None: tell() was called directly.
        self._step: Params | str | None = None

    # --- profiling the pool ------------------------------------------------------------

    async def aprepare(self, evaluate: Callable[[GraphSpec], Awaitable[Evaluation]]) -> None:
        """Evaluate each pool model alone, then start every decision whose options are all
        pool models at ``(1 - mix) * softmax(reward / temperature) + mix / n``. The reward
        is the objective's, with each violated budget weighted at least 1 (multipliers start
        at 0, which would ignore the budget). Models run one after another: side by side
        they would share slots and look slower than they are."""
        profile = {}
        for model, spec in self.space.single_model_specs().items():
            profile[model] = await evaluate(spec)
        self.profile = profile
        self.params = self._profiled_params()

    def _profile_reward(self, evaluation: Evaluation) -> float:
        lam = self.objective.multipliers
        return evaluation.score - sum(
            (max(lam[k], 1.0) if v > 0 else lam[k]) * v
            for k, v in self.objective.violations(evaluation).items()
        )

    def _profiled_params(self) -> Params:
        rewards = {m: self._profile_reward(e) for m, e in self.profile.items()}
        start: dict[str, Any] = {}
        for site in self.space.sites:
            labels = [str(label) for label in site.labels]
            if site.bernoulli or not all(label in rewards for label in labels):
                continue
            r = np.array([rewards[label] for label in labels])
            w = np.exp((r - r.max()) / self.profile_temperature)
            p = (1 - self.profile_mix) * w / w.sum() + self.profile_mix / len(w)
            start[site.name] = dict(zip(labels, p.tolist(), strict=True))
        if not start:
            return self.params
        return self.space.params_from_probabilities(start, base=self.params)

    # --- learning ----------------------------------------------------------------------

    async def atell(
        self, samples: Sequence[SampleLike[Decisions]], results: Sequence[Evaluation]
    ) -> None:
        """Ask the feedback model for this step, then ``tell`` (which applies it, or the
        numeric step when the reply was unusable)."""
        if len(samples) != len(results):
            raise SearchError(f"tell() got {len(samples)} samples but {len(results)} results")
        self._step = await self._consult(samples, results)
        try:
            self.tell(samples, results)
        finally:
            self._step = None

    async def _consult(
        self, samples: Sequence[SampleLike[Decisions]], results: Sequence[Evaluation]
    ) -> Params | str:
        """The trust-region step the feedback model proposes, or why there is none."""
        if self.feedback is None:
            return "no feedback model configured (pass feedback= or set searcher.feedback)"
        prompt = self.prompt(samples, results)
        try:
            reply = await asyncio.wait_for(self.feedback(prompt), self.feedback_timeout_s)
        except TimeoutError:
            return f"the feedback model gave no reply within {self.feedback_timeout_s:g} s"
        except Exception as exc:  # whatever the model's failure, the search goes on
            return f"the feedback model failed: {type(exc).__name__}: {exc}"
        proposal = extract_json_object(reply)
        if proposal is None:
            return f"no JSON object in the feedback model's reply {_excerpt(reply)!r}"
        try:
            return self.trusted_step(proposal)
        except GraphValidationError as exc:
            return f"unusable update from the feedback model: {exc}"

    def trusted_step(self, proposal: Mapping[str, Any]) -> Params:
        """Parameters that move each decision ``proposal`` names toward its proposed
        distribution, by at most ``trust_region`` in total variation; other decisions keep
        theirs. Raises :class:`~agentgraph.GraphValidationError` (its path names the
        decision) for a proposal that is not shaped like :meth:`GraphSpace.probabilities`."""
        if not proposal:
            raise GraphValidationError("the update names no decision")
        proposed = self.space.probabilities(
            self.space.params_from_probabilities(proposal, base=self.params)
        )
        current = self.space.probabilities(self.params)
        moved: dict[str, Any] = {}
        for name in proposal:
            p, q = _vector(current[name]), _vector(proposed[name])
            tv = 0.5 * float(np.abs(q - p).sum())
            if tv > 0:
                t = min(1.0, self.trust_region / tv)
                moved[name] = _shaped(current[name], p + t * (q - p))
        if not moved:
            return dict(self.params)
        return self.space.params_from_probabilities(moved, base=self.params)

    def _learn(
        self,
        samples: Sequence[SampleLike[Decisions]],
        results: Sequence[Evaluation],
        rewards: NDArray[np.float64],
    ) -> None:
        step = self._step
        if isinstance(step, dict):
            self.params = step
            self.llm_updates += 1
            return
        why = step if step is not None else "tell() cannot wait on the feedback model (atell can)"
        log.warning(
            "agent search, iteration %d: numeric REINFORCE step instead: %s", self.iteration, why
        )
        self.fallbacks += 1
        super()._learn(samples, results, rewards)

    # --- the prompt --------------------------------------------------------------------

    def prompt(
        self, samples: Sequence[SampleLike[Decisions]], results: Sequence[Evaluation]
    ) -> str:
        """What the feedback model reads about a batch (the rewards at the current
        multipliers, as ``tell`` computes them)."""
        objective = self.objective
        limits = objective.budget.limits
        budget = ", ".join(f"{k} <= {v:g}" for k, v in limits.items()) or "none"
        lams = ", ".join(f"{k}={v:.4g}" for k, v in objective.multipliers.items()) or "none"
        parts = [
            f"A search looks for the best graph of LLM roles for {self.space.task} tasks. "
            "Each graph is drawn decision by decision from the probabilities below.",
            f"Budget per task: {budget}. Lagrange multipliers: {lams}. The reward is the "
            "score minus each multiplier times how far the graph is over (or under) its "
            "limit.",
            "Current probabilities (a number is the probability of yes; an object gives "
            "each option's probability):",
            json.dumps(_rounded(self.space.probabilities(self.params))),
        ]
        if self.profile and self.iteration == 0:
            parts.append("Each model alone, as one proposer:")
            parts.append(_table(list(self.profile.items()), objective, first="model"))
        order = sorted(range(len(results)), key=lambda i: -objective.reward(results[i]))
        rows = [
            (self.space.describe_text(samples[i].decisions) or "(no decisions)", results[i])
            for i in order
        ]
        parts.append("This batch, all graphs on the same tasks, best reward first:")
        parts.append(_table(rows, objective))
        best = self.best
        if best is not None:
            row = (self.space.describe_text(best.decisions) or "(no decisions)", best.evaluation)
            parts.append("Best feasible graph so far: " + _table([row], objective, header=False))
        parts.append(
            "Reply with ONLY a JSON object of new probabilities for the decisions you would "
            "change, shaped exactly like the current probabilities (same names and options). "
            "Favour options of graphs with high reward; disfavour those that failed or broke "
            "the budget."
        )
        return "\n\n".join(parts)

    # --- state -------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls,
        space: SearchSpace[Decisions],
        state: Mapping[str, Any],
        *,
        feedback: Feedback | None = None,
    ) -> Self:
        """The searcher ``state()`` described, asking ``feedback`` (not part of the state;
        without it every step is a numeric fallback until ``searcher.feedback`` is set)."""
        searcher = super().from_state(space, state)
        searcher.feedback = feedback
        return searcher

    def _runtime(self) -> dict[str, Any]:
        """What a searcher restored in place of this one takes over: ``from_state``
        keywords that are not state."""
        return {"feedback": self.feedback}

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "trust_region": self.trust_region,
            "feedback_timeout_s": self.feedback_timeout_s,
            "profile_temperature": self.profile_temperature,
            "profile_mix": self.profile_mix,
        }

    def _save(self) -> dict[str, Any]:
        return {
            **super()._save(),
            "agent": {
                "llm_updates": self.llm_updates,
                "fallbacks": self.fallbacks,
                "profile": {m: e.to_dict() for m, e in self.profile.items()},
            },
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        super()._load(state)
        agent = state["agent"]
        self.llm_updates = int(agent["llm_updates"])
        self.fallbacks = int(agent["fallbacks"])
        self.profile = {m: Evaluation.from_dict(e) for m, e in agent["profile"].items()}

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, llm_updates={self.llm_updates}, "
            f"fallbacks={self.fallbacks})"
        )


# --- helpers ------------------------------------------------------------------------------


def _vector(p: float | Mapping[str, float]) -> NDArray[np.float64]:
    """A decision's distribution as a vector (a Bernoulli as [no, yes])."""
    if isinstance(p, Mapping):
        return np.array(list(p.values()), dtype=np.float64)
    return np.array([1.0 - p, p])


def _shaped(like: float | Mapping[str, float], v: NDArray[np.float64]) -> Any:
    """``v`` back in the shape of ``like`` (:meth:`GraphSpace.probabilities`' form)."""
    if isinstance(like, Mapping):
        return dict(zip(like, v.tolist(), strict=True))
    return float(v[1])


def _rounded(probabilities: Mapping[str, Any]) -> dict[str, Any]:
    """Probabilities to 4 places, for reading (the model proposes, the space normalizes)."""
    return {
        k: {o: round(q, 4) for o, q in v.items()} if isinstance(v, Mapping) else round(v, 4)
        for k, v in probabilities.items()
    }


_COLUMNS = ("reward", "score", *METRICS, "feasible", "failed")


def _table(
    rows: Sequence[tuple[str, Evaluation]],
    objective: Objective,
    *,
    header: bool = True,
    first: str = "graph",
) -> str:
    lines = [" | ".join((first, *_COLUMNS))] if header else []
    for label, e in rows:
        cells = [f"{objective.reward(e):.4g}", f"{e.score:.4g}"]
        cells += [f"{getattr(e, m):.4g}" for m in METRICS]
        cells += ["yes" if objective.feasible(e) else "no", f"{e.failed}/{e.n_tasks}"]
        lines.append(" | ".join((label, *cells)))
    return "\n".join(lines)


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
