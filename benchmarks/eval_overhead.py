"""Evaluation harness overhead: what ``Graph.aevaluate`` adds to the runs themselves.

A 5-node graph (four proposers and a majority vote) on a zero-latency ScriptedBackend,
evaluated on N generated math tasks (2,000; 300 with ``--quick``), all in one event loop:

- ``runs alone``: ``await graph.arun(task.prompt)`` for every task, one after another, with
  nothing else (the executor's own time: the floor);
- ``aevaluate``: the harness with its defaults (concurrent tasks, the numeric scorer);
- ``aevaluate --out``: the same, appending every outcome to a results file.

Each is timed 3 times, alternating, and the median kept. Overhead =
harness / runs alone - 1; target <= 10% for ``aevaluate`` and for ``aevaluate --out``.
Also printed: tasks/s. The last line is ``targets met: yes`` or ``targets met: no``.

Run:  .venv/bin/python benchmarks/eval_overhead.py [--quick] [--out FILE]
(JSON goes to benchmarks/results/eval_overhead.json unless ``--out`` is given.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import agentgraph as ag

TARGET = 0.10


def graph() -> ag.Graph:
    nodes = {f"p{i}": ag.NodeSpec(role="proposer", model="m") for i in range(4)}
    nodes["vote"] = ag.NodeSpec(role="vote", inputs=tuple(nodes))
    spec = ag.GraphSpec(
        name="vote4", task="math", models={"m": ag.ModelSpec(backend="scripted")},
        nodes=nodes, output="vote",
    )  # fmt: skip
    return ag.Graph(spec, backends={"m": ag.ScriptedBackend("Work it out.\nAnswer: 42")})


def tasks(n: int) -> ag.TaskSet:
    items = tuple(ag.Task(f"t{i}", f"What is {i} + 42 - {i}?", answer="42") for i in range(n))
    return ag.TaskSet("bench", "math", items, scorer="numeric")


async def measure(quick: bool) -> list[dict[str, Any]]:
    n, repeats = (300, 3) if quick else (2000, 3)
    task_set = tasks(n)
    g = graph()

    async def alone() -> None:
        for t in task_set:
            (await g.arun(t.prompt, task_kind="math")).raise_for_status()

    async def harness() -> None:
        report = await g.aevaluate(task_set)
        assert report.score == 1.0, report.to_dict()

    async def harness_out() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report = await g.aevaluate(task_set, out=Path(tmp) / "r.jsonl")
        assert report.score == 1.0

    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "runs alone": alone,
        "aevaluate": harness,
        "aevaluate --out": harness_out,
    }
    await alone()  # warm-up: imports, first-call costs
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            t0 = perf_counter()
            await case()
            times[name].append(perf_counter() - t0)
    base = statistics.median(times["runs alone"])
    rows = []
    for name, ts in times.items():
        wall = statistics.median(ts)
        overhead = wall / base - 1
        judged = name != "runs alone"
        rows.append(
            {
                "case": name,
                "tasks": n,
                "wall_s": wall,
                "tasks_per_s": n / wall,
                "overhead": overhead if judged else None,
                "target": f"<= {TARGET:.0%}" if judged else "-",
                "met": (overhead <= TARGET) if judged else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 tasks instead of 2,000")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.quick))
    header = f"{'case':17} {'tasks':>5} {'wall_s':>7} {'tasks/s':>8} {'overhead':>8}  target"
    print(header)
    for r in rows:
        over = "-" if r["overhead"] is None else f"{r['overhead']:+.1%}"
        met = "" if r["met"] is None else ("  PASS" if r["met"] else "  FAIL")
        print(
            f"{r['case']:17} {r['tasks']:>5} {r['wall_s']:>7.3f} {r['tasks_per_s']:>8.0f} "
            f"{over:>8}  {r['target']}{met}"
        )
    out = args.out or Path(__file__).parent / "results" / "eval_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"quick": args.quick, "python": platform.python_version(), "rows": rows}
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")
    met = all(r["met"] is not False for r in rows)
    print(f"targets met: {'yes' if met else 'no'}")


if __name__ == "__main__":
    main()
