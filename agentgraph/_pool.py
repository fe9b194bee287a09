"""``ModelPool``: named models shared by many graphs.

A search runs thousands of graph variants that each use a few models of one pool. Built
from a pool, they share one backend per model (a local model loads once, a remote client
is made once), the slot limits of those backends (slots are per resource and event loop,
so variants running at once queue together) and the pool's call cache. A variant's spec
declares only the models it uses: :meth:`ModelPool.models` gives their specs by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

from ._cache import CallCache
from ._compile import build_backend
from ._errors import GraphValidationError
from ._graph import Graph
from ._model import ModelBackend
from ._spec import GraphSpec, ModelSpec, options_hint

__all__ = ["ModelPool"]


class ModelPool:
    """``ModelPool({"small": ModelSpec(...), "big": ModelSpec(...)}, cache=CallCache(...))``.

    Entries are model specs (the backend is built on first use, relative paths resolving
    against ``base_dir``) or ready backends. ``pool.graph(spec)`` builds a graph that takes
    its models from the pool; a spec may declare any subset of the pool, and a model it
    declares must match the pool's spec of that name. The pool closes what it built.
    """

    def __init__(
        self,
        models: Mapping[str, ModelSpec | ModelBackend],
        *,
        base_dir: str | Path | None = None,
        cache: CallCache | None = None,
    ) -> None:
        if not models:
            raise ValueError("a model pool needs at least one model")
        self.cache = cache
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._specs: dict[str, ModelSpec] = {}
        self._backends: dict[str, ModelBackend] = {}
        for name, entry in models.items():
            if isinstance(entry, ModelSpec):
                self._specs[name] = entry
            else:
                self._backends[name] = entry
        self._built: list[ModelBackend] = []

    @classmethod
    def from_spec(
        cls, spec: GraphSpec, *, base_dir: str | Path | None = None, cache: CallCache | None = None
    ) -> ModelPool:
        """A pool of the models a graph spec declares."""
        return cls(dict(spec.models), base_dir=base_dir, cache=cache)

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._backends

    def __iter__(self) -> Iterator[str]:
        return iter([*self._specs, *(n for n in self._backends if n not in self._specs)])

    def __len__(self) -> int:
        return len(set(self._specs) | set(self._backends))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self)

    def models(self, names: Iterable[str]) -> dict[str, ModelSpec]:
        """The specs of ``names``, for a graph spec that uses them."""
        out = {}
        for name in names:
            self._check(name)
            spec = self._specs.get(name)
            if spec is None:
                raise GraphValidationError(
                    f"model {name!r} was given to the pool as a backend and has no spec; "
                    "declare it in the graph yourself"
                )
            out[name] = spec
        return out

    def backend(self, name: str) -> ModelBackend:
        """The pool's backend for ``name``, built on first use."""
        self._check(name)
        backend = self._backends.get(name)
        if backend is None:
            backend = build_backend(name, self._specs[name], self._base_dir)
            self._backends[name] = backend
            self._built.append(backend)
        return backend

    def backend_for(self, name: str, declared: ModelSpec) -> ModelBackend:
        """:meth:`backend`, after checking that a graph's declaration of ``name`` matches."""
        pooled = self._specs.get(name)
        if pooled is not None and pooled.model_dump() != declared.model_dump():
            raise GraphValidationError(
                f"model {name!r} differs from the pool's model of that name; use the pool's "
                "spec (ModelPool.models) or another name",
                path=("models", name),
            )
        return self.backend(name)

    def graph(self, spec: GraphSpec, *, cache: CallCache | None = None) -> Graph:
        """A graph whose models come from this pool (and whose cache is the pool's, unless
        ``cache`` is given)."""
        return Graph(spec, pool=self, base_dir=self._base_dir, cache=cache)

    def _check(self, name: str) -> None:
        if name not in self:
            valid = options_hint("models", list(self), name)
            raise GraphValidationError(f"model {name!r} is not in the pool; {valid}")

    async def aopen(self, names: Iterable[str] | None = None) -> None:
        """Load or connect the pool's models (all, or ``names``) ahead of the first run."""
        chosen = list(self) if names is None else list(names)
        await asyncio.gather(*(self.backend(n).aopen() for n in chosen))

    async def aclose(self) -> None:
        """Close the backends the pool built (those given to it belong to their makers)."""
        built, self._built = self._built, []
        for backend in built:
            self._backends = {n: b for n, b in self._backends.items() if b is not backend}
        await asyncio.gather(*(b.aclose() for b in built))

    async def __aenter__(self) -> ModelPool:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ModelPool {', '.join(self)}>"
