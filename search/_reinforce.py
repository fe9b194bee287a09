"""REINFORCE on the logits of a graph space: leave-one-out baseline, entropy bonus, Adam,
all in numpy."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._objective import Evaluation, Objective, SearchError
from ._searchers import (
    FloatArray,
    Params,
    SampleLike,
    Searcher,
    SearchSpace,
    _copy_params,
    _params_from_json,
    _params_to_json,
)

__all__ = ["Reinforce", "loo_advantages"]

D = TypeVar("D", bound=Hashable)


def loo_advantages(
    rewards: Sequence[float] | NDArray[np.float64], *, normalize: bool = False
) -> FloatArray:
    """Leave-one-out advantages: ``A_i = r_i - mean_{j != i} r_j``. The baseline of each
    sample uses only the others, so it is independent of that sample and the gradient stays
    unbiased. ``normalize`` divides by their standard deviation (zeros stay zeros). One
    reward alone has no baseline: its advantage is 0."""
    r = np.asarray(rewards, dtype=np.float64)
    n = r.size
    if n < 2:
        return np.zeros(n)
    adv: FloatArray = r - (r.sum() - r) / (n - 1)
    if normalize:
        std = float(adv.std())
        adv = adv / std if std > 1e-12 else np.zeros(n)
    return adv


class Reinforce(Searcher[D]):
    """Score-function policy gradient on the space's logits, with Adam, in numpy.

    For a batch ``x_1..x_n`` with rewards ``r_i`` (the objective's Lagrangian reward) and
    leave-one-out advantages ``A_i = r_i - mean_{j != i} r_j``, the ascent direction is::

        g = (1/n) * sum_i A_i * grad log p(x_i; theta)  +  beta * grad H(theta)

    (``beta``: ``entropy_coef``, which keeps the distribution from collapsing before the
    noise in the rewards averages out). Adam then steps up the gradient, per logit block::

        m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
        theta <- theta + lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    ``normalize`` divides the advantages by their standard deviation, which makes the step
    size independent of the reward scale (Adam already mostly is).
    """

    kind = "reinforce"

    def __init__(
        self,
        space: SearchSpace[D],
        objective: Objective | None = None,
        *,
        seed: int = 0,
        lr: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        entropy_coef: float = 0.05,
        normalize: bool = True,
    ) -> None:
        super().__init__(space, objective, seed=seed)
        b1, b2 = betas
        if not (lr > 0 and 0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0 and entropy_coef >= 0):
            raise SearchError(
                f"REINFORCE needs lr > 0, 0 <= betas < 1, eps > 0, entropy_coef >= 0; got "
                f"lr={lr!r}, betas={betas!r}, eps={eps!r}, entropy_coef={entropy_coef!r}"
            )
        self.lr, self.betas, self.eps = lr, (float(b1), float(b2)), eps
        self.entropy_coef, self.normalize = entropy_coef, normalize
        self.params: Params = _copy_params(space.init_params())
        self._m: Params = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._v: Params = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._t = 0

    def _ask(self, n: int) -> list[SampleLike[D]]:
        return [self.space.sample(self.rng, self.params) for _ in range(n)]

    def gradient(self, decisions: Sequence[D], advantages: Sequence[float] | FloatArray) -> Params:
        """The ascent direction ``g`` above at the current parameters."""
        grad = {k: np.zeros_like(v) for k, v in self.params.items()}
        n = len(decisions)
        for d, a in zip(decisions, advantages, strict=True):
            if a == 0.0:
                continue
            for k, g in self.space.grad_log_prob(d, self.params).items():
                grad[k] += (a / n) * g
        if self.entropy_coef:
            for k, g in self.space.grad_entropy(self.params).items():
                grad[k] += self.entropy_coef * g
        return grad

    def _learn(
        self,
        samples: Sequence[SampleLike[D]],
        results: Sequence[Evaluation],
        rewards: NDArray[np.float64],
    ) -> None:
        adv = loo_advantages(rewards, normalize=self.normalize)
        self._adam_step(self.gradient([s.decisions for s in samples], adv))

    def _adam_step(self, grad: Params) -> None:
        b1, b2 = self.betas
        self._t += 1
        c1, c2 = 1.0 - b1**self._t, 1.0 - b2**self._t
        for k, g in grad.items():
            self._m[k] = b1 * self._m[k] + (1.0 - b1) * g
            self._v[k] = b2 * self._v[k] + (1.0 - b2) * g * g
            # New arrays, not in place: samples already handed out keep their parameters.
            self.params[k] = self.params[k] + self.lr * (self._m[k] / c1) / (
                np.sqrt(self._v[k] / c2) + self.eps
            )

    def _config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "entropy_coef": self.entropy_coef,
            "normalize": self.normalize,
        }

    def _save(self) -> dict[str, Any]:
        return {
            "params": _params_to_json(self.params),
            "adam": {"t": self._t, "m": _params_to_json(self._m), "v": _params_to_json(self._v)},
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        self.params = _params_from_json(state["params"], like=self.params)
        self._m = _params_from_json(state["adam"]["m"], like=self.params)
        self._v = _params_from_json(state["adam"]["v"], like=self.params)
        self._t = int(state["adam"]["t"])
