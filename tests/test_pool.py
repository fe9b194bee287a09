"""The model pool, what graphs own, slot pools that do not keep backends alive, and specs
that are immutable values with a canonical fingerprint."""

from __future__ import annotations

import asyncio
import gc
import pickle
import weakref

import pytest

import agentgraph as ag
from agentgraph import _executor


def pool_of(**backends: ag.ModelBackend) -> ag.ModelPool:
    return ag.ModelPool(backends)


def single(
    model: str, role: str = "proposer", models: dict[str, ag.ModelSpec] | None = None
) -> ag.GraphSpec:
    return ag.GraphSpec(
        models=models or {model: ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role=role, model=model)},
        output="p",
    )


async def test_graph_variants_share_the_pools_backends_and_cache(tmp_path: object) -> None:
    specs = {
        "small": ag.ModelSpec(backend="scripted", options={"responses": "Answer: 1"}),
        "big": ag.ModelSpec(backend="scripted", options={"responses": "Answer: 2"}),
    }
    cache = ag.CallCache(":memory:")
    pool = ag.ModelPool(specs, cache=cache)
    # Each variant declares only the model it uses.
    a = pool.graph(single("small", models=pool.models(["small"])))
    b = pool.graph(single("big", models=pool.models(["big"])))
    c = pool.graph(single("small", models=pool.models(["small"])))
    assert a.backends["small"] is c.backends["small"] is pool.backend("small")
    assert a.cache is cache and b.cache is cache
    assert (await a.arun("q")).answer == "1"
    assert (await b.arun("q")).answer == "2"
    again = await c.arun("q")
    assert again.trace[0].cached  # a's call, through the shared cache
    await a.aclose()  # the backend belongs to the pool: closing a graph leaves it
    assert pool.backend("small") is a.backends["small"]
    await pool.aclose()


def test_a_declaration_that_differs_from_the_pool_is_refused() -> None:
    pool = ag.ModelPool({"m": ag.ModelSpec(backend="scripted", options={"responses": "x"})})
    with pytest.raises(ag.GraphValidationError, match="differs from the pool"):
        pool.graph(single("m"))
    with pytest.raises(ag.GraphValidationError, match="not in the pool; valid models: 'm'"):
        pool.models(["n"])


class Closing(ag.ScriptedBackend):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_a_graph_closes_only_the_backends_it_built() -> None:
    given = Closing("Answer: 1")
    spec = ag.GraphSpec(
        models={"given": ag.ModelSpec(backend="scripted"), "own": ag.ModelSpec(backend="scripted")},
        nodes={
            "a": ag.NodeSpec(role="proposer", model="given"),
            "b": ag.NodeSpec(role="proposer", model="own", inputs=("a",)),
        },
        output="b",
    )
    graph = ag.Graph(spec, backends={"given": given})
    await graph.arun("q")
    await graph.aclose()
    assert given.closed == 0


async def test_slot_pools_do_not_keep_backends_alive() -> None:
    refs = []
    for _ in range(200):
        backend = ag.ScriptedBackend("Answer: 1", slots=2)
        refs.append(weakref.ref(backend))
        graph = ag.Graph(single("m"), backends={"m": backend})
        await graph.arun("q")
        del graph, backend
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    table = _executor._pools.get(asyncio.get_running_loop())
    assert table is None or len(table) == 0


class Shared(ag.ScriptedBackend):
    """Two of these with one ``resource`` share one pool of slots."""

    def __init__(self, resource: object, slots: int) -> None:
        super().__init__("Answer: 1", slots=slots, latency_s=0.05)
        self._resource = resource


@pytest.mark.looptime
async def test_a_shared_resource_gets_the_smallest_declared_slots() -> None:
    resource = object()
    wide, narrow = Shared(resource, 4), Shared(resource, 1)
    spec = ag.GraphSpec(
        models={"w": ag.ModelSpec(backend="scripted"), "n": ag.ModelSpec(backend="scripted")},
        nodes={
            **{f"w{i}": ag.NodeSpec(role="proposer", model="w") for i in range(2)},
            **{f"n{i}": ag.NodeSpec(role="proposer", model="n") for i in range(2)},
            "out": ag.NodeSpec(role="vote", inputs=("w0", "w1", "n0", "n1")),
        },
        output="out",
    )
    result = await ag.Graph(spec, backends={"w": wide, "n": narrow}).arun("q")
    # Whichever backend reaches the pool first, it serves one call at a time.
    starts = sorted(r.started_s for r in result.trace)
    assert starts == pytest.approx([0.0, 0.05, 0.10, 0.15])


def test_specs_are_immutable_values() -> None:
    spec = ag.loads_spec(
        "models: {m: {backend: scripted, options: {responses: [a, b]}}}\n"
        "nodes: {p: {role: proposer, model: m, params: {}}}\noutput: p\n"
    )
    for change in (
        lambda: spec.nodes.__setitem__("q", spec.nodes["p"]),
        lambda: spec.models.pop("m"),
        lambda: spec.models["m"].options["responses"].append("c"),
        lambda: spec.nodes["p"].params.update(x=1),
    ):
        with pytest.raises(TypeError, match="immutable"):
            change()
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_equality_sees_which_fields_were_set() -> None:
    # An explicit null overrides a default; an unset field inherits it.
    assert ag.Sampling(temperature=None) != ag.Sampling()
    assert ag.Sampling(temperature=0.5) == ag.Sampling(temperature=0.5)
    assert hash(ag.Sampling(temperature=0.5)) == hash(ag.Sampling(temperature=0.5))
    changed = ag.Sampling(temperature=0.5).model_copy(update={"temperature": 0.9})
    assert changed != ag.Sampling(temperature=0.5)


def test_the_fingerprint_ignores_order_and_formatting() -> None:
    one = ag.loads_spec(
        "models: {m: {backend: scripted}}\n"
        "nodes:\n  a: {role: proposer, model: m}\n  b: {role: proposer, model: m, inputs: [a]}\n"
        "output: b\n"
    )
    two = ag.loads_spec(
        "output: b   # the same graph, written differently\n"
        "nodes:\n"
        "  b:\n    inputs: [a]\n    model: m\n    role: proposer\n"
        "  a:\n    model: m\n    role: proposer\n"
        "models:\n  m:\n    backend: scripted\n"
    )
    assert one.fingerprint() == two.fingerprint() and one == two
    other = one.model_copy(update={"output": "a"})
    assert other.fingerprint() != one.fingerprint()
