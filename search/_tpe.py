"""Optuna's TPE sampler as a searcher: the baseline a user would reach for otherwise.

Each decision of the space becomes one categorical parameter of an Optuna study, driven
through the study's ask-and-tell interface. Optuna is an optional extra, imported when a
:class:`TpeSearch` is built.

Exact resumption: a TPE sampler's state is its seed plus the study's trials. Every ``ask``
builds a fresh sampler seeded from the searcher's own generator, so the state to save is
that generator and the finished trials, and a study rebuilt from them samples exactly as
the original would have.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from agentgraph import MissingDependency

from ._objective import Evaluation, Objective, SearchError
from ._searchers import Candidate, SampleLike, Searcher, SearchSpace, _copy_params

__all__ = ["CategoricalSpace", "TpeSearch"]

D = TypeVar("D", bound=Hashable)

OPTUNA_INSTALL = "pip install optuna"


class CategoricalSpace(SearchSpace[D], Protocol[D]):
    """A space whose decision vector is a fixed list of categorical choices."""

    def choices(self) -> Sequence[tuple[str, int]]:
        """(name, number of options) of each decision, in decision-vector order."""
        ...

    def decisions_from_choices(self, choices: Sequence[int]) -> D:
        """The decision vector that picks option ``choices[i]`` for decision ``i``."""
        ...


def _import_optuna() -> Any:
    # Imported by name so that type checking passes where the extra is not installed.
    try:
        return importlib.import_module("optuna")
    except ImportError:
        raise MissingDependency(
            f"the tpe searcher needs Optuna, which is not installed; install it with: "
            f"{OPTUNA_INSTALL}"
        ) from None


class TpeSearch(Searcher[D]):
    """Tree-structured Parzen Estimator (Optuna's ``TPESampler`` with Optuna's defaults; from
    Optuna 5 these are multivariate TPE and a constant liar for trials asked together, which
    earlier versions only offer as experimental options) on the same decisions, maximizing
    the objective's Lagrangian reward. The first ``n_startup_trials`` are uniform at random.
    ``quiet`` lowers Optuna's log level (process-wide) to warnings, so that each finished
    trial is not logged."""

    kind = "tpe"

    def __init__(
        self,
        space: CategoricalSpace[D],
        objective: Objective | None = None,
        *,
        seed: int = 0,
        n_startup_trials: int = 10,
        quiet: bool = True,
    ) -> None:
        super().__init__(space, objective, seed=seed)
        self._optuna = optuna = _import_optuna()
        if quiet:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space: CategoricalSpace[D] = space
        self.n_startup_trials = n_startup_trials
        self.quiet = quiet
        self._names = [name for name, _ in space.choices()]
        if len(set(self._names)) != len(self._names):
            raise SearchError(f"the space names two decisions alike: {self._names}")
        self._dists = {
            name: optuna.distributions.CategoricalDistribution(list(range(k)))
            for name, k in space.choices()
        }
        self._params = _copy_params(space.init_params())
        self._study = optuna.create_study(direction="maximize", sampler=self._sampler())
        self._asked: list[tuple[D, Any]] = []  # (decisions, optuna trial) not told yet

    def _sampler(self) -> Any:
        seed = int(self.rng.integers(2**32))
        return self._optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def _ask(self, n: int) -> list[SampleLike[D]]:
        self._study.sampler = self._sampler()
        out: list[SampleLike[D]] = []
        for _ in range(n):
            trial = self._study.ask(self._dists)
            decisions = self.space.decisions_from_choices([trial.params[k] for k in self._names])
            self._asked.append((decisions, trial))
            out.append(
                Candidate(
                    decisions,
                    self.space.decisions_to_spec(decisions),
                    self.space.log_prob(decisions, self._params),
                )
            )
        return out

    def _learn(
        self,
        samples: Sequence[SampleLike[D]],
        results: Sequence[Evaluation],
        rewards: NDArray[np.float64],
    ) -> None:
        asked = self._asked
        for sample, reward in zip(samples, rewards, strict=True):
            # Matched by decisions, not identity: samples may come back rebuilt (from a log).
            i = next((i for i, (d, _) in enumerate(asked) if d == sample.decisions), None)
            if i is None:
                raise SearchError(
                    f"tpe searcher was told of decisions {sample.decisions!r} it did not ask"
                )
            _, trial = asked.pop(i)
            self._study.tell(trial, float(reward))
        # Asked but never told: failed, so TPE neither learns from them nor waits on them.
        for _, trial in asked:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        self._asked = []

    def _config(self) -> dict[str, Any]:
        return {"n_startup_trials": self.n_startup_trials, "quiet": self.quiet}

    def _save(self) -> dict[str, Any]:
        complete = self._optuna.trial.TrialState.COMPLETE
        return {
            "trials": [
                [[int(t.params[k]) for k in self._names], float(t.value)]
                for t in self._study.get_trials(deepcopy=False, states=(complete,))
            ]
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        create_trial = self._optuna.trial.create_trial
        for choices, value in state["trials"]:
            if len(choices) != len(self._names) or not all(
                0 <= c < len(self._dists[k].choices)
                for k, c in zip(self._names, choices, strict=False)
            ):
                raise SearchError(
                    f"tpe state has a trial {choices!r} outside this space's choices "
                    f"{[len(d.choices) for d in self._dists.values()]}"
                )
            self._study.add_trial(
                create_trial(
                    params=dict(zip(self._names, choices, strict=True)),
                    distributions=self._dists,
                    value=float(value),
                )
            )
