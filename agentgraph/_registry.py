"""Name -> implementation registries for roles and backends.

The core never imports ``agentgraph.roles`` or ``agentgraph.integrations``: they are found
through the entry-point groups ``agentgraph.roles`` and ``agentgraph.backends`` (loaded on
first lookup, each entry imported only when asked for) or registered explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from ._model import ModelBackend
    from ._role import Role
    from ._spec import ModelSpec

T = TypeVar("T")

BackendFactory = Callable[[str, "ModelSpec", Path], "ModelBackend"]
"""``factory(model_name, model_spec, base_dir) -> backend``; raises GraphValidationError."""


class Registry(Generic[T]):
    def __init__(self, group: str) -> None:
        self._group = group
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, EntryPoint] | None = None

    def _eps(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self._group)}
        return self._entry_points

    def register(self, name: str, item: T) -> None:
        self._items[name] = item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._eps()))

    def get(self, name: str) -> T | None:
        if name not in self._items:
            ep = self._eps().get(name)
            if ep is None:
                return None
            self._items[name] = ep.load()
        return self._items[name]


roles: Registry[type[Role]] = Registry("agentgraph.roles")
backends: Registry[BackendFactory] = Registry("agentgraph.backends")


def register_role(name: str, role: type[Role]) -> None:
    """Make ``role`` available to graphs as ``role: <name>``."""
    roles.register(name, role)


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory`` build models declared with ``backend: <name>``."""
    backends.register(name, factory)
