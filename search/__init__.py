"""Graph search: tune which graph to run on a task.

- :class:`GraphSpace` (from a space file, :func:`load_space`): a probabilistic graph whose
  samples are concrete :class:`agentgraph.GraphSpec` s, with logits as parameters, exact
  log-probabilities, score-function gradients and entropy.
- Searchers behind one ask/tell interface (:class:`Reinforce`, :class:`AgentReinforce`
  (a feedback model proposes the probabilities), :class:`RandomSearch`,
  :class:`GridSearch`, :class:`TpeSearch`), an :class:`Objective` that turns a budget into
  Lagrange-multiplier constraints, and :func:`atune`, which runs a search on a task set
  through one model pool and call cache, recording everything in a :class:`SearchStore`
  so that it resumes exactly. ``agentgraph tune`` is its command line.

Names are imported on first use, so that ``import agentgraph.search`` stays light (numpy
loads with the first space).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._agent import AgentReinforce, Feedback, feedback_from_model
    from ._objective import Evaluation, Objective, SearchBudget, SearchError, pareto_front
    from ._reinforce import Reinforce
    from ._searchers import GridSearch, RandomSearch, Searcher
    from ._space import Decisions, GraphSpace, Params, Sample, Site, SpaceError
    from ._spacefile import SPACE_SCHEMA, SpaceBudget, load_space, loads_space
    from ._store import SearchStore, StoreError
    from ._tpe import TpeSearch
    from ._tune import Iteration, TuneResult, atune

__all__ = [
    "SPACE_SCHEMA",
    "AgentReinforce",
    "Decisions",
    "Evaluation",
    "Feedback",
    "GraphSpace",
    "GridSearch",
    "Iteration",
    "Objective",
    "Params",
    "RandomSearch",
    "Reinforce",
    "Sample",
    "SearchBudget",
    "SearchError",
    "SearchStore",
    "Searcher",
    "Site",
    "SpaceBudget",
    "SpaceError",
    "StoreError",
    "TpeSearch",
    "TuneResult",
    "atune",
    "feedback_from_model",
    "load_space",
    "loads_space",
    "pareto_front",
]

_LAZY = {
    "Decisions": "._space",
    "GraphSpace": "._space",
    "Params": "._space",
    "Sample": "._space",
    "Site": "._space",
    "SpaceBudget": "._spacefile",
    "SpaceError": "._space",
    "SPACE_SCHEMA": "._spacefile",
    "load_space": "._spacefile",
    "loads_space": "._spacefile",
    "atune": "._tune",
    "AgentReinforce": "._agent",
    "Feedback": "._agent",
    "feedback_from_model": "._agent",
    "TuneResult": "._tune",
    "Iteration": "._tune",
    "Reinforce": "._reinforce",
    "RandomSearch": "._searchers",
    "GridSearch": "._searchers",
    "Searcher": "._searchers",
    "TpeSearch": "._tpe",
    "Objective": "._objective",
    "SearchBudget": "._objective",
    "Evaluation": "._objective",
    "SearchError": "._objective",
    "pareto_front": "._objective",
    "SearchStore": "._store",
    "StoreError": "._store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
