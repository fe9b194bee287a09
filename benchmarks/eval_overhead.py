"""Evaluation harness overhead: what ``Graph.aevaluate`` adds to the runs themselves.

A 5-node graph (four proposers and a majority vote) on a zero-latency ScriptedBackend,
evaluated on N generated math tasks (2,000; 300 with ``--quick``), in one event loop:

- ``runs alone``: ``await graph.arun(task.prompt)`` for every task in a loop, nothing
  else: the sum of the executor's own run times;
- ``aevaluate, 1 at a time`` and ``aevaluate --out, 1 at a time`` (appending every outcome
  to a results file): the harness, tasks one after another like the loop; overhead =
  harness wall / loop wall - 1, the ratio taken within each round and its median kept;
  target <= 10%;
- ``aevaluate`` with its default concurrency: tasks/s, for information.

Each case runs 5 times, alternating. The last line is
``targets met: yes`` or ``targets met: no``.

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
from functools import partial
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
    n = 300 if quick else 2000
    task_set = tasks(n)
    g = graph()

    async def alone() -> None:
        for t in task_set:
            (await g.arun(t.prompt, task_kind="math")).raise_for_status()

    async def harness(concurrency: int | None, out: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "r.jsonl" if out else None
            report = await g.aevaluate(task_set, concurrency=concurrency, out=path)
        assert report.score == 1.0, report.to_dict()

    cases: dict[str, tuple[Callable[[], Awaitable[None]], bool]] = {
        "runs alone": (alone, False),
        "aevaluate, 1 at a time": (partial(harness, 1, False), True),
        "aevaluate --out, 1 at a time": (partial(harness, 1, True), True),
        "aevaluate": (partial(harness, None, False), False),
    }
    await alone()  # warm-up: imports, first-call costs
    walls: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(5):
        for name, (case, _judged) in cases.items():
            t0 = perf_counter()
            await case()
            walls[name].append(perf_counter() - t0)
    rows = []
    for name, (_, judged) in cases.items():
        ratios = [w / a - 1 for w, a in zip(walls[name], walls["runs alone"], strict=True)]
        overhead = statistics.median(ratios) if judged else None
        wall = statistics.median(walls[name])
        rows.append(
            {
                "case": name,
                "tasks": n,
                "wall_s": wall,
                "tasks_per_s": n / wall,
                "overhead": overhead,
                "target": f"<= {TARGET:.0%}" if judged else "(info)",
                "met": (overhead <= TARGET) if overhead is not None else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 tasks instead of 2,000")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.quick))
    header = f"{'case':28} {'tasks':>5} {'wall_s':>7} {'tasks/s':>8} {'overhead':>8}  target"
    print(header)
    for r in rows:
        over = "-" if r["overhead"] is None else f"{r['overhead']:+.1%}"
        met = "" if r["met"] is None else ("  PASS" if r["met"] else "  FAIL")
        print(
            f"{r['case']:28} {r['tasks']:>5} {r['wall_s']:>7.3f} {r['tasks_per_s']:>8.0f} "
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
