"""Graph search: tune which graph to run on a task.

- :class:`GraphSpace` (from a space file, :func:`load_space`): a probabilistic graph whose
  samples are concrete :class:`agentgraph.GraphSpec` s, with logits as parameters, exact
  log-probabilities, score-function gradients and entropy.

Names are imported on first use, so that ``import agentgraph.search`` stays light (numpy
loads with the first space).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._space import Decisions, GraphSpace, Params, Sample, Site, SpaceError
    from ._spacefile import SPACE_SCHEMA, SpaceBudget, load_space, loads_space

__all__ = [
    "SPACE_SCHEMA",
    "Decisions",
    "GraphSpace",
    "Params",
    "Sample",
    "Site",
    "SpaceBudget",
    "SpaceError",
    "load_space",
    "loads_space",
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
